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
    else:
        edge = edge_nodes_prefix(graph, args.at)
        plan_desc = {"at": args.at}
    parts = split_model(graph, edge)

    diffs = []
    if not args.no_verify:
        diffs = check_split(graph.model, parts, random_feeds(graph.model, seed=0), optimize=False)
        bad = [d for d in diffs if not d.identical]
        if bad:
            raise OnnxSplitError(
                f"verification failed: output '{bad[0].name}' differs after recombination "
                f"(max abs {bad[0].max_abs:.3g}); please report this model"
            )

    with atomic_output_dir(args.output, force=args.force) as tmp:
        files = {}
        for side, m in (("edge", parts.edge), ("cloud", parts.cloud)):
            if m is not None:
                files[side] = save_model(m, tmp / side / "model.onnx")[0]
        source = Path(args.model)
        write_manifest(
            tmp,
            {
                "kind": "split",
                "source": {"path": source.name, "sha256": sha256_file(source)},
                "input_shapes": {n: list(graph.tensors[n].shape or ()) for n in graph.inputs},
                "request": plan_desc,
                "plan": parts.describe(),
                "models": {side: f"{side}/model.onnx" for side in files},
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
        print(json.dumps({"output": str(out), **parts.describe(), "verification": [d.to_json() for d in diffs]}, indent=2))
        return 0
    rows = []
    for side, m, nodes in (("edge", parts.edge, parts.edge_nodes), ("cloud", parts.cloud, parts.cloud_nodes)):
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
    if parts.boundary:
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
    print(f"wrote {out}/  boundary {fmt_bytes(parts.boundary_nbytes)}  verification: {verdict}")
    return 0


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
    p.add_argument("--all", action="store_true", help="list every candidate cut, not only bottlenecks")
    add_json_arg(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("split", help="split at a manual cut into edge/ and cloud/ models")
    add_model_args(p)
    g = p.add_argument_group("plan (exactly one)").add_mutually_exclusive_group(required=True)
    g.add_argument("--cut", action="append", metavar="TENSOR[,TENSOR...]", help="edge computes these tensors (and all they need)")
    g.add_argument("--edge-nodes", action="append", metavar="NODE[,NODE...]", help="explicit edge node set (must be closed under predecessors)")
    g.add_argument("--at", type=int, metavar="K", help="first K compute nodes on the edge (candidate K of `inspect`)")
    add_output_args(p)
    p.add_argument("--no-verify", action="store_true", help="skip the bit-exactness check on random inputs")
    add_json_arg(p)
    p.set_defaults(func=cmd_split)
    return parser


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
