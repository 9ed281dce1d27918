#!/usr/bin/env python3
"""Checks `netc import` on real PyTorch exports: torchvision models, exported to ONNX, imported,
and run by netc and by ONNX Runtime. A developer script; CI does not run it (torch is large).

For each model (squeezenet1_0, squeezenet1_1, mobilenet_v2, shufflenet_v2_x0_5,
shufflenet_v2_x1_0, or the ones given):
- build it with `weights=None` after seeding torch, and give every BatchNorm running statistics
  and an affine transform that are not the identity (mean and bias in [-0.1, 0.1], var and weight
  in [0.5, 1.5]), then `eval()`;
- export it with `torch.onnx.export` (the TorchScript exporter, opset 13, batch 1, 3x224x224,
  `training=TrainingMode.PRESERVE` so that the BatchNorms stay BatchNormalization nodes);
- `netc import` it, and check that `netc stats --json` counts as many parameters as
  `sum(p.numel() for p in model.parameters())`;
- run a standard-normal input through ONNX Runtime and through `netc run` with the imported
  weights: max |ORT - netc| must be at most TOL * max(1, max |ORT|) (TOL = 1e-4).

    python3 scripts/check_torchvision.py
    python3 scripts/check_torchvision.py mobilenet_v2 --keep /tmp/tv

The first run creates a virtualenv, by default `$CARGO_TARGET_DIR/torch-venv` (NETC_TORCH_VENV to
choose another), with the pinned onnxruntime, onnx and numpy of scripts/ort_env.py plus torch and
torchvision from PyPI, several GB with their CUDA libraries (PyPI's Linux torch wheels load them
even on the CPU). One line per model; the exit code is 1 if any model failed.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_env  # noqa: E402

REQUIREMENTS = [*ort_env.REQUIREMENTS, "torch==2.15.0", "torchvision==0.29.2"]
MODELS = ["squeezenet1_0", "squeezenet1_1", "mobilenet_v2", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0"]
OPSET = 13


def venv_dir() -> Path:
    v = os.environ.get("NETC_TORCH_VENV")
    return Path(v) if v else ort_env.target_dir() / "torch-venv"


def build(name: str, seed: int):
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def check(netc: Path, name: str, args, work: Path) -> "tuple[bool, str]":
    import numpy as np
    import onnxruntime as ort
    import torch

    model = build(name, args.seed)
    torch_params = sum(p.numel() for p in model.parameters())
    onnx_path, net, weights = work / f"{name}.onnx", work / f"{name}.net", work / f"{name}.safetensors"
    x = np.random.default_rng(args.seed).standard_normal((1, 3, 224, 224), dtype=np.float32)
    torch.onnx.export(
        model, (torch.from_numpy(x),), str(onnx_path), opset_version=OPSET, dynamo=False,
        input_names=["input"], output_names=["output"],
        # In EVAL mode the exporter folds each BatchNorm into the Conv before it; PRESERVE (of a
        # model in eval()) keeps them, so netc's parameter count can match torch's.
        training=torch.onnx.TrainingMode.PRESERVE,
    )
    ort_env.run([str(netc), "import", str(onnx_path), "-o", str(net), "--weights-out", str(weights)], "netc import")
    stats = json.loads(ort_env.run([str(netc), "stats", str(net), "--json"], "netc stats").stdout)
    netc_params = int(stats["params"])
    np.save(work / "x.npy", x)
    ort_env.run(
        [str(netc), "run", str(net), "--weights", str(weights),
         "--input", str(work / "x.npy"), "--output", str(work / "y.npy")],
        "netc run",
    )
    got = np.load(work / "y.npy")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    params = f"params netc {netc_params} torch {torch_params}"
    if got.shape != want.shape:
        return False, f"{params}  netc's output has shape {list(got.shape)}, ONNX Runtime's {list(want.shape)}"
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    limit = args.tolerance * max(1.0, float(np.max(np.abs(want))))
    ok = netc_params == torch_params and bool(np.isfinite(diff)) and diff <= limit
    return ok, f"{params}  max abs diff {diff:.3g} (limit {limit:.3g})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"torchvision models (default: {', '.join(MODELS)})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default 0)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime's intra-op threads (default 1)")
    parser.add_argument("--keep", type=Path, help="keep the .onnx, .net and .safetensors files in this folder")
    args = parser.parse_args()
    ort_env.ensure_venv(venv_dir(), REQUIREMENTS)
    import onnxruntime
    import torch
    import torchvision

    netc = ort_env.netc_binary()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"opset {OPSET}, seed {args.seed}, tolerance {args.tolerance}")
    failed = 0
    for name in args.models or MODELS:
        with tempfile.TemporaryDirectory(prefix="netc-tv-") as tmp:
            work = args.keep or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            try:
                ok, detail = check(netc, name, args, work)
            except Exception as e:  # noqa: BLE001 - every failure is reported per model
                ok, detail = False, str(e).strip()
        print(f"{'ok  ' if ok else 'FAIL'}  {name:20}  {detail}", flush=True)
        failed += not ok
    print(f"check_torchvision: {len(args.models or MODELS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
