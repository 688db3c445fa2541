"""Accuracy-budgeted quantization: mixed precision for one split, and the choice among plans.

:func:`fit_budget` (one split, ``split --quantize int8``): quantize the whole edge half; if the
held-out accuracy breaks the budget, rank the edge nodes by sensitivity (:mod:`~onnxsplit.quant.sensitivity`:
nodes whose *lone* quantization already breaks the budget first, then by output SQNR when
quantized alone) and keep fp32 the shortest prefix of that ranking that meets the budget: the
breaking nodes are tried first, then every node (if even that fails, the int8 boundary alone is
the culprit), then bisection between the last failing and the first passing prefix (assumes
accuracy improves as more nodes stay fp32). Every configuration tried is recorded.

:func:`select_quantized_plan` (``plan --quantize int8``): candidate plans come from the cut
search's Pareto list (:func:`onnxsplit.search.pareto`) on the problem costed for an int8 edge
(:func:`mixed_problem`: int8 latencies from :func:`onnxsplit.cost.predict.predict`, boundary
bytes of float activations x1/4) plus the fp32 search's plan and alternatives. In order of their
optimistic (all-int8) cost, each gets :func:`fit_budget` on held-out samples and is re-costed
with its excluded nodes charged as fp32 (:func:`mixed_problem` again); candidates whose
optimistic cost cannot beat the best plan found so far are skipped. The fp32 plan (fp32 edge,
fp32 boundary: exact, no accuracy drop) is always a candidate, so a plan is always chosen: the
fastest within the budget. Every candidate and every configuration tried is reported.

Cost-model assumptions, documented: a node that runs int8 in the quantized edge (reads only
DequantizeLinear outputs) costs its int8 prediction, every other edge node its fp32 prediction (Q/DQ conversion overhead not charged); weights of quantized
Conv/ConvTranspose/Gemm/MatMul nodes take 1/4 of their fp32 bytes on the edge; boundary bytes of
edge-produced float32 activations shrink x4 (int8) or x2 (fp16); raw inputs and outputs sent
back are unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import PlanError
from ..ir import Graph
from ..split import SplitModels, split_model
from .calib import CalibrationData
from .metrics import Budget, OutputMetrics, compare_runs
from .quantize import DEFAULT_CALIBRATE_METHOD, ModelQuantizer, QuantizedSplit, quantize_split
from .sensitivity import SensitivityAnalyzer

__all__ = [
    "Attempt",
    "BudgetFit",
    "Candidate",
    "QuantPlanSelection",
    "WEIGHT_OPS",
    "fit_budget",
    "mixed_problem",
    "reference_outputs",
    "select_quantized_plan",
]

WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_WIRE_SCALE = {"int8": 0.25, "fp16": 0.5, "fp32": 1.0}


def reference_outputs(model, samples: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:  # noqa: ANN001
    """fp32 outputs of ``model`` (onnxruntime, default optimizations) for each sample."""
    from ..runtime_ort import make_session

    sess = make_session(model, optimize=True)
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return [dict(zip(names, sess.run(names, {k: v for k, v in s.items() if k in wanted}))) for s in samples]


# ------------------------------------------------------------------------------ one split
@dataclass
class Attempt:
    """One quantization configuration evaluated on held-out samples."""

    label: str
    excluded: list[str]
    quantized_nodes: int
    metrics: list[OutputMetrics]
    within_budget: bool
    reasons: list[str]
    seconds: float

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "excluded": list(self.excluded),
            "quantized_nodes": self.quantized_nodes,
            "within_budget": self.within_budget,
            "reasons": list(self.reasons),
            "metrics": [m.to_json() for m in self.metrics],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BudgetFit:
    """The configuration chosen for one split (within budget if any was) and every attempt."""

    split: QuantizedSplit
    within_budget: bool
    attempts: list[Attempt]
    sensitivity: list = field(default_factory=list)  # NodeSensitivity of the edge nodes, when computed

    @property
    def excluded(self) -> list[str]:
        return list(self.split.nodes_to_exclude)

    @property
    def metrics(self) -> list[OutputMetrics]:
        chosen = [a for a in self.attempts if a.excluded == self.excluded]
        return chosen[-1].metrics if chosen else []

    def to_json(self) -> dict:
        return {
            "within_budget": self.within_budget,
            "nodes_to_exclude": self.excluded,
            "quantized_nodes": len(self.split.quantized_nodes),
            "metrics": [m.to_json() for m in self.metrics],
            "attempts": [a.to_json() for a in self.attempts],
            "sensitivity": [s.to_json() for s in self.sensitivity if s.quantized],
        }


def fit_budget(
    graph: Graph,
    parts: SplitModels,
    calib: CalibrationData,
    heldout: CalibrationData,
    budget: Budget,
    *,
    boundary_dtype: str = "int8",
    nodes_to_exclude: Iterable[str] = (),
    reference: list[dict[str, np.ndarray]] | None = None,
    sensitivity: SensitivityAnalyzer | None = None,
    calibrate_method: str = DEFAULT_CALIBRATE_METHOD,
    max_steps: int = 10,
) -> BudgetFit:
    """Quantize ``parts``' edge with as few fp32 nodes as the budget allows (module docstring)."""
    ref = reference if reference is not None else reference_outputs(graph.model, heldout.samples)
    attempts: list[Attempt] = []
    start_excl = list(dict.fromkeys(nodes_to_exclude))

    if parts.edge is None:
        qs = quantize_split(parts, calib, boundary_dtype=boundary_dtype, quantize_edge=False)
        attempts.append(_evaluate(qs, "no edge half: nothing to quantize", heldout, ref, budget))
        return BudgetFit(qs, attempts[-1].within_budget, attempts)

    quantizer = ModelQuantizer(parts.edge, calib, compute_names=parts.edge_nodes, calibrate_method=calibrate_method)
    own_sens = None
    results: list[tuple[Attempt, QuantizedSplit]] = []
    sens_list: list = []
    try:

        def attempt(excl: list[str], label: str) -> bool:
            qs = quantize_split(parts, calib, boundary_dtype=boundary_dtype, nodes_to_exclude=excl, quantizer=quantizer)
            a = _evaluate(qs, label, heldout, ref, budget)
            attempts.append(a)
            results.append((a, qs))
            return a.within_budget

        label = "all edge nodes int8" if not start_excl else f"int8, {len(start_excl)} nodes fp32 as requested"
        if not attempt(start_excl, label):
            sens = sensitivity
            if sens is None:
                own_sens = sens = SensitivityAnalyzer(graph, calib, budget, calibrate_method=calibrate_method)
            sens_list = sens.get(parts.edge_nodes)
            cand = [x for x in sens_list if x.quantized and x.name not in start_excl]
            # nodes that break the budget alone first, then by output SQNR when quantized alone
            cand.sort(key=lambda x: (x.within_budget, x.sqnr_db, x.cosine))
            ranked = [x.name for x in cand]
            n_break = sum(not x.within_budget for x in cand)
            if ranked:
                lo, hi = 0, None  # excluding ranked[:lo] fails; ranked[:hi] meets the budget
                probes = ([n_break] if 0 < n_break < len(ranked) else []) + [len(ranked)]
                for m in probes:
                    label = (f"{m} nodes that break the budget alone kept fp32" if m == n_break
                             else "every quantizable edge node fp32 (int8 boundary only)")
                    if attempt(start_excl + ranked[:m], label):
                        hi = m
                        break
                    lo = m
                steps = 0
                while hi is not None and hi - lo > 1 and steps < max_steps:  # fewest fp32 nodes (bisection)
                    mid = (lo + hi) // 2
                    if attempt(start_excl + ranked[:mid], f"{mid} most sensitive nodes fp32"):
                        hi = mid
                    else:
                        lo = mid
                    steps += 1
    finally:
        quantizer.close()
        if own_sens is not None:
            own_sens.close()
    ok_results = [(a, q) for a, q in results if a.within_budget]
    if ok_results:
        a, q = min(ok_results, key=lambda r: len(r[0].excluded))
        return BudgetFit(q, True, attempts, sens_list)
    a, q = max(results, key=lambda r: budget.score(r[0].metrics))
    return BudgetFit(q, False, attempts, sens_list)


