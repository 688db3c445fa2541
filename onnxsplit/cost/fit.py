"""Fitting cost models: non-negative least squares over per-family kernel features.

Every measured latency is a sum of kernel terms plus one per-inference overhead::

    latency_ms(graph) = overhead_ms + sum_{kernels k} sum_f coef[family(k)][f] * feature_f(k)

which is linear in the coefficients. So one solver handles both kinds of measurements:

* per-kernel times (:func:`fit_from_kernels`): each row is one kernel (a family and its
  features); a row timed as a standalone one-kernel model also pays the per-inference overhead;
* whole-model latencies (:func:`fit_from_whole_models`): each row sums the features of all the
  graph's kernels, family by family (:func:`sample_from_graph`).

The design matrix has one column per (family, feature) plus one for the overhead; rows are scaled
by 1/latency so the fit minimises the *relative* squared error (what MAPE measures), columns are
normalised, and :func:`scipy.optimize.nnls` keeps every coefficient >= 0 (a kernel never gets a
negative time). A small ridge term keeps collinear columns (e.g. ``one`` vs the overhead in
one-kernel rows) from taking extreme values.

Accuracy is measured on a random holdout (``holdout_fraction`` of the rows, ``seed``): MAPE,
median APE and Spearman rank correlation of predicted vs measured latency, stored in the
artifact's ``accuracy.holdout``. The returned model is the one fitted on the training rows only,
so the stored accuracy is that of the stored coefficients.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from ..errors import OnnxSplitError
from ..ir import Graph
from .features import FEATURES
from .kernels import FAMILIES, FusionRules, group_kernels, group_kernels_for, resolve_family
from .model import CostModel

__all__ = [
    "FitError",
    "ROBUST_MODES",
    "UNFITTED_FAMILIES",
    "Sample",
    "accuracy_metrics",
    "evaluate",
    "fit_from_kernels",
    "fit_kernel_configs",
    "fit_from_whole_models",
    "fit_profile",
    "fit_samples",
    "predict_model_sample",
    "robust_weights",
    "predict_sample",
    "sample_from_graph",
    "sample_from_kernel_row",
    "split_holdout",
]


class FitError(OnnxSplitError):
    """Fitting is impossible with the given data (no rows, bad latency, unknown family...)."""


@dataclass
class Sample:
    """One measurement: feature sums per family, the overhead count and the measured latency."""

    name: str
    latency_ms: float
    family_features: dict[str, dict[str, float]]
    overhead_count: float = 1.0  # how many per-inference overheads the latency includes
    kind: str = "model"  # "kernel" | "model"
    extra: dict[str, Any] = field(default_factory=dict)
    #: kernel signature -> how many kernels of that configuration the measurement contains
    configs: dict[str, float] = field(default_factory=dict)
    #: kernel signature -> (family, features of one such kernel)
    config_info: dict[str, tuple[str, dict[str, float]]] = field(default_factory=dict)


def sample_from_graph(graph: Graph, latency_ms: float, *, name: str = "", kind: str = "model",
                      rules: FusionRules | str | None = None, precision: str | None = None) -> Sample:
    """Sum the features of ``graph``'s kernels per family (constant-folded kernels cost 0).
    Kernels are grouped as :func:`onnxsplit.cost.predict` groups them for ``rules`` (a runtime
    name) at ``precision`` (int8 on ort-cpu: :func:`~onnxsplit.cost.kernels.mark_int8_fallbacks`)."""
    fam: dict[str, dict[str, float]] = {}
    configs: dict[str, float] = {}
    info: dict[str, tuple[str, dict[str, float]]] = {}
    if isinstance(rules, FusionRules):
        kernels = group_kernels(graph, rules)
    else:
        kernels = group_kernels_for(graph, rules, precision)
    for k in kernels:
        if k.family == "constant":
            continue
        acc = fam.setdefault(k.family, dict.fromkeys(FEATURES, 0.0))
        for f in FEATURES:
            acc[f] += k.features[f]
        if k.signature and k.cost_known:
            configs[k.signature] = configs.get(k.signature, 0.0) + 1.0
            info.setdefault(k.signature, (k.family, dict(k.features)))
    return Sample(name or graph.model.graph.name, _check_latency(latency_ms, name), fam, 1.0, kind,
                  configs=configs, config_info=info)


def sample_from_kernel_row(row: Mapping[str, Any], *, includes_overhead: bool = True, index: int = 0) -> Sample:
    """A per-kernel measurement row: ``family``, the features, and ``median_ms`` (or ``latency_ms``)."""
    fam = row.get("family")
    if fam in UNFITTED_FAMILIES:
        raise FitError(f"kernel row {index}: family '{fam}' is never fitted (its cost depends on subgraphs or custom "
                       "code); drop the row")
    if fam not in FAMILIES or fam == "constant":
        raise FitError(f"kernel row {index}: unknown family {fam!r}; known: {', '.join(f for f in FAMILIES if f != 'constant')}")
    feats = {}
    for f in FEATURES:
        if f == "one":
            feats[f] = float(row.get("one", 1.0))
            continue
        if f not in row or row[f] in ("", None):
            raise FitError(f"kernel row {index} ({row.get('name', '')}): missing feature '{f}'")
        feats[f] = float(row[f])
    lat = row.get("median_ms", row.get("latency_ms"))
    if lat in ("", None):
        raise FitError(f"kernel row {index}: missing 'median_ms' (or 'latency_ms')")
    name = str(row.get("name", f"row{index}"))
    return Sample(name, _check_latency(float(lat), name), {fam: feats}, 1.0 if includes_overhead else 0.0, "kernel")


def _check_latency(v: float, name: str) -> float:
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise FitError(f"measurement '{name}': latency must be a positive number of ms, got {v!r}")
    return v


_METHOD = ("per-family linear laws on kernel features (MFLOP, MB in/out/params, constant), weighted non-negative "
           "least squares on relative error (scipy.optimize.nnls)")

# ------------------------------------------------------------------------------------ solver
#: families never fitted: their cost depends on subgraphs/custom code, not on the node's features;
#: predictions use the roofline for them and list their nodes as uncalibrated.
UNFITTED_FAMILIES: frozenset[str] = frozenset({"control_flow", "other", "rnn"})

#: below these maxima in the training data a feature column is dropped (coefficient 0): 10 kFLOP,
#: 1 kB. Prevents huge coefficients on features that are ~0 in every sample of a family (e.g. the
#: 4-byte scale constant of an attention MatMul).
MIN_FEATURE_RANGE: dict[str, float] = {"mflops": 0.01, "in_mb": 0.001, "out_mb": 0.001, "param_mb": 0.001}

def _columns(samples: Sequence[Sample], features: Sequence[str]) -> list[tuple[str, str]]:
    fams = sorted({f for s in samples for f in s.family_features})
    return [(fam, f) for fam in fams for f in features]


def _design(samples: Sequence[Sample], cols: list[tuple[str, str]]) -> np.ndarray:
    idx = {c: j for j, c in enumerate(cols)}
    X = np.zeros((len(samples), len(cols) + 1))
    for i, s in enumerate(samples):
        for fam, feats in s.family_features.items():
            for f, v in feats.items():
                j = idx.get((fam, f))
                if j is not None:
                    X[i, j] += v
        X[i, -1] = s.overhead_count
    return X


#: ``robust`` modes of :func:`fit_samples`
ROBUST_MODES = ("none", "slow", "both")
#: default threshold of the robust reweighting: |log(measured / predicted)| up to this keeps full weight
DEFAULT_ROBUST_C = 0.05
ROBUST_ITERATIONS = 4


def robust_weights(samples: Sequence[Sample], families: Mapping[str, Mapping[str, float]], overhead_ms: float,
                   weights: Sequence[float] | None = None, *, mode: str = "slow",
                   c: float = DEFAULT_ROBUST_C) -> np.ndarray:
    """Row weights that damp the rows the current fit leaves far off (one step of a Huber IRLS).

    ``e = log(measured / predicted)`` per row; a row keeps its weight while ``e <= c`` (mode
    ``"slow"``: only rows measured *slower* than the law are damped) or ``|e| <= c`` (mode
    ``"both"``), else its weight is multiplied by ``c / |e|`` (Huber's weight on a log scale).
    ``"none"`` returns the weights unchanged.
    """
    if mode not in ROBUST_MODES:
        raise FitError(f"unknown robust mode '{mode}'; use one of {', '.join(ROBUST_MODES)}")
    w0 = np.ones(len(samples)) if weights is None else np.asarray(weights, dtype=float)
    if mode == "none":
        return w0
    if not c > 0:
        raise FitError(f"the robust threshold must be > 0, got {c:g}")
    y = np.array([s.latency_ms for s in samples], dtype=float)
    pred = np.array([predict_sample(families, overhead_ms, s) for s in samples], dtype=float)
    e = np.log(y / np.maximum(pred, 1e-12))
    a = np.maximum(e, 0.0) if mode == "slow" else np.abs(e)
    return w0 * np.where(a > c, c / np.maximum(a, 1e-12), 1.0)


def _robust_provenance(mode: str, c: float, weights: Sequence[float], final: np.ndarray) -> dict[str, Any]:
    """What a robust fit did, for the artifact's provenance (``final``: the weights after the fit)."""
    return {"mode": mode, "c": float(c), "iterations": ROBUST_ITERATIONS,
            "rows_damped": int(np.sum(final < np.asarray(weights, dtype=float) * (1 - 1e-9))), "rows": len(final),
            "rule": "Huber IRLS on log(measured / predicted): weight * c / |e| where e > c"
                    + (" (rows measured slower than the law only)" if mode == "slow" else "")}


def fit_samples(
    samples: Sequence[Sample],
    *,
    features: Sequence[str] = FEATURES,
    overhead_ms: float | None = None,
    weights: Sequence[float] | None = None,
    ridge: float = 1e-6,
    robust: str = "none",
    robust_c: float = DEFAULT_ROBUST_C,
) -> tuple[dict[str, dict[str, float]], float]:
    """Per-family coefficients and the per-inference overhead, fitted by weighted NNLS.

    ``overhead_ms`` fixes the overhead instead of fitting it. ``weights`` multiply each row's
    relative error. Returns ``(families, overhead_ms)``.

    ``robust`` (default ``"none"``): ``"slow"`` refits :data:`ROBUST_ITERATIONS` times, each time
    with the rows reweighted by :func:`robust_weights` from the previous fit, so that rows measured
    much slower than the law (threshold ``robust_c`` on the log ratio) pull it up less. Meant for
    timings with one-sided noise: on a shared or preemptible machine interference only ever makes
    a run slower (on the 2-vCPU VM where host-x86 was profiled, two-thread latencies flip between
    a fast state and one up to 1.8x slower for minutes at a time; docs/cost-model-accuracy.md).
    ``"both"`` damps rows off in either direction.
    """
    w = np.ones(len(samples)) if weights is None else np.asarray(weights, dtype=float)
    fam, oh = _fit_once(samples, features=features, overhead_ms=overhead_ms, weights=w, ridge=ridge)
    for _ in range(ROBUST_ITERATIONS if robust != "none" else 0):
        rw = robust_weights(samples, fam, oh, w, mode=robust, c=robust_c)
        fam, oh = _fit_once(samples, features=features, overhead_ms=overhead_ms, weights=rw, ridge=ridge)
    return fam, oh


def _fit_with_weights(samples: Sequence[Sample], weights: Sequence[float], overhead_ms: float | None, robust: str,
                      robust_c: float) -> tuple[dict[str, dict[str, float]], float, np.ndarray]:
    """:func:`fit_samples`, plus the row weights its result implies (``weights`` unchanged without
    ``robust``): what the kernel-configuration fit and the provenance use."""
    fam, oh = fit_samples(samples, weights=weights, overhead_ms=overhead_ms, robust=robust, robust_c=robust_c)
    return fam, oh, robust_weights(samples, fam, oh, weights, mode=robust, c=robust_c)


def _fit_once(
    samples: Sequence[Sample],
    *,
    features: Sequence[str],
    overhead_ms: float | None,
    weights: Sequence[float] | None,
    ridge: float,
) -> tuple[dict[str, dict[str, float]], float]:
    if not samples:
        raise FitError("no measurements to fit")
    features = tuple(features)
    cols = _columns(samples, features)
    X = _design(samples, cols)
    y = np.array([s.latency_ms for s in samples], dtype=float)
    w = np.ones(len(samples)) if weights is None else np.asarray(weights, dtype=float)
    if overhead_ms is not None:
        target = y - X[:, -1] * overhead_ms
        X = X[:, :-1]
    else:
        target = y
    A = X * (w / y)[:, None]
    b = target * w / y
    norms = np.linalg.norm(A, axis=0)
    # a feature that never exceeds its resolution in the data is not identifiable: coefficient 0
    resolution = np.array([MIN_FEATURE_RANGE.get(f, 0.0) for _, f in cols] + [0.0])[: A.shape[1]]
    active = (norms > 1e-12) & (np.abs(X).max(axis=0) > resolution)
    coef = np.zeros(A.shape[1])
    if active.any():
        As = A[:, active] / norms[active]
        if ridge > 0:
            k = As.shape[1]
            As = np.vstack([As, math.sqrt(ridge) * np.eye(k)])
            b = np.concatenate([b, np.zeros(k)])
        sol, _ = nnls(As, b, maxiter=50 * As.shape[1] + 1000)
        coef[active] = sol / norms[active]
    families: dict[str, dict[str, float]] = {}
    for (fam, f), c in zip(cols, coef[: len(cols)]):
        families.setdefault(fam, {})[f] = float(c)
    oh = float(overhead_ms) if overhead_ms is not None else float(coef[-1])
    return families, oh


def _law(families: Mapping[str, Mapping[str, float]], fam: str, feats: Mapping[str, float]) -> float:
    coefs = families.get(resolve_family(families, fam) or "")
    if coefs is None:
        return 0.0
    return float(sum(coefs.get(f, 0.0) * v for f, v in feats.items()))


def predict_sample(families: Mapping[str, Mapping[str, float]], overhead_ms: float, s: Sample,
                   configs: Mapping[str, Mapping[str, Any]] | None = None) -> float:
    """Predicted latency of a sample (families without coefficients contribute nothing).

    With ``configs`` (a model's ``kernel_configs``), each kernel whose configuration is listed
    costs that entry's ``ms`` instead of the family law, as :meth:`CostModel.predict_kernel` does.
    """
    t = overhead_ms * s.overhead_count
    for fam, feats in s.family_features.items():
        t += _law(families, fam, feats)
    if configs:
        for sig, n in s.configs.items():
            c = configs.get(sig)
            if c is None:
                continue
            fam, feats = s.config_info[sig]
            if resolve_family(families, fam) is None:
                continue
            t += n * (float(c["ms"]) - _law(families, fam, feats))
    return float(t)


def predict_model_sample(model: CostModel, s: Sample) -> float:
    """:func:`predict_sample` with everything ``model`` has (family laws and kernel configurations)."""
    return predict_sample(model.families, model.overhead_ms, s, model.kernel_configs)


# ------------------------------------------------------------------------------------ kernel configurations
#: a configuration's fitted cost never drops below this fraction of its family law
CONFIG_FLOOR_FRACTION = 0.1
#: ridge strengths tried (relative deviations from the family law are penalised: see fit_kernel_configs)
CONFIG_LAMBDAS = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)


