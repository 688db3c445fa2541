"""The ``onnxsplit`` command line: one entry point, subcommands built from shared argument groups.

Every subcommand accepts ``--json``; errors print one line ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import OnnxSplitError, UsageError


# ------------------------------------------------------------------------ formatting helpers
def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def int_list(text: str) -> list[int]:
    """argparse ``type=`` for comma-separated integers (``"2,4,8"``); argparse turns the ValueError
    into a one-line error naming the option, exit code 2."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("at least one integer expected")
    return values


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _shape(shape) -> str:  # noqa: ANN001
    return "[" + ",".join("?" if d is None else str(d) for d in (shape or ())) + "]"


# ------------------------------------------------------------------------ argument groups
def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("model", help="path to the .onnx file (external data is read from its folder)")
    g.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME:DIMS",
        help="static shape for an input with dynamic axes, e.g. images:1x3x224x224 (repeatable)",
    )
    g.add_argument("--simplify", action="store_true", help="run onnxsim before analysis (tensor names may change)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (written atomically)")
    g.add_argument("--force", action="store_true", help="replace OUT if it exists")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")


def load_graph(args: argparse.Namespace):  # noqa: ANN201
    from .ir import Graph
    from .load import load_model, parse_input_shapes

    model = load_model(args.model, parse_input_shapes(args.input_shape), simplify=args.simplify)
    graph = Graph(model)
    graph.require_static_shapes()
    return graph


def _split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


# ------------------------------------------------------------------------ inspect
def cmd_inspect(args: argparse.Namespace) -> int:
    from .candidates import cut_candidates

    graph = load_graph(args)
    cands = cut_candidates(graph)
    unknown = graph.unknown_cost_nodes()
    info = {
        "model": str(args.model),
        "ir_version": graph.model.ir_version,
        "opsets": {imp.domain or "ai.onnx": imp.version for imp in graph.model.opset_import},
        "nodes": len(graph.nodes),
        "compute_nodes": len(graph.compute_nodes),
        "params": graph.param_count,
        "param_nbytes": graph.param_nbytes,
        "macs": graph.total_macs,
        "flops": graph.total_flops,
        "flops_complete": not unknown,
        "unknown_cost_nodes": [{"name": n.name, "op_type": n.op_type} for n in unknown],
        "inputs": [_tensor_json(graph, n) for n in graph.inputs],
        "outputs": [_tensor_json(graph, n) for n in graph.outputs],
        "op_histogram": graph.op_histogram(),
        "input_nbytes": graph.input_nbytes,
        "candidates": [c.to_json() for c in cands],
    }
    costs = None
    if args.target:
        from .cost.predict import predict

        costs = predict(graph, args.target, args.precision, args.runtime)
        info["predicted_latency_ms"] = costs.total_ms
        info["prediction"] = {k: v for k, v in costs.to_json().items() if k != "latency_ms"}
    if args.json:
        info["nodes_detail"] = [
            {
                "name": n.name,
                "op_type": n.op_type,
                "macs": n.macs,
                "flops": n.flops,
                "cost_known": n.cost.known,
                "param_nbytes": n.param_nbytes,
                "output_nbytes": n.output_nbytes,
                "outputs": list(n.outputs),
                **({"predicted_latency_ms": costs.latency_ms[n.name]} if costs else {}),
            }
            for n in graph.compute_nodes
        ]
        print(json.dumps(info, indent=2))
        return 0
    print(f"model   {args.model}  (IR {info['ir_version']}, opsets {info['opsets']})")
    print(
        f"nodes   {info['nodes']} ({info['compute_nodes']} compute)   params {fmt_count(info['params'])} "
        f"({fmt_bytes(info['param_nbytes'])})   MACs {fmt_count(info['macs'])}   FLOPs {fmt_count(info['flops'])}"
        + ("" if not unknown else f"  (+{len(unknown)} nodes without a FLOP formula)")
    )
    for label, key in (("inputs ", "inputs"), ("outputs", "outputs")):
        for t in info[key]:
            print(f"{label} {t['name']}  {t['dtype']}{_shape(t['shape'])}  {fmt_bytes(t['nbytes'] or 0)}")
    print("ops     " + ", ".join(f"{k} {v}" for k, v in info["op_histogram"].items()))
    if costs is not None:
        print(
            f"latency {costs.total_ms:.3f} ms predicted on {costs.target} ({costs.runtime}, {costs.precision}; "
            f"calibrated: {str(costs.calibrated).lower()}, {costs.source})"
            + (f"; {len(costs.uncalibrated_nodes)} nodes by roofline" if costs.uncalibrated_nodes and costs.calibrated else "")
        )
    shown = [c for c in cands if args.all or c.compressive_bottleneck or c.index in (0, len(cands) - 1)]
    print()
    what = "all candidates" if args.all else "compressive bottlenecks (use --all for every candidate)"
    print(f"cut candidates: k = first k compute nodes on the edge; c = boundary / input bytes; showing {what}")
    rows = [
        (
            c.index,
            c.after_node or "(none: all cloud)",
            fmt_bytes(c.boundary_nbytes),
            c.boundary_tensors,
            f"{c.compression_ratio:.3f}",
            ("compressive" if c.compressive_bottleneck else "natural" if c.natural_bottleneck else ""),
        )
        for c in shown
    ]
    print(table(["k", "after node", "boundary", "tensors", "c", "bottleneck"], rows))
    nat = sum(c.natural_bottleneck for c in cands)
    comp = sum(c.compressive_bottleneck for c in cands)
    print(f"\n{len(cands)} candidates, {nat} natural bottlenecks (c < 1), {comp} compressive bottlenecks")
    print("split at one with: onnxsplit split MODEL --at K -o OUT")
    return 0


