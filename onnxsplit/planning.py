"""From a Graph and two targets to a searched SplitPlan (the glue between ir, cost and search).

Contract of :func:`build_problem`:
- nodes are ``graph.compute_nodes`` (topological order; Constants are replicated, never placed);
- ``edge_ms``/``cloud_ms`` come from the two :class:`~onnxsplit.cost.predict.CostTable`s. A fused
  kernel's time sits on its head node and its followers cost 0, so a cut *inside* a fused kernel
  is slightly optimistic for the follower's side (documented approximation);
- ops the edge target lists as ``unsupported_ops`` get ``edge_ms = inf`` (forced to the cloud);
- tensors are graph inputs (``producer=None``, they start on the edge) and activations with a
  compute consumer or that are graph outputs, with their byte sizes; each is sent at most once;
- ``edge_mem_bytes[i]`` is the bytes of the initializers node i reads (a weight shared by two
  edge nodes is counted twice: an upper bound).

:func:`make_link` folds the cloud side's per-inference overhead into ``per_request_ms`` (paid
only when something runs in the cloud). The edge side's per-inference overhead is reported in
:class:`PlanResult` but is the same for every plan with a non-empty edge half.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .cost.predict import CostTable, predict
from .ir import Graph
from .search import Constraints, Link, Objective, PartitionProblem, SplitPlan, TensorSpec, pareto, search, sweep
from .targets import Target, load_target


@dataclass
class PlanResult:
    plan: SplitPlan
    problem: PartitionProblem
    edge_costs: CostTable
    cloud_costs: CostTable
    link: Link
    objective: Objective
    alternatives: tuple[SplitPlan, ...] = ()

    def to_json(self) -> dict:
        return {
            "plan": self.plan.to_dict(),
            "edge": _cost_summary(self.edge_costs),
            "cloud": _cost_summary(self.cloud_costs),
            "link": {
                "uplink_mbps": self.link.uplink_mbps,
                "downlink_mbps": self.link.downlink_mbps,
                "rtt_ms": self.link.rtt_ms,
                "per_request_ms": self.link.per_request_ms,
                **({"edge_cpu_quota": self.link.edge_quota.to_json()} if self.link.edge_quota is not None else {}),
            },
            "alternatives": [p.to_dict() for p in self.alternatives],
        }


def _cost_summary(t: CostTable) -> dict:
    return {
        "target": t.target,
        "runtime": t.runtime,
        "precision": t.precision,
        "calibrated": t.calibrated,
        "cost_model": t.source,
        "model_version": t.model_version,
        "whole_model_ms": t.total_ms,
        "overhead_ms": t.overhead_ms,
        "uncalibrated_nodes": len(t.uncalibrated_nodes),
    }


def build_problem(graph: Graph, edge: CostTable, cloud: CostTable, *, edge_target: Target | None = None) -> PartitionProblem:
    """The search problem for ``graph`` under the two cost tables (see the module docstring)."""
    nodes = graph.compute_nodes
    pos = {n.name: i for i, n in enumerate(nodes)}
    edge_ms = edge.as_array(graph)
    cloud_ms = cloud.as_array(graph)
    if edge_target is not None and edge_target.unsupported_ops:
        banned = set(edge_target.unsupported_ops)
        for i, n in enumerate(nodes):
            if n.op_type in banned:
                edge_ms[i] = np.inf
    tensors = []
    for t in graph.tensors.values():
        if t.kind not in ("input", "activation"):
            continue
        consumers = tuple(sorted({pos[c] for c in t.consumers if c in pos}))
        if not consumers and not t.is_graph_output:
            continue
        producer = None if t.kind == "input" else pos[t.producer]  # type: ignore[index]
        tensors.append(TensorSpec(t.name, producer, consumers, int(t.nbytes or 0), t.is_graph_output))
    return PartitionProblem(
        node_names=tuple(n.name for n in nodes),
        edge_ms=edge_ms,
        cloud_ms=cloud_ms,
        tensors=tuple(tensors),
        edge_mem_bytes=np.array([n.param_nbytes for n in nodes], dtype=np.int64),
    )


def make_link(
    uplink_mbps: float,
    *,
    downlink_mbps: float | None = None,
    rtt_ms: float = 0.0,
    per_request_ms: float = 0.0,
    cloud: CostTable | None = None,
    edge_target: Target | None = None,
) -> Link:
    overhead = cloud.overhead_ms if cloud is not None else 0.0
    radio = edge_target.radio_nj_per_byte if edge_target is not None and edge_target.radio_nj_per_byte else 0.0
    return Link(
        uplink_mbps=uplink_mbps,
        downlink_mbps=downlink_mbps,
        rtt_ms=rtt_ms,
        per_request_ms=per_request_ms + overhead,
        radio_nj_per_byte=radio,
    )


def plan_model(
    graph: Graph,
    *,
    edge_target: str | Target,
    cloud_target: str | Target,
    uplink_mbps: float,
    downlink_mbps: float | None = None,
    rtt_ms: float = 0.0,
    per_request_ms: float = 0.0,
    objective: str = "latency",
    algorithm: str = "mincut",
    constraints: Constraints | None = None,
    edge_precision: str = "fp32",
    cloud_precision: str = "fp32",
    edge_runtime: str | None = None,
    cloud_runtime: str | None = None,
    alternatives: int = 0,
    edge_cpu_quota=None,  # noqa: ANN001 - onnxsplit.cpu_quota.EdgeCpuQuota | None
) -> PlanResult:
    """Predict costs on both targets, search, and return the plan with its inputs.

    ``edge_cpu_quota`` (:class:`onnxsplit.cpu_quota.EdgeCpuQuota`): the edge runs under a CFS CPU
    limit (a container's); its predicted costs (for the unlimited device) are scaled to the long-run
    rate (x 1 / CPUs) and plan latencies use the quota model (``link.edge_quota``)."""
    et, ct = load_target(edge_target), load_target(cloud_target)
    edge_costs = predict(graph, et, edge_precision, edge_runtime)
    cloud_costs = predict(graph, ct, cloud_precision, cloud_runtime)
    problem = build_problem(graph, edge_costs, cloud_costs, edge_target=et)
    link = make_link(
        uplink_mbps, downlink_mbps=downlink_mbps, rtt_ms=rtt_ms, per_request_ms=per_request_ms, cloud=cloud_costs, edge_target=et
    )
    if edge_cpu_quota is not None:
        from .cpu_quota import check_objective

        check_objective(objective)
        problem = problem.with_costs(problem.edge_ms / edge_cpu_quota.cpus, problem.cloud_ms)
        link = dataclasses.replace(link, edge_quota=edge_cpu_quota)
    obj = Objective(kind=objective, edge_power_w=et.power_active_w)
    plan = search(problem, link, obj, algorithm, constraints)
    alts: tuple[SplitPlan, ...] = ()
    if alternatives:
        alts = tuple(p for p in pareto(problem, link, obj, algorithm, constraints, k=alternatives + 1) if p.edge_nodes != plan.edge_nodes)[
            :alternatives
        ]
    return PlanResult(plan, problem, edge_costs, cloud_costs, link, obj, alts)


def sweep_model(result: PlanResult, *, bandwidths_mbps=None, batch_sizes=(1,), constraints=None):  # noqa: ANN001, ANN201
    """The bandwidth x batch policy table for an already-costed problem (see search.sweep)."""
    kwargs = {} if bandwidths_mbps is None else {"bandwidths_mbps": bandwidths_mbps}
    return sweep(result.problem, result.link, result.objective, "mincut", constraints, batch_sizes=batch_sizes, **kwargs)