def _evaluate(qs: QuantizedSplit, label: str, heldout: CalibrationData, ref, budget: Budget) -> Attempt:  # noqa: ANN001
    t0 = time.perf_counter()
    got = qs.run_many(heldout.samples)
    metrics = compare_runs(ref, got, heldout.labels, names=qs.output_names)
    ok, why = budget.check(metrics)
    return Attempt(label, list(qs.nodes_to_exclude), len(qs.quantized_nodes), metrics, ok, why, time.perf_counter() - t0)


# ------------------------------------------------------------------------------ cost model
def mixed_problem(problem, graph: Graph, fp32, int8, *, quantized: Iterable[str] | None = None, boundary_dtype: str = "int8"):  # noqa: ANN001, ANN201
    """``problem`` re-costed for a mixed-precision edge: nodes in ``quantized`` (None = all) at
    their int8 latency, the others at fp32; boundary bytes and edge weight bytes scaled (see the
    module docstring). ``fp32``/``int8`` are :class:`~onnxsplit.cost.predict.CostTable`s of the
    same edge target; ``inf`` edge latencies of ``problem`` (unsupported ops) are kept."""
    from ..search import PartitionProblem

    names = problem.node_names
    q = set(names) if quantized is None else set(quantized)
    mask = np.array([n in q for n in names])
    e32 = np.array([fp32.latency_ms[n] for n in names], dtype=float)
    e8 = np.array([int8.latency_ms[n] for n in names], dtype=float)
    edge_ms = np.where(mask, e8, e32)
    edge_ms[np.isinf(problem.edge_ms)] = np.inf
    scale = _WIRE_SCALE[boundary_dtype]
    tensors = tuple(
        dataclasses.replace(t, nbytes=int(math.ceil(t.nbytes * scale)))
        if scale != 1.0 and t.producer is not None and not t.is_graph_output and graph.tensors[t.name].dtype == "float"
        else t
        for t in problem.tensors
    )
    mem = np.array(problem.edge_mem_bytes, dtype=np.int64)
    for i, n in enumerate(names):
        if mask[i] and graph.node(n).op_type in WEIGHT_OPS:
            mem[i] = mem[i] // 4
    return PartitionProblem(names, edge_ms, problem.cloud_ms, tensors, mem, problem.pinned)