def fit_kernel_configs(
    samples: Sequence[Sample],
    families: Mapping[str, Mapping[str, float]],
    overhead_ms: float,
    *,
    weights: Sequence[float] | None = None,
    min_count: int = 5,
    lambdas: Sequence[float] = CONFIG_LAMBDAS,
    folds: int = 3,
    seed: int = 0,
) -> tuple[dict[str, dict[str, Any]], float, dict[str, Any]]:
    """Per-configuration kernel costs on top of the family laws (nn-Meter-style kernel terms).

    Every kernel configuration (signature) that occurs in at least ``min_count`` training
    measurements gets its own cost ``ms_j = law_j * (1 + u_j)``, where ``law_j`` is the family law
    at that configuration's features (configurations whose law is 0 are left out). The relative deviations ``u`` (and a correction of the
    per-inference overhead, nearly unpenalised) minimise the relative squared error of what the
    family laws leave unexplained, plus ``lam * ||u||^2`` (ridge: a rarely-seen configuration
    stays near its family law); ``lam`` is picked from ``lambdas`` by ``folds``-fold
    cross-validation (MAPE) over the samples. Costs are floored at :data:`CONFIG_FLOOR_FRACTION`
    of the law. Configurations never seen keep the family law.

    Returns ``(kernel_configs, overhead_ms, info)``; ``info`` has the chosen lambda, each
    candidate's CV MAPE and the number of configurations.
    """
    info: dict[str, Any] = {"min_count": int(min_count), "n_configs": 0, "lambda": None}
    if not samples:
        return {}, overhead_ms, info
    counts: dict[str, int] = {}
    meta: dict[str, tuple[str, dict[str, float]]] = {}
    for s in samples:
        for sig in s.configs:
            counts[sig] = counts.get(sig, 0) + 1
            meta.setdefault(sig, s.config_info[sig])
    sigs = sorted(sig for sig, n in counts.items() if n >= min_count and meta[sig][0] in families
                  and _law(families, *meta[sig]) > 0)
    if not sigs:
        return {}, overhead_ms, info
    col = {sig: j for j, sig in enumerate(sigs)}
    m = len(sigs)
    law = np.array([_law(families, *meta[sig]) for sig in sigs])
    y = np.array([s.latency_ms for s in samples], dtype=float)
    w = np.ones(len(samples)) if weights is None else np.asarray(weights, dtype=float)
    base = np.array([predict_sample(families, overhead_ms, s) for s in samples])
    C = np.zeros((len(samples), m + 1))
    for i, s in enumerate(samples):
        for sig, n in s.configs.items():
            j = col.get(sig)
            if j is not None:
                C[i, j] = n
        C[i, m] = s.overhead_count
    oh_scale = max(overhead_ms, float(np.median(y)) * 0.01, 1e-6)
    scale = np.concatenate([law, [oh_scale]])
    A = C * scale[None, :] * (w / y)[:, None]
    b = (y - base) * w / y

    def solve(rows: np.ndarray, lam: float) -> np.ndarray:
        Ar, br = A[rows], b[rows]
        pen = np.full(m + 1, lam)
        pen[m] = lam * 1e-3
        return np.linalg.solve(Ar.T @ Ar + np.diag(pen), Ar.T @ br)

    def costs(u: np.ndarray) -> tuple[np.ndarray, float]:
        return (np.maximum(law * (1 + u[:m]), CONFIG_FLOOR_FRACTION * law),
                max(overhead_ms + u[m] * oh_scale, 0.0))

    def predict_rows(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        ms, oh = costs(u)
        return base[rows] + C[rows, :m] @ (ms - law) + C[rows, m] * (oh - overhead_ms)

    order = np.random.default_rng(seed).permutation(len(samples))
    k = max(2, min(folds, len(samples)))
    cv: dict[float, float] = {}
    for lam in lambdas:
        ape = []
        for f in range(k):
            test = np.sort(order[f::k])
            train = np.setdiff1d(order, test)
            if len(train) == 0 or len(test) == 0:
                continue
            ape.append(np.abs(predict_rows(test, solve(train, lam)) - y[test]) / y[test])
        cv[float(lam)] = float(np.concatenate(ape).mean() * 100) if ape else math.inf
    lam = min(cv, key=lambda v: (cv[v], -v))
    ms, oh = costs(solve(np.arange(len(samples)), lam))
    configs = {sig: {"family": meta[sig][0], "ms": float(ms[j]), "law_ms": float(law[j]), "n_train": int(counts[sig])}
               for sig, j in col.items()}
    info.update({"n_configs": len(configs), "lambda": lam, "overhead_ms_family_laws": float(overhead_ms),
                 "cv_mape_pct_by_lambda": {str(k_): round(v, 3) for k_, v in cv.items()},
                 "train_mape_pct_family_laws_only": round(float((np.abs(base - y) / y).mean() * 100), 3)})
    return configs, oh, info


def accuracy_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """``n``, ``within_10_pct`` (share of APE <= 10 %), ``mape_pct``, ``median_ape_pct``, ``max_ape_pct``,
    ``spearman`` (None when undefined)."""
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    n = int(len(m))
    if n == 0:
        return {"n": 0, "within_10_pct": None, "mape_pct": None, "median_ape_pct": None, "max_ape_pct": None,
                "spearman": None}
    ape = np.abs(p - m) / m * 100.0
    rho = None
    if n >= 3 and np.ptp(m) > 0 and np.ptp(p) > 0:
        from scipy.stats import spearmanr

        rho = float(spearmanr(p, m).statistic)
    return {
        "n": n,
        "within_10_pct": round(float((ape <= 10.0).mean() * 100.0), 2),
        "mape_pct": round(float(ape.mean()), 3),
        "median_ape_pct": round(float(np.median(ape)), 3),
        "max_ape_pct": round(float(ape.max()), 3),
        "spearman": None if rho is None else round(rho, 4),
    }


def evaluate(model: CostModel, samples: Sequence[Sample]) -> dict[str, Any]:
    """Accuracy of ``model`` on measured samples (see :func:`accuracy_metrics`)."""
    pred = [predict_model_sample(model, s) for s in samples]
    out = accuracy_metrics(pred, [s.latency_ms for s in samples])
    out["samples"] = [
        {"name": s.name, "measured_ms": round(s.latency_ms, 5), "predicted_ms": round(p, 5)}
        for s, p in zip(samples, pred)
    ]
    return out


def split_holdout(n: int, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, holdout) indices: a seeded random ``holdout_fraction`` of ``n`` rows (>= 1 if n >= 2)."""
    if not 0 <= holdout_fraction < 1:
        raise FitError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_hold = 0 if holdout_fraction == 0 or n < 2 else max(1, int(round(holdout_fraction * n)))
    return sorted(perm[n_hold:]), sorted(perm[:n_hold])


def _provenance(provenance: Mapping[str, Any] | None, n_samples: int) -> dict[str, Any]:
    prov = {
        "source": "unspecified",
        "license": "unspecified",
        "citation": "",
        "date": _dt.date.today().isoformat(),
    }
    prov.update(dict(provenance or {}))
    prov["n_samples"] = int(n_samples)
    return prov


def _build(families, overhead, *, target, runtime, precision, version, provenance, n, accuracy,
           kernel_configs=None, memory_floor=None, serial_kernels=None) -> CostModel:
    model = CostModel(
        kernel_configs=dict(kernel_configs or {}),
        memory_floor=dict(memory_floor) if memory_floor else None,
        serial_kernels=dict(serial_kernels) if serial_kernels else None,
        target=target,
        runtime=runtime,
        precision=precision,
        version=str(version),
        features=FEATURES,
        families=families,
        overhead_ms=overhead,
        provenance=_provenance(provenance, n),
        accuracy=accuracy,
    )
    CostModel.from_json(model.to_json())  # validates
    return model


def _strip(acc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in acc.items() if k != "samples"}


# ------------------------------------------------------------------------------------ public fits
def fit_from_kernels(
    rows: Iterable[Mapping[str, Any]],
    *,
    target: str = "unknown",
    runtime: str = "ort-cpu",
    precision: str = "fp32",
    provenance: Mapping[str, Any] | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    includes_overhead: bool = True,
    overhead_ms: float | None = None,
    version: str = "1",
) -> CostModel:
    """Fit from per-kernel measurements.

    Each row maps ``family`` (see :data:`onnxsplit.cost.kernels.FAMILIES`), the features of
    :data:`onnxsplit.cost.features.FEATURES` (``one`` may be omitted) and ``median_ms`` (or
    ``latency_ms``). ``includes_overhead``: the times were measured as standalone one-kernel
    sessions and include the per-inference overhead (fit it, or fix it with ``overhead_ms``).
    """
    samples = [sample_from_kernel_row(r, includes_overhead=includes_overhead, index=i) for i, r in enumerate(rows)]
    if not samples:
        raise FitError("no kernel rows to fit")
    train_idx, hold_idx = split_holdout(len(samples), holdout_fraction, seed)
    train = [samples[i] for i in train_idx]
    hold = [samples[i] for i in hold_idx]
    fixed = overhead_ms if includes_overhead else 0.0
    families, oh = fit_samples(train, overhead_ms=fixed)
    acc_h = accuracy_metrics([predict_sample(families, oh, s) for s in hold], [s.latency_ms for s in hold])
    acc_t = accuracy_metrics([predict_sample(families, oh, s) for s in train], [s.latency_ms for s in train])
    return _build(families, oh, target=target, runtime=runtime, precision=precision, version=version,
                  provenance={"fitted_from": "per-kernel latencies", **dict(provenance or {})},
                  n=len(samples), accuracy={"holdout": {**acc_h, "level": "kernel"}, "train": acc_t})


def fit_from_whole_models(
    graphs: list[Graph],
    latencies_ms: list[float],
    *,
    target: str,
    runtime: str,
    precision: str,
    provenance: Mapping[str, Any] | None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    names: Sequence[str] | None = None,
    kernel_samples: Sequence[Sample] | None = None,
    overhead_ms: float | None = None,
    rules: FusionRules | str | None = None,
    version: str = "1",
    cv_folds: int = 5,
    kernel_configs: bool = True,
    config_min_count: int = 5,
    model_weight: float = 1.0,
    memory_floor: Mapping[str, Any] | None = None,
    robust: str = "none",
    robust_c: float = DEFAULT_ROBUST_C,
    serial_kernels: Mapping[str, Any] | None = None,
) -> CostModel:
    """Fit from whole-model latencies: each latency = sum of its kernels' times + overhead.

    ``graphs[i]`` was measured at ``latencies_ms[i]`` (median, batch 1) on ``target`` with
    ``runtime``/``precision``. Models containing a family that is never fitted
    (:data:`UNFITTED_FAMILIES`: control flow, custom ops, RNNs) are not used for fitting and are
    reported in ``accuracy.uncovered``. A seeded ``holdout_fraction`` of the other models is held
    out; the model is fitted on the rest (plus ``kernel_samples``, per-kernel or small-graph
    measurements, if given: their rows are weighted so that both kinds of data weigh the same in
    total) and its accuracy on the held-out models, predicted exactly as :func:`onnxsplit.cost.predict`
    does (roofline for uncovered kernels), is stored in ``accuracy.holdout``. With ``cv_folds``
    >= 2, ``accuracy.cross_validation`` also reports a k-fold estimate over all covered models
    (each predicted by a model fitted without its fold; the stored coefficients are unaffected).
    With ``kernel_configs``, kernel configurations seen in at least ``config_min_count`` training
    measurements also get their own cost (:func:`fit_kernel_configs`). ``memory_floor`` (see
    :meth:`CostModel.memory_floor_ms`) is stored in the model and applies to its predictions, as
    does ``serial_kernels`` (:meth:`CostModel.serial_ms`: a serial law fitted elsewhere, e.g. on
    one-thread measurements; the laws here are fitted as without it, every kernel priced by them).
    ``robust``/``robust_c``: see :func:`fit_samples`; the kernel-configuration fit then uses the
    reweighted rows too (recorded in the provenance).
    """
    if len(graphs) != len(latencies_ms):
        raise FitError(f"{len(graphs)} graphs but {len(latencies_ms)} latencies")
    if not graphs and not kernel_samples:
        raise FitError("no measurements to fit")
    rules = rules if rules is not None else runtime
    names = list(names) if names is not None else [g.model.graph.name or f"model{i}" for i, g in enumerate(graphs)]
    models = [sample_from_graph(g, lat, name=n, rules=rules, precision=precision)
              for g, lat, n in zip(graphs, latencies_ms, names)]
    covered = [i for i, s in enumerate(models) if not set(s.family_features) & UNFITTED_FAMILIES]
    covered_set = set(covered)
    uncovered = [i for i in range(len(models)) if i not in covered_set]
    tr, ho = split_holdout(len(covered), holdout_fraction, seed)
    train_idx, hold_idx = [covered[i] for i in tr], [covered[i] for i in ho]
    train = [models[i] for i in train_idx]
    extra = [s for s in (kernel_samples or []) if not set(s.family_features) & UNFITTED_FAMILIES]
    weights = [1.0] * len(extra)
    if train and extra:
        weights += [model_weight * math.sqrt(len(extra) / len(train))] * len(train)
    else:
        weights += [1.0] * len(train)
    # the kernel-configuration fit weighs the rows as the (robust) law fit ended: weights from its result
    families, oh, rweights = _fit_with_weights(extra + train, weights, overhead_ms, robust, robust_c)
    configs: dict[str, dict[str, Any]] = {}
    cinfo: dict[str, Any] = {}
    if kernel_configs:
        configs, oh, cinfo = fit_kernel_configs(extra + train, families, oh, weights=rweights,
                                                min_count=config_min_count, seed=seed)
    fitted = _build(families, oh, target=target, runtime=runtime, precision=precision, version=version,
                    provenance={}, n=max(1, len(train) + len(extra)), accuracy={"holdout": {"n": 0, "mape_pct": None,
                                                                                       "median_ape_pct": None,
                                                                                       "spearman": None}},
                    kernel_configs=configs, memory_floor=memory_floor, serial_kernels=serial_kernels)

    def graph_eval(idx: list[int]) -> dict[str, Any]:
        pred = [_predict_graph(fitted, graphs[i], models[i], target, runtime, precision, rules) for i in idx]
        meas = [models[i].latency_ms for i in idx]
        out = accuracy_metrics(pred, meas)
        out["samples"] = [{"name": models[i].name, "measured_ms": round(m, 5), "predicted_ms": round(p, 5)}
                          for i, p, m in zip(idx, pred, meas)]
        return out

    acc_h = graph_eval(hold_idx)
    acc_t = accuracy_metrics([predict_model_sample(fitted, s) for s in train], [s.latency_ms for s in train])
    accuracy: dict[str, Any] = {
        "holdout": {**_strip(acc_h), "level": "whole model"},
        "holdout_models": acc_h["samples"],
        "train_models": acc_t,
    }
    if extra:
        accuracy["train_kernels"] = accuracy_metrics([predict_model_sample(fitted, s) for s in extra],
                                                     [s.latency_ms for s in extra])
    if cv_folds >= 2 and len(covered) >= cv_folds:
        order = np.random.default_rng(seed + 1).permutation(len(covered))
        folds = [sorted(covered[j] for j in order[f::cv_folds]) for f in range(cv_folds)]
        pred_cv: dict[int, float] = {}
        for fold in folds:
            in_fold = set(fold)
            rest = [models[i] for i in covered if i not in in_fold]
            w = [1.0] * len(extra) + ([model_weight * math.sqrt(len(extra) / len(rest))] * len(rest) if extra and rest
                                      else [1.0] * len(rest))
            fam_f, oh_f, rw_f = _fit_with_weights(extra + rest, w, overhead_ms, robust, robust_c)
            cfg_f: dict[str, dict[str, Any]] = {}
            if kernel_configs:
                cfg_f, oh_f, _ = fit_kernel_configs(extra + rest, fam_f, oh_f, weights=rw_f, min_count=config_min_count,
                                                    seed=seed)
            m_f = _tmp_model(fam_f, oh_f, cfg_f)
            m_f.memory_floor = dict(memory_floor) if memory_floor else None
            m_f.serial_kernels = dict(serial_kernels) if serial_kernels else None
            for i in fold:
                pred_cv[i] = _predict_graph(m_f, graphs[i], models[i], target, runtime, precision, rules)
        acc_cv = accuracy_metrics([pred_cv[i] for i in covered], [models[i].latency_ms for i in covered])
        accuracy["cross_validation"] = {**acc_cv, "folds": cv_folds, "level": "whole model, k-fold"}
    if uncovered:
        acc_u = graph_eval(uncovered)
        accuracy["uncovered"] = {**_strip(acc_u), "level": "whole models with unfitted ops (roofline for those)"}
        accuracy["uncovered_models"] = acc_u["samples"]
    prov = {"fitted_from": "whole-model latencies" + (" + per-kernel latencies" if extra else ""),
            "n_models": len(models), "n_models_train": len(train), "n_kernel_samples": len(extra),
            "method": _METHOD + (f"; kernel configurations seen in >= {config_min_count} training measurements: own "
                                 "cost, ridge-shrunk toward the family law (fit_kernel_configs)" if kernel_configs else ""),
            **dict(provenance or {})}
    if kernel_configs:
        prov["kernel_configs_fit"] = cinfo
    if robust != "none":
        prov["robust_fit"] = _robust_provenance(robust, robust_c, weights, rweights)
    return _build(families, oh, target=target, runtime=runtime, precision=precision, version=version,
                  provenance=prov, n=len(train) + len(extra), accuracy=accuracy, kernel_configs=configs,
                  memory_floor=memory_floor, serial_kernels=serial_kernels)


def _predict_graph(model: CostModel, graph: Graph, sample: Sample, target: str, runtime: str, precision: str,
                   rules: FusionRules | str | None) -> float:
    """Whole-graph prediction as :func:`onnxsplit.cost.predict` makes it (sample sum if the target is unknown)."""
    from ..targets import TargetError, load_target
    from .predict import predict

    try:
        t = load_target(target)
    except TargetError:
        return predict_model_sample(model, sample)
    if runtime not in t.runtimes:
        return predict_model_sample(model, sample)
    return predict(graph, t, precision, runtime, cost_model=model).total_ms


def _tmp_model(families: dict[str, dict[str, float]], overhead: float,
               configs: dict[str, dict[str, Any]] | None = None) -> CostModel:
    return CostModel(target="-", runtime="ort-cpu", precision="fp32", version="0", features=FEATURES,
                     families=families, overhead_ms=overhead, kernel_configs=dict(configs or {}))


# ------------------------------------------------------------------------------------ profile CSVs
def fit_profile(
    rows_or_path: Sequence[Mapping[str, Any]] | str,
    *,
    target: str,
    runtime: str | None = None,
    precision: str = "fp32",
    holdout_fraction: float = 0.2,
    seed: int = 0,
    stat: str = "median_ms",
    provenance: Mapping[str, Any] | None = None,
    version: str = "1",
    **whole_model_options: Any,
) -> CostModel:
    """Fit a cost model from ``onnxsplit profile`` rows (or the CSV path) for one target/runtime/precision.

    ``kernel`` and ``overhead`` rows are per-kernel samples; ``model`` rows are whole models, a
    seeded ``holdout_fraction`` of which is held out for ``accuracy.holdout``; ``model`` rows with
    ``split = validate`` are never fitted and reported as ``accuracy.validation``. Graphs are
    rebuilt from each row's ``spec`` so features come from the current code; a row without a
    usable spec but with ``family`` and feature columns is used as a per-kernel sample.
    """
    from pathlib import Path as _Path

    from ..profile import graph_of_spec, read_profile_csv

    src = None
    if isinstance(rows_or_path, (str, _Path)):
        src = _Path(rows_or_path)
        rows = read_profile_csv(src)
    else:
        rows = list(rows_or_path)
    if stat not in ("median_ms", "min_ms", "mean_ms", "p90_ms"):
        raise FitError(f"unknown statistic '{stat}'; use median_ms, min_ms, mean_ms or p90_ms")
    mine = [r for r in rows if r.get("target") == target and r.get("precision") == precision]
    runtimes = sorted({r.get("runtime") for r in mine})
    if runtime is None:
        if len(runtimes) > 1:
            raise FitError(f"the data has several runtimes for {target}/{precision} ({', '.join(runtimes)}); pick one with --runtime")
        runtime = runtimes[0] if runtimes else None
    mine = [r for r in mine if r.get("runtime") == runtime]
    if not mine:
        have = sorted({(r.get("target"), r.get("runtime"), r.get("precision")) for r in rows})
        raise FitError(f"no rows for target '{target}', runtime '{runtime}', precision '{precision}'; the data has "
                       + (", ".join("/".join(map(str, h)) for h in have) or "no rows"))
    cache: dict[str, Graph] = {}
    kernel_samples: list[Sample] = []
    graphs: list[Graph] = []
    lats: list[float] = []
    names: list[str] = []
    validate: list[tuple[Graph, Sample]] = []
    skipped_validation: list[str] = []
    for r in mine:
        lat = r.get(stat)
        if lat in ("", None):
            raise FitError(f"row {r.get('_line', '?')} ({r.get('name')}): no '{stat}' value")
        spec = r.get("spec") or ""
        graph = None
        if spec:
            if spec not in cache:
                try:
                    cache[spec] = graph_of_spec(spec)
                except Exception as exc:  # noqa: BLE001
                    if r.get("split") == "validate":  # e.g. a model file measured on another machine
                        skipped_validation.append(f"{r.get('name')}: {str(exc).splitlines()[0][:160]}")
                        continue
                    raise FitError(f"row {r.get('_line', '?')} ({r.get('name')}): cannot rebuild the graph: {exc}") from None
            graph = cache[spec]
        kind = r.get("kind")
        if kind in ("kernel", "overhead"):
            if graph is not None:
                kernel_samples.append(sample_from_graph(graph, float(lat), name=str(r.get("name")), kind="kernel",
                                                        rules=runtime, precision=precision))
            else:
                kernel_samples.append(sample_from_kernel_row({**r, "median_ms": lat}, index=int(r.get("_line", 0))))
        elif kind == "model":
            if graph is None:
                raise FitError(f"row {r.get('_line', '?')} ({r.get('name')}): a model row needs a spec")
            if r.get("split") == "validate":
                validate.append((graph, sample_from_graph(graph, float(lat), name=str(r.get("name")), rules=runtime,
                                                          precision=precision)))
            else:
                graphs.append(graph)
                lats.append(float(lat))
                names.append(str(r.get("name")))
        else:
            raise FitError(f"row {r.get('_line', '?')}: unknown kind {kind!r} (kernel, model or overhead)")
    hosts = sorted({str(r.get("host", "")) for r in mine if r.get("host")})
    loads = [float(r["loadavg_1m"]) for r in mine if r.get("loadavg_1m") not in ("", None)]
    prov: dict[str, Any] = {
        "source": f"onnxsplit profile measurements{f' ({src.name})' if src else ''}: {len(mine)} rows "
                  f"({len(kernel_samples)} kernel/overhead, {len(graphs)} models, {len(validate)} validation)",
        "license": "Apache-2.0 (measured by the onnxsplit project)",
        "citation": "onnxsplit profile; see onnxsplit/profile.py for the protocol",
        "statistic": stat,
        "host": "; ".join(hosts),
        "onnxruntime": "; ".join(sorted({str(r.get("onnxruntime")) for r in mine if r.get("onnxruntime")})),
        "threads": "; ".join(sorted({str(r.get("threads")) for r in mine if r.get("threads")})),
        "priority": "; ".join(sorted({str(r.get("priority")) for r in mine if r.get("priority")})),
    }
    tvm_versions = sorted({str(r.get("tvm")) for r in mine if r.get("tvm")})
    if tvm_versions:  # TVM builds (profile --runtime tvm): which TVM compiled them, for which target
        prov["tvm"] = "; ".join(tvm_versions)
        prov["tvm_target"] = "; ".join(sorted({str(r.get("tvm_target")) for r in mine if r.get("tvm_target")}))
    if loads:
        prov["loadavg_1m_max"] = max(loads)
    if precision == "int8":  # which quantization the int8 rows measured (profile.QDQ_SCHEME)
        schemes = Counter(str(r.get("qdq_scheme") or "unrecorded") for r in mine)
        prov["qdq_scheme"] = "; ".join(f"{scheme} ({n} rows)" for scheme, n in sorted(schemes.items()))
    prov.update(dict(provenance or {}))
    if graphs:
        model = fit_from_whole_models(graphs, lats, target=target, runtime=runtime, precision=precision,
                                      provenance=prov, holdout_fraction=holdout_fraction, seed=seed, names=names,
                                      kernel_samples=kernel_samples, version=version, **whole_model_options)
    else:
        train_idx, hold_idx = split_holdout(len(kernel_samples), holdout_fraction, seed)
        train = [kernel_samples[i] for i in train_idx]
        robust = whole_model_options.get("robust", "none")
        robust_c = whole_model_options.get("robust_c", DEFAULT_ROBUST_C)
        ones = np.ones(len(train))
        families, oh, final = _fit_with_weights(train, ones, None, robust, robust_c)
        acc = evaluate(_tmp_model(families, oh), [kernel_samples[i] for i in hold_idx])
        if robust != "none":
            prov["robust_fit"] = _robust_provenance(robust, robust_c, ones, final)
        model = _build(families, oh, target=target, runtime=runtime, precision=precision, version=version,
                       provenance={"fitted_from": "per-kernel latencies", **prov}, n=len(kernel_samples),
                       accuracy={"holdout": {**_strip(acc), "level": "kernel"}},
                       memory_floor=whole_model_options.get("memory_floor"),
                       serial_kernels=whole_model_options.get("serial_kernels"))
    if skipped_validation:
        model.accuracy["validation_skipped"] = skipped_validation
    if validate:
        pred = [_predict_graph(model, g, smp, target, runtime, precision, runtime) for g, smp in validate]
        meas = [smp.latency_ms for _, smp in validate]
        acc_v = accuracy_metrics(pred, meas)
        model.accuracy["validation"] = {**acc_v, "level": "whole model (external, never fitted)"}
        model.accuracy["validation_models"] = [
            {"name": smp.name, "measured_ms": round(m, 5), "predicted_ms": round(p_, 5)}
            for (_, smp), p_, m in zip(validate, pred, meas)]
    return model