def _tensor_json(graph, name: str) -> dict:  # noqa: ANN001
    t = graph.tensors[name]
    return {"name": name, "dtype": t.dtype, "shape": list(t.shape or ()), "nbytes": t.nbytes}


# ------------------------------------------------------------------------ split
def cmd_split(args: argparse.Namespace) -> int:
    from .bundle import atomic_output_dir, save_model, sha256_file, write_manifest
    from .runtime_ort import random_feeds
    from .split import edge_nodes_for_cut, edge_nodes_prefix, split_model
    from .verify import check_split

    graph = load_graph(args)
    if args.cut:
        edge = edge_nodes_for_cut(graph, _split_list(args.cut))
        plan_desc = {"cut": _split_list(args.cut)}
    elif args.edge_nodes:
        edge = set(_split_list(args.edge_nodes))
        plan_desc = {"edge_nodes": sorted(edge)}
    elif args.plan:
        edge = set(_read_plan(args.plan))
        plan_desc = {"plan": str(args.plan)}
    else:
        edge = edge_nodes_prefix(graph, args.at)
        plan_desc = {"at": args.at}
    parts = split_model(graph, edge)
    quant = _quant_setup(args, graph)
    if quant is None and args.plan and _plan_quantization(args.plan).get("edge_precision") == "int8":
        warnings.warn(f"{args.plan} was chosen for an int8 edge half; pass --quantize int8 --calib DIR to apply it")

    diffs = []
    if not args.no_verify:
        diffs = check_split(graph.model, parts, random_feeds(graph.model, seed=0), optimize=False)
        bad = [d for d in diffs if not d.identical]
        if bad:
            raise OnnxSplitError(
                f"verification failed: output '{bad[0].name}' differs after recombination "
                f"(max abs {bad[0].max_abs:.3g}); please report this model"
            )

    written, qblock = parts, None
    if quant is not None:
        from .quant.budget import quantize_for_split

        written, qblock = quantize_for_split(
            graph, parts, quant["data"], quantize=quant["quantize"], boundary_dtype=quant["boundary_dtype"],
            budget=quant["budget"], nodes_to_exclude=_read_plan_exclusions(args.plan) if args.plan else (),
        )
    with atomic_output_dir(args.output, force=args.force) as tmp:
        files = {}
        for side, m in (("edge", written.edge), ("cloud", written.cloud)):
            if m is not None:
                files[side] = save_model(m, tmp / side / "model.onnx")[0]
        source = Path(args.model)
        write_manifest(
            tmp,
            {
                "kind": "split",
                "source": {"path": source.name, "sha256": sha256_file(source), "absolute_path": str(source.resolve())},
                "input_shapes": {n: list(graph.tensors[n].shape or ()) for n in graph.inputs},
                "request": plan_desc,
                "plan": written.describe(),
                "models": {side: f"{side}/model.onnx" for side in files},
                **({"quantization": qblock} if qblock is not None else {}),
                "verification": {
                    "ort_optimizations": "disabled",
                    "inputs": "random (seed 0)",
                    "outputs": [d.to_json() for d in diffs],
                }
                if diffs
                else None,
            },
        )
    out = Path(args.output)
    if args.json:
        print(json.dumps({"output": str(out), **written.describe(), "verification": [d.to_json() for d in diffs],
                          **({"quantization": qblock} if qblock is not None else {})}, indent=2))
        return 0
    rows = []
    for side, m, nodes in (("edge", written.edge, parts.edge_nodes), ("cloud", written.cloud, parts.cloud_nodes)):
        path = out / side / "model.onnx"
        rows.append(
            (
                side,
                len(nodes),
                ", ".join(i.name for i in m.graph.input) if m else "-",
                ", ".join(o.name for o in m.graph.output) if m else "-",
                fmt_bytes(path.stat().st_size) if m else "(none)",
            )
        )
    print(table(["side", "nodes", "inputs", "outputs", "file"], rows))
    print()
    if qblock is not None and parts.boundary:
        _print_quant_split(written, qblock)
    elif parts.boundary:
        print(
            table(
                ["boundary tensor", "from", "dtype", "shape", "bytes"],
                [(b.name, b.source, b.dtype, _shape(b.shape), fmt_bytes(b.nbytes)) for b in parts.boundary],
            )
        )
    else:
        print("boundary: nothing crosses (all-edge or all-cloud plan)")
    print()
    verdict = (
        "skipped (--no-verify)"
        if not diffs
        else f"{len(diffs)} outputs bit-identical to the original (onnxruntime, optimizations off, random input)"
    )
    if qblock is not None:
        print(f"wrote {out}/  boundary {fmt_bytes(written.boundary_nbytes)} fp32 -> {fmt_bytes(written.wire_nbytes)} on the wire "
              f"({qblock['boundary_dtype']})  fp32 split verification: {verdict}")
        return 0
    print(f"wrote {out}/  boundary {fmt_bytes(parts.boundary_nbytes)}  verification: {verdict}")
    return 0


