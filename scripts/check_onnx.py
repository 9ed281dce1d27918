#!/usr/bin/env python3
"""Checks that every network `netc export` writes loads in ONNX Runtime and computes what
`netc run` computes.

For each network (every nets/*.net and tests/onnx/all_ops.net, or the files given):
- export it with the seeded initialization (`--seed`; random conv and dense weights, and
  batchnorm statistics that are not the identity: gamma and var in [0.5, 1.5], beta and mean in
  [-0.1, 0.1]);
- check the model with the onnx package's checker and full shape inference (every recorded shape
  must agree with what the operators give);
- draw a standard-normal input with numpy, save it as .npy and run
  `netc run --input x.npy --output y.npy` on it;
- run ONNX Runtime on the same input with all graph optimizations, and again with none, and
  compare the first output: max |ORT - netc| must be at most TOL * max(1, max |netc|)
  (TOL = 1e-4).

    python3 scripts/check_onnx.py                        # every seed network and all_ops.net
    python3 scripts/check_onnx.py nets/effnet.net --batch 2

The first run creates a virtualenv with pinned onnxruntime, onnx and numpy (scripts/ort_env.py).
The last line is `check_onnx: N passed, M failed`; the exit code is 1 if any network failed.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_env  # noqa: E402


def session(path: Path, optimize: bool, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check(netc: Path, net: Path, args, work: Path) -> "tuple[bool, str]":
    import numpy as np
    import onnx

    model = work / "model.onnx"
    common = ["--batch", str(args.batch), "--seed", str(args.seed)]
    ort_env.run([str(netc), "export", str(net), *common, "-o", str(model)], "netc export")
    try:
        onnx.checker.check_model(str(model), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        return False, f"the onnx checker rejects the model: {str(e).strip()}"
    optimized = session(model, True, args.threads)
    plain = session(model, False, args.threads)
    meta = optimized.get_inputs()[0]
    shape = [int(d) for d in meta.shape]
    x = np.random.default_rng(args.seed).standard_normal(shape, dtype=np.float32)
    np.save(work / "x.npy", x)
    ort_env.run(
        [str(netc), "run", str(net), *common, "--engine", args.engine, "--top", "1",
         "--input", str(work / "x.npy"), "--output", str(work / "y.npy")],
        "netc run",
    )
    want = np.load(work / "y.npy")
    scale = max(1.0, float(np.max(np.abs(want))))
    diffs = []
    for sess in (optimized, plain):
        got = sess.run(None, {meta.name: x})[0]
        if got.shape != want.shape:
            return False, f"ONNX Runtime's output has shape {list(got.shape)}, netc's {list(want.shape)}"
        diffs.append(float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
    worst = max(diffs)
    ok = bool(np.isfinite(worst)) and worst <= args.tolerance * scale
    detail = (
        f"output {list(want.shape)}  max|netc| {float(np.max(np.abs(want))):.4g}  "
        f"max abs diff {diffs[0]:.3g} (ORT optimized), {diffs[1]:.3g} (unoptimized)  "
        f"limit {args.tolerance * scale:.3g}"
    )
    return ok, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nets", nargs="*", type=Path, help="networks (default: nets/*.net and tests/onnx/all_ops.net)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default 0)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    parser.add_argument("--engine", choices=["jit", "reference"], default="jit", help="netc's engine (default jit)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime's intra-op threads (default 1)")
    args = parser.parse_args()
    ort_env.ensure_venv()
    import onnx
    import onnxruntime

    netc = ort_env.netc_binary()
    nets = args.nets or [*ort_env.seed_nets(), ort_env.REPO / "tests" / "onnx" / "all_ops.net"]
    print(f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, batch {args.batch}, seed {args.seed}, tolerance {args.tolerance}")
    passed = failed = 0
    for net in nets:
        with tempfile.TemporaryDirectory(prefix="netc-onnx-") as tmp:
            try:
                ok, detail = check(netc, net, args, Path(tmp))
            except Exception as e:  # noqa: BLE001 - every failure is reported per network
                ok, detail = False, str(e).strip()
        name = net.stem
        print(f"{'ok  ' if ok else 'FAIL'}  {name:18}  {detail}", flush=True)
        passed += ok
        failed += not ok
    print(f"check_onnx: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
