#!/usr/bin/env python3
"""netc against ONNX Runtime, side by side, on the same networks with the same weights.

For each network: `netc export` writes it with the seeded weights (`--seed`), and the max abs
difference between ONNX Runtime's output and `netc run`'s on one standard-normal input is
recorded. Then, for each thread count, the two engines run in alternating rounds (netc first in
even rounds, ONNX Runtime first in odd ones), each round one fresh process per engine:

- netc: `netc bench --json` (compile, `--warmup` untimed runs, `--runs` timed runs);
- ONNX Runtime: this script in worker mode, which creates a session (all graph optimizations on,
  `intra_op_num_threads` = the thread count, sequential execution), runs the same number of
  warmup and timed runs, and reports them.

A latency is the median over the rounds of each round's median; compile time (netc: elaborate and
generate code; weight initialization not counted) and session creation time (ONNX Runtime: load
and optimize the model; importing the module not counted) are medians over the rounds; peak
resident memory is the largest that the engine's processes report of themselves (`VmHWM`).
ONNX Runtime's process is a Python interpreter: its peak includes Python, numpy and the
onnxruntime library, whose size alone (imported, no session) is reported as
`ort_baseline_rss_mib`.

    python3 bench/compare_ort.py                       # every seed network, 1 and 2 threads
    python3 bench/compare_ort.py --quick --nets effnet,mobilenet_v2
    python3 bench/compare_ort.py --threads 1 --rounds 9 --runs 50 --json out.json

The table is printed in Markdown; the JSON file (default `$CARGO_TARGET_DIR/compare_ort.json`)
holds the same rows with every field. The first run creates a virtualenv with pinned onnxruntime,
onnx and numpy (see scripts/ort_env.py).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import ort_env  # noqa: E402

MIB = 1024.0 * 1024.0


def own_peak_rss_bytes() -> "int | None":
    """This process's peak resident set size (`VmHWM`), where the system tells it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def worker(argv: "list[str]") -> int:
    """Worker mode: time ONNX Runtime on one model and print JSON on stdout."""
    import numpy as np
    import onnxruntime as ort

    if argv[0] == "--baseline":
        print(json.dumps({"onnxruntime": ort.__version__, "peak_rss_bytes": own_peak_rss_bytes()}))
        return 0
    model, x_path, threads, runs, warmup = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    x = np.load(x_path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    session_ms = (time.perf_counter() - t0) * 1e3
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "session_ms": session_ms,
        "median_ms": statistics.median(times),
        "times_ms": times,
        "peak_rss_bytes": own_peak_rss_bytes(),
    }))
    return 0


