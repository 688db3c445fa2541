"""`onnxsplit compile`: the whole pipeline, from a model file to a deployable folder.

load (static shapes) -> cost tables for both targets -> cut search -> (int8: accuracy-budgeted
choice among the searched plans, Auto-Split style) -> split -> quantize the edge half -> write
OUT/ atomically:

    OUT/edge/model.onnx          edge half (int8 QDQ unless --quantize none), ends in the boundary
    OUT/cloud/model.onnx         cloud half (fp32), starts with DequantizeLinear for int8 boundaries
    OUT/edge/tvm/, OUT/cloud/tvm/  TVM libraries for each side's hardware (--backend tvm|both)
    OUT/triton/<name>/           Triton model repository for the cloud half
    OUT/manifest.json            plan, boundary (+ quantization parameters), predicted latencies with
                                 `calibrated` flags, targets, link, versions, checksums of every file

A missing TVM install or cross toolchain is recorded in the manifest (``compiled.<side>.error``)
and printed as a warning; the ONNX artifacts are still written. Serve the cloud half with
``onnxsplit serve OUT/``, run the edge with ``onnxsplit run OUT/ --server URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import warnings
from pathlib import Path

from ..errors import OnnxSplitError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import add_edge_cpu_limit_arg, add_json_arg, add_model_args, add_output_args, add_quant_args

    p = subparsers.add_parser("compile", help="plan, split, quantize and compile both halves into a deployable folder")
    add_model_args(p)
    g = p.add_argument_group("targets and link")
    g.add_argument("--target", required=True, help="edge target (jetson, arm-cpu, rpi4, host-x86, ...)")
    g.add_argument("--cloud", default="server-gpu", help="cloud target (default: server-gpu)")
    g.add_argument("--bandwidth", default="20mbps", help="uplink bandwidth the plan is optimized for (default 20mbps)")
    g.add_argument("--rtt", default="10ms", help="round-trip time (default 10ms)")
    g.add_argument("--objective", default="latency", choices=["latency", "throughput", "energy", "weighted"])
    add_edge_cpu_limit_arg(g)
    g.add_argument("--backend", default="both", choices=["ort", "tvm", "both"],
                   help="ort: ONNX halves only; tvm/both: also TVM libraries for each side (default both)")
    g.add_argument("--dynamic", action="store_true",
                   help="dynamic split computing: emit every plan of the bandwidth policy table (fp32) + policy.json")
    g.add_argument("--candidates", default="all", choices=["all", "bottlenecks"],
                   help="with --dynamic: search all cuts, or only natural/compressive bottlenecks")
    g.add_argument("--batch-sizes", default="1", help="with --dynamic: batch sizes of the policy table, e.g. 1,8,64")
    g.add_argument("--tuning-db", metavar="DIR",
                   help="apply MetaSchedule tuning records (`onnxsplit tune`): a folder with edge/ and/or cloud/ "
                        "databases (e.g. OLD_OUT/tuning) or one database for both; copied to OUT/tuning/")
    add_quant_args(p)
    p.set_defaults(quantize="int8")
    add_output_args(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    from ..bundle import atomic_output_dir, save_model, sha256_file, write_manifest
    from ..cli import _quant_setup, edge_cpu_quota_from_args, fmt_bytes, load_graph, table
    from ..planning import plan_model
    from ..runtime_ort import random_feeds
    from ..split import split_model
    from ..targets import load_target
    from ..units import parse_bandwidth_mbps, parse_time_ms
    from ..verify import check_split

    edge_t, cloud_t = load_target(args.target), load_target(args.cloud)  # unknown names fail first
    tuning_db = getattr(args, "tuning_db", None)
    if tuning_db and not Path(tuning_db).is_dir():
        raise OnnxSplitError(f"--tuning-db {tuning_db}: no such folder (create one with `onnxsplit tune OUT/`)")
    uplink = parse_bandwidth_mbps(args.bandwidth)
    rtt = parse_time_ms(args.rtt)
    graph = load_graph(args)
    if args.dynamic:
        return _compile_dynamic(args, graph, edge_t, cloud_t, rtt)
    quant = _quant_setup(args, graph, plan=True)
    int8 = quant is not None and quant["quantize"]
    result = plan_model(
        graph, edge_target=edge_t, cloud_target=cloud_t, uplink_mbps=uplink, rtt_ms=rtt,
        objective=args.objective, edge_precision="int8" if int8 else "fp32", alternatives=3,
        edge_cpu_quota=edge_cpu_quota_from_args(args),
    )
    plan, selection = result.plan, None
    if int8:
        from ..quant.budget import select_quantized_plan

        calib, held = quant["data"].split(0.25)
        selection = select_quantized_plan(graph, result, calib, held, quant["budget"], boundary_dtype=quant["boundary_dtype"])
        plan = selection.plan
    parts = split_model(graph, plan.edge_node_names)
    diffs = check_split(graph.model, parts, random_feeds(graph.model, seed=0), optimize=False)
    if not all(d.identical for d in diffs):
        raise OnnxSplitError(f"internal error: the fp32 split of {args.model} does not recombine exactly; please report it")

    written, qblock = parts, None
    if int8 and selection is not None and selection.chosen.mode == "int8":
        from ..quant.budget import quantize_for_split

        written, qblock = quantize_for_split(
            graph, parts, quant["data"], boundary_dtype=quant["boundary_dtype"], budget=quant["budget"],
            nodes_to_exclude=selection.nodes_to_exclude,
        )
    if selection is not None:
        qblock = {**(qblock or {"edge_precision": "fp32", "note": "no int8 plan met the budget or beat the exact fp32 split"}),
                  "plan_selection": selection.to_json()}

    source = Path(args.model)
    search_doc = result.to_json()
    search_doc["plan"] = plan.to_dict()
    manifest = {
        "kind": "compile",
        "name": f"{source.stem}-cloud",
        "source": {"path": source.name, "sha256": sha256_file(source), "absolute_path": str(source.resolve())},
        "input_shapes": {n: list(graph.tensors[n].shape or ()) for n in graph.inputs},
        "targets": {"edge": edge_t.to_json(), "cloud": cloud_t.to_json()},
        "link": {"uplink_mbps": uplink, "rtt_ms": rtt},
        "request": {"objective": args.objective, "backend": args.backend},
        "search": search_doc,
        "predicted": {
            "edge_ms": plan.edge_ms, "transfer_ms": plan.transfer_ms + plan.fixed_ms, "cloud_ms": plan.cloud_ms,
            "total_ms": plan.total_ms, "edge_calibrated": result.edge_costs.calibrated,
            "cloud_calibrated": result.cloud_costs.calibrated,
        },
        "plan": written.describe(),
        "models": {},
        **({"quantization": qblock} if qblock is not None else {}),
        "verification": {"fp32_split": "bit-identical (onnxruntime, optimizations off, random input)",
                         "outputs": [d.to_json() for d in diffs]},
    }
    compiled = None
    with atomic_output_dir(args.output, force=args.force) as tmp:
        for side, m in (("edge", written.edge), ("cloud", written.cloud)):
            if m is not None:
                save_model(m, tmp / side / "model.onnx")
                manifest["models"][side] = f"{side}/model.onnx"
        if written.cloud is not None:
            from ..runtime.triton import write_triton_model

            write_triton_model(tmp / "cloud" / "model.onnx", manifest["name"], tmp / "triton")
            manifest["triton"] = f"triton/{manifest['name']}"
        write_manifest(tmp, manifest)  # compile_bundle reads the folder as a split bundle
        if args.backend in ("tvm", "both"):
            db = None
            if tuning_db:
                from .tune import _copy_tuning_db

                db = _copy_tuning_db(tuning_db, tmp / "tuning")
            compiled = _compile_tvm(tmp, edge_t, cloud_t, tuning_db=db)
            manifest["compiled"] = compiled
        write_manifest(tmp, manifest)
    out = Path(args.output)
    if args.json:
        print(json.dumps(json.loads((out / "manifest.json").read_text()), indent=2))
        return 0
    rows = []
    for side, target, costs in (("edge", edge_t, result.edge_costs), ("cloud", cloud_t, result.cloud_costs)):
        path = out / side / "model.onnx"
        lib = (compiled or {}).get(side) or {}
        rows.append((
            side, target.name, f"{(plan.edge_ms if side == 'edge' else plan.cloud_ms):.3f}",
            str(costs.calibrated).lower(),
            (qblock or {}).get("edge_precision", "fp32") if side == "edge" else "fp32",
            fmt_bytes(path.stat().st_size) if path.exists() else "(none)",
            (f"{lib.get('machine')} {fmt_bytes(lib.get('size_bytes', 0))}" if "error" not in lib else "error: see manifest")
            if lib else ("-" if args.backend == "ort" else "(none)"),
        ))
    print(table(["side", "target", "predicted ms", "calibrated", "precision", "onnx", "tvm library"], rows))
    print()
    if written.boundary:
        print(table(["boundary tensor", "shape", "wire dtype", "wire bytes"],
                    [(b["name"], "x".join(map(str, b["shape"])), b.get("wire_dtype", b["dtype"]),
                      fmt_bytes(b.get("wire_nbytes", b["nbytes"]))) for b in written.describe()["boundary"]]))
    else:
        print("boundary: nothing crosses (all-edge or all-cloud plan)")
    acc = (qblock or {}).get("accuracy")
    if acc:
        outs = ", ".join(
            f"{o['name']}: " + (f"top-1 {o['top1_agreement']:.2%}" if o.get("top1_agreement") is not None else f"cos {o['cosine']:.4f}")
            for o in acc["outputs"]
        )
        print(f"\nint8 accuracy on {acc['samples']} held-out samples: {outs}")
    print(f"\npredicted total {plan.total_ms:.3f} ms at {uplink:g} Mbps (edge {plan.edge_ms:.3f} + network "
          f"{plan.transfer_ms + plan.fixed_ms:.3f} + cloud {plan.cloud_ms:.3f}); wrote {out}/")
    print(f"serve: onnxsplit serve {out}   run: onnxsplit run {out} --input x.npz --server http://HOST:8000")
    return 0


def _compile_tvm(root: Path, edge_t, cloud_t, tuning_db: Path | None = None) -> dict:  # noqa: ANN001
    """TVM libraries for both sides; failures are recorded and warned about, never fatal.

    ``tuning_db`` (inside ``root``): MetaSchedule records applied at compile time; each tuned side's
    ``tuning.database`` is recorded relative to the bundle root."""
    from . import TVMNotAvailableError, compile_bundle

    try:
        compiled = compile_bundle(root, edge_t, cloud_t, errors="record", tuning_db=tuning_db)
    except TVMNotAvailableError as exc:
        warnings.warn(f"TVM libraries not built: {exc}", stacklevel=2)
        return {"error": str(exc)}
    except OnnxSplitError as exc:  # e.g. a --tuning-db folder without databases
        warnings.warn(f"TVM libraries not built: {exc}", stacklevel=2)
        return {"error": str(exc)}
    for info in compiled.values():
        tun = info.get("tuning") if isinstance(info, dict) else None
        if tun and tun.get("database"):
            with contextlib.suppress(ValueError):
                tun["database"] = Path(tun["database"]).resolve().relative_to(root.resolve()).as_posix()
    for side, info in compiled.items():
        if isinstance(info, dict) and "error" in info:
            warnings.warn(f"TVM library for the {side} half not built: {info['error']}", stacklevel=2)
    return compiled


def _compile_dynamic(args: argparse.Namespace, graph, edge_t, cloud_t, rtt: float) -> int:  # noqa: ANN001
    """``compile --dynamic``: one fp32 bundle per distinct plan of the bandwidth x batch policy."""
    from ..cli import _split_list, edge_cpu_quota_from_args, fmt_bytes, table
    from ..dynamic_bundle import build_policy, write_dynamic_bundle

    if args.quantize == "int8" and args.calib:
        raise OnnxSplitError("--dynamic writes fp32 plans; drop --calib (or use --quantize none)")
    batches = tuple(int(b) for b in _split_list([args.batch_sizes]))
    quota = edge_cpu_quota_from_args(args)
    policy, result = build_policy(
        graph, edge_target=edge_t.name, cloud_target=cloud_t.name, rtt_ms=rtt, batch_sizes=batches,
        candidates=args.candidates, objective=args.objective,
        edge_factor=1.0 / quota.cpus if quota is not None else 1.0, edge_quota=quota,
    )
    manifest = write_dynamic_bundle(
        graph, policy, args.output, source=args.model, force=args.force,
        predicted=(result.problem, result.link, result.objective),
        settings={"edge_target": edge_t.name, "cloud_target": cloud_t.name, "rtt_ms": rtt, "candidates": args.candidates},
    )
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    rows = [(r.batch_size, f"{r.from_mbps:.3g}", f"{r.to_mbps:.3g}", len(r.plan.edge_nodes), fmt_bytes(r.plan.uplink_bytes),
             f"{r.plan.total_ms:.3f}") for r in policy.rows]
    print(table(["batch", "from Mbps", "to Mbps", "edge nodes", "uplink", "predicted ms"], rows))
    w = manifest["weights"]
    print(f"\nwrote {args.output}/ with {len(manifest.get('plans', []))} plans (fp32) and policy.json: "
          f"{fmt_bytes(manifest['total_size_bytes'])} on disk (the plans as standalone copies: "
          f"{fmt_bytes(manifest['plans_size_bytes'])}; weights.bin {fmt_bytes(w['nbytes'])} "
          f"{'hard-linked into' if w['hard_linked'] else 'copied into'} {w['references']} half folders)")
    print(f"serve every plan: onnxsplit serve {args.output}   edge: onnxsplit.dynamic.DynamicRunner")
    print(f"policy from measured plans: onnxsplit measure-plans {args.output} --side edge -o edge.json (on the edge), "
          f"--side cloud -o cloud.json (on the server), then onnxsplit policy {args.output} --timings edge.json cloud.json")
    return 0
