"""Per-node quantization sensitivity (the "mixed precision where needed" input of Auto-Split).

For a node N of the *whole* model, the model is quantized with only N quantized
(``nodes_to_quantize=[N]``: onnxruntime inserts Q/DQ on N's inputs and weights) and its final
outputs are compared with the fp32 model on calibration samples (:func:`compare_runs`: top-1
agreement, cosine, SQNR). Measuring on the whole model makes the figure independent of the cut,
so one analysis serves every candidate plan. A node whose lone quantization already breaks the
budget (:meth:`Budget.check`) is *breaking*: it stays fp32 on the edge. The others are ranked by
their margin to the budget (then SQNR), most sensitive first, for the greedy exclusion of
:func:`onnxsplit.quant.budget.fit_budget`.

Cost: one ``quantize_static`` (calibration is computed once and cached) and one onnxruntime
session per analysed node, plus ``samples`` inferences; only op types onnxruntime quantizes are
analysed, and only the nodes asked for (the edge nodes of the plans being checked).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from .calib import CalibrationData
from .metrics import Budget, OutputMetrics, compare_runs
from .quantize import DEFAULT_CALIBRATE_METHOD, ModelQuantizer, quantized_node_names

__all__ = ["NodeSensitivity", "SensitivityAnalyzer", "node_sensitivity", "quantizable_op_types"]


def quantizable_op_types() -> frozenset[str]:
    """Op types onnxruntime's static quantizer handles (QOperator and QDQ registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


@dataclass(frozen=True)
class NodeSensitivity:
    name: str
    op_type: str
    quantized: bool  # quantizing the node alone inserted Q/DQ (False: nothing to quantize)
    within_budget: bool
    score: float  # margin to the budget (lower = more sensitive)
    sqnr_db: float  # worst output
    cosine: float  # worst output
    top1_agreement: float | None  # worst classifier output
    metrics: tuple[OutputMetrics, ...] = ()

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "quantized": self.quantized,
            "within_budget": self.within_budget,
            "sqnr_db": self.sqnr_db if np.isfinite(self.sqnr_db) else "inf",
            "cosine": self.cosine,
            "top1_agreement": self.top1_agreement,
        }


class SensitivityAnalyzer:
    """Computes (and caches) node sensitivities of ``graph`` on calibration samples."""

    def __init__(
        self,
        graph: Graph,
        calib: CalibrationData,
        budget: Budget | None = None,
        *,
        samples: int = 32,
        calibrate_method: str = DEFAULT_CALIBRATE_METHOD,
    ):
        from ..runtime_ort import make_session

        self.graph = graph
        self.budget = budget or Budget()
        self.eval = calib.head(max(1, samples))
        self.quantizer = ModelQuantizer(
            graph.model, calib, compute_names=[n.name for n in graph.compute_nodes], calibrate_method=calibrate_method
        )
        self._make_session = make_session
        sess = make_session(graph.model, optimize=True)
        names = [o.name for o in sess.get_outputs()]
        wanted = {i.name for i in sess.get_inputs()}
        self.output_names = names
        self.reference = [dict(zip(names, sess.run(names, {k: v for k, v in s.items() if k in wanted}))) for s in self.eval.samples]
        self.ops = quantizable_op_types()
        self.cache: dict[str, NodeSensitivity] = {}
        self.seconds = 0.0

    def get(self, nodes: Iterable[str] | None = None) -> list[NodeSensitivity]:
        """Sensitivities of ``nodes`` (default: every compute node), most sensitive first."""
        names = [n.name for n in self.graph.compute_nodes] if nodes is None else list(dict.fromkeys(nodes))
        t0 = time.perf_counter()
        for name in names:
            if name not in self.cache:
                self.cache[name] = self._measure(name)
        self.seconds += time.perf_counter() - t0
        out = [self.cache[n] for n in names]
        return sorted(out, key=lambda s: (s.score, s.sqnr_db))

    def _measure(self, name: str) -> NodeSensitivity:
        op = self.graph.node(name).op_type
        members = self.quantizer.members([name])
        if not members or not any(self.quantizer_op(m) in self.ops for m in members):
            return NodeSensitivity(name, op, False, True, float("inf"), float("inf"), 1.0, None)
        q = self.quantizer.quantize(nodes_to_quantize=[name])
        if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node) or not quantized_node_names(q):
            return NodeSensitivity(name, op, False, True, float("inf"), float("inf"), 1.0, None)
        sess = self._make_session(q, optimize=True)
        wanted = {i.name for i in sess.get_inputs()}
        got = [dict(zip(self.output_names, sess.run(self.output_names, {k: v for k, v in s.items() if k in wanted}))) for s in self.eval.samples]
        metrics = compare_runs(self.reference, got, self.eval.labels)
        ok, _ = self.budget.check(metrics)
        agreements = [m.top1_agreement for m in metrics if m.top1_agreement is not None]
        return NodeSensitivity(
            name,
            op,
            True,
            ok,
            self.budget.score(metrics),
            min(m.sqnr_db for m in metrics),
            min(m.cosine for m in metrics),
            min(agreements) if agreements else None,
            tuple(metrics),
        )

    def quantizer_op(self, name: str) -> str:
        if not hasattr(self, "_ops_by_name"):
            self._ops_by_name = {n.name: n.op_type for n in self.quantizer.model.graph.node}
        return self._ops_by_name.get(name, "")

    def close(self) -> None:
        self.quantizer.close()

    def __enter__(self) -> SensitivityAnalyzer:
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.close()


def node_sensitivity(
    graph: Graph,
    calib: CalibrationData,
    *,
    nodes: Iterable[str] | None = None,
    budget: Budget | None = None,
    samples: int = 32,
    calibrate_method: str = DEFAULT_CALIBRATE_METHOD,
) -> list[NodeSensitivity]:
    """Sensitivity of each of ``nodes`` (default: all) when only it is quantized, most sensitive first."""
    with SensitivityAnalyzer(graph, calib, budget, samples=samples, calibrate_method=calibrate_method) as a:
        return a.get(nodes)