def _read_plan(path: str) -> list[str]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"plan file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a JSON plan ({exc}); write one with `onnxsplit plan ... --save PLAN.json`") from None
    plan = doc.get("plan", doc) if isinstance(doc, dict) else None
    names = plan.get("edge_node_names") if isinstance(plan, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"{path} has no plan.edge_node_names list; write it with `onnxsplit plan ... --save PLAN.json`")
    return names


# ------------------------------------------------------------------------ plan
def add_edge_cpu_limit_arg(g) -> None:  # noqa: ANN001 - an argparse group
    g.add_argument("--edge-cpu-limit", metavar="CPUS[/PERIOD]",
                   help="the edge runs under a CFS CPU limit (a container's, e.g. 500m or 0.1/10ms; period default "
                        "100ms): its costs are scaled to that share and plan latencies use the quota model "
                        "(onnxsplit.cpu_quota: a short edge half between network waits runs at full speed)")


def edge_cpu_quota_from_args(args: argparse.Namespace):  # noqa: ANN201 - EdgeCpuQuota | None
    text = getattr(args, "edge_cpu_limit", None)
    if not text:
        return None
    from .cpu_quota import EdgeCpuQuota
    from .units import parse_cpu_limit

    cpus, period_ms = parse_cpu_limit(text)
    return EdgeCpuQuota.from_cpus(cpus, period_ms)


