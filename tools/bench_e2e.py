"""End-to-end latency on the netns testbed: baselines vs onnxsplit dynamic vs the measured oracle.

    python tools/bench_e2e.py MODEL --bandwidths 1,5,20,100,1000mbps [--requests N]
        [--input-shape NAME:1x3x160x160] [--edge-quota 0.5] [--rtt 0ms] [--out DIR]

Root only (network namespaces, tc). Steps: predict costs with the host-x86 cost model for both
sides (edge latencies times ``--edge-factor``, default ``1/edge-quota``), sweep the bandwidth x
batch policy table, collect the candidate plans (all-edge, all-cloud, the best chain cut
(Neurosurgeon, algorithm ``chain``) and fp32 DAG min-cut at each bandwidth, every plan of the
dynamic policy table) and write them as one dynamic bundle. In the testbed the cloud namespace
serves every plan (one embedded server per plan, port 9000+k); one long-lived edge worker (CPU
limited) measures, at each bandwidth in turn, each candidate plan forced and then the dynamic
runner. The dynamic runner lives across bandwidths, so each bandwidth change happens mid-run and
its first requests use the stale estimate (they count in its median/p95). The oracle is the best
measured candidate per bandwidth. Prints a table, predicted vs measured per plan, writes
``OUT/results.json`` and ``OUT/latency_vs_bandwidth.png`` (when matplotlib is installed).

Hook for quantized variants: ``--extra-bundle NAME=DIR`` (repeatable) adds a bundle written by
``onnxsplit split`` (e.g. an int8 one) as one more forced candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_bw(s: str) -> list[float]:
    from onnxsplit.units import parse_bandwidth  # type: ignore[attr-defined]

    return [parse_bandwidth(x) for x in s.split(",") if x]


def _parse_bw_fallback(s: str) -> list[float]:
    out = []
    for x in s.split(","):
        x = x.strip().lower()
        for suf, f in (("gbps", 1000.0), ("mbps", 1.0), ("kbps", 1e-3)):
            if x.endswith(suf):
                out.append(float(x[: -len(suf)]) * f)
                break
        else:
            out.append(float(x))
    return out


# ------------------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> int:
    """Runs in the edge namespace: JSON commands on stdin, JSON answers on stdout."""
    import numpy as np

    from onnxsplit.dynamic import BandwidthEstimator, DynamicRunner

    urls = {int(k): v for k, v in json.loads(args.urls).items()}
    kw = {"optimize": True, "threads": 1, "timeout": 120.0, "retries": 1}
    dyn = DynamicRunner(args.bundle, urls, estimator=BandwidthEstimator(initial_mbps=10.0, alpha=0.5),
                        probe_interval_s=0.25, **kw)
    forced = {k: DynamicRunner(dyn.bundle, urls, plans=[k], force_plan=k, probe_on_start=False, **kw)
              for k in dyn.runners}
    first = dyn.runners[dyn.bundle.all_edge].bundle
    rng = np.random.default_rng(0)
    from onnxsplit.runtime.protocol import np_dtype

    feeds = {t.name: rng.standard_normal([d or 1 for d in t.shape]).astype(np_dtype(t.datatype)) for t in first.edge_inputs}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        runner = dyn if cmd["cmd"] == "dynamic" else forced[int(cmd["plan"])]
        lat, plans, ests, fb = [], [], [], 0
        budget_end = time.monotonic() + float(cmd.get("budget_s", 30))
        min_end = time.monotonic() + float(cmd.get("min_s", 0))
        i = -1
        while True:
            i += 1
            if i >= int(cmd.get("warmup", 1)) + int(cmd["n"]) and (time.monotonic() >= min_end or time.monotonic() > budget_end):
                break
            r = runner.infer(feeds)
            if i >= int(cmd.get("warmup", 1)):
                lat.append(r.timings_ms["total"])
                plans.append(r.plan)
                ests.append(r.estimate_mbps)
                fb += int(r.fallback)
                if len(lat) >= 3 and time.monotonic() > budget_end:
                    break
        print(json.dumps({"lat": lat, "plans": plans, "est": ests, "fallbacks": fb}), flush=True)
    return 0


def serve(args: argparse.Namespace) -> int:
    """Runs in the cloud namespace: one embedded server per plan, until stdin closes."""
    from onnxsplit.dynamic import serve_plans

    with serve_plans(args.bundle, host=args.host, port=args.port, threads=args.threads) as sp:
        print(json.dumps({k: v for k, v in sp.urls.items()}), flush=True)
        sys.stdin.read()
    return 0


# ------------------------------------------------------------------------------------- driver
def _readline(p: subprocess.Popen, timeout_s: float) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if r:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("worker exited")
            if line.strip().startswith("{"):
                return json.loads(line)
        if p.poll() is not None:
            raise RuntimeError(f"process exited with {p.returncode}")
    raise TimeoutError("no answer in time")


def pct(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--bandwidths", default="1,5,20,100,1000mbps")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=8.0, help="max seconds per (plan, bandwidth) cell (>= 3 requests)")
    ap.add_argument("--input-shape", action="append", default=[])
    ap.add_argument("--edge-quota", type=float, default=0.5, help="edge CPU quota in CPUs (cgroup), on core 0")
    ap.add_argument("--edge-factor", type=float, default=None, help="edge cost-model factor (default 1/edge-quota)")
    ap.add_argument("--rtt", type=float, default=0.0, help="added round-trip time in ms (netem only)")
    ap.add_argument("--candidates", default="all", choices=["all", "bottlenecks"])
    ap.add_argument("--extra-bundle", action="append", default=[], help="NAME=DIR (hook for quantized bundles; not measured yet)")
    ap.add_argument("--out", default="out/bench_e2e")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", help=argparse.SUPPRESS)
    ap.add_argument("--urls", help=argparse.SUPPRESS)
    ap.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=9000, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.serve:
        return serve(args)
    if not args.model:
        ap.error("MODEL is required")

    import numpy as np

    import onnxsplit
    from onnxsplit.dynamic_bundle import build_policy, write_dynamic_bundle
    from onnxsplit.search import search
    from tools.testbed.netns import Testbed, available

    reason = available()
    if reason:
        print(f"bench_e2e: {reason}", file=sys.stderr)
        return 2
    try:
        bws = parse_bw(args.bandwidths)
    except Exception:  # noqa: BLE001
        bws = _parse_bw_fallback(args.bandwidths)
    shapes = {}
    for s in args.input_shape:
        n, dims = s.split(":")
        shapes[n] = tuple(int(d) for d in dims.split("x"))
    factor = args.edge_factor if args.edge_factor is not None else 1.0 / args.edge_quota
    out = Path(args.out)
    graph = onnxsplit.load_graph(args.model, input_shapes=shapes or None)
    table, res = build_policy(graph, edge_factor=factor, rtt_ms=args.rtt, candidates=args.candidates,
                              batch_sizes=(1,))
    names = res.problem.node_names
    baseline = {}  # (method, bw) -> edge node names
    for bw in bws:
        link = res.link.with_bandwidth(bw)
        for alg in ("chain", "mincut"):
            p = search(res.problem, link, res.objective, alg)
            baseline[(alg, bw)] = tuple(names[i] for i in p.edge_nodes)
    manifest = write_dynamic_bundle(graph, table, out / "bundle", source=args.model, force=True,
                                    extra_plans=list(baseline.values()),
                                    predicted=(res.problem, res.link, res.objective),
                                    settings={"edge_factor": factor, "edge_quota": args.edge_quota, "rtt_ms": args.rtt})
    plans = manifest["plans"]
    pid_of = {frozenset(p["edge_node_names"]): p["id"] for p in plans}
    print(f"{len(plans)} candidate plans, bundle {manifest['total_size_bytes'] / 1e6:.1f} MB (weights copied per plan)")
    for p in plans:
        print(f"  plan {p['id']}: {p['kind']:9s} edge nodes {p['edge_nodes']:4d}  uplink {p['uplink_bytes']:>9d} B")

    results: dict = {"command": " ".join(["python", "tools/bench_e2e.py"] + (argv or sys.argv[1:])),
                     "plans": plans, "cells": {}, "dynamic": {}}
    py = sys.executable
    env_cmd = ["env", f"PYTHONPATH={ROOT}", "OMP_NUM_THREADS=1"]
    with Testbed(edge_cpus="0", cloud_cpus="1", edge_quota=args.edge_quota) as tb:
        results["cpu_mode"] = tb.cpu_mode
        tb.set_link(bws[0], rtt_ms=args.rtt)
        srv = tb.spawn_cloud(env_cmd + [py, str(ROOT / "tools/bench_e2e.py"), "--serve", "--bundle", str(out / "bundle"),
                                        "--host", tb.cloud_ip, "--port", "9000"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        urls = _readline(srv, 120)
        wk = tb.spawn_edge(env_cmd + [py, str(ROOT / "tools/bench_e2e.py"), "--worker", "--bundle", str(out / "bundle"),
                                      "--urls", json.dumps(urls)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _readline(wk, 300)

        def ask(cmd: dict) -> dict:
            wk.stdin.write(json.dumps(cmd) + "\n")
            wk.stdin.flush()
            return _readline(wk, 600)

        for bw in bws:
            mode = tb.set_link(bw, rtt_ms=args.rtt)
            results.setdefault("link_mode", mode)
            print(f"\n== {bw:g} Mbit/s ({mode})", flush=True)
            d = ask({"cmd": "dynamic", "n": args.requests, "warmup": 0, "budget_s": args.budget_s, "min_s": 1.5})
            results["dynamic"][f"{bw:g}"] = d
            for p in plans:
                r = ask({"cmd": "fixed", "plan": p["id"], "n": args.requests, "budget_s": args.budget_s})
                results["cells"][f"{p['id']}@{bw:g}"] = r
                print(f"  plan {p['id']:2d}: median {pct(r['lat'], 50):9.2f} ms  p95 {pct(r['lat'], 95):9.2f}  "
                      f"predicted {_pred(res, p, bw):9.2f}  n={len(r['lat'])}", flush=True)
            print(f"  dynamic: median {pct(d['lat'], 50):9.2f} ms  p95 {pct(d['lat'], 95):9.2f}  plans used {sorted(set(d['plans']))} (n={len(d['lat'])})  "
                  f"est {[round(e, 1) for e in d['est']][:8]}", flush=True)
        wk.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        wk.stdin.flush()
        wk.wait(timeout=30)
        srv.stdin.close()

    # ----------------------------------------------------------------- table
    rows = []
    methods = ["all-edge", "all-cloud", "chain", "mincut", "dynamic", "oracle"]
    summary: dict = {m: {} for m in methods}
    for bw in bws:
        def cell(k: int) -> dict:
            return results["cells"][f"{k}@{bw:g}"]

        picks = {"all-edge": manifest["all_edge_plan"], "all-cloud": manifest["all_cloud_plan"],
                 "chain": pid_of[frozenset(baseline[("chain", bw)])], "mincut": pid_of[frozenset(baseline[("mincut", bw)])]}
        best = min(plans, key=lambda p: pct(cell(p["id"])["lat"], 50))["id"]
        picks["oracle"] = best
        for m, k in picks.items():
            lat = cell(k)["lat"]
            summary[m][bw] = (pct(lat, 50), pct(lat, 95), k)
        d = results["dynamic"][f"{bw:g}"]
        summary["dynamic"][bw] = (pct(d["lat"], 50), pct(d["lat"], 95), sorted(set(d["plans"])))
    hdr = "| method | " + " | ".join(f"{bw:g} Mbit/s" for bw in bws) + " |"
    lines = [hdr, "|" + "---|" * (len(bws) + 1)]
    for m in methods:
        cells = []
        for bw in bws:
            med, p95, k = summary[m][bw]
            cells.append(f"{med:.1f} / {p95:.1f} (plan {k if not isinstance(k, list) else ','.join(map(str, k))})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    pred_lines = ["| plan | kind | edge nodes | uplink B | " + " | ".join(f"{bw:g}: pred / meas" for bw in bws) + " |",
                  "|" + "---|" * (len(bws) + 4)]
    for p in plans:
        cells = []
        for bw in bws:
            key = f"{p['id']}@{bw:g}"
            cells.append(f"{_pred(res, p, bw):.1f} / {pct(results['cells'][key]['lat'], 50):.1f}")
        pred_lines.append(f"| {p['id']} | {p['kind']} | {p['edge_nodes']} | {p['uplink_bytes']} | " + " | ".join(cells) + " |")
    text = ("latency ms, median / p95 (plan id)\n\n" + "\n".join(lines) + "\n\npredicted vs measured median (ms)\n\n"
            + "\n".join(pred_lines) + "\n")
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = {m: {f"{bw:g}": v for bw, v in s.items()} for m, s in summary.items()}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "table.md").write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in methods:
            ax.plot(bws, [summary[m][bw][0] for bw in bws], marker="o", label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("uplink bandwidth (Mbit/s)")
        ax.set_ylabel("median end-to-end latency (ms)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "latency_vs_bandwidth.png", dpi=120)
        print(f"wrote {out / 'latency_vs_bandwidth.png'}")
    except ImportError:
        print("matplotlib is not installed: skipped the PNG plot (pip install matplotlib)")
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}")
    return 0


def _pred(res, plan: dict, bw: float) -> float:  # noqa: ANN001
    from onnxsplit.search.cost import components

    pos = {n: i for i, n in enumerate(res.problem.node_names)}
    import numpy as np

    mask = np.zeros((1, res.problem.n_nodes), dtype=bool)
    mask[0, [pos[n] for n in plan["edge_node_names"]]] = True
    return float(components(res.problem, mask).latency_ms(res.link.with_bandwidth(bw))[0])


if __name__ == "__main__":
    sys.exit(main())