# ------------------------------------------------------------------------------ plan choice
@dataclass
class Candidate:
    """A plan considered by :func:`select_quantized_plan`."""

    mode: str  # "int8" (quantized edge, boundary as requested) or "fp32" (exact split)
    optimistic: object  # SplitPlan costed with every edge node int8
    plan: object | None = None  # SplitPlan costed with the excluded nodes fp32 (None: skipped/infeasible)
    fit: BudgetFit | None = None
    status: str = ""  # "within budget", "over budget", "skipped: ...", "infeasible: ..."

    @property
    def within_budget(self) -> bool:
        return self.mode == "fp32" or (self.fit is not None and self.fit.within_budget)

    def to_json(self) -> dict:
        p = self.plan or self.optimistic
        d = {
            "mode": self.mode,
            "status": self.status,
            "edge_nodes": len(p.edge_nodes),  # type: ignore[attr-defined]
            "last_edge_node": p.edge_node_names[-1] if p.edge_node_names else None,  # type: ignore[attr-defined]
            "optimistic_objective": _num(self.optimistic.objective_value),  # type: ignore[attr-defined]
            "objective": _num(self.plan.objective_value) if self.plan is not None else None,  # type: ignore[attr-defined]
            "total_ms": _num(self.plan.total_ms) if self.plan is not None else None,  # type: ignore[attr-defined]
            "uplink_bytes": p.uplink_bytes,  # type: ignore[attr-defined]
        }
        if self.fit is not None:
            d.update(self.fit.to_json())
        return d


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass
class QuantPlanSelection:
    chosen: Candidate
    candidates: list[Candidate]
    budget: Budget
    boundary_dtype: str
    calibration: dict
    heldout_samples: int
    seconds: float = 0.0
    accuracy_check: str | None = None  # set when the held-out set is too small for the budget

    @property
    def plan(self):  # noqa: ANN201
        return self.chosen.plan

    @property
    def nodes_to_exclude(self) -> list[str]:
        return self.chosen.fit.excluded if self.chosen.fit is not None else []

    def to_json(self) -> dict:
        return {
            "mode": self.chosen.mode,
            "edge_precision": "int8" if self.chosen.mode == "int8" else "fp32",
            "boundary_dtype": self.boundary_dtype if self.chosen.mode == "int8" else "fp32",
            "nodes_to_exclude": self.nodes_to_exclude,
            "budget": self.budget.to_json(),
            "calibration": self.calibration,
            "heldout_samples": self.heldout_samples,
            **({"accuracy_check": self.accuracy_check} if self.accuracy_check else {}),
            "chosen": self.chosen.to_json(),
            "candidates": [c.to_json() for c in self.candidates],
            "seconds": round(self.seconds, 2),
        }