def add_link_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("targets and link")
    g.add_argument("--target", required=True, help="edge target (e.g. jetson, arm-cpu, rpi4, host-x86)")
    g.add_argument("--cloud", default="server-gpu", help="cloud target (default: server-gpu)")
    g.add_argument("--bandwidth", required=True, help="uplink bandwidth, e.g. 20mbps, 500kbps, 1gbps")
    g.add_argument("--downlink", help="downlink bandwidth (default: same as --bandwidth)")
    g.add_argument("--rtt", default="0ms", help="round-trip time, e.g. 10ms (default 0ms)")
    g.add_argument("--per-request", default="0ms", help="fixed per-request cost (serialization...), e.g. 1ms")
    add_edge_cpu_limit_arg(g)
    g.add_argument("--edge-precision", default="fp32", choices=["fp32", "fp16", "int8"])
    g.add_argument("--cloud-precision", default="fp32", choices=["fp32", "fp16", "int8"])


def cmd_plan(args: argparse.Namespace) -> int:
    from .planning import plan_model, sweep_model
    from .search import Constraints
    from .units import format_nbytes, parse_bandwidth_mbps, parse_nbytes, parse_time_ms

    graph = load_graph(args)
    pins = {}
    for side, names in (("edge", args.pin_edge), ("cloud", args.pin_cloud)):
        for name in _split_list(names):
            graph.node(name)  # unknown names: clear error
            pins[[n.name for n in graph.compute_nodes].index(name)] = side
    constraints = Constraints(
        max_edge_mem_bytes=parse_nbytes(args.max_edge_memory) if args.max_edge_memory else None,
        raw_input_stays_on_edge=args.raw_input_stays_on_edge,
        min_edge_nodes=args.min_edge_nodes,
        pinned=pins,
    )
    result = plan_model(
        graph,
        edge_target=args.target,
        cloud_target=args.cloud,
        uplink_mbps=parse_bandwidth_mbps(args.bandwidth),
        downlink_mbps=parse_bandwidth_mbps(args.downlink) if args.downlink else None,
        rtt_ms=parse_time_ms(args.rtt),
        per_request_ms=parse_time_ms(args.per_request),
        objective=args.objective,
        algorithm=args.algorithm,
        constraints=constraints,
        edge_precision=args.edge_precision,
        cloud_precision=args.cloud_precision,
        alternatives=args.alternatives,
        edge_cpu_quota=edge_cpu_quota_from_args(args),
    )
    doc = {"model": str(args.model), **result.to_json()}
    quant = _quant_setup(args, graph, plan=True)
    selection = None
    if quant is not None:
        from .quant.budget import select_quantized_plan

        calib, held = quant["data"].split(0.25)
        selection = select_quantized_plan(
            graph, result, calib, held, quant["budget"], algorithm=args.algorithm, constraints=constraints,
            candidates=max(args.alternatives, 1) + 2, boundary_dtype=quant["boundary_dtype"],
        )
        doc["plan_fp32"] = doc["plan"]
        doc["plan"] = selection.plan.to_dict()
        doc["quantization"] = selection.to_json()
        if quant["data"].warning:
            doc["quantization"]["warning"] = quant["data"].warning
    policy = None
    if args.sweep:
        policy = sweep_model(result, batch_sizes=tuple(int(b) for b in _split_list([args.batch_sizes])), constraints=constraints)
        doc["policy"] = policy.to_dict()
    if args.save:
        Path(args.save).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    p = result.plan
    e, c = result.edge_costs, result.cloud_costs
    print(
        f"edge  {e.target} ({e.runtime}, {e.precision}, calibrated: {str(e.calibrated).lower()})   "
        f"cloud {c.target} ({c.runtime}, {c.precision}, calibrated: {str(c.calibrated).lower()})"
    )
    quota = result.link.edge_quota
    print(f"link  up {result.link.uplink_mbps:g} Mbps, rtt {result.link.rtt_ms:g} ms, per request {result.link.per_request_ms:.3f} ms"
          + (f"; edge CPU limit {quota.cpus:g} CPU ({quota.quota_ms:g} ms per {quota.period_ms:g} ms period)" if quota else ""))
    plans = [("chosen", p)] + [(f"alt {i + 1}", a) for i, a in enumerate(result.alternatives)]
    rows = [
        (
            label,
            f"{len(q.edge_nodes)}/{len(result.problem.node_names)}",
            q.edge_node_names[-1] if q.edge_node_names else "(all cloud)",
            format_nbytes(q.uplink_bytes),
            f"{q.edge_ms:.3f}",
            f"{q.transfer_ms + q.fixed_ms:.3f}",
            f"{q.cloud_ms:.3f}",
            f"{q.total_ms:.3f}",
            f"{q.objective_value:.4g}",
            format_nbytes(q.edge_mem_bytes),
        )
        for label, q in plans
    ]
    print()
    print(table(["plan", "edge nodes", "last edge node", "uplink", "edge ms", "network ms", "cloud ms", "total ms", args.objective, "edge mem"], rows))
    if quota is not None:
        print("(edge ms: the edge half run back to back at the CPU limit; total ms: the CPU quota model, where a short "
              "edge half between network waits runs at full speed, so the columns need not add up)")
    if p.boundary_tensors:
        print("\nboundary: " + ", ".join(f"{b.name} ({format_nbytes(b.nbytes)})" for b in p.boundary_tensors))
    if p.binding_constraints:
        print("binding constraints: " + ", ".join(p.binding_constraints))
    if policy is not None:
        print("\npolicy (bandwidth range -> plan):")
        print(
            table(
                ["batch", "from Mbps", "to Mbps", "edge nodes", "uplink", "total ms"],
                [
                    (r.batch_size, f"{r.from_mbps:.3g}", f"{r.to_mbps:.3g}", len(r.plan.edge_nodes), format_nbytes(r.plan.uplink_bytes), f"{r.plan.total_ms:.3f}")
                    for r in policy.rows
                ],
            )
        )
    if selection is not None:
        _print_quant_selection(selection)
    opt = "optimal" if p.optimal else (f"gap ≤ {p.gap:.3g}" if p.gap is not None else "no optimality claim")
    print(f"\n{args.algorithm}: {args.objective} {p.objective_value:.4g} ({opt})" + (f"; saved {args.save}" if args.save else ""))
    print("split with: onnxsplit split MODEL --plan PLAN.json -o OUT   (save the plan with --save PLAN.json)")
    return 0


