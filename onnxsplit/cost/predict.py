"""Per-node latency predictions for a graph on a target: the table the cut search consumes.

:func:`predict` groups the graph into kernels (:func:`onnxsplit.cost.kernels.group_kernels`, with
the fusion rules of the runtime), predicts each kernel with the registered cost model
``cost_models/<target>/<runtime>-<precision>.json`` when there is one (``calibrated=True``), else
with the roofline of the target's data file (``calibrated=False``), and spreads the result over IR
nodes:

* the kernel's head node gets the kernel's latency; fused followers get 0 and appear in
  ``fused_into`` (follower -> head);
* constant-folded nodes get 0 (computed once at session creation);
* a registered model marked ``calibrated: false`` (an estimate transferred from measured devices,
  :mod:`onnxsplit.cost.transfer`) is used, and the table says ``calibrated=False``;
* a kernel whose op family the model does not cover, or whose FLOPs are unknown, is estimated
  with the roofline (never 0: at least its bytes over the bandwidth plus the per-kernel overhead)
  and its nodes are listed in ``uncalibrated_nodes``.

``total_ms = sum(latency_ms.values()) + overhead_ms`` where ``overhead_ms`` is the per-inference
cost (session run) of the model or target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..ir import Graph
from ..targets import PRECISIONS, Target, TargetError, load_target
from .kernels import Kernel, group_kernels_for, resolve_family
from .model import CostModel, find_cost_model
from .roofline import roofline_kernel_ms, roofline_overhead_ms

__all__ = ["CostTable", "predict"]


@dataclass
class CostTable:
    """Predicted latency of every compute node of a graph on one target/runtime/precision."""

    target: str
    precision: str
    runtime: str
    calibrated: bool  # a fitted cost model was used (uncovered kernels: see uncalibrated_nodes)
    model_version: str | None  # version of the cost model, None for the roofline
    latency_ms: dict[str, float]  # IR node name -> ms (fused followers and folded constants: 0)
    fused_into: dict[str, str]  # fused follower -> head node name
    overhead_ms: float  # per inference
    total_ms: float  # sum(latency_ms) + overhead_ms
    uncalibrated_nodes: list[str]  # nodes estimated with the roofline
    source: str = ""  # cost-model path, or "roofline"
    kernels: list[Kernel] = field(default_factory=list, repr=False)

    def node_ms(self, name: str) -> float:
        return self.latency_ms[name]

    def as_array(self, graph: Graph) -> np.ndarray:
        """Latencies in ``graph.compute_nodes`` order (what :class:`PartitionProblem` takes)."""
        return np.array([self.latency_ms[n.name] for n in graph.compute_nodes], dtype=float)

    def to_json(self, *, kernels: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "precision": self.precision,
            "runtime": self.runtime,
            "calibrated": self.calibrated,
            "model_version": self.model_version,
            "source": self.source,
            "overhead_ms": self.overhead_ms,
            "total_ms": self.total_ms,
            "latency_ms": dict(self.latency_ms),
            "fused_into": dict(self.fused_into),
            "uncalibrated_nodes": list(self.uncalibrated_nodes),
        }
        if kernels:
            out["kernels"] = [k.to_json() for k in self.kernels]
        return out


def predict(
    graph: Graph,
    target: str | Path | Target,
    precision: str = "fp32",
    runtime: str | None = None,
    *,
    cost_model: CostModel | str | Path | None = None,
    cost_models_dir: str | Path | None = None,
) -> CostTable:
    """Predict per-node latencies of ``graph`` on ``target``.

    ``runtime`` defaults to the target's ``default_runtime``. ``cost_model`` forces a model
    (object or JSON path) instead of the registered one; ``cost_models_dir`` looks models up in
    another folder than the bundled ``cost_models/``.
    """
    t = load_target(target)
    if precision not in PRECISIONS:
        raise TargetError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    runtime = runtime or t.default_runtime
    if runtime not in t.runtimes:
        raise TargetError(f"target '{t.name}' has no runtime '{runtime}'; it offers {', '.join(t.runtimes)}")
    if isinstance(cost_model, (str, Path)):
        model: CostModel | None = CostModel.load(cost_model)
    elif cost_model is not None:
        model = cost_model
    else:
        model = find_cost_model(t.name, runtime, precision, cost_models_dir)

    kernels = group_kernels_for(graph, runtime, precision)
    latency: dict[str, float] = {}
    fused: dict[str, str] = {}
    uncal: list[str] = []
    # layout reorders (no members: see kernels.layout_kernels) are added to the kernel that pays for
    # them; the roofline and artifacts fitted before they existed price them inside the kernels
    # around them (as they were fitted), so there they cost nothing extra
    reorders = [k for k in kernels if not k.members]
    if model is None or resolve_family(model.families, "layout_reorder") is None:
        reorders = []
    kernels = [k for k in kernels if k.members]
    for k in kernels:
        ms = model.predict_kernel(k) if model is not None and (k.cost_known or k.family == "constant") else None
        if ms is None:
            ms = roofline_kernel_ms(k, t, precision)
            if k.family != "constant":
                uncal.extend(k.members)
        for m in k.members:
            latency[m] = 0.0
            if m != k.head:
                fused[m] = k.head
        latency[k.head] = float(ms)
    for k in reorders:
        latency[k.head] += float(model.predict_kernel(k))  # type: ignore[union-attr,arg-type]
    kernels += reorders
    overhead = model.overhead_ms if model is not None else roofline_overhead_ms(t)
    ordered = {n.name: latency[n.name] for n in graph.compute_nodes}
    uncal_set = set(uncal)
    return CostTable(
        target=t.name,
        precision=precision,
        runtime=runtime,
        calibrated=model is not None and model.calibrated,
        model_version=model.version if model is not None else None,
        latency_ms=ordered,
        fused_into=fused,
        overhead_ms=float(overhead),
        total_ms=float(sum(ordered.values()) + overhead),
        uncalibrated_nodes=[n.name for n in graph.compute_nodes if n.name in uncal_set],
        source=(model.path or "cost model") if model is not None else "roofline",
        kernels=kernels,
    )
