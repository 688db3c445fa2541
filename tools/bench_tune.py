"""Tuned vs untuned TVM latency of each half of a split CNN on this machine (host-x86).

    python tools/bench_tune.py                              # tiny_cnn split at 9, 32 trials per side
    python tools/bench_tune.py --model resnet_like --at 12 --trials 64 --json

Steps: ``onnxsplit split`` the zoo model -> ``compile_bundle`` (default TVM CPU pipeline: no
schedules) -> time each library -> ``onnxsplit tune`` both halves for ``--target`` (MetaSchedule,
``--trials`` per side, in-process builder + local runner) -> the rebuilt (tuned) libraries -> time
them again. Latencies: median of ``time_evaluator`` repeats on this CPU, each library timed in a fresh process
(the tuner leaves xgboost/OpenMP threads behind); keep the machine idle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time_fresh(so: Path, feeds: dict) -> float:
    """time_library in a fresh process: the tuner's threads (xgboost/OpenMP, runner pools) stay out of it."""
    import subprocess

    import numpy as np

    npz = so.with_suffix(".feeds.npz")
    np.savez(npz, **feeds)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[3]); from onnxsplit.compile.tune import time_library; "
            "f = dict(np.load(sys.argv[2])); print(time_library(sys.argv[1], f, number=20, repeat=7))")
    out = subprocess.run([sys.executable, "-c", code, str(so), str(npz), str(Path(__file__).resolve().parents[1])],
                         capture_output=True, text=True, check=True, timeout=300)
    npz.unlink()
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny_cnn", help="onnxsplit.zoo model (tiny_cnn, resnet_like, ...)")
    ap.add_argument("--at", type=int, default=9, help="split after the first K compute nodes (default 9)")
    ap.add_argument("--trials", type=int, default=32, help="MetaSchedule trials per side (default 32)")
    ap.add_argument("--target", default="host-x86")
    ap.add_argument("--cost-model", default="xgb", choices=["xgb", "random"])
    ap.add_argument("--out", help="keep the bundle here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import onnx

    from onnxsplit import zoo
    from onnxsplit.cli import main as cli
    from onnxsplit.compile import compile_bundle
    from onnxsplit.compile.tune import tune_bundle
    from onnxsplit.runtime_ort import random_feeds, run

    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        src = work / f"{args.model}.onnx"
        onnx.save(getattr(zoo, args.model)(), str(src))
        out = work / "bundle"
        if cli(["split", str(src), "--at", str(args.at), "-o", str(out), "--force"]) != 0:
            return 1
        edge = onnx.load(str(out / "edge" / "model.onnx"))
        cloud = onnx.load(str(out / "cloud" / "model.onnx"))
        feeds_e = random_feeds(edge, seed=0)
        pool = {**feeds_e, **run(edge, feeds_e, optimize=False)}
        feeds_c = {k: pool.get(k, v) for k, v in random_feeds(cloud, seed=0).items()}
        feeds = {"edge": feeds_e, "cloud": feeds_c}

        say = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
        say(f"untuned build of {args.model} split at {args.at} for {args.target} ...")
        compile_bundle(out, args.target, args.target)
        untuned = {s: _time_fresh(out / s / "tvm" / "model.so", feeds[s]) for s in ("edge", "cloud")}
        t0 = time.perf_counter()
        report = tune_bundle(out, trials=args.trials, target=args.target, say=say, cost_model=args.cost_model)
        wall = time.perf_counter() - t0
        tuned = {s: _time_fresh(out / s / "tvm" / "model.so", feeds[s]) for s in ("edge", "cloud")}

    rows = []
    for s in ("edge", "cloud"):
        r = report["sides"][s]
        comp = report["compiled"][s]
        rows.append({"side": s, "tasks": len(r["tasks"]), "trials": r["trials_run"], "tune_wall_s": r["wall_s"],
                     "tuned_tasks": comp["tuning"]["tuned_tasks"], "untuned_ms": round(untuned[s], 4),
                     "tuned_ms": round(tuned[s], 4), "speedup": round(untuned[s] / tuned[s], 2),
                     "max_rel_vs_ort": comp["validated"]["numerics"]["max_rel"]})
    summary = {"model": args.model, "at": args.at, "target": args.target, "trials_per_side": args.trials,
               "total_wall_s": round(wall, 1), "sides": rows}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from onnxsplit.cli import table

    print(table(["side", "tasks", "trials", "tuned tasks", "tune wall s", "untuned ms", "tuned ms", "speedup",
                 "max rel vs ORT"],
                [(r["side"], r["tasks"], r["trials"], f"{r['tuned_tasks']}/{r['tasks']}", f"{r['tune_wall_s']:.0f}",
                  f"{r['untuned_ms']:.3f}", f"{r['tuned_ms']:.3f}", f"{r['speedup']:.2f}x", f"{r['max_rel_vs_ort']:.1e}")
                 for r in rows]))
    print(f"\n{args.model} split at {args.at}, {args.target}: {sum(r['trials'] for r in rows)} trials in "
          f"{wall:.0f} s (tuning + rebuild)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