def select_quantized_plan(
    graph: Graph,
    result,  # noqa: ANN001 - planning.PlanResult
    calib: CalibrationData,
    heldout: CalibrationData,
    budget: Budget,
    *,
    algorithm: str = "mincut",
    constraints=None,  # noqa: ANN001
    candidates: int = 4,
    boundary_dtype: str = "int8",
    calibrate_method: str = DEFAULT_CALIBRATE_METHOD,
    edge_fp32=None,  # noqa: ANN001
    edge_int8=None,  # noqa: ANN001
) -> QuantPlanSelection:
    """The fastest plan within the accuracy budget (see the module docstring).

    ``edge_fp32`` / ``edge_int8`` override the edge :class:`~onnxsplit.cost.predict.CostTable`s
    (default: :func:`~onnxsplit.cost.predict.predict` for the result's edge target and runtime).
    """
    from ..cost.predict import predict
    from ..search import evaluate_plan, pareto
    from ..targets import load_target

    t0 = time.perf_counter()
    weak = resolution_warning(graph, heldout, budget)
    et = load_target(result.edge_costs.target)
    runtime = result.edge_costs.runtime
    fp32 = edge_fp32 or (result.edge_costs if result.edge_costs.precision == "fp32" else predict(graph, et, "fp32", runtime))
    int8 = edge_int8 or (result.edge_costs if result.edge_costs.precision == "int8" else predict(graph, et, "int8", runtime))
    link, obj = result.link, result.objective
    p_int8 = mixed_problem(result.problem, graph, fp32, int8, quantized=None, boundary_dtype=boundary_dtype)
    p_fp32 = mixed_problem(result.problem, graph, fp32, int8, quantized=(), boundary_dtype="fp32")

    # the exact fp32 split: always within budget
    fp32_plans = [evaluate_plan(p_fp32, link, result.plan.edge_nodes, obj, constraints, algorithm)]
    for alt in result.alternatives:
        try:
            fp32_plans.append(evaluate_plan(p_fp32, link, alt.edge_nodes, obj, constraints, algorithm))
        except PlanError:
            continue
    best_fp32 = min(fp32_plans, key=lambda p: p.objective_value)
    fallback = Candidate("fp32", best_fp32, best_fp32, None, "exact fp32 split (no accuracy drop)")

    # int8 candidates: Pareto plans of the int8 problem + the fp32 search's plans re-costed
    pool: dict[tuple[int, ...], object] = {}
    try:
        for p in pareto(p_int8, link, obj, algorithm, constraints, k=max(1, candidates)):
            pool.setdefault(tuple(p.edge_nodes), p)
    except PlanError:
        pass
    for p in [result.plan, *result.alternatives]:
        if tuple(p.edge_nodes) not in pool:
            try:
                pool[tuple(p.edge_nodes)] = evaluate_plan(p_int8, link, p.edge_nodes, obj, constraints, algorithm)
            except PlanError:
                continue
    ordered = sorted(pool.values(), key=lambda p: p.objective_value)  # type: ignore[attr-defined]

    ref = reference_outputs(graph.model, heldout.samples)
    cands: list[Candidate] = []
    best: Candidate = fallback
    sens: SensitivityAnalyzer | None = None
    tol = 1e-9
    try:
        for opt in ordered:
            c = Candidate("int8", opt)
            cands.append(c)
            if opt.objective_value >= best.plan.objective_value - tol:  # type: ignore[union-attr, attr-defined]
                c.status = "skipped: its all-int8 cost cannot beat the chosen plan"
                continue
            if not opt.edge_nodes:  # type: ignore[attr-defined]
                c.status = "skipped: all-cloud plan (nothing to quantize; same as fp32)"
                continue
            if sens is None:
                sens = _LazySensitivity(graph, calib, budget, calibrate_method)  # type: ignore[assignment]
            parts = split_model(graph, opt.edge_node_names)  # type: ignore[attr-defined]
            c.fit = fit_budget(
                graph, parts, calib, heldout, budget, boundary_dtype=boundary_dtype, reference=ref,
                sensitivity=sens, calibrate_method=calibrate_method,  # type: ignore[arg-type]
            )
            quantized = set(c.fit.split.quantized_nodes)  # what actually runs int8, not edge minus excluded
            try:
                c.plan = evaluate_plan(
                    mixed_problem(result.problem, graph, fp32, int8, quantized=quantized, boundary_dtype=boundary_dtype),
                    link, opt.edge_nodes, obj, constraints, "quant-budget",  # type: ignore[attr-defined]
                )
            except PlanError as exc:
                c.status = f"infeasible with {len(c.fit.excluded)} fp32 nodes: {exc}"
                continue
            c.status = "within budget" if c.fit.within_budget else "over budget: " + "; ".join(c.fit.attempts[-1].reasons)
            if c.fit.within_budget and c.plan.objective_value < best.plan.objective_value - tol:  # type: ignore[union-attr, attr-defined]
                best = c
    finally:
        if sens is not None:
            sens.close()
    cands.append(fallback)
    sel = QuantPlanSelection(best, cands, budget, boundary_dtype, calib.to_json(), len(heldout), time.perf_counter() - t0)
    sel.accuracy_check = weak
    return sel


