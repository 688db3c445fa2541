"""End-to-end latency on the netns testbed: baselines, quantized plans, dynamic, measured oracle.

    python tools/bench_e2e.py MODEL --bandwidths 1,5,20,100,1000mbps [--requests N]
        [--input-shape NAME:1x3x160x160] [--edge-quota 0.1] [--calibrate whole-model|none]
        [--quant | --no-quant] [--trace 1000:6,1:6,...] [--loss 1%] [--out DIR]

Root only (network namespaces, tc; see tools/testbed/netns.py). Steps:

1. **Testbed**: cloud namespace on core 1 (onnxruntime, 1 thread), edge namespace on core 0 with a
   CFS quota of ``--edge-quota`` CPUs (default 0.1: 1 ms of CPU per 10 ms period, a device about
   10x slower than one core of this machine on CPU-bound work, Raspberry-Pi-4 class), veth link
   shaped with netem, or tbf (rate only) where sch_netem is missing. ``--loss PCT`` drops that
   share of the edge -> cloud packets (iptables ``statistic`` match at the cloud's ingress, not
   netem; needs ``apt-get install iptables``) in every measured cell and the trace; the calibration
   (step 2) runs loss-free, so the plans are the same as without ``--loss``.
2. **Calibration** (``--calibrate whole-model``, the default): the host-x86 cost model gives the
   per-node *shape* of the costs; their *scale* on each side comes from timing the whole model once
   in each namespace (fp32 on both sides, int8 on the edge), as a deployment would on its devices.
   The per-request fixed cost of the hand-off (HTTP + (de)serialization + the server's wake-up) is
   measured with 50 4-byte requests to a tiny model served from the cloud namespace; their mean
   becomes the link's ``per_request_ms``. ``--calibrate none``: edge costs x ``1/edge-quota``, cloud x 1, no
   per-request cost (what the previous version of this benchmark did).
   ``--edge-model quota`` (default since the sixteenth session, when the quota applied as a cgroup):
   the edge is modelled as what it is, a CPU under a CFS quota (:mod:`onnxsplit.cpu_quota`), not a
   uniformly slower one. The calibration also records each side's CPU time (``time.process_time``)
   per run and per 4-byte request; a plan's latency is then the quota model's mean for back-to-back
   requests needing (edge ms x quota + the request's CPU) on the edge CPU and (network + cloud + the
   off-CPU part of the 4-byte request, fitted) off it, averaged over +-25 % of that CPU time
   (``EdgeCpuQuota.cpu_spread``). The cut search's linear costs are unchanged;
   the choice among its candidate plans (onnxsplit's quantization-aware plan, the policy table,
   the chain baseline's enumeration) uses the quota model. ``--edge-model linear``: every edge ms x
   the whole-model factor and the 4-byte request's mean latency as the per-request cost (the runs
   before the sixteenth session).
3. **Plans** at each bandwidth: all-edge, all-cloud, the best chain cut (Neurosurgeon, algorithm
   ``chain``), the fp32 DAG min-cut (DADS/QDMP), that min-cut with its edge half quantized to int8
   afterwards (post-training, every edge node), onnxsplit's quantization-aware plan
   (:func:`onnxsplit.quant.budget.select_quantized_plan`: int8 candidates costed with the int8 edge
   model, accuracy budget ``--max-accuracy-drop`` checked on held-out calibration samples), every
   plan of the dynamic policy table, written as one dynamic bundle. With ``--quant`` the int8 plans
   are part of the dynamic policy (at each grid bandwidth the lowest predicted latency among the fp32
   sweep's plans and the int8 plans, which already met the accuracy budget or are the post-hoc
   baseline; see :func:`onnxsplit.dynamic_bundle.policy_from_predictions`).
   **Measured plans** (``--measure-plans``, default on): ``onnxsplit measure-plans`` times every
   plan's edge half in the edge namespace and its cloud half in the cloud namespace (1 thread,
   round-robin over the plans, ``--measure-repeats`` rounds; on the edge blocks of 3 timed runs per
   plan after an untimed one, and an idle gap of one CFS period before each run of a plan with a
   cloud half, as its network wait gives in service: the quota-throttled edge's speed depends on
   what ran just before), and
   the bundle's policy is recomputed
   from those timings + the link model (:mod:`onnxsplit.plan_timing`), as a deployment would do
   on its devices before serving. ``onnxsplit measured`` is the candidate (fp32 plans and int8
   plans within the accuracy budget) with the lowest such latency at each bandwidth; the dynamic
   runner uses the recomputed policy.
4. **Static cells**: at each bandwidth each candidate plan is forced for ``--requests`` requests
   back to back, as a static deployment of that plan would run, in ``--passes`` blocks (default 3)
   that cycle over the plans: block = 1 warm-up request (discarded) + ``requests / passes``
   requests, at most ``budget-s / passes`` seconds, at least 1 request. The blocks spread every
   plan's samples over the same minutes, so a slow spell of this VM's throttled edge core (the
   same int8 all-edge plan measured 40-60 ms in different cells of one run) is shared by all plans
   instead of landing on whichever plan was being measured. (Interleaving the plans request by request was tried and
   dropped: under the CFS quota a CPU-bound request that follows one waiting on the network runs
   faster, e.g. the int8 all-edge plan measured 17-31 ms interleaved vs ~40 ms back to back.)
   Before them, the dynamic runner
   (bandwidth estimator + policy table + feedback from observed latencies,
   :class:`onnxsplit.dynamic.PlanFeedback`; ``--no-feedback`` turns the last off) is measured; it
   lives across bandwidths, so each change happens mid-run with a stale estimate at first, and
   ``dynamic / oracle`` is printed per bandwidth too. The **measured oracle** is the best measured
   candidate per bandwidth; ``onnxsplit / oracle`` is printed per bandwidth (goal: <= 1.05). The
   post-hoc int8 plans are checked against the same accuracy budget as onnxsplit's
   (``--max-accuracy-drop``); when one fails it, an ``oracle within budget`` row (the best measured
   plan among those meeting it) and ``onnxsplit / oracle within budget`` are printed too.
5. **Trace** (``--trace``, e.g. ``1000:6,1:6,100:6``: Mbit/s:seconds, optionally ``:LOSS`` per
   step, e.g. ``1000:6:0,1:6:5%``, which overrides ``--loss`` for that step): for every candidate plan
   and for dynamic, requests run back to back while the link follows the schedule; mean / median /
   p95 latency and completed requests are reported per method; "best static" is the candidate with
   the lowest phase-mean latency on the trace among those within the accuracy budget (goal:
   dynamic below it).

Prints the tables, writes ``OUT/results.json``, ``OUT/table.md`` and ``OUT/latency_vs_bandwidth.png``
(when matplotlib is installed; it comes with the ``test`` extra). ``--replot OUT`` redraws the PNG
from ``OUT/results.json`` without measuring again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_bw(s: str) -> list[float]:
    from onnxsplit.units import parse_bandwidth_mbps

    return [parse_bandwidth_mbps(x if any(c.isalpha() for c in x) else x + "mbps") for x in s.split(",") if x.strip()]


def onnxsplit_errors() -> type:
    from onnxsplit.errors import OnnxSplitError

    return OnnxSplitError


def _trace_steps(s: str) -> list[tuple[float, float, float | None]]:
    """``"1000:6,1:6:5%"`` -> [(1000.0 Mbit/s, 6.0 s, None), (1.0, 6.0, 5.0 % loss)]."""
    from tools.testbed.netns import parse_loss_pct

    out = []
    for part in s.split(","):
        if not part.strip():
            continue
        bw, _, rest = part.partition(":")
        dur, _, loss = rest.partition(":")
        if not dur:
            raise ValueError(f"trace step {part!r}: expected MBPS:SECONDS[:LOSS%]")
        out.append((parse_bw(bw)[0], float(dur), parse_loss_pct(loss) if loss.strip() else None))
    if not out:
        raise ValueError("empty --trace")
    return out


def parse_trace(s: str) -> list[tuple[float, float]]:
    """``"1000:6,1:6"`` -> [(1000.0 Mbit/s, 6.0 s), (1.0, 6.0)] (a step's ``:LOSS`` is in :func:`trace_losses`)."""
    return [(bw, dur) for bw, dur, _ in _trace_steps(s)]


def trace_losses(s: str, default: float = 0.0) -> list[float]:
    """Each trace step's loss in percent: its ``:LOSS`` field, else ``default`` (``--loss``)."""
    return [default if loss is None else loss for _, _, loss in _trace_steps(s)]


def _shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for s in specs:
        n, _, dims = s.rpartition(":")
        shapes[n] = tuple(int(d) for d in dims.split("x"))
    return shapes


# ----------------------------------------------------------------------- inside the namespaces
def bench_feeds(specs: dict) -> dict:
    """Request inputs: floats ~ N(0, 1) (seed 0); integers and bools zero, which is a valid token
    id / type id / mask value for embedding lookups (random integers can index out of range)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {n: (rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating) else np.zeros(shape, dtype=dt))
            for n, (shape, dt) in specs.items()}


def time_models(args: argparse.Namespace) -> int:
    """Median onnxruntime latency (1 thread, default optimizations) of each model file, as JSON."""
    import numpy as np

    from onnxsplit.runtime_ort import make_session

    out = {}
    for path in args.time_models:
        import onnx

        model = onnx.load(path)
        sess = make_session(model, optimize=True, threads=1)
        from onnx import helper

        feeds = bench_feeds({i.name: ([d.dim_value or 1 for d in i.type.tensor_type.shape.dim],
                                      helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)) for i in model.graph.input})
        for _ in range(3):
            sess.run(None, feeds)
        lat, cpu, end = [], [], time.monotonic() + args.min_s
        while len(lat) < args.requests or time.monotonic() < end:
            c0, t0 = time.process_time(), time.perf_counter()
            sess.run(None, feeds)
            lat.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
            if len(lat) >= 3 and time.monotonic() > end + 30:
                break
        # cpu: this process's CPU time per run (all threads; under a quota, what the quota is charged)
        out[path] = {"median_ms": float(np.median(lat)), "n": len(lat), "cpu_median_ms": float(np.median(cpu))}
    print(json.dumps(out), flush=True)
    return 0


def ping(args: argparse.Namespace) -> int:
    """Per-request fixed cost: median round trip of a 4-byte request through the real client."""
    import numpy as np

    from onnxsplit.runtime import EdgeRunner

    r = EdgeRunner(args.bundle, args.urls, retries=1, timeout=30.0)
    x = {t.name: np.zeros([d or 1 for d in t.shape], dtype=np.float32) for t in r.bundle.cloud_inputs}
    for _ in range(3):
        r.cloud_infer(x)
    tot = []
    c0 = time.process_time()
    for _ in range(args.requests):
        t0 = time.perf_counter()
        r.cloud_infer(x)
        tot.append((time.perf_counter() - t0) * 1e3)
    cpu_ms = (time.process_time() - c0) * 1e3 / max(args.requests, 1)
    r.close()
    # the mean, not the median: under a CPU quota a request either fits in the period's quota or
    # stalls to the next period, and only the mean reflects the long-run cost (CPU time / quota)
    print(json.dumps({"mean_ms": float(np.mean(tot)), "median_ms": float(np.median(tot)),
                      "p95_ms": float(np.percentile(tot, 95)), "n": len(tot), "cpu_mean_ms": cpu_ms}), flush=True)
    return 0


def worker(args: argparse.Namespace) -> int:
    """Runs in the edge namespace: JSON commands on stdin, JSON answers on stdout."""

    from onnxsplit.dynamic import BandwidthEstimator, DynamicRunner

    urls = {int(k): v for k, v in json.loads(args.urls).items()}
    kw = {"optimize": True, "threads": 1, "timeout": 120.0, "retries": 1}
    dyn = DynamicRunner(args.bundle, urls, estimator=BandwidthEstimator(initial_mbps=10.0, alpha=0.5, method=args.estimator),
                        probe_interval_s=args.probe_interval_s, feedback=args.feedback, hedge=args.hedge, **kw)
    # forced plans never probe (probe_interval_s=0): an idle probe thread measurably changed latencies under the quota
    forced = {k: DynamicRunner(dyn.bundle, urls, plans=[k], force_plan=k, probe_on_start=False, probe_interval_s=0, **kw)
              for k in dyn.runners}
    first = dyn.runners[dyn.bundle.all_edge].bundle
    from onnxsplit.runtime.protocol import np_dtype

    feeds = bench_feeds({t.name: ([d or 1 for d in t.shape], np_dtype(t.datatype)) for t in first.edge_inputs})
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        runner = dyn if cmd["cmd"] in ("dynamic", "trace-dynamic") else forced[int(cmd["plan"])]
        lat, plans, ests, ts, fb, hedged = [], [], [], [], 0, 0
        t_cmd = time.monotonic()
        if cmd["cmd"].startswith("trace"):
            if cmd["cmd"] != "trace-dynamic":
                runner.infer(feeds)  # warm-up of the forced plan (connection, sessions)
            print(json.dumps({"started": True}), flush=True)
            t_start = time.monotonic()
            while time.monotonic() - t_start < float(cmd["duration_s"]):
                r = runner.infer(feeds)
                ts.append(time.monotonic() - t_start)
                lat.append(r.timings_ms["total"])
                plans.append(r.plan)
                ests.append(r.estimate_mbps)
                fb += int(r.fallback)
                hedged += int(r.hedged_from is not None)
        else:
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
                    hedged += int(r.hedged_from is not None)
                    if len(lat) >= int(cmd.get("min_n", 3)) and time.monotonic() > budget_end:
                        break
        ans = {"lat": lat, "plans": plans, "est": ests, "t": ts, "fallbacks": fb, "hedged": hedged}
        if runner is dyn:  # the estimator's samples during this command: (s since its start, Mbit/s, trusted, estimate)
            hist = [h for h in list(runner.estimator.history) if h[0] >= t_cmd]
            ans["samples"] = [[round(t - t_cmd, 4), round(s, 3), tr, round(e, 3)] for t, s, tr, e in hist]
        print(json.dumps(ans), flush=True)
    return 0


def serve(args: argparse.Namespace) -> int:
    """Runs in the cloud namespace: one embedded server for every plan (or for a plain bundle)."""
    if args.plain:
        from onnxsplit.runtime.server import CloudServer

        srv = CloudServer(args.bundle, host=args.host, port=args.port, threads=args.threads).start()
        print(json.dumps({"url": srv.url}), flush=True)
        sys.stdin.read()
        srv.stop()
        return 0
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


def mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _scaled(table, factor: float):  # noqa: ANN001, ANN202 - CostTable -> CostTable
    return dataclasses.replace(table, latency_ms={k: v * factor for k, v in table.latency_ms.items()},
                               overhead_ms=table.overhead_ms * factor, total_ms=table.total_ms * factor)


def _write_ping_bundle(out: Path) -> Path:
    """A one-node model (y = x + x, 4-byte input) split all-cloud: the per-request cost probe."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"], name="add")], "ping",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    out.mkdir(parents=True, exist_ok=True)
    onnx.save_model(m, out / "ping.onnx")
    subprocess.run([sys.executable, "-m", "onnxsplit", "split", str(out / "ping.onnx"), "--at", "0",
                    "-o", str(out / "ping_bundle"), "--force"], check=True, capture_output=True, cwd=ROOT)
    return out / "ping_bundle"