def measured(cmd: "list[str]", what: str) -> "tuple[dict, float]":
    """Runs an engine in its own process; returns the JSON it prints and its peak RSS in MiB.

    The peak is what the process reports of itself (`peak_rss_bytes`, its `VmHWM`): the
    `ru_maxrss` that wait4 gives a parent also counts the parent's own peak, which the child
    inherits when it is forked. Where the process cannot tell, `ru_maxrss` is the fallback."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed (exit code {proc.returncode}): {' '.join(cmd)}\n{err.read().strip()}")
        report = json.loads(out.read())
    peak = report.get("peak_rss_bytes")
    if peak is None:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        peak = usage.ru_maxrss * scale
    return report, peak / MIB


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accuracy(netc: Path, net: Path, model: Path, x_path: Path, seed: int, work: Path) -> "tuple[float, float]":
    """Max abs difference of ONNX Runtime's output from `netc run`'s, and max |netc|."""
    import numpy as np
    import onnxruntime as ort

    y_path = work / "y.npy"
    ort_env.run(
        [str(netc), "run", str(net), "--seed", str(seed), "--top", "1", "--input", str(x_path),
         "--output", str(y_path)],
        "netc run",
    )
    want = np.load(y_path)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: np.load(x_path)})[0]
    if got.shape != want.shape:
        raise RuntimeError(f"ONNX Runtime's output has shape {list(got.shape)}, netc's {list(want.shape)}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    return diff, float(np.max(np.abs(want)))


def bench_net(netc: Path, net: Path, args, work: Path) -> "list[dict]":
    import numpy as np
    import onnxruntime as ort

    model = work / f"{net.stem}.onnx"
    ort_env.run([str(netc), "export", str(net), "--seed", str(args.seed), "-o", str(model)], "netc export")
    shape = [int(d) for d in ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].shape]
    x_path = work / "x.npy"
    np.save(x_path, np.random.default_rng(args.seed).standard_normal(shape, dtype=np.float32))
    diff, scale = accuracy(netc, net, model, x_path, args.seed, work)
    rows = []
    for threads in args.threads:
        netc_cmd = [str(netc), "bench", str(net), "--threads", str(threads), "--runs", str(args.runs),
                    "--warmup", str(args.warmup), "--seed", str(args.seed), "--json"]
        ort_cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(model), str(x_path),
                   str(threads), str(args.runs), str(args.warmup)]
        netc_runs, ort_runs = [], []
        for r in range(args.rounds):
            order = ["netc", "ort"] if r % 2 == 0 else ["ort", "netc"]
            for engine in order:
                if engine == "netc":
                    netc_runs.append(measured(netc_cmd, "netc bench"))
                else:
                    ort_runs.append(measured(ort_cmd, "the ONNX Runtime worker"))
        netc_ms = statistics.median(r["median_ms"] for r, _ in netc_runs)
        ort_ms = statistics.median(r["median_ms"] for r, _ in ort_runs)
        row = {
            "net": net.stem,
            "threads": threads,
            "netc_median_ms": netc_ms,
            "ort_median_ms": ort_ms,
            "ratio": netc_ms / ort_ms,
            "netc_compile_ms": statistics.median(r["compile_ms"] for r, _ in netc_runs),
            "ort_session_ms": statistics.median(r["session_ms"] for r, _ in ort_runs),
            "netc_peak_rss_mib": max(rss for _, rss in netc_runs),
            "ort_peak_rss_mib": max(rss for _, rss in ort_runs),
            "max_abs_diff": diff,
            "max_abs_output": scale,
            "netc_round_medians_ms": [r["median_ms"] for r, _ in netc_runs],
            "ort_round_medians_ms": [r["median_ms"] for r, _ in ort_runs],
            "macs": netc_runs[0][0]["macs"],
        }
        rows.append(row)
        print(
            f"  {net.stem} threads {threads}: netc {netc_ms:.3f} ms, ORT {ort_ms:.3f} ms",
            file=sys.stderr,
            flush=True,
        )
    return rows


def table(rows: "list[dict]") -> str:
    head = ["network", "threads", "netc ms", "ORT ms", "netc / ORT", "netc compile ms", "ORT session ms",
            "netc peak RSS MiB", "ORT peak RSS MiB", "max abs diff", "relative diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cells = [
            r["net"], str(r["threads"]), f"{r['netc_median_ms']:.3f}", f"{r['ort_median_ms']:.3f}",
            f"{r['ratio']:.2f}", f"{r['netc_compile_ms']:.1f}", f"{r['ort_session_ms']:.1f}",
            f"{r['netc_peak_rss_mib']:.1f}", f"{r['ort_peak_rss_mib']:.1f}", f"{r['max_abs_diff']:.1e}",
            f"{r['max_abs_diff'] / max(1.0, r['max_abs_output']):.1e}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", help="comma-separated network names or .net paths (default: every nets/*.net)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per network and thread count (default 5)")
    parser.add_argument("--runs", type=int, help="timed runs per round and engine (default 30)")
    parser.add_argument("--warmup", type=int, help="untimed runs before them (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default 0)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 10 runs after 2 warmup runs")
    parser.add_argument("--json", type=Path, help="where to write the JSON (default $CARGO_TARGET_DIR/compare_ort.json)")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.runs = args.runs or (10 if args.quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ort_env.fail(f"--threads takes comma-separated integers, not `{args.threads}`")
    if args.rounds < 1 or args.runs < 1 or args.warmup < 0 or min(args.threads) < 1:
        ort_env.fail("--rounds, --runs and --threads must be at least 1, --warmup at least 0")
    if args.nets:
        nets = []
        for n in args.nets.split(","):
            p = Path(n) if n.endswith(".net") else ort_env.REPO / "nets" / f"{n}.net"
            if not p.is_file():
                ort_env.fail(f"no network `{n}` (looked for {p})")
            nets.append(p)
    else:
        nets = ort_env.seed_nets()
    ort_env.ensure_venv()
    import onnxruntime

    netc = ort_env.netc_binary()
    _, baseline_rss = measured([sys.executable, str(Path(__file__).resolve()), "--worker", "--baseline"], "baseline")
    rows = []
    with tempfile.TemporaryDirectory(prefix="netc-compare-") as tmp:
        for net in nets:
            print(f"{net.stem}:", file=sys.stderr, flush=True)
            rows.extend(bench_net(netc, net, args, Path(tmp)))
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
    config = {"rounds": args.rounds, "runs": args.runs, "warmup": args.warmup, "seed": args.seed, "batch": 1}
    date = datetime.date.today().isoformat()
    text = table(rows)
    print(f"{machine['cpu']}, {machine['cores']} cores; onnxruntime {machine['onnxruntime']}; {date}")
    print(f"{args.rounds} rounds x {args.runs} runs after {args.warmup} warmup, seed {args.seed}, batch 1; "
          f"ORT baseline (Python + numpy + onnxruntime, no session) {baseline_rss:.1f} MiB\n")
    print(text)
    out = args.json or ort_env.target_dir() / "compare_ort.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": date, "machine": machine, "config": config, "ort_baseline_rss_mib": baseline_rss, "rows": rows,
    }, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
