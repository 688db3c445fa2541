"""Measured plan timings for a dynamic bundle, and the policy they give.

The policy table of ``compile --dynamic`` is computed from *predicted* per-node costs. Before
deployment, the same bundle can be timed where it will run -- the edge half of every plan on the
edge device, the cloud half on the server -- and the policy recomputed from those timings and the
link model. That removes the cost model's error from the choice between plans (the error that
matters most is between plans predicted a few percent apart); the network part stays a model.

Contract:

* :func:`time_plans` runs one side of every plan of a dynamic bundle with onnxruntime (the
  runtime's session options: ``optimize``, ``threads``) and returns a plain dict (schema
  ``onnxsplit.plan-timings/1``). Plans are timed **round-robin** (one run of each plan per round),
  so a slow period of the device (thermal, a CPU quota, another process) hits every plan alike
  instead of whichever plan happened to be timed then. The cloud side is fed what the edge half
  actually produces (the edge half runs first, untimed), so data-dependent kernels see real data.
* :func:`measured_latencies` turns an edge and a cloud timing file into each plan's single-request
  latency at every grid bandwidth: ``edge_ms + cloud_ms + uplink/bw + downlink/bw_down + rtt +
  per_request`` (the last four only when the plan has a cloud half), with the link parameters the
  bundle was compiled with (manifest ``link``) unless others are given. When that link records an
  edge CPU quota (``link.edge_quota``, :mod:`onnxsplit.cpu_quota`), ``per_request_ms`` there is the
  off-CPU part of the per-request cost, and the client's CPU per request (``request_cpu_ms``) is
  added at full speed: the edge half is timed after an idle gap, as in service, so its measured
  time already holds its own throttling.
* :func:`apply_plan_timings` rewrites ``OUT/policy.json`` (atomically) with batch-1 rows chosen
  from those latencies (at the grid bandwidths; a switch between two grid points is moved to the
  exact crossing of the two plans' latencies) among the plans marked ``policy_candidate`` (fp32 plans, and int8 plans
  that met their accuracy budget); rows for other batch sizes are kept; the predicted rows are
  kept as ``rows_predicted``. ``DynamicRunner`` then uses the measured policy, and its feedback
  (:class:`onnxsplit.dynamic.PlanFeedback`) corrects the measured model with each plan's observed
  latencies (:func:`bundle_plan_terms` gives it the model terms).

CLI: ``onnxsplit measure-plans OUT --side edge -o edge.json`` (on the edge device), the same with
``--side cloud`` on the server, then ``onnxsplit policy OUT --timings edge.json cloud.json``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

SCHEMA = "onnxsplit.plan-timings/1"
SIDES = ("edge", "cloud")

__all__ = ["SCHEMA", "time_plans", "load_plan_timings", "measured_terms", "measured_latencies", "measured_policy_rows",
           "apply_plan_timings", "manifest_digest", "bundle_plan_terms"]


def manifest_digest(bundle_root: str | Path) -> str:
    """sha256 of the dynamic bundle's manifest.json: ties a timing file to the bundle it timed."""
    import hashlib

    return hashlib.sha256((Path(bundle_root) / "manifest.json").read_bytes()).hexdigest()


def _input_feeds(dyn: Any, feeds: Mapping[str, np.ndarray] | None, seed: int) -> dict[str, np.ndarray]:
    """The model's inputs: ``feeds`` if given, else random ones (onnxsplit.runtime_ort.random_feeds)."""
    if feeds is not None:
        return {k: np.asarray(v) for k, v in feeds.items()}
    import onnx

    from .runtime_ort import random_feeds

    path = dyn.plan_dir(dyn.all_edge) / "edge" / "model.onnx"
    return random_feeds(onnx.load(str(path), load_external_data=False), seed=seed)


