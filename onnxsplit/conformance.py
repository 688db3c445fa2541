"""Conformance of the split mechanism: split a model at many cuts and check recombination.

Used by the test suite (zoo models, onnx's node tests, real pretrained models) and by
``tools/split_node_tests.py``. A cut *passes* when both halves pass
``onnx.checker.check_model(full_check=True)`` and the recombined outputs are bit-identical to the
original model's with onnxruntime graph optimizations disabled (or, with ``optimize=True``,
within ``rtol`` relative error).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from .errors import PlanError
from .ir import Graph
from .runtime_ort import make_session, run
from .split import edge_nodes_for_cut, edge_nodes_prefix, split_model
from .verify import OutputDiff, compare_outputs


@dataclass
class CutFailure:
    cut: str
    reason: str
    # The boundary carries float16/bfloat16 tensors and the outputs agree within half-precision
    # rounding. onnxruntime's CPU provider runs many fp16 kernels in fp32 and removes the
    # Cast pairs between them (its cast-insertion pass runs even with optimizations disabled), so
    # the unsplit model skips a rounding to fp16 that the split performs, as ONNX prescribes, at
    # the boundary.
    half_precision_boundary: bool = False


@dataclass
class CutReport:
    model: str
    cuts_checked: int = 0
    failures: list[CutFailure] = field(default_factory=list)
    refused: list[CutFailure] = field(default_factory=list)  # cuts split_model refuses with a PlanError

    @property
    def ok(self) -> bool:
        return not self.failures


def candidate_edge_sets(graph: Graph, *, max_cuts: int | None = None, seed: int = 0) -> list[tuple[str, set[str]]]:
    """Distinct valid edge sets: every prefix of the topological order and every single-tensor cut.

    With ``max_cuts`` a random sample of that size (always keeping all-cloud and all-edge).
    """
    cuts: dict[frozenset[str], str] = {}
    n = len(graph.compute_nodes)
    for k in range(n + 1):
        cuts.setdefault(frozenset(edge_nodes_prefix(graph, k)), f"--at {k}")
    for node in graph.compute_nodes:
        for out in node.outputs:
            cuts.setdefault(frozenset(edge_nodes_for_cut(graph, [out])), f"--cut {out}")
    items = [(label, set(s)) for s, label in cuts.items()]
    if max_cuts is not None and len(items) > max_cuts:
        ends = items[:1] + [it for it in items if len(it[1]) == n][:1]
        rest = [it for it in items if it not in ends]
        items = ends + random.Random(seed).sample(rest, max_cuts - len(ends))
    return items


def check_cuts(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    edge_sets: Iterable[tuple[str, set[str]]],
    *,
    optimize: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    full_check: bool = True,
    name: str = "model",
) -> CutReport:
    """Split at each edge set and compare against the original model run once."""
    ref_all = run(graph.model, feeds, optimize=optimize, session=make_session(graph.model, optimize=optimize))
    ref = {k: ref_all[k] for k in graph.outputs}
    if full_check:  # hold the halves to the standard the original model meets
        try:
            onnx.checker.check_model(graph.model, full_check=True)
        except Exception:  # noqa: BLE001
            full_check = False
    report = CutReport(name)
    for label, edge in edge_sets:
        report.cuts_checked += 1
        try:
            parts = split_model(graph, edge)
        except PlanError as exc:
            report.refused.append(CutFailure(label, str(exc)))
            continue
        try:
            for side in (parts.edge, parts.cloud):
                if side is not None:
                    onnx.checker.check_model(side, full_check=full_check)
            got = parts.run(feeds, optimize=optimize)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure with its reason
            report.failures.append(CutFailure(label, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
            continue
        diffs = compare_outputs(ref, got)
        bad = [d for d in diffs if not _acceptable(d, ref, got, optimize, rtol, atol)]
        if bad:
            d = bad[0]
            half = any(b.dtype in ("float16", "bfloat16") for b in parts.boundary) and all(
                np.allclose(np.asarray(ref[x.name], np.float64), np.asarray(got[x.name], np.float64), rtol=2e-3, atol=2e-3)
                for x in bad
            )
            report.failures.append(
                CutFailure(label, f"output '{d.name}' differs: max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}", half)
            )
    return report


def _acceptable(d: OutputDiff, ref, got, optimize: bool, rtol: float, atol: float) -> bool:  # noqa: ANN001
    if d.identical:
        return True
    if not optimize:
        return False
    a, b = np.asarray(ref[d.name]), np.asarray(got[d.name])
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


# ------------------------------------------------------------------------ onnx node tests
@dataclass
class NodeTestResult:
    name: str
    status: str  # "exact" | "refused" | "not runnable" | "MISMATCH"
    reason: str = ""
    cuts: int = 0

    @property
    def reason_kind(self) -> str:
        """The reason without model-specific names, for counting refusals."""
        head = self.reason.split(":", 1)[0]
        if "dynamic axis" in self.reason or "no static shape" in self.reason:
            return f"{head}: non-static shape"
        if "not a tensor" in self.reason or "sequence" in self.reason or "optional" in self.reason:
            return f"{head}: non-tensor (sequence/map/optional) value"
        return head


def run_node_tests(name_filter: str = "", limit: int | None = None, max_cuts: int = 64) -> list[NodeTestResult]:
    """Split every node-test model shipped with onnx at its candidate cuts (see tools/split_node_tests.py)."""
    from onnx.backend.test.loader import load_model_tests

    from .errors import OnnxSplitError
    from .load import load_model
    from .runtime_ort import graph_input_infos, quiet_onnxruntime

    quiet_onnxruntime()
    cases = [c for c in load_model_tests(kind="node") if name_filter in c.name and c.model is not None]
    results = []
    for case in cases[:limit]:
        model = case.model
        inputs = case.data_sets[0][0] if case.data_sets else []
        names = [vi.name for vi in graph_input_infos(model)]
        feeds = dict(zip(names, inputs))
        try:
            run(model, feeds, optimize=False)
        except Exception as exc:  # noqa: BLE001
            results.append(NodeTestResult(case.name, "not runnable", f"onnxruntime: {str(exc).splitlines()[0][:160]}"))
            continue
        shapes = {k: tuple(np.shape(v)) for k, v in feeds.items() if isinstance(v, np.ndarray)}
        try:
            graph = Graph(load_model(model, shapes, shape_feeds=feeds))
            graph.require_static_shapes()
        except OnnxSplitError as exc:
            results.append(NodeTestResult(case.name, "refused", f"{type(exc).__name__}: {exc}"))
            continue
        try:
            make_session(graph.model, optimize=False)
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).splitlines()[0][:160]
            results.append(NodeTestResult(case.name, "refused", f"StaticShapeError: onnxruntime rejects the model once static shapes are inferred ({msg})"))
            continue
        report = check_cuts(graph, feeds, candidate_edge_sets(graph, max_cuts=max_cuts), name=case.name)
        if report.ok and report.refused and report.cuts_checked == len(report.refused):
            results.append(NodeTestResult(case.name, "refused", f"PlanError: {report.refused[0].reason}"))
        elif report.ok:
            results.append(NodeTestResult(case.name, "exact", cuts=report.cuts_checked - len(report.refused)))
        elif all(f.half_precision_boundary for f in report.failures):
            f = report.failures[0]
            results.append(NodeTestResult(case.name, "fp16-rounding", f"{f.cut}: {f.reason}", cuts=report.cuts_checked))
        else:
            f = report.failures[0]
            results.append(NodeTestResult(case.name, "MISMATCH", f"{f.cut}: {f.reason}", cuts=report.cuts_checked))
    return results