def write_plot(results: dict, out: Path, *, title: str) -> Path | None:
    """latency_vs_bandwidth.png in ``out`` from a run's results (``results["summary"]``: method ->
    bandwidth (Mbit/s, as a string) -> [median ms, p95 ms, plans]); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipped the PNG plot (pip install matplotlib)")
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, cells in results["summary"].items():
        bws = sorted(cells, key=float)
        ax.plot([float(b) for b in bws], [cells[b][0] for b in bws], marker="o", label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("uplink bandwidth (Mbit/s)")
    ax.set_ylabel("median end-to-end latency (ms)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = out / "latency_vs_bandwidth.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--bandwidths", default="1,5,20,100,1000mbps")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=8.0, help="max seconds per (plan, bandwidth) cell (>= 3 requests)")
    ap.add_argument("--passes", type=int, default=3,
                    help="measure each cell in this many blocks, cycling over the plans (default 3; 1 = one block per plan)")
    ap.add_argument("--input-shape", action="append", default=[])
    ap.add_argument("--edge-quota", type=float, default=0.1,
                    help="edge CPU quota in CPUs (cgroup, period 1 ms / quota), on core 0; default 0.1 (10x slower edge)")
    ap.add_argument("--edge-model", choices=["quota", "linear"], default="quota",
                    help="how a plan's edge latency is predicted from the calibration: 'quota' (default): the CFS "
                         "quota model of onnxsplit.cpu_quota (a short edge half between network waits runs "
                         "unthrottled); 'linear': every edge ms x the whole-model factor (runs before the sixteenth "
                         "session)")
    ap.add_argument("--calibrate", choices=["whole-model", "none"], default="whole-model",
                    help="scale the host-x86 costs by a whole-model timing on each side + measured per-request cost (default)")
    ap.add_argument("--quant", action=argparse.BooleanOptionalAction, default=True,
                    help="add the int8 plans (min-cut quantized afterwards, quantization-aware plan); default on")
    ap.add_argument("--calib", default=None, help="calibration data for the int8 plans (default: 32 random samples)")
    ap.add_argument("--max-accuracy-drop", default="1%", help="accuracy budget of the quantization-aware plan")
    ap.add_argument("--rtt", type=float, default=0.0,
                    help="added round-trip time in ms (netem; without sch_netem a userspace relay adds it)")
    ap.add_argument("--loss", default="0",
                    help="random loss of edge->cloud packets in percent, e.g. 1 or 1%% (iptables statistic drop; "
                         "needs the iptables package), in every measured cell and the trace, not in the calibration")
    ap.add_argument("--candidates", default="all", choices=["all", "bottlenecks"])
    ap.add_argument("--measure-plans", action=argparse.BooleanOptionalAction, default=True,
                    help="time every plan's halves on each side (onnxsplit measure-plans) and recompute the policy "
                         "from them (the 'onnxsplit measured' row; dynamic then uses that policy); default on")
    ap.add_argument("--measure-repeats", type=int, default=10, help="rounds of measure-plans per side (default 10)")
    ap.add_argument("--trace", default="",
                    help="bandwidth schedule MBPS:SECONDS[:LOSS%%],... run for every plan and dynamic; "
                         "a step's LOSS (edge->cloud, e.g. 1000:6:0,1:6:5%%) overrides --loss")
    ap.add_argument("--probe-interval-s", type=float, default=1.0, help="dynamic runner's background probe interval")
    ap.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True,
                    help="dynamic runner corrects its plan choice from observed latencies (onnxsplit.dynamic.PlanFeedback); "
                         "default on")
    ap.add_argument("--estimator", choices=["median", "ewma"], default="median",
                    help="dynamic runner's bandwidth estimator (onnxsplit.dynamic.BandwidthEstimator method; default "
                         "median, the library's; runs before the ninth session used ewma with alpha 0.5)")
    ap.add_argument("--hedge", action=argparse.BooleanOptionalAction, default=True,
                    help="dynamic runner answers a request that overruns its deadline with the local plan "
                         "(onnxsplit.dynamic, hedging); default on")
    ap.add_argument("--out", default="out/bench_e2e")
    ap.add_argument("--replot", metavar="DIR",
                    help="only redraw DIR/latency_vs_bandwidth.png from DIR/results.json of an earlier run")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ping", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--time-models", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--min-s", type=float, default=2.0, help=argparse.SUPPRESS)
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
    if args.ping:
        return ping(args)
    if args.time_models:
        return time_models(args)
    if args.replot:
        d = Path(args.replot)
        try:
            res = json.loads((d / "results.json").read_text())
            cmd = str(res.get("command", "")).split()
            title = Path(cmd[2]).name if len(cmd) > 2 else d.name
            return 0 if write_plot(res, d, title=title) else 1
        except (OSError, ValueError, KeyError, TypeError) as exc:
            ap.error(f"--replot {d}: not the output folder of a bench_e2e run ({exc})")
    if not args.model:
        ap.error("MODEL is required")
    try:
        bws = parse_bw(args.bandwidths)
        trace = parse_trace(args.trace) if args.trace else []
    except (ValueError, onnxsplit_errors()) as exc:
        ap.error(f"--bandwidths/--trace: {exc}")
    from tools.testbed.netns import parse_loss_pct

    try:
        args.loss = parse_loss_pct(args.loss)
    except ValueError as exc:
        ap.error(f"--loss: {exc}")
    losses = trace_losses(args.trace, args.loss) if args.trace else []  # per trace step, in percent
    if not 0 < args.edge_quota <= 1:
        ap.error("--edge-quota must be in (0, 1]")
    if args.passes < 1 or args.requests < args.passes:
        ap.error("--passes must be >= 1 and at most --requests")

    import onnx

    import onnxsplit
    from tools.testbed.netns import Testbed, available, loss_available

    reason = loss_available() if args.loss > 0 or any(losses) else available()
    if reason:
        print(f"bench_e2e: {reason}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    graph = onnxsplit.load_graph(args.model, input_shapes=_shapes(args.input_shape) or None)
    work = out / "work"
    work.mkdir(exist_ok=True)
    onnx.save_model(graph.model, work / "model.onnx")
    results: dict = {"command": " ".join(["python", "tools/bench_e2e.py"] + (argv if argv is not None else sys.argv[1:])),
                     "cells": {}, "dynamic": {}, "trace": {}}
    py = sys.executable
    env_cmd = ["env", f"PYTHONPATH={ROOT}", "OMP_NUM_THREADS=1"]
    me = [py, str(ROOT / "tools/bench_e2e.py")]
    with Testbed(edge_cpus="0", cloud_cpus="1", edge_quota=args.edge_quota) as tb:
        results["cpu_mode"] = tb.cpu_mode
        results["link_mode"] = tb.set_link(max(bws), rtt_ms=args.rtt)  # loss-free calibration
        results["loss_pct"] = args.loss
        print(f"testbed: edge {tb.cpu_mode}; link {results['link_mode']}", flush=True)
        calib = calibrate(args, graph, tb, work, env_cmd, me) if args.calibrate == "whole-model" else {
            "edge_factor": 1.0 / args.edge_quota, "int8_edge_factor": 1.0 / args.edge_quota, "cloud_factor": 1.0,
            "per_request_ms": 0.0, "method": "none: edge x 1/quota, cloud x 1, no per-request cost"}
        results["calibration"] = calib
        plans, res, picks, preds = build_plans(args, graph, bws, calib, out)
        results["plans"] = plans
        if args.measure_plans:
            picks["onnxsplit measured"], results["plan_timings"] = measure_plans(args, tb, out / "bundle", env_cmd, work, bws)
        results["picks"] = {m: {f"{bw:g}": k for bw, k in d.items()} for m, d in picks.items()}
        srv = tb.spawn_cloud(env_cmd + me + ["--serve", "--bundle", str(out / "bundle"), "--host", tb.cloud_ip, "--port", "9000"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        urls = _readline(srv, 300)
        if args.rtt > 0 and not tb.link_mode.startswith("netem"):  # no sch_netem: delay in a userspace relay
            served = {int(v.rsplit(":", 1)[1]) for v in urls.values()}  # one server for every plan: one port
            tb.start_delay_proxy({p + 1000: p for p in served}, rtt_ms=args.rtt)
            urls = {k: f"{v.rsplit(':', 1)[0]}:{int(v.rsplit(':', 1)[1]) + 1000}" for k, v in urls.items()}
            results["delay"] = "userspace relay (tools/testbed/delayproxy.py), rtt/2 each way"
        wk = tb.spawn_edge(env_cmd + me + ["--worker", "--bundle", str(out / "bundle"), "--urls", json.dumps(urls),
                                           "--probe-interval-s", str(args.probe_interval_s),
                                           *([] if args.feedback else ["--no-feedback"]),
                                           *([] if args.hedge else ["--no-hedge"]),
                                           "--estimator", args.estimator],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _readline(wk, 600)

        def send(cmd: dict) -> None:
            wk.stdin.write(json.dumps(cmd) + "\n")
            wk.stdin.flush()

        def ask(cmd: dict) -> dict:
            send(cmd)
            return _readline(wk, 900)

        for bw in bws:
            mode = tb.set_link(bw, rtt_ms=args.rtt, loss_pct=args.loss)
            print(f"\n== {bw:g} Mbit/s ({mode})", flush=True)
            d = ask({"cmd": "dynamic", "n": args.requests, "warmup": 0, "budget_s": args.budget_s, "min_s": 1.5})
            results["dynamic"][f"{bw:g}"] = d
            per_pass = -(-args.requests // args.passes)
            cells = {p["id"]: {"lat": [], "plans": [], "est": [], "t": [], "fallbacks": 0, "pass": []} for p in plans}
            for i in range(args.passes):  # each plan back to back in a block; the blocks cycle over the plans
                for p in plans:
                    r = ask({"cmd": "fixed", "plan": p["id"], "n": per_pass, "budget_s": args.budget_s / args.passes,
                             "min_n": 1})
                    c = cells[p["id"]]
                    for key in ("lat", "plans", "est", "t"):
                        c[key] += r[key]
                    c["fallbacks"] += r["fallbacks"]
                    c["pass"] += [i] * len(r["lat"])
            for p in plans:
                r = cells[p["id"]]
                results["cells"][f"{p['id']}@{bw:g}"] = r
                print(f"  plan {p['id']:2d} {p.get('label', p['kind']):>14s}: median {pct(r['lat'], 50):9.2f} ms  "
                      f"p95 {pct(r['lat'], 95):9.2f}  predicted {preds[p['id']][bw]:9.2f}  n={len(r['lat'])}", flush=True)
            print(f"  dynamic: median {pct(d['lat'], 50):9.2f} ms  p95 {pct(d['lat'], 95):9.2f}  plans used {sorted(set(d['plans']))} "
                  f"(n={len(d['lat'])}, {d.get('hedged', 0)} hedged)  est {[round(e, 1) for e in d['est']][:8]}", flush=True)
            if args.loss:  # packets the loss rule dropped at this bandwidth (all cells, dynamic included)
                results.setdefault("loss_drops", {})[f"{bw:g}"] = drops = tb.loss_drops()["up"]
                print(f"  loss: {drops} edge->cloud packets dropped", flush=True)
        if trace:
            results["trace_schedule"] = trace
            results["trace_loss_pct"] = losses
            for method in [*(p["id"] for p in plans), "dynamic"]:
                tb.set_link(trace[0][0], rtt_ms=args.rtt, loss_pct=losses[0])
                cmd = {"cmd": "trace-dynamic"} if method == "dynamic" else {"cmd": "trace", "plan": method}
                send({**cmd, "duration_s": sum(s for _, s in trace)})
                _readline(wk, 900)  # started (after the forced plan's warm-up request)
                t0 = time.monotonic()
                for i, (bw, secs) in enumerate(trace):
                    if i:
                        tb.set_link(bw, rtt_ms=args.rtt, loss_pct=losses[i])
                    time.sleep(max(0.0, t0 + sum(s for _, s in trace[: i + 1]) - time.monotonic()))
                r = _readline(wk, 900)
                results["trace"][str(method)] = r
                print(f"  trace {method!s:>8}: mean {mean(r['lat']):9.2f} ms  median {pct(r['lat'], 50):9.2f}  "
                      f"p95 {pct(r['lat'], 95):9.2f}  n={len(r['lat'])}  plans {sorted(set(r['plans']))}"
                      + (f"  {r.get('hedged', 0)} hedged" if method == "dynamic" else ""), flush=True)
        send({"cmd": "quit"})
        wk.wait(timeout=30)
        srv.stdin.close()
    report(args, results, plans, picks, preds, bws, trace, out)
    return 0


def calibrate(args, graph, tb, work: Path, env_cmd: list[str], me: list[str]) -> dict:  # noqa: ANN001
    """Whole-model timings on each side + the per-request cost; returns the scale factors."""
    import onnx

    from onnxsplit.cost.predict import predict
    from onnxsplit.profile import quantize_qdq

    fp32 = str(work / "model.onnx")
    files = [fp32]
    if args.quant:
        onnx.save_model(quantize_qdq(graph.model), work / "model_int8.onnx")
        files.append(str(work / "model_int8.onnx"))
    opts = ["--requests", "20", "--min-s", "2"]
    edge = json.loads(tb.exec_edge(env_cmd + me + ["--time-models", *files, *opts], capture=True, timeout=900)
                      .stdout.strip().splitlines()[-1])
    cloud = json.loads(tb.exec_cloud(env_cmd + me + ["--time-models", fp32, *opts], capture=True, timeout=900)
                       .stdout.strip().splitlines()[-1])
    p32 = predict(graph, "host-x86", "fp32")
    cal = {
        "method": "whole-model timing on each side scales the host-x86 per-node predictions; per-request cost from a 4-byte request",
        "edge_fp32_measured_ms": edge[fp32]["median_ms"], "cloud_fp32_measured_ms": cloud[fp32]["median_ms"],
        "host_x86_fp32_predicted_ms": p32.total_ms,
        "edge_factor": edge[fp32]["median_ms"] / p32.total_ms,
        "cloud_factor": cloud[fp32]["median_ms"] / p32.total_ms,
    }
    if args.quant:
        p8 = predict(graph, "host-x86", "int8")
        cal.update({"edge_int8_measured_ms": edge[files[1]]["median_ms"], "host_x86_int8_predicted_ms": p8.total_ms,
                    "int8_edge_factor": edge[files[1]]["median_ms"] / p8.total_ms})
    bundle = _write_ping_bundle(work)
    srv = tb.spawn_cloud(env_cmd + me + ["--serve", "--plain", "--bundle", str(bundle), "--host", tb.cloud_ip, "--port", "8999"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = _readline(srv, 120)["url"]
    r = json.loads(tb.exec_edge(env_cmd + me + ["--ping", "--bundle", str(bundle), "--urls", url, "--requests", "50"],
                                capture=True, timeout=300).stdout.strip().splitlines()[-1])
    srv.stdin.close()
    srv.wait(timeout=30)
    cal["per_request_ms"] = cal["per_request_mean_ms"] = r["mean_ms"]
    cal["per_request_median_ms"] = r["median_ms"]
    cal["per_request_p95_ms"] = r["p95_ms"]
    cal["edge_fp32_cpu_ms"] = edge[fp32]["cpu_median_ms"]
    cal["per_request_cpu_ms"] = r["cpu_mean_ms"]
    if args.edge_model == "quota" and tb.cpu_mode.startswith("cgroup"):
        from onnxsplit.cpu_quota import EdgeCpuQuota, fit_request_wait_ms

        q = EdgeCpuQuota(args.edge_quota * tb.edge_period_us / 1e3, tb.edge_period_us / 1e3, r["cpu_mean_ms"])
        cal["edge_quota"] = q.to_json()
        # the link's per-request cost becomes the off-CPU part of a 4-byte request; its CPU part is the quota's
        cal["per_request_ms"] = fit_request_wait_ms(q, r["mean_ms"], r["cpu_mean_ms"])
        cal["method"] += ("; edge latency by the CFS quota model (onnxsplit.cpu_quota): CPU = edge ms x quota "
                          "+ the request's CPU, off-CPU = network + cloud + per_request_ms")
    print("calibration: " + ", ".join(f"{k} {v:.3g}" for k, v in cal.items() if isinstance(v, float))
          + (f", edge_quota {cal['edge_quota']}" if "edge_quota" in cal else ""), flush=True)
    return cal


def measure_plans(args, tb, bundle: Path, env_cmd: list[str], work: Path, bws: list[float]):  # noqa: ANN001, ANN201
    """Time every plan's edge half in the edge namespace and cloud half in the cloud namespace
    (``onnxsplit measure-plans``, round-robin, 1 thread), rewrite the bundle's policy from those
    timings (``onnxsplit.plan_timing.apply_plan_timings``: what the dynamic runner then uses), and
    return (the static measured choice per bandwidth, the timings summary)."""
    from onnxsplit.plan_timing import apply_plan_timings, load_plan_timings, measured_latencies

    files = {}
    for side, run in (("edge", tb.exec_edge), ("cloud", tb.exec_cloud)):
        files[side] = work / f"timings_{side}.json"
        gap = (["--gap-ms", f"{tb.edge_period_us / 1e3:g}", "--block", "3"]
               if side == "edge" and tb.cpu_mode != "none" else [])
        run(env_cmd + [sys.executable, "-m", "onnxsplit", "measure-plans", str(bundle), "--side", side, "--threads", "1",
                       "--repeats", str(args.measure_repeats), "--min-s", "5", *gap, "-o", str(files[side])],
            capture=True, timeout=1800)
    apply_plan_timings(bundle, files["edge"], files["cloud"])
    from onnxsplit.dynamic_bundle import load_dynamic_bundle

    man = load_dynamic_bundle(bundle).manifest
    edge, cloud = (load_plan_timings(files[s]) for s in ("edge", "cloud"))
    lat = measured_latencies(man, edge, cloud, bws)
    up = {int(p["id"]): int(p["uplink_bytes"]) for p in man["plans"]}
    pick = {bw: min(lat, key=lambda k: (lat[k][f"{bw:g}"], up[k], k)) for bw in bws}
    half = {k: {"edge_ms": edge["plans"][str(k)]["median_ms"], "cloud_ms": cloud["plans"][str(k)]["median_ms"]}
            for k in sorted(int(x) for x in edge["plans"])}
    print("measured halves (median ms, edge / cloud): "
          + ", ".join(f"plan {k} {v['edge_ms']:.1f} / {v['cloud_ms']:.1f}" for k, v in half.items()), flush=True)
    print("onnxsplit measured picks: " + ", ".join(f"{bw:g} Mbit/s -> plan {k}" for bw, k in pick.items()), flush=True)
    return pick, {"half_ms": half, "latency_ms": {str(k): v for k, v in lat.items()},
                  "edge_rounds": edge["rounds"], "cloud_rounds": cloud["rounds"]}


def build_plans(args, graph, bws: list[float], cal: dict, out: Path):  # noqa: ANN001, ANN201
    """Policy table + baselines + int8 plans -> one dynamic bundle; returns (plans, res, picks, preds)."""
    from onnxsplit.cost.predict import predict
    from onnxsplit.dynamic_bundle import build_policy, plan_latencies, write_dynamic_bundle
    from onnxsplit.search import search

    quota = None
    if cal.get("edge_quota"):
        from onnxsplit.cpu_quota import EdgeCpuQuota

        quota = EdgeCpuQuota(**cal["edge_quota"])
    table, res = build_policy(graph, edge_factor=cal["edge_factor"], cloud_factor=cal["cloud_factor"], rtt_ms=args.rtt,
                              per_request_ms=cal["per_request_ms"], candidates=args.candidates, batch_sizes=(1,),
                              edge_quota=quota)
    names = res.problem.node_names
    base: dict[str, dict[float, tuple[str, ...]]] = {"chain": {}, "mincut": {}}
    for bw in bws:
        link = res.link.with_bandwidth(bw)
        for alg in base:
            p = search(res.problem, link, res.objective, alg)
            base[alg][bw] = tuple(names[i] for i in p.edge_nodes)
    quantized: list = []  # (label, qs, block, predicted)
    qkey: dict[tuple, int] = {}  # (edge set, excluded set) -> index in quantized
    qpick: dict[str, dict[float, object]] = {"mincut+int8": {}, "onnxsplit": {}}
    if args.quant:
        from onnxsplit.quant.budget import mixed_problem, quantize_for_split, reference_outputs, select_quantized_plan
        from onnxsplit.quant.calib import load_calibration
        from onnxsplit.quant.metrics import Budget, compare_runs
        from onnxsplit.quant.quantize import quantize_split
        from onnxsplit.split import split_model

        f32 = _scaled(res.edge_costs, cal["edge_factor"])
        i8 = _scaled(predict(graph, "host-x86", "int8"), cal["int8_edge_factor"])
        data = load_calibration(args.calib, graph, synthetic_samples=32)
        calib_d, held = data.split(0.25)
        budget = Budget.parse(args.max_accuracy_drop)
        grid = [float(g) for g in table.bandwidths_mbps]
        ref = None  # fp32 outputs on the held-out samples, for the post-hoc int8 plans' budget check

        def add(label: str, qs, block: dict, quantized_names) -> int:  # noqa: ANN001
            key = (frozenset(qs.edge_nodes), frozenset(qs.nodes_to_exclude))
            if key in qkey and block.get("within_budget") is True:  # same int8 plan, now with its budget check
                i = qkey[key]
                old_label, _, _, pred = quantized[i]
                quantized[i] = (old_label if label in old_label.split("=") else f"{old_label}={label}", qs, block, pred)
            if key not in qkey:
                mp = mixed_problem(res.problem, graph, f32, i8, quantized=quantized_names)
                pred = plan_latencies(mp, res.link, qs.edge_nodes, sorted(set(grid) | set(bws)))
                qkey[key] = len(quantized)
                quantized.append((label, qs, block, pred))
            return qkey[key]

        for bw in bws:
            edge = base["mincut"][bw]
            if edge:  # the fp32 min-cut, every edge node quantized afterwards (not fitted to the budget, only checked)
                parts = split_model(graph, set(edge))
                qs = quantize_split(parts, calib_d, boundary_dtype="int8")
                if ref is None:
                    ref = reference_outputs(graph.model, held.samples)
                ok, why = budget.check(compare_runs(ref, qs.run_many(held.samples), held.labels, names=qs.output_names))
                qpick["mincut+int8"][bw] = add("mincut+int8", qs, {"edge_precision": qs.edge_precision, "boundary_dtype": "int8",
                                                                   "method": "post-training, all edge nodes",
                                                                   "within_budget": ok, "budget_reasons": why[:3]},
                                               qs.quantized_nodes)
            else:
                qpick["mincut+int8"][bw] = ("fp32", edge)
            r_bw = dataclasses.replace(res, link=res.link.with_bandwidth(bw),
                                       plan=search(res.problem, res.link.with_bandwidth(bw), res.objective, "mincut"),
                                       alternatives=())
            sel = select_quantized_plan(graph, r_bw, calib_d, held, budget, edge_fp32=f32, edge_int8=i8, candidates=3)
            if sel.chosen.mode == "int8":
                parts = split_model(graph, set(sel.plan.edge_node_names))
                qs, block = quantize_for_split(graph, parts, data, budget=budget, nodes_to_exclude=sel.nodes_to_exclude)
                qpick["onnxsplit"][bw] = add("onnxsplit-int8", qs, block, qs.quantized_nodes)
            else:
                qpick["onnxsplit"][bw] = ("fp32", tuple(sel.plan.edge_node_names))
            print(f"  {bw:g} Mbit/s: quantization-aware choice {sel.chosen.mode} with {len(sel.plan.edge_node_names)} edge nodes",
                  flush=True)
    extra = [*base["chain"].values(), *base["mincut"].values(),
             *(v[1] for d in qpick.values() for v in d.values() if isinstance(v, tuple))]
    manifest = write_dynamic_bundle(graph, table, out / "bundle", source=args.model, force=True, extra_plans=extra,
                                    predicted=(res.problem, res.link, res.objective), quantized_plans=quantized,
                                    quantized_policy=bool(quantized),
                                    settings={"calibration": cal, "edge_quota": args.edge_quota, "rtt_ms": args.rtt})
    plans = manifest["plans"]
    fp32_id = {frozenset(p["edge_node_names"]): p["id"] for p in plans if p["precision"] == "fp32"}
    n_fp32 = len(fp32_id)
    for i, (_, _, block, _) in enumerate(quantized):  # int8 plan n_fp32 + i: did it meet the accuracy budget?
        plans[n_fp32 + i]["within_budget"] = block.get("within_budget")
    picks: dict[str, dict[float, int]] = {
        "all-edge": {bw: manifest["all_edge_plan"] for bw in bws},
        "all-cloud": {bw: manifest["all_cloud_plan"] for bw in bws},
        "chain": {bw: fp32_id[frozenset(base["chain"][bw])] for bw in bws},
        "mincut": {bw: fp32_id[frozenset(base["mincut"][bw])] for bw in bws},
    }
    for m, d in qpick.items():
        if d:
            picks[m] = {bw: (fp32_id[frozenset(v[1])] if isinstance(v, tuple) else n_fp32 + int(v)) for bw, v in d.items()}
    preds: dict[int, dict[float, float]] = {}
    for p in plans:
        if p["precision"] == "fp32":
            lat = plan_latencies(res.problem, res.link, p["edge_node_names"], bws)
            preds[p["id"]] = {bw: lat[f"{bw:g}"] for bw in bws}
        else:
            preds[p["id"]] = {bw: float(p["predicted_ms"][f"{bw:g}"]) for bw in bws}
    print(f"{len(plans)} candidate plans, bundle {manifest['total_size_bytes'] / 1e6:.1f} MB on disk "
          f"({manifest['plans_size_bytes'] / 1e6:.1f} MB as standalone plans; weights shared)")
    for p in plans:
        print(f"  plan {p['id']}: {p.get('label', p['kind']):14s} {p['precision']} edge nodes {p['edge_nodes']:4d}  "
              f"uplink {p['uplink_bytes']:>9d} B")
    return plans, res, picks, preds


def phase_medians(trace_results: dict, schedule: list[tuple[float, float]]) -> dict[str, list[float]]:
    """Per method, the median latency of the requests that *started* in each phase of the schedule
    (``t`` is a request's completion time from the trace start, ``lat`` its latency in ms); a phase
    in which no request started gets the latency of the request in flight through it."""
    import numpy as np

    edges = np.cumsum([0.0] + [s for _, s in schedule])
    out = {}
    for k, r in trace_results.items():
        end = np.asarray(r["t"], dtype=float)
        lat = np.asarray(r["lat"], dtype=float)
        start = end - lat / 1e3
        meds = []
        for i in range(len(schedule)):
            m = (start >= edges[i]) & (start < edges[i + 1])
            if not m.any():  # a request started before the phase and was still running through it
                m = (start < edges[i]) & (end >= edges[i + 1])
            meds.append(float(np.median(lat[m])) if m.any() else float("nan"))
        out[k] = meds
    return out


def best_measured(plans: list[dict], med, bw: float, *, within_budget_only: bool = False) -> int:  # noqa: ANN001
    """Id of the plan with the lowest measured median at ``bw`` (``med(id, bw)``); with
    ``within_budget_only``, int8 plans that failed the accuracy budget (``within_budget: False``)
    are not candidates (fp32 plans and unchecked ones are)."""
    pool = [p for p in plans if not (within_budget_only and p.get("within_budget") is False)]
    return min(pool, key=lambda p: med(p["id"], bw))["id"]


def report(args, results: dict, plans: list[dict], picks: dict, preds: dict, bws: list[float], trace, out: Path) -> None:  # noqa: ANN001
    cells = results["cells"]

    def med(k: int, bw: float) -> float:
        return pct(cells[f"{k}@{bw:g}"]["lat"], 50)

    over_budget = [p["id"] for p in plans if p.get("within_budget") is False]
    methods = [*picks, "dynamic", "oracle", *(["oracle within budget"] if over_budget else [])]
    summary: dict = {m: {} for m in methods}
    for bw in bws:
        for m, d in picks.items():
            lat = cells[f"{d[bw]}@{bw:g}"]["lat"]
            summary[m][bw] = (pct(lat, 50), pct(lat, 95), d[bw])
        for m, only in (("oracle", False), ("oracle within budget", True)):
            if m in summary:
                best = best_measured(plans, med, bw, within_budget_only=only)
                lat = cells[f"{best}@{bw:g}"]["lat"]
                summary[m][bw] = (pct(lat, 50), pct(lat, 95), best)
        d = results["dynamic"][f"{bw:g}"]
        summary["dynamic"][bw] = (pct(d["lat"], 50), pct(d["lat"], 95), sorted(set(d["plans"])))
    chosen = "onnxsplit" if "onnxsplit" in summary else "mincut"
    lines = ["| method | " + " | ".join(f"{bw:g} Mbit/s" for bw in bws) + " |", "|" + "---|" * (len(bws) + 1)]
    for m in methods:
        row = []
        for bw in bws:
            v, p95, k = summary[m][bw]
            row.append(f"{v:.1f} / {p95:.1f} (plan {k if not isinstance(k, list) else ','.join(map(str, k))})")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    targets = ["oracle", *(["oracle within budget"] if over_budget else [])]  # broken int8 plans are no fair target
    keys = {(chosen, "oracle"): "chosen_over_oracle", (chosen, "oracle within budget"): "chosen_over_oracle_within_budget",
            ("onnxsplit measured", "oracle"): "measured_over_oracle",
            ("onnxsplit measured", "oracle within budget"): "measured_over_oracle_within_budget",
            ("dynamic", "oracle"): "dynamic_over_oracle", ("dynamic", "oracle within budget"): "dynamic_over_oracle_within_budget"}
    for target in targets:
        for m in (chosen, "onnxsplit measured", "dynamic"):
            if m not in summary:
                continue
            r = {bw: summary[m][bw][0] / summary[target][bw][0] for bw in bws}
            lines.append(f"| {m} / {target} | " + " | ".join(f"{r[bw]:.2f}" for bw in bws) + " |")
            results[keys[(m, target)]] = {f"{bw:g}": v for bw, v in r.items()}
    if over_budget:
        lines.append(f"\nplans over the accuracy budget ({args.max_accuracy_drop}): {', '.join(map(str, over_budget))}")
    pred_lines = ["| plan | label | precision | edge nodes | uplink B | " + " | ".join(f"{bw:g}: pred / meas" for bw in bws) + " |",
                  "|" + "---|" * (len(bws) + 5)]
    for p in plans:
        row = [f"{preds[p['id']][bw]:.1f} / {med(p['id'], bw):.1f}" for bw in bws]
        pred_lines.append(f"| {p['id']} | {p.get('label', p['kind'])} | {p['precision']} | {p['edge_nodes']} | {p['uplink_bytes']} | "
                          + " | ".join(row) + " |")
    cal = results["calibration"]
    loss = (f" (calibration); measured cells: loss {results['loss_pct']:g}% of edge->cloud packets (iptables statistic drop)"
            if results.get("loss_pct") else "")
    text = (f"edge: {results['cpu_mode']}; link: {results['link_mode']}{loss}\n"
            f"calibration: {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in cal.items()})}\n\n"
            "latency ms, median / p95 (plan id)\n\n" + "\n".join(lines)
            + "\n\npredicted vs measured median (ms)\n\n" + "\n".join(pred_lines) + "\n")
    if trace:
        tr = results["trace"]
        phases = phase_medians(tr, trace)
        score = {k: mean(v) for k, v in phases.items()}  # every phase counts once, however few requests it served
        hdr = " | ".join(f"{bw:g} Mbit/s" for bw, _ in trace)
        tl = [f"| method | {hdr} | phase mean | requests | plans used |", "|---" * (len(trace) + 4) + "|"]
        static = [k for k in tr if k != "dynamic"]
        # as for the oracle: an int8 plan that broke the accuracy budget is no static alternative
        best_static = min((k for k in static if plans[int(k)].get("within_budget") is not False), key=lambda k: score[k])
        for k in [*sorted(static, key=int), "dynamic"]:
            r = tr[k]
            label = f"plan {k} ({plans[int(k)].get('label', plans[int(k)]['kind'])})" if k != "dynamic" else "dynamic"
            if k == best_static:
                label += " = best static"
            elif k != "dynamic" and plans[int(k)].get("within_budget") is False:
                label += " (over the accuracy budget)"
            tl.append(f"| {label} | " + " | ".join(f"{m:.1f}" for m in phases[k]) + f" | {score[k]:.1f} | {len(r['lat'])} | "
                      f"{','.join(map(str, sorted(set(r['plans']))))} |")
        tloss = results.get("trace_loss_pct") or [0.0] * len(trace)
        sched = ", ".join(f"{bw:g} Mbit/s for {s:g} s" + (f" at {lo:g}% loss" if lo else "") for (bw, s), lo in zip(trace, tloss))
        gain = score[best_static] / score["dynamic"]
        # the best candidate of each phase on its own (a different plan may win each phase)
        fair = [k for k in static if plans[int(k)].get("within_budget") is not False]
        phase_best = [min(phases[k][i] for k in fair) for i in range(len(trace))]
        per_phase = [d / b for d, b in zip(phases["dynamic"], phase_best)]
        text += (f"\ntrace ({sched}; requests back to back): median latency (ms) of the requests started in each phase, "
                 "and their mean over phases\n\n" + "\n".join(tl)
                 + f"\n\nbest static (plan {best_static}) phase mean / dynamic phase mean = {gain:.2f}x\n"
                 + "dynamic / best plan of each phase: " + " / ".join(f"{r:.2f}" for r in per_phase) + "\n")
        results["trace_summary"] = {"phase_medians_ms": phases, "phase_mean_ms": score, "best_static": best_static,
                                    "best_static_over_dynamic": gain, "dynamic_over_phase_best": per_phase}
    print("\n" + text)
    results["summary"] = {m: {f"{bw:g}": v for bw, v in s.items()} for m, s in summary.items()}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "table.md").write_text(text)
    write_plot(results, out, title=Path(args.model).name)
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}")


if __name__ == "__main__":
    sys.exit(main())