class _LazySensitivity:
    """A SensitivityAnalyzer created on first use (it pre-processes and calibrates the whole model)."""

    def __init__(self, graph: Graph, calib: CalibrationData, budget: Budget, method: str):
        self._args = (graph, calib, budget)
        self._method = method
        self._a: SensitivityAnalyzer | None = None

    def get(self, nodes):  # noqa: ANN001, ANN201
        if self._a is None:
            g, c, b = self._args
            self._a = SensitivityAnalyzer(g, c, b, calibrate_method=self._method)
        return self._a.get(nodes)

    def close(self) -> None:
        if self._a is not None:
            self._a.close()


def resolution_warning(graph: Graph, heldout: CalibrationData, budget: Budget) -> str | None:
    """A warning when the held-out set is too small to resolve the top-1 budget (one flipped
    prediction is a bigger step than the allowed drop), for models with classifier outputs."""
    from .metrics import is_classifier_output

    n = len(heldout)
    clf = any(is_classifier_output(graph.tensors[o].shape or ()) for o in graph.outputs)
    if not clf or n == 0 or 1.0 / n <= budget.top1_drop:
        return None
    warnings.warn(
        f"only {n} held-out samples: one changed prediction moves top-1 agreement by {1 / n:.1%}, coarser than the "
        f"{budget.top1_drop:.1%} budget, so the accuracy check is weak; give more --calib samples "
        f"(at least {math.ceil(1 / max(budget.top1_drop, 1e-9)) * 4} for a 25% hold-out)",
        UserWarning,
        stacklevel=3,
    )
    return f"held-out set of {n} samples cannot resolve a {budget.top1_drop:.1%} top-1 drop"


# ------------------------------------------------------------------------------ CLI-level helpers
QUANT_METHOD = {
    "method": "onnxruntime static quantization (quant_pre_process + quantize_static), QDQ format",
    "weights": "int8, per-channel, symmetric",
    "activations": "uint8, per-tensor, asymmetric",
}


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:  # pragma: no cover
        return "?"