def time_plans(
    bundle: str | Path,
    side: str,
    *,
    repeats: int = 20,
    warmup: int = 2,
    min_s: float = 0.0,
    max_s: float = 600.0,
    threads: int | None = None,
    optimize: bool = True,
    feeds: Mapping[str, np.ndarray] | None = None,
    plans: list[int] | None = None,
    seed: int = 0,
    gap_ms: float = 0.0,
    block: int = 1,
) -> dict:
    """Time ``side`` ("edge" or "cloud") of every plan of the dynamic bundle at ``bundle``.

    Each round runs each plan's half once; ``warmup`` rounds are discarded, then rounds run until
    ``repeats`` rounds *and* ``min_s`` seconds are done (at most ``max_s`` seconds, at least 3
    rounds). ``gap_ms``: idle time before each run of a plan that has a cloud half, whose edge
    waits for the network between requests in service (all-edge plans run back to back, as they
    do in service); on a device emulated with a CPU quota, use at least the quota period, or a
    split plan's small edge half is timed with the quota its predecessor in the round used up.
    ``block``: runs of one plan per round (default 1, pure round-robin); with ``block > 1`` each
    plan's block starts with one untimed run and the rest run back to back, so every timed run
    follows a run of the same plan, as in service (matters on a CPU-quota-emulated device, whose
    speed depends on what ran just before). Plans without that half (the all-cloud plan's edge, the all-edge plans' cloud) get
    ``0`` ms and ``"absent": true``. Returns the timing document (see the module docstring).
    """
    from .dynamic_bundle import load_dynamic_bundle
    from .runtime import load_bundle

    if side not in SIDES:
        raise UsageError(f"side must be 'edge' or 'cloud', got {side!r}")
    if repeats < 1 or warmup < 0 or block < 1:
        raise UsageError("repeats and block must be >= 1 and warmup >= 0")
    dyn = load_dynamic_bundle(bundle)
    ids = [int(p["id"]) for p in dyn.plans] if plans is None else [int(k) for k in plans]
    unknown = sorted(set(ids) - {int(p["id"]) for p in dyn.plans})
    if unknown:
        raise UsageError(f"plan {unknown[0]} is not in {dyn.root} (plans: 0..{len(dyn.plans) - 1})")
    x = _input_feeds(dyn, feeds, seed)
    jobs: dict[int, tuple[Any, dict[str, np.ndarray]]] = {}
    absent: list[int] = []
    waits: set[int] = set()  # plans with a cloud half: idle gap_ms before each run
    for k in ids:
        b = load_bundle(dyn.plan_dir(k))
        missing = [n for n in b.input_names if n not in x]
        if missing:
            raise UsageError(f"plan {k} needs input '{missing[0]}', which the feeds lack (inputs: {', '.join(sorted(x))})")
        if b.cloud_path is not None:
            waits.add(k)
        path = b.edge_path if side == "edge" else b.cloud_path
        if path is None:
            absent.append(k)
            continue
        if side == "edge":
            sess = b.session("edge", optimize=optimize, threads=threads)
            wanted = {i.name for i in sess.get_inputs()}
            jobs[k] = (sess, {n: v for n, v in x.items() if n in wanted})
        else:
            edge_out: dict[str, np.ndarray] = {}
            if b.edge_path is not None:  # what the server will receive: the edge half's real outputs
                es = b.session("edge", optimize=optimize, threads=threads)
                wanted = {i.name for i in es.get_inputs()}
                names = [o.name for o in es.get_outputs()]
                edge_out = dict(zip(names, es.run(names, {n: v for n, v in x.items() if n in wanted})))
            jobs[k] = (b.session("cloud", optimize=optimize, threads=threads), b.boundary_feeds(x, edge_out))
    lat: dict[int, list[float]] = {k: [] for k in jobs}
    t_start = time.monotonic()
    rounds = 0
    while True:
        done = rounds >= warmup + repeats and time.monotonic() - t_start >= min_s
        timed_enough = rounds >= warmup + 3
        if done or (timed_enough and time.monotonic() - t_start > max_s):
            break
        for k, (sess, f) in jobs.items():
            for j in range(block + (block > 1)):  # a block > 1 starts with one untimed run
                if gap_ms > 0 and k in waits:
                    time.sleep(gap_ms / 1e3)
                t0 = time.perf_counter()
                sess.run(None, f)
                if rounds >= warmup and (block == 1 or j > 0):
                    lat[k].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    out_plans: dict[str, dict] = {}
    for k in ids:
        if k in absent:
            out_plans[str(k)] = {"median_ms": 0.0, "mean_ms": 0.0, "p95_ms": 0.0, "n": 0, "absent": True}
        else:
            v = np.asarray(lat[k])
            out_plans[str(k)] = {"median_ms": float(np.median(v)), "mean_ms": float(v.mean()),
                                 "p95_ms": float(np.percentile(v, 95)), "n": int(v.size)}
    from .bundle import versions

    return {
        "schema": SCHEMA,
        "side": side,
        "bundle_manifest_sha256": manifest_digest(dyn.root),
        "device": {"hostname": socket.gethostname(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "session": {"optimize": bool(optimize), "threads": threads}, "gap_ms": float(gap_ms), "block": int(block),
        "rounds": rounds - warmup, "warmup_rounds": warmup, "seconds": round(time.monotonic() - t_start, 3),
        "inputs": "given" if feeds is not None else f"random (seed {seed})",
        "plans": out_plans,
        "versions": versions(),
    }


def load_plan_timings(path: str | Path, *, side: str | None = None, bundle: str | Path | None = None) -> dict:
    """Read and validate a timing file; with ``bundle``, check it timed that bundle."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such timing file (write it with `onnxsplit measure-plans OUT --side edge -o {path}`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a JSON timing file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UsageError(f"{path}: schema {doc.get('schema') if isinstance(doc, dict) else None!r}, expected {SCHEMA!r} "
                         "(written by `onnxsplit measure-plans`)")
    if doc.get("side") not in SIDES or (side is not None and doc["side"] != side):
        raise UsageError(f"{path}: side {doc.get('side')!r}, expected {side or ' or '.join(SIDES)!r}")
    plans = doc.get("plans")
    if not isinstance(plans, dict) or not plans:
        raise UsageError(f"{path}: no 'plans' timings")
    for k, v in plans.items():
        ms = v.get("median_ms") if isinstance(v, dict) else None
        if not k.isdigit() or not isinstance(ms, (int, float)) or not (ms >= 0 and np.isfinite(ms)):
            raise UsageError(f"{path}: plan {k!r} has no finite median_ms >= 0")
    if bundle is not None and doc.get("bundle_manifest_sha256") != manifest_digest(bundle):
        raise UsageError(f"{path} timed another bundle (its manifest sha256 differs from {Path(bundle) / 'manifest.json'}); "
                         "re-run `onnxsplit measure-plans` on this bundle")
    return doc


def measured_terms(manifest: dict, edge: Mapping, cloud: Mapping, *, link: Mapping | None = None,
                   stat: str = "median_ms") -> dict[int, tuple[float, float]]:
    """Each policy-candidate plan's latency as ``a + b / bandwidth_mbps`` (ms): ``a`` = measured edge
    half + cloud half (+ RTT + per-request cost when the plan has a cloud half), ``b`` = its
    uplink bytes and downlink bytes (over the down/up bandwidth ratio) in ms x Mbit/s."""
    lk = dict(link if link is not None else manifest.get("link") or {})
    if not lk:
        raise UsageError("the bundle's manifest has no 'link' (written before onnxsplit recorded it): "
                         "pass the link (rtt_ms, per_request_ms) or recompile the bundle")
    rtt, per_req = float(lk.get("rtt_ms", 0.0)), float(lk.get("per_request_ms", 0.0))
    if isinstance(lk.get("edge_quota"), Mapping):  # the client's CPU per request, at full speed (see the module doc)
        per_req += float(lk["edge_quota"].get("request_cpu_ms", 0.0))
    ratio = float(lk.get("downlink_over_uplink", 1.0))
    out: dict[int, tuple[float, float]] = {}
    for p in manifest["plans"]:
        if not p.get("policy_candidate", p.get("precision") == "fp32"):
            continue
        k = int(p["id"])
        halves = {}
        for side, doc in (("edge", edge), ("cloud", cloud)):
            t = doc["plans"].get(str(k))
            if t is None:
                raise UsageError(f"the {side} timings have no plan {k}; time every plan (onnxsplit measure-plans without --plans)")
            halves[side] = float(t[stat])
        if p["kind"] == "all-edge":
            out[k] = (halves["edge"] + halves["cloud"], 0.0)
        else:
            up, down = int(p["uplink_bytes"]), int(p.get("downlink_bytes", 0))
            out[k] = (halves["edge"] + halves["cloud"] + rtt + per_req, (up + down / ratio) * 8.0 / 1e3)
    if not out:
        raise UsageError("no plan of the bundle is a policy candidate")
    return out


def measured_latencies(manifest: dict, edge: Mapping, cloud: Mapping, grid: list[float], *,
                       link: Mapping | None = None, stat: str = "median_ms") -> dict[int, dict[str, float]]:
    """Each policy-candidate plan's latency (ms) at every grid bandwidth (keys ``f"{bw:g}"``) from
    measured half timings (``edge``/``cloud``: timing documents) and the link model
    (:func:`measured_terms`)."""
    terms = measured_terms(manifest, edge, cloud, link=link, stat=stat)
    return _latencies(terms, grid)


def _latencies(terms: Mapping[int, tuple[float, float]], grid: list[float]) -> dict[int, dict[str, float]]:
    return {k: {f"{bw:g}": a + b / bw for bw in grid} for k, (a, b) in terms.items()}


def bundle_plan_terms(dyn: Any) -> dict[int, tuple[float, float]]:
    """Each policy-candidate plan's batch-1 latency as ``(a_ms, b)`` with latency ``a + b / bandwidth_mbps``,
    for a loaded :class:`~onnxsplit.dynamic_bundle.DynamicBundle`.

    From the measured half timings when ``onnxsplit policy --timings`` was applied (the policy's
    ``measured`` block, with its link; :func:`measured_terms`); otherwise fitted by least squares in
    ``1/bandwidth`` to each candidate plan's ``predicted_ms`` at the grid bandwidths (exact for the
    search's latency model, which is of that form). Plans without either are left out; ``{}`` when
    no plan has them."""
    doc = getattr(dyn, "policy_doc", None) or {}
    meas = doc.get("measured") or {}
    half = meas.get("half_ms") or {}
    if half:
        edge = {"plans": {k: {"median_ms": float(v["edge"])} for k, v in half.items()}}
        cloud = {"plans": {k: {"median_ms": float(v["cloud"])} for k, v in half.items()}}
        try:
            return measured_terms(dyn.manifest, edge, cloud, link=meas.get("link"))
        except UsageError:
            pass  # fall back to the predictions
    out: dict[int, tuple[float, float]] = {}
    for p in dyn.manifest.get("plans", []):
        pred = p.get("predicted_ms") or {}
        if not p.get("policy_candidate", p.get("precision") == "fp32") or len(pred) < 1:
            continue
        bw = np.array([float(g) for g in pred], dtype=float)
        ms = np.array([float(v) for v in pred.values()], dtype=float)
        ok = np.isfinite(bw) & np.isfinite(ms) & (bw > 0)
        if not ok.any():
            continue
        bw, ms = bw[ok], ms[ok]
        if p.get("kind") == "all-edge" or len(bw) == 1:
            out[int(p["id"])] = (float(np.median(ms)), 0.0)
            continue
        (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(bw), 1.0 / bw], axis=1), ms, rcond=None)
        out[int(p["id"])] = (float(a), max(float(b), 0.0))
    return out


def measured_policy_rows(manifest: dict, grid: list[float], lat: dict[int, dict[str, float]],
                         terms: Mapping[int, tuple[float, float]] | None = None) -> list[dict]:
    """Batch-1 policy rows: at each grid bandwidth the lowest measured-latency plan (ties: fewer
    uplink bytes, then lower id), as :func:`onnxsplit.dynamic_bundle.policy_from_predictions`.
    With ``terms`` (:func:`measured_terms`), a switch between two grid points moves to the exact
    bandwidth where the two plans' latencies cross, instead of the grid point after it."""
    from .dynamic_bundle import policy_from_predictions

    entries = [{"id": int(p["id"]), "uplink_bytes": int(p["uplink_bytes"]), "predicted_ms": lat[int(p["id"])]}
               for p in manifest["plans"] if int(p["id"]) in lat]
    rows = policy_from_predictions(entries, grid)
    if terms:
        g = sorted(float(x) for x in grid)
        for prev, row in zip(rows, rows[1:]):
            (a0, b0), (a1, b1) = terms[prev["plan"]], terms[row["plan"]]
            at = g.index(row["from_mbps"])
            if at == 0 or a0 <= a1:  # the new plan must be the one with the lower fixed part
                continue
            x = (b1 - b0) / (a0 - a1)
            if g[at - 1] < x < row["from_mbps"]:
                prev["to_mbps"] = row["from_mbps"] = float(x)
                row["predicted_ms"] = float(a1 + b1 / x)
    return rows


def apply_plan_timings(bundle: str | Path, edge_file: str | Path, cloud_file: str | Path, *,
                       link: Mapping | None = None) -> dict:
    """Recompute ``OUT/policy.json``'s batch-1 rows from measured timings (see the module
    docstring); returns the new policy document. The file is replaced atomically."""
    root = Path(bundle)
    from .dynamic_bundle import load_dynamic_bundle

    dyn = load_dynamic_bundle(root)
    edge = load_plan_timings(edge_file, side="edge", bundle=root)
    cloud = load_plan_timings(cloud_file, side="cloud", bundle=root)
    ppath = root / dyn.manifest.get("policy", "policy.json")
    policy = json.loads(ppath.read_text())
    grid = [float(g) for g in policy["table"]["bandwidths_mbps"]]
    terms = measured_terms(dyn.manifest, edge, cloud, link=link)
    lat = _latencies(terms, grid)
    rows = measured_policy_rows(dyn.manifest, grid, lat, terms)
    predicted = policy.get("rows_predicted", policy["rows"])
    policy["rows_predicted"] = predicted
    policy["rows"] = rows + [r for r in predicted if int(r["batch_size"]) != 1]
    policy["measured"] = {
        "method": "measured half timings (median, round-robin) + the link model; batch size 1",
        "link": dict(link if link is not None else dyn.manifest["link"]),
        "edge": {"file": Path(edge_file).name, "device": edge.get("device"), "session": edge.get("session")},
        "cloud": {"file": Path(cloud_file).name, "device": cloud.get("device"), "session": cloud.get("session")},
        "half_ms": {str(k): {"edge": edge["plans"][str(k)]["median_ms"], "cloud": cloud["plans"][str(k)]["median_ms"]}
                    for k in lat},
    }
    tmp = ppath.with_name(f".{ppath.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(policy, indent=1) + "\n")
    os.replace(tmp, ppath)
    return policy


# ------------------------------------------------------------------------------------ CLI
def _load_feeds(path: str, bundle: str) -> dict[str, np.ndarray]:
    """``--input``: the model's inputs, read as ``onnxsplit run --input`` reads them."""
    from .dynamic_bundle import load_dynamic_bundle
    from .runtime import load_bundle
    from .runtime.cli import load_inputs

    dyn = load_dynamic_bundle(bundle)
    return load_inputs(path, load_bundle(dyn.plan_dir(dyn.all_edge)).input_names)


def cmd_measure_plans(args: Any) -> int:
    from .cli import table

    if args.output and Path(args.output).is_dir():
        raise UsageError(f"-o {args.output} is a folder; give a file name, e.g. {Path(args.output) / (args.side + '.json')}")
    plans = [int(x) for x in args.plans.split(",")] if args.plans else None
    doc = time_plans(args.bundle, args.side, repeats=args.repeats, warmup=args.warmup, min_s=args.min_s,
                     threads=args.threads, optimize=not args.no_optimize,
                     feeds=_load_feeds(args.input, args.bundle) if args.input else None, plans=plans, gap_ms=args.gap_ms, block=args.block)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, out)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    rows = [(k, "-" if v.get("absent") else f"{v['median_ms']:.3f}", "-" if v.get("absent") else f"{v['mean_ms']:.3f}",
             "-" if v.get("absent") else f"{v['p95_ms']:.3f}", v["n"]) for k, v in doc["plans"].items()]
    print(table(["plan", f"{args.side} median ms", "mean ms", "p95 ms", "runs"], rows))
    print(f"\n{doc['rounds']} rounds (round-robin over the plans) in {doc['seconds']:.1f} s"
          + (f"; wrote {args.output}" if args.output else ""))
    return 0


def cmd_policy(args: Any) -> int:
    from .cli import table
    from .dynamic_bundle import load_dynamic_bundle

    if args.timings:
        link = None
        if args.rtt is not None or args.per_request_ms is not None:
            dyn = load_dynamic_bundle(args.bundle)
            link = dict(dyn.manifest.get("link") or {"downlink_over_uplink": 1.0, "rtt_ms": 0.0, "per_request_ms": 0.0})
            if args.rtt is not None:
                from .units import parse_time_ms

                link["rtt_ms"] = parse_time_ms(args.rtt)
            if args.per_request_ms is not None:
                link["per_request_ms"] = float(args.per_request_ms)
        apply_plan_timings(args.bundle, args.timings[0], args.timings[1], link=link)
    dyn = load_dynamic_bundle(args.bundle)
    policy = json.loads((dyn.root / dyn.manifest.get("policy", "policy.json")).read_text())
    if args.json:
        print(json.dumps(policy, indent=2))
        return 0
    plans = {int(p["id"]): p for p in dyn.plans}
    rows = [(r["batch_size"], f"{r['from_mbps']:.3g}", "inf" if r["to_mbps"] is None else f"{r['to_mbps']:.3g}", r["plan"],
             plans[int(r["plan"])].get("label", plans[int(r["plan"])]["kind"]), plans[int(r["plan"])]["precision"],
             plans[int(r["plan"])]["uplink_bytes"], f"{r['predicted_ms']:.3f}") for r in policy["rows"]]
    src = "measured half timings + link model" if policy.get("measured") else "predicted (cost model)"
    print(table(["batch", "from Mbps", "to Mbps", "plan", "kind", "precision", "uplink B", "latency ms"], rows))
    print(f"\npolicy of {args.bundle}: {src}")
    if policy.get("measured") and args.timings:
        before = {(r["batch_size"], r["plan"]) for r in policy["rows_predicted"]}
        changed = [r["plan"] for r in policy["rows"] if (r["batch_size"], r["plan"]) not in before]
        print("plans new to the policy: " + (", ".join(map(str, changed)) if changed else "none") + f"; wrote {dyn.root / 'policy.json'}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``measure-plans`` and ``policy`` to the main CLI."""
    p = subparsers.add_parser(
        "measure-plans", help="time one side (edge or cloud) of every plan of a dynamic bundle on this machine",
        description="Run the edge (or cloud) half of every plan of a `compile --dynamic` bundle with onnxruntime, "
        "round-robin over the plans, and write the median timings as JSON (schema onnxsplit.plan-timings/1). "
        "Run it with --side edge on the edge device and --side cloud on the server, then `onnxsplit policy OUT "
        "--timings edge.json cloud.json`.")
    p.add_argument("bundle", metavar="OUT", help="dynamic bundle folder (compile --dynamic -o OUT)")
    p.add_argument("--side", required=True, choices=SIDES, help="which half to time")
    p.add_argument("-o", "--output", metavar="FILE.json", help="write the timings here")
    p.add_argument("--repeats", type=int, default=20, metavar="N", help="rounds (default 20)")
    p.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed rounds first (default 2)")
    p.add_argument("--min-s", type=float, default=0.0, metavar="S", help="keep timing rounds for at least S seconds")
    p.add_argument("--threads", type=int, metavar="N", help="onnxruntime intra-op threads (default: onnxruntime's; "
                                                              "use what the runtime will use)")
    p.add_argument("--no-optimize", action="store_true", help="disable onnxruntime graph optimizations")
    p.add_argument("--gap-ms", type=float, default=0.0, metavar="MS",
                   help="idle time before each run of a plan with a cloud half (its edge waits for the network in "
                        "service); on a CPU-quota-emulated device use at least the quota period")
    p.add_argument("--block", type=int, default=1, metavar="N",
                   help="runs of one plan per round, after one untimed run (default 1: pure round-robin)")
    p.add_argument("--input", metavar="X.npy|X.npz", help="model inputs, as for `onnxsplit run` (default: random, seed 0)")
    p.add_argument("--plans", metavar="K[,K...]", help="time only these plans (default: all)")
    p.add_argument("--json", action="store_true", help="print the timing document as JSON")
    p.set_defaults(func=cmd_measure_plans)

    p = subparsers.add_parser(
        "policy", help="show a dynamic bundle's policy table, or recompute it from measured plan timings",
        description="Print OUT/policy.json. With --timings EDGE.json CLOUD.json (from `onnxsplit measure-plans`), "
        "first recompute the batch-1 rows from the measured half timings and the link model the bundle was "
        "compiled with, and replace OUT/policy.json (the predicted rows are kept as rows_predicted).")
    p.add_argument("bundle", metavar="OUT", help="dynamic bundle folder (compile --dynamic -o OUT)")
    p.add_argument("--timings", nargs=2, metavar=("EDGE.json", "CLOUD.json"), help="measured timings of both sides")
    p.add_argument("--rtt", metavar="MS", help="with --timings: round-trip time instead of the compiled one, e.g. 20ms")
    p.add_argument("--per-request-ms", type=float, metavar="MS", help="with --timings: per-request fixed cost instead of the compiled one")
    p.add_argument("--json", action="store_true", help="print policy.json")
    p.set_defaults(func=cmd_policy)