# ------------------------------------------------------------------------ quantization (int8 edge)
def add_quant_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization (int8 edge half, onnxruntime static QDQ)")
    g.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8: quantize the edge half (the cloud stays fp32)")
    g.add_argument(
        "--calib", metavar="DIR",
        help="calibration samples: .npz (one array per input name, optional 'labels') / .npy files, or images + "
        "preprocess.json; the last 25%% are held out for the accuracy check. Without it: synthetic inputs (warned)",
    )
    g.add_argument("--calib-samples", type=int, metavar="N", help="use at most N samples from --calib (default: all)")
    g.add_argument(
        "--boundary-dtype", choices=["int8", "fp16", "fp32"],
        help="dtype of the tensors sent edge->cloud (default: int8 with --quantize int8, else fp32)",
    )
    g.add_argument(
        "--max-accuracy-drop", metavar="BUDGET",
        help="accuracy budget vs fp32 on held-out samples: 1%% (default: top-1 agreement drop for [B,C] class "
        "outputs, cosine >= 0.99 for others), or top1:0.5%%, cosine:0.995, sqnr:25 (dB), comma-separated",
    )


def _quant_setup(args: argparse.Namespace, graph, *, plan: bool = False) -> dict | None:  # noqa: ANN001
    """Validated quantization options and calibration data, or None when nothing is quantized."""
    from .quant.calib import load_calibration
    from .quant.metrics import Budget

    quantize = args.quantize == "int8"
    boundary = args.boundary_dtype or ("int8" if quantize else "fp32")
    if not quantize and (boundary == "fp32" or plan):
        extra = [f for f, v in (("--calib", args.calib), ("--calib-samples", args.calib_samples),
                                ("--max-accuracy-drop", args.max_accuracy_drop), ("--boundary-dtype", args.boundary_dtype)) if v]
        if extra:
            raise UsageError(f"{extra[0]} needs --quantize int8" + ("" if plan else " (or --boundary-dtype int8/fp16)"))
        return None
    budget = Budget.parse(args.max_accuracy_drop)
    data = load_calibration(args.calib, graph, samples=args.calib_samples)
    return {"quantize": quantize, "boundary_dtype": boundary, "budget": budget, "data": data}