def quantize_for_split(
    graph: Graph,
    parts: SplitModels,
    data: CalibrationData,
    *,
    quantize: bool = True,
    boundary_dtype: str = "int8",
    budget: Budget | None = None,
    nodes_to_exclude: Iterable[str] = (),
    holdout: float | int = 0.25,
    calibrate_method: str = DEFAULT_CALIBRATE_METHOD,
) -> tuple[QuantizedSplit, dict]:
    """What ``onnxsplit split --quantize int8`` does: split ``data`` into calibration and held-out
    samples, fit the budget (or only encode the boundary when ``quantize`` is False), and return
    the split with the manifest's ``quantization`` block. Raises :class:`QuantizationError` when
    no configuration meets the budget."""
    from .quantize import QuantizationError

    budget = budget or Budget()
    calib, held = data.split(holdout)
    weak = resolution_warning(graph, held, budget)
    if quantize:
        fit = fit_budget(
            graph, parts, calib, held, budget, boundary_dtype=boundary_dtype,
            nodes_to_exclude=nodes_to_exclude, calibrate_method=calibrate_method,
        )
        qs, metrics, ok = fit.split, fit.metrics, fit.within_budget
        attempts = [a.to_json() for a in fit.attempts]
        sens = [s.to_json() for s in fit.sensitivity if s.quantized]
    else:
        qs = quantize_split(parts, calib, boundary_dtype=boundary_dtype, quantize_edge=False)
        a = _evaluate(qs, f"fp32 edge, {boundary_dtype} boundary", held, reference_outputs(graph.model, held.samples), budget)
        metrics, ok, attempts, sens = a.metrics, a.within_budget, [a.to_json()], []
    block = {
        **(QUANT_METHOD if quantize else {"method": "none (fp32 edge); boundary encoding only"}),
        "edge_precision": qs.edge_precision,
        "boundary_dtype": boundary_dtype,
        "calibrate_method": calibrate_method if (quantize or boundary_dtype == "int8") else None,
        "calibration": {**calib.to_json(), "heldout_samples": len(held)},
        "nodes_to_exclude": list(qs.nodes_to_exclude),
        "quantized_nodes": len(qs.quantized_nodes),
        "budget": budget.to_json(),
        "within_budget": ok,
        "accuracy": {"samples": len(held), "data": "held-out calibration samples", "outputs": [m.to_json() for m in metrics]},
        "attempts": attempts,
        "sensitivity": sens,
        "onnxruntime": _ort_version(),
        **({"warning": data.warning} if data.warning else {}),
        **({"accuracy_check": weak} if weak else {}),
    }
    if not ok:
        best = attempts[-1]["reasons"] if attempts else []
        raise QuantizationError(
            f"accuracy budget ({budget.describe()}) not met on {len(held)} held-out samples: "
            f"{'; '.join(best) or 'see attempts'} (tried {len(attempts)} configurations, last with "
            f"{len(attempts[-1]['excluded']) if attempts else 0} edge nodes fp32); try --boundary-dtype fp16, "
            "another cut, or a larger --max-accuracy-drop"
        )
    return qs, block


def verify_split_dir(
    out: str,
    *,
    model: str | None = None,
    data: str | None = None,
    samples: int | None = None,
    budget: Budget | None = None,
) -> dict:
    """fp32 original vs the split written in ``out`` on ``data`` (or synthetic samples): per
    output top-1 agreement, cosine, SQNR, max abs (+ accuracy with labels); boundary bytes fp32
    vs wire. ``within_budget`` uses ``budget``, else the budget recorded in the manifest."""
    from pathlib import Path

    from ..bundle import sha256_file
    from ..errors import OnnxSplitError
    from .. import load_graph
    from .calib import load_calibration
    from .quantize import load_split_dir

    split, manifest = load_split_dir(out)
    src = manifest.get("source") or {}
    path = model or src.get("absolute_path")
    if not path:
        raise OnnxSplitError(f"{out}/manifest.json does not record the source model's path; pass --model MODEL.onnx")
    if not Path(path).is_file():
        raise OnnxSplitError(f"source model {path} (from {out}/manifest.json) not found; pass --model MODEL.onnx")
    digest = sha256_file(Path(path))
    if src.get("sha256") and digest != src["sha256"]:
        raise OnnxSplitError(
            f"{path} is not the model {out} was split from (sha256 {digest[:12]}... != {src['sha256'][:12]}... in the "
            "manifest); pass --model with the original"
        )
    shapes = {k: tuple(v) for k, v in (manifest.get("input_shapes") or {}).items()}
    graph = load_graph(path, input_shapes=shapes or None)
    ds = load_calibration(data, graph, samples=samples)
    ref = reference_outputs(graph.model, ds.samples)
    got = split.run_many(ds.samples)
    metrics = compare_runs(ref, got, ds.labels, names=split.output_names)
    q = manifest.get("quantization") or {}
    if budget is None:
        b = q.get("budget") or {}
        budget = Budget(b.get("top1_drop", 0.01), b.get("min_cosine"), b.get("min_sqnr_db"))
    ok, why = budget.check(metrics)
    return {
        "split_dir": str(out),
        "model": str(path),
        "edge_precision": split.edge_precision if q else "fp32",
        "boundary_dtype": split.boundary_dtype if q else "fp32",
        "nodes_to_exclude": split.nodes_to_exclude,
        "data": ds.to_json(),
        "outputs": [m.to_json() for m in metrics],
        "identical": all(m.max_abs == 0.0 for m in metrics),
        "boundary": [b.to_json() for b in split.boundary],
        "boundary_nbytes_fp32": split.boundary_nbytes,
        "boundary_nbytes_wire": split.wire_nbytes,
        "budget": budget.to_json(),
        "within_budget": ok,
        "reasons": why,
    }
