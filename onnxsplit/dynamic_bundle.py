"""Multi-plan ("dynamic split") bundles: every distinct plan of a policy table, ready to switch.

Following *Dynamic Split Computing for Efficient Deep Edge Intelligence*, the edge keeps several
split points and picks one per request from the current uplink bandwidth. :func:`build_policy`
computes the bandwidth x batch-size policy table (the cut search's :func:`~onnxsplit.search.sweep`
over all cuts, or over natural/compressive bottlenecks only with ``candidates="bottlenecks"``),
and :func:`write_dynamic_bundle` writes::

    OUT/plans/<k>/edge/model.onnx     edge half of plan k (absent for the all-cloud plan)
    OUT/plans/<k>/cloud/model.onnx    cloud half of plan k (absent for the all-edge plan)
    OUT/plans/<k>/manifest.json       a regular ``onnxsplit.manifest/1`` bundle (EdgeRunner /
                                      CloudServer / ``onnxsplit serve`` load it as is)
    OUT/policy.json                   rows (batch_size, from_mbps, to_mbps, plan id) + the table
    OUT/manifest.json                 schema ``onnxsplit.dynamic/1``: plans (uplink/downlink bytes,
                                      ``policy_candidate``), sizes, policy file, the link model
                                      (``link``: rtt, per-request cost, down/up ratio)

Plan 0 is always **all-edge** (the local fallback of :class:`~onnxsplit.dynamic.DynamicRunner`)
and the **all-cloud** (full offload) plan is always included, whether or not the table picks them.

Weights are on disk once: ``OUT/weights.bin`` holds the model's initializers (ONNX external
data, :class:`onnxsplit.bundle.SharedWeights`), every half references its tensors there, and each
half's folder holds a hard link to it (onnxruntime reads external data only from the model's own
folder; without hard links the file is copied). The manifest reports ``weights``,
``total_size_bytes`` (disk usage, each file once) and ``plans_size_bytes`` (the plans as
standalone copies). In memory each onnxruntime session keeps its own (optimized, prepacked) copy:
sharing the raw initializers between sessions (``SessionOptions.add_initializer``) saved nothing
with graph optimizations on (a one-off check, not a committed benchmark: 6 YOLOv8n sessions in one
process took +132 MB RSS unshared and +143 MB shared; with optimizations off +121 vs +75 MB).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

SCHEMA = "onnxsplit.dynamic/1"
WEIGHTS_NOTE = (
    "The model's weights are stored once, in weights.bin (ONNX external data); every plan's halves "
    "reference their tensors in it at fixed offsets, and each half's folder holds a hard link to that "
    "one file (onnxruntime reads external data only from the model's folder). total_size_bytes counts "
    "it once; plans_size_bytes is the sum of the plans as standalone copies. Copy the bundle with tar "
    "or rsync -H to keep one copy; quantized (int8) weights stay inside their edge model."
)
WEIGHTS_NOTE_COPIED = (
    "This file system refused hard links: weights.bin was copied into every half's folder, so the "
    "weights are on disk once per half (total_size_bytes counts every copy)."
)

__all__ = ["SCHEMA", "PolicyEntry", "DynamicBundle", "build_policy", "distinct_plans",
           "write_dynamic_bundle", "load_dynamic_bundle", "plan_kind", "policy_from_predictions", "plan_latencies"]


def build_policy(
    graph: Any,
    *,
    edge_target: str = "host-x86",
    cloud_target: str = "host-x86",
    edge_factor: float = 1.0,
    cloud_factor: float = 1.0,
    rtt_ms: float = 0.0,
    per_request_ms: float = 0.0,
    bandwidths_mbps: Sequence[float] | None = None,
    batch_sizes: Sequence[int] = (1,),
    candidates: str = "all",
    algorithm: str = "mincut",
    objective: str = "latency",
    edge_quota: Any = None,
):  # noqa: ANN201 - returns (PolicyTable, PlanResult)
    """Policy table for ``graph`` and the costed :class:`~onnxsplit.planning.PlanResult`.

    ``edge_factor`` multiplies every predicted edge latency (a CPU-limited edge emulating a weaker
    device); ``cloud_factor`` the cloud ones. ``candidates="all"``: the cut search over every
    cut (``algorithm``, min-cut by default); ``"bottlenecks"``: only prefix cuts that are natural
    or compressive bottlenecks (:func:`onnxsplit.candidates.cut_candidates`) plus all-edge and
    all-cloud, chosen exactly by evaluating each candidate at every grid point.
    ``edge_quota`` (:class:`onnxsplit.cpu_quota.EdgeCpuQuota`): the edge CPU runs under a CFS
    quota; the edge costs (after ``edge_factor``) are its long-run latencies and plan latencies are
    evaluated with the quota model (``res.link.edge_quota``).
    """
    from .planning import plan_model
    from .search.sweep import DEFAULT_BANDWIDTHS_MBPS, sweep

    if candidates not in ("all", "bottlenecks"):
        raise UsageError(f"candidates must be 'all' or 'bottlenecks', got {candidates!r}")
    res = plan_model(graph, edge_target=edge_target, cloud_target=cloud_target, uplink_mbps=10.0,
                     rtt_ms=rtt_ms, per_request_ms=per_request_ms, objective=objective, algorithm="chain")
    if edge_factor != 1.0 or cloud_factor != 1.0:
        pb = res.problem.with_costs(res.problem.edge_ms * float(edge_factor), res.problem.cloud_ms * float(cloud_factor))
        res.problem = pb
    if edge_quota is not None:
        from .cpu_quota import check_objective

        check_objective(objective)
        res.link = dataclasses.replace(res.link, edge_quota=edge_quota)
    grid = DEFAULT_BANDWIDTHS_MBPS if bandwidths_mbps is None else tuple(float(x) for x in bandwidths_mbps)
    if candidates == "all":
        table = sweep(res.problem, res.link, res.objective, algorithm, bandwidths_mbps=grid, batch_sizes=batch_sizes)
    else:
        from .candidates import cut_candidates

        ks = sorted({c.index for c in cut_candidates(graph)
                     if c.natural_bottleneck or c.compressive_bottleneck} | {0, res.problem.n_nodes})
        table = _sweep_fixed(res.problem, res.link, res.objective, ks, grid, batch_sizes)
    return table, res


def _sweep_fixed(problem, link, objective, ks, grid, batch_sizes):  # noqa: ANN001, ANN202
    """Exact policy table over a fixed set of prefix plans (same row/tie rules as search.sweep)."""
    from .search.cost import components, make_plan, objective_values, prefix_masks
    from .search.problem import scale_batch
    from .search.sweep import PolicyRow, PolicyTable, _switch, _weighted_bytes

    grid = np.asarray(grid, dtype=np.float64)
    links = [link.with_bandwidth(float(bw)) for bw in grid]
    masks = prefix_masks(problem.n_nodes, np.asarray(ks))
    rows: list = []
    grid_rows: dict[int, tuple[int, ...]] = {}
    for b in (int(x) for x in batch_sizes):
        pb = scale_batch(problem, b)
        comp = components(pb, masks)
        vals = np.stack([objective_values(comp, lk, objective) for lk in links], axis=1)
        wbytes = _weighted_bytes(comp, link)
        n_edge = masks.sum(axis=1)
        choice = np.array([int(np.lexsort((n_edge, wbytes, vals[:, i]))[0]) for i in range(grid.size)])
        starts = np.flatnonzero(np.r_[True, choice[1:] != choice[:-1]])
        first = len(rows)
        per_grid = np.zeros(grid.size, dtype=np.int64)
        bounds = [0.0] + [_switch(vals[choice[s - 1]], vals[choice[s]], grid, s, objective) for s in starts[1:]] + [math.inf]
        for r, s in enumerate(starts):
            e = starts[r + 1] if r + 1 < len(starts) else grid.size
            per_grid[s:e] = first + r
            rows.append(PolicyRow(b, bounds[r], bounds[r + 1], make_plan(pb, links[s], objective, masks[choice[s]], "bottlenecks")))
        grid_rows[b] = tuple(int(x) for x in per_grid)
    return PolicyTable(objective.kind, "bottlenecks", tuple(float(g) for g in grid), tuple(int(b) for b in batch_sizes),
                       tuple(rows), grid_rows)


def plan_kind(n_edge: int, n_nodes: int) -> str:
    return "all-edge" if n_edge == n_nodes else "all-cloud" if n_edge == 0 else "split"


def distinct_plans(table: Any, node_names: Sequence[str]) -> list[tuple[str, ...]]:
    """Distinct edge-node-name sets of the table, all-edge first, all-cloud included, then by
    increasing number of edge nodes (descending offload order does not matter to the runtime)."""
    all_edge = tuple(node_names)
    seen = {frozenset(all_edge): all_edge, frozenset(): ()}
    for row in table.rows:
        key = frozenset(row.plan.edge_node_names)
        seen.setdefault(key, tuple(row.plan.edge_node_names))
    rest = sorted((v for k, v in seen.items() if k and k != frozenset(all_edge)), key=len, reverse=True)
    return [all_edge] + rest + [()]


def write_dynamic_bundle(
    graph: Any,
    table: Any,
    out: str | Path,
    *,
    source: str | Path | None = None,
    force: bool = False,
    verify: bool = True,
    extra_plans: Sequence[Sequence[str]] = (),
    predicted: Any = None,
    settings: dict | None = None,
    quantized_plans: Sequence[tuple[str, Any, dict, dict[str, float] | None]] = (),
    quantized_policy: bool = False,
) -> dict:
    """Write every distinct plan of ``table`` (+ all-edge, all-cloud, ``extra_plans``) as
    ``OUT/plans/<k>/`` bundles, ``OUT/policy.json`` and ``OUT/manifest.json``; returns the manifest.

    ``predicted``: optional ``(problem, link, objective)`` to record each plan's predicted latency
    at the grid bandwidths (``predicted_ms`` in the manifest). ``verify``: check each split is
    bit-identical to the model (onnxruntime, optimizations off, random input).

    ``quantized_plans``: extra plans with an int8 edge half, each ``(label, QuantizedSplit,
    quantization block, predicted_ms or None)`` (what :func:`onnxsplit.quant.budget.quantize_for_split`
    returns, plus a label); they get the ids after the fp32 plans, ``"precision": "int8"`` and are
    never in the policy table (the table is the fp32 sweep) -- benchmarks force them by id. They are
    approximations of the model (int8), so they are not checked for bit-exactness.

    ``quantized_policy=True`` makes the quantized plans whose block says ``"within_budget": true``
    part of the policy (batch size 1 only; needs ``predicted`` and a predicted_ms for every
    quantized plan): at each grid bandwidth the plan with the lowest predicted latency among the
    fp32 plans and those int8 plans wins (ties: fewer uplink bytes), and a switch takes effect from
    the first grid point where the new plan wins (:func:`policy_from_predictions`). Int8 plans
    without that flag (e.g. a post-hoc quantized baseline) are written but never chosen. Each plan
    entry says so in ``policy_candidate`` (fp32 plans: always), which is also the set the measured
    policy of :mod:`onnxsplit.plan_timing` chooses from.
    """
    from .bundle import SharedWeights, atomic_output_dir, disk_usage, sha256_file, versions, write_manifest
    from .runtime_ort import random_feeds
    from .split import split_model
    from .verify import check_split

    node_names = [n.name for n in graph.compute_nodes]
    out_producer = {o: graph.tensors[o].producer for o in graph.outputs if o in graph.tensors}

    def downlink_bytes(edge_names: Sequence[str]) -> int:
        """Bytes of the graph outputs the cloud half sends back (produced by a cloud node)."""
        edge = set(edge_names)
        return int(sum(graph.tensors[o].nbytes or 0 for o, prod in out_producer.items() if prod is not None and prod not in edge))

    plans = distinct_plans(table, node_names)
    keys = {frozenset(p) for p in plans}
    for extra in extra_plans:
        if frozenset(extra) not in keys:
            plans.insert(len(plans) - 1, tuple(extra))
            keys.add(frozenset(extra))
    index = {frozenset(p): i for i, p in enumerate(plans)}
    feeds = random_feeds(graph.model, seed=0) if verify else None
    stem = Path(source).stem if source else "model"
    entries = []
    weights: SharedWeights | None = None

    def write_plan(tmp: Path, k: int, halves: Any, request: dict, extra: dict) -> int:
        """plans/<k>/ as a regular split bundle (weights in the shared file); returns its size in bytes
        as a standalone copy."""
        pdir = tmp / "plans" / str(k)
        files = {side: weights.save(m, pdir / side / "model.onnx") for side, m in (("edge", halves.edge), ("cloud", halves.cloud))
                 if m is not None}
        write_manifest(pdir, {
            "kind": "split",
            "name": f"{stem}-p{k}-cloud",
            "source": {"path": Path(source).name if source else "model.onnx",
                       "sha256": sha256_file(Path(source)) if source and Path(source).is_file() else None},
            "input_shapes": {n: list(graph.tensors[n].shape or ()) for n in graph.inputs},
            "request": {"dynamic_plan": k, **request},
            "plan": halves.describe(),
            "models": {side: f"{side}/model.onnx" for side in files},
            **extra,
        })
        return sum(p.stat().st_size for p in pdir.rglob("*") if p.is_file())

    with atomic_output_dir(out, force=force) as tmp:
        weights = SharedWeights(graph.model, tmp / SharedWeights.FILE)
        for k, edge_names in enumerate(plans):
            parts = split_model(graph, set(edge_names))
            if verify:
                bad = [d for d in check_split(graph.model, parts, feeds, optimize=False) if not d.identical]
                if bad:
                    raise UsageError(f"plan {k}: output '{bad[0].name}' differs after recombination")
            size = write_plan(tmp, k, parts, {}, {})
            entry = {
                "id": k, "path": f"plans/{k}", "kind": plan_kind(len(edge_names), len(node_names)),
                "precision": "fp32", "edge_nodes": len(edge_names), "cloud_nodes": len(node_names) - len(edge_names),
                "uplink_bytes": parts.boundary_nbytes, "downlink_bytes": downlink_bytes(edge_names), "size_bytes": size,
                "policy_candidate": True, "edge_node_names": list(edge_names),
            }
            if predicted is not None:
                entry["predicted_ms"] = plan_latencies(predicted[0], predicted[1], edge_names, table.bandwidths_mbps)
            entries.append(entry)
        for j, (label, qs, qblock, qpred) in enumerate(quantized_plans):
            k = len(plans) + j
            size = write_plan(tmp, k, qs, {"label": label}, {"quantization": qblock})
            entry = {
                "id": k, "path": f"plans/{k}", "kind": plan_kind(len(qs.edge_nodes), len(node_names)),
                "precision": qs.edge_precision, "label": label,
                "edge_nodes": len(qs.edge_nodes), "cloud_nodes": len(node_names) - len(qs.edge_nodes),
                "uplink_bytes": int(qs.wire_nbytes), "downlink_bytes": downlink_bytes(qs.edge_nodes), "size_bytes": size,
                "policy_candidate": bool(quantized_policy and (qblock or {}).get("within_budget") is True),
                "edge_node_names": list(qs.edge_nodes),
            }
            if qpred is not None:
                entry["predicted_ms"] = dict(qpred)
            entries.append(entry)
        policy_rows = [{"batch_size": r.batch_size, "from_mbps": r.from_mbps,
                        "to_mbps": r.to_mbps if math.isfinite(r.to_mbps) else None,
                        "plan": index[frozenset(r.plan.edge_node_names)],
                        "predicted_ms": r.plan.total_ms} for r in table.rows]
        algorithm = table.algorithm
        if quantized_policy and quantized_plans:
            if tuple(table.batch_sizes) != (1,):
                raise UsageError("quantized_policy supports batch size 1 only")
            if predicted is None or any(q[3] is None for q in quantized_plans):
                raise UsageError("quantized_policy needs predicted latencies for every plan")
            budgeted = {len(plans) + j for j, q in enumerate(quantized_plans) if (q[2] or {}).get("within_budget") is True}
            policy_rows = policy_from_predictions([e for e in entries if e["precision"] == "fp32" or e["id"] in budgeted],
                                                  table.bandwidths_mbps)
            algorithm = f"{table.algorithm} + int8 plans (lowest predicted latency per grid point)"
        policy = {"objective": table.objective, "algorithm": algorithm,
                  "batch_sizes": list(table.batch_sizes), "rows": policy_rows,
                  "table": table.to_dict()}
        (tmp / "policy.json").write_text(json.dumps(policy, indent=1) + "\n")
        manifest = {
            "schema": SCHEMA,
            "source": {"path": Path(source).name if source else None},
            "input_shapes": {n: list(graph.tensors[n].shape or ()) for n in graph.inputs},
            "all_edge_plan": 0,
            "all_cloud_plan": len(plans) - 1,  # quantized plans (if any) come after it
            "plans": entries,
            "policy": "policy.json",
            "settings": settings or {},
            **({"link": _link_block(predicted[1])} if predicted is not None else {}),
            "total_size_bytes": disk_usage(tmp),
            "plans_size_bytes": sum(e["size_bytes"] for e in entries),
            "weights": {"file": SharedWeights.FILE, "nbytes": weights.nbytes, "tensors": len(weights.index),
                        "hard_linked": weights.linked, "references": weights.places},
            "weights_note": WEIGHTS_NOTE if weights.linked else WEIGHTS_NOTE_COPIED,
            "versions": versions(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _link_block(link: Any) -> dict:
    """What the measured policy (:mod:`onnxsplit.plan_timing`) needs of the link model."""
    block = {"rtt_ms": float(link.rtt_ms), "per_request_ms": float(link.per_request_ms),
             "downlink_over_uplink": float(link.downlink_mbps) / float(link.uplink_mbps)}
    if link.edge_quota is not None:  # the measured policy adds its request_cpu_ms (plan_timing)
        block["edge_quota"] = link.edge_quota.to_json()
    return block


def policy_from_predictions(entries: Sequence[dict], grid: Sequence[float]) -> list[dict]:
    """Batch-1 policy rows from each plan entry's ``predicted_ms`` (keys ``f"{bw:g}"``): at each
    grid bandwidth the lowest predicted latency wins (ties: fewer uplink bytes, then lower id);
    a row starts at the first grid point its plan wins (the first row at 0)."""
    grid = sorted(float(g) for g in grid)
    if not grid:
        raise UsageError("empty bandwidth grid")
    choice = []
    for g in grid:
        key = f"{g:g}"
        best = min((e for e in entries if key in (e.get("predicted_ms") or {})),
                   key=lambda e: (e["predicted_ms"][key], e["uplink_bytes"], e["id"]), default=None)
        if best is None:
            raise UsageError(f"no plan has a prediction at {key} Mbit/s")
        choice.append(best)
    rows: list[dict] = []
    for i, e in enumerate(choice):
        if rows and rows[-1]["plan"] == e["id"]:
            continue
        if rows:
            rows[-1]["to_mbps"] = grid[i]
        rows.append({"batch_size": 1, "from_mbps": 0.0 if not rows else grid[i], "to_mbps": None, "plan": int(e["id"]),
                     "predicted_ms": float(e["predicted_ms"][f"{grid[i]:g}"])})
    return rows


def plan_latencies(problem: Any, link: Any, edge_names: Sequence[str], grid: Sequence[float]) -> dict[str, float]:
    """Predicted single-request latency (ms) of the plan running ``edge_names`` on the edge, at each
    bandwidth of ``grid`` (keys ``f"{bw:g}"``)."""
    from .search.cost import components

    pos = {n: i for i, n in enumerate(problem.node_names)}
    mask = np.zeros((1, problem.n_nodes), dtype=bool)
    mask[0, [pos[n] for n in edge_names]] = True
    comp = components(problem, mask)
    return {f"{bw:g}": float(comp.latency_ms(link.with_bandwidth(float(bw)))[0]) for bw in grid}


# ------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class PolicyEntry:
    batch_size: int
    from_mbps: float
    to_mbps: float
    plan: int


@dataclass
class DynamicBundle:
    root: Path
    manifest: dict
    plans: list[dict]
    policy: list[PolicyEntry]
    policy_doc: dict | None = None  # policy.json as read (its ``measured`` block, if any)

    @property
    def all_edge(self) -> int:
        return int(self.manifest["all_edge_plan"])

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({p.batch_size for p in self.policy})

    def plan_dir(self, k: int) -> Path:
        return self.root / self.plans[k]["path"]

    def lookup(self, mbps: float, batch_size: int = 1) -> int:
        """Plan id for a bandwidth and batch size (nearest batch size in the table not above it,
        else the smallest)."""
        sizes = self.batch_sizes
        below = [b for b in sizes if b <= batch_size]
        b = max(below) if below else min(sizes)
        rows = [r for r in self.policy if r.batch_size == b]
        for r in rows:
            if r.from_mbps <= mbps < r.to_mbps:
                return r.plan
        return rows[-1].plan if mbps >= rows[-1].from_mbps else rows[0].plan


def load_dynamic_bundle(path: str | Path) -> DynamicBundle:
    root = Path(path)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise UsageError(f"{root} has no manifest.json: not a dynamic bundle (write one with `onnxsplit compile MODEL --dynamic -o OUT`)")
    manifest = json.loads(mpath.read_text())
    if manifest.get("schema") != SCHEMA:
        raise UsageError(f"{mpath} has schema {manifest.get('schema')!r}; expected {SCHEMA!r}")
    pol = json.loads((root / manifest.get("policy", "policy.json")).read_text())
    rows = [PolicyEntry(int(r["batch_size"]), float(r["from_mbps"]),
                        math.inf if r["to_mbps"] is None else float(r["to_mbps"]), int(r["plan"]))
            for r in pol["rows"]]
    return DynamicBundle(root, manifest, list(manifest["plans"]), rows, pol)