def _plan_quantization(path: str) -> dict:
    """The ``quantization`` block of a PLAN.json written by `plan --quantize int8` ({} if none)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    q = doc.get("quantization") if isinstance(doc, dict) else None
    return q if isinstance(q, dict) else {}


def _read_plan_exclusions(path: str) -> list[str]:
    """Edge nodes a quantized plan keeps fp32 (``quantization.nodes_to_exclude`` of PLAN.json)."""
    names = _plan_quantization(path).get("nodes_to_exclude")
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _fmt_metric(m: dict) -> str:
    if m.get("top1_agreement") is not None:
        return f"top-1 {m['top1_agreement']:.2%}"
    return f"cos {m['cosine']:.4f}"


def _print_quant_split(qs, block: dict) -> None:  # noqa: ANN001
    print(
        table(
            ["boundary tensor", "from", "shape", "fp32 bytes", "wire", "wire bytes", "scale", "zero point"],
            [
                (b.name, b.source, _shape(b.shape), fmt_bytes(b.nbytes), b.wire_dtype, fmt_bytes(b.wire_nbytes),
                 f"{b.scale:.6g}" if b.scale is not None else "-", b.zero_point if b.zero_point is not None else "-")
                for b in qs.boundary
            ],
        )
    )
    cal = block["calibration"]
    print(
        f"\nedge {block['edge_precision']} ({block['quantized_nodes']} nodes int8, {len(block['nodes_to_exclude'])} kept fp32), "
        f"calibration: {cal['source']} ({cal['samples']} samples, {cal['heldout_samples']} held out)"
    )
    print(
        table(
            ["output", "top-1 agreement", "cosine", "SQNR dB", "max abs"],
            [
                (m["name"], "-" if m["top1_agreement"] is None else f"{m['top1_agreement']:.2%}", f"{m['cosine']:.5f}",
                 m["sqnr_db"] if isinstance(m["sqnr_db"], str) else f"{m['sqnr_db']:.1f}", f"{m['max_abs']:.4g}")
                for m in block["accuracy"]["outputs"]
            ],
        )
    )
    if len(block["attempts"]) > 1:
        print("tried: " + "; ".join(f"{a['label']} -> {'ok' if a['within_budget'] else 'over budget'}" for a in block["attempts"]))


def _print_quant_selection(sel) -> None:  # noqa: ANN001
    rows = []
    for c in sel.candidates:
        d = c.to_json()
        ms = d["metrics"] if "metrics" in d else []
        rows.append(
            (
                d["mode"] + (" *" if c is sel.chosen else ""),
                d["edge_nodes"],
                d["last_edge_node"] or "(all cloud)",
                len(d.get("nodes_to_exclude", [])),
                fmt_bytes(d["uplink_bytes"]),
                f"{d['optimistic_objective']:.3f}" if d["optimistic_objective"] is not None else "-",
                f"{d['objective']:.3f}" if d["objective"] is not None else "-",
                ", ".join(_fmt_metric(m) for m in ms) or "-",
                d["status"],
            )
        )
    print(f"\nint8 edge, accuracy budget {sel.budget.describe()} on {sel.heldout_samples} held-out samples:")
    print(table(["mode", "edge nodes", "last edge node", "fp32 nodes", "uplink", "all-int8", "objective", "accuracy", "status"], rows))
    q = sel.chosen
    print(f"chosen (*): {q.mode} edge, {len(sel.nodes_to_exclude)} edge nodes kept fp32 ({sel.seconds:.1f} s); "
          "`split --plan PLAN.json --quantize int8 --calib DIR` applies it")


def cmd_verify(args: argparse.Namespace) -> int:
    from .quant.budget import verify_split_dir
    from .quant.metrics import Budget

    rep = verify_split_dir(
        args.split_dir, model=args.model, data=args.data, samples=args.samples,
        budget=Budget.parse(args.max_accuracy_drop) if args.max_accuracy_drop else None,
    )
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0 if rep["within_budget"] else 1
    d = rep["data"]
    print(f"split   {rep['split_dir']}  (edge {rep['edge_precision']}, boundary {rep['boundary_dtype']}, "
          f"{len(rep['nodes_to_exclude'])} edge nodes kept fp32)")
    print(f"model   {rep['model']}")
    print(f"data    {d['source']} ({d['samples']} samples{', with labels' if d['labels'] else ''})\n")
    print(
        table(
            ["output", "top-1 agreement", "accuracy fp32", "accuracy split", "cosine (mean/min)", "SQNR dB", "max abs"],
            [
                (
                    m["name"],
                    "-" if m["top1_agreement"] is None else f"{m['top1_agreement']:.2%}",
                    "-" if m["accuracy_ref"] is None else f"{m['accuracy_ref']:.2%}",
                    "-" if m["accuracy"] is None else f"{m['accuracy']:.2%}",
                    f"{m['cosine']:.5f} / {m['cosine_min']:.5f}",
                    m["sqnr_db"] if isinstance(m["sqnr_db"], str) else f"{m['sqnr_db']:.1f}",
                    f"{m['max_abs']:.4g}",
                )
                for m in rep["outputs"]
            ],
        )
    )
    print()
    if rep["boundary"]:
        print(
            table(
                ["boundary tensor", "shape", "fp32 bytes", "wire dtype", "wire bytes"],
                [(b["name"], _shape(b["shape"]), fmt_bytes(b["nbytes"]), b["wire_dtype"], fmt_bytes(b["wire_nbytes"])) for b in rep["boundary"]],
            )
        )
    print(f"\nboundary {fmt_bytes(rep['boundary_nbytes_fp32'])} fp32 -> {fmt_bytes(rep['boundary_nbytes_wire'])} on the wire; "
          f"budget ({rep['budget']['description']}): " + ("met" if rep["within_budget"] else "NOT met: " + "; ".join(rep["reasons"])))
    return 0 if rep["within_budget"] else 1


# ------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="onnxsplit",
        description="Split an ONNX model between an edge device and a cloud server.",
    )
    parser.add_argument("--version", action="version", version=f"onnxsplit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="summary, FLOPs and candidate cut points with bottlenecks")
    add_model_args(p)
    p.add_argument("--target", help="predict latency on this target (see `onnxsplit targets`)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="precision for --target")
    p.add_argument("--runtime", help="runtime for --target (default: the target's default runtime)")
    p.add_argument("--all", action="store_true", help="list every candidate cut, not only bottlenecks")
    add_json_arg(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("split", help="split at a manual cut into edge/ and cloud/ models")
    add_model_args(p)
    g = p.add_argument_group("plan (exactly one)").add_mutually_exclusive_group(required=True)
    g.add_argument("--cut", action="append", metavar="TENSOR[,TENSOR...]", help="edge computes these tensors (and all they need)")
    g.add_argument("--edge-nodes", action="append", metavar="NODE[,NODE...]", help="explicit edge node set (must be closed under predecessors)")
    g.add_argument("--at", type=int, metavar="K", help="first K compute nodes on the edge (candidate K of `inspect`)")
    g.add_argument("--plan", metavar="PLAN.json", help="a plan written by `onnxsplit plan --save PLAN.json`")
    add_output_args(p)
    p.add_argument("--no-verify", action="store_true", help="skip the bit-exactness check on random inputs")
    add_quant_args(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("plan", help="search the best edge/cloud split for two targets and a link")
    add_model_args(p)
    add_link_args(p)
    g = p.add_argument_group("search")
    g.add_argument("--objective", default="latency", choices=["latency", "throughput", "energy", "weighted"])
    g.add_argument("--algorithm", default="mincut", help="mincut (default), chain, all-edge, all-cloud, exhaustive, milp")
    g.add_argument("--max-edge-memory", metavar="BYTES", help="edge weights + activations limit, e.g. 512MB")
    g.add_argument("--raw-input-stays-on-edge", action="store_true", help="privacy: never send a graph input")
    g.add_argument("--min-edge-nodes", type=int, default=0, metavar="K", help="privacy: at least the first K nodes on the edge")
    g.add_argument("--pin-edge", action="append", metavar="NODE[,NODE...]", help="nodes that must run on the edge")
    g.add_argument("--pin-cloud", action="append", metavar="NODE[,NODE...]", help="nodes that must run in the cloud")
    g.add_argument("--alternatives", type=int, default=2, metavar="N", help="also list N next-best distinct plans (Pareto)")
    g.add_argument("--sweep", action="store_true", help="add the bandwidth policy table (0.1 Mbps .. 10 Gbps)")
    g.add_argument("--batch-sizes", default="1", help="batch sizes for --sweep, e.g. 1,8,64")
    p.add_argument("--save", metavar="PLAN.json", help="write the plan (and policy) as JSON for `split --plan`")
    add_quant_args(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("verify", help="fp32 model vs a split folder: top-1 agreement, cosine, SQNR, boundary bytes")
    p.add_argument("split_dir", metavar="OUT", help="a folder written by `onnxsplit split` (reads OUT/manifest.json)")
    p.add_argument("--model", help="the original model (default: the source path recorded in the manifest)")
    p.add_argument("--data", metavar="DIR", help="samples (.npz/.npy, optional labels) as for --calib; default: synthetic (warned)")
    p.add_argument("--samples", type=int, metavar="N", help="use at most N samples from --data")
    p.add_argument("--max-accuracy-drop", metavar="BUDGET", help="budget to check (default: the one in the manifest, else 1%%)")
    add_json_arg(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("targets", help="list the known targets and their short names")
    add_json_arg(p)
    p.set_defaults(func=cmd_targets)

    from .compile.pipeline import register as register_compile
    from .cost.cli import register as register_cost
    from .compile.tune import register as register_tune
    from .plan_timing import register as register_plan_timing
    from .runtime.cli import register as register_runtime

    register_compile(sub)
    register_tune(sub)
    register_runtime(sub)
    register_cost(sub)
    register_plan_timing(sub)
    return parser


def _by_runtime(names: list[str]) -> str:
    """``["ort-trt-fp32", "ort-trt-int8"]`` -> ``"ort-trt fp32/int8"``."""
    groups: dict[str, list[str]] = {}
    for n in names:
        rt, p = n.rsplit("-", 1)
        groups.setdefault(rt, []).append(p)
    return ", ".join(f"{rt} {'/'.join(ps)}" for rt, ps in groups.items())


def cmd_targets(args: argparse.Namespace) -> int:
    from .cost.model import find_cost_model
    from .targets import PRECISIONS, list_targets, load_target, target_aliases

    aliases: dict[str, list[str]] = {}
    for short, full in target_aliases().items():
        aliases.setdefault(full, []).append(short)
    rows, docs = [], []
    for name in list_targets():
        t = load_target(name)
        fitted: list[str] = []
        estimated: list[str] = []
        for rt in t.runtimes:
            for p in PRECISIONS:
                m = find_cost_model(t.name, rt, p)
                if m is not None:
                    (fitted if m.calibrated else estimated).append(f"{rt}-{p}")
        docs.append({"name": t.name, "aliases": aliases.get(t.name, []), "role": t.role, "default_runtime": t.default_runtime,
                     "runtimes": list(t.runtimes), "cost_models": fitted, "estimated_cost_models": estimated,
                     "description": t.description})
        rows.append((t.name, ",".join(aliases.get(t.name, [])) or "-", t.role, t.default_runtime,
                     _by_runtime(fitted) or "-", _by_runtime(estimated) or ("-" if fitted else "roofline")))
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    print(table(["target", "short names", "role", "default runtime", "fitted cost models",
                 "estimated (calibrated: false)"], rows))
    print("estimated: learned on measured devices, scaled by this target's data sheet (onnxsplit.cost.transfer); "
          "roofline: the target file's efficiencies only")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning  # type: ignore[assignment]
        try:
            return func(args)
        except (OnnxSplitError, UsageError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)
