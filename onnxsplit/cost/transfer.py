"""Cost models for devices nobody measured: efficiencies learned on measured GPUs, scaled by specs.

A Jetson or an A100/H100 cannot be reached from here, but several GPUs were measured (HELP: GTX
1080 Ti, RTX 2080 Ti, TITAN RTX, TITAN X, TITAN Xp; batch 1, 32, 64/256). This module fits one law
shared by all of them, in which each device enters only through its data-sheet numbers, and
evaluates it for an unmeasured target's data sheet (:mod:`onnxsplit.targets`).

The law (per kernel of op family ``f``, batch ``b``, on a device ``d`` with peak ``P_d`` GFLOP/s and
memory bandwidth ``B_d`` GB/s)::

    t_ms = k_c[f] * mflops * b / P_d                 # compute, inverse efficiency k_c
         + k_m[f] * (in_mb + out_mb) * b / B_d       # activation traffic, inverse efficiency k_m
         + k_p[f] * param_mb / B_d                   # weight traffic (batch-independent)
         + fixed_ms[d][f]                            # per-kernel fixed cost (launch) on d

plus ``overhead_ms[d]`` per inference. MFLOP / (GFLOP/s) and MB / (GB/s) are milliseconds, so
``k_c``, ``k_m``, ``k_p`` are dimensionless: 1 / (achieved fraction of the peak). They are shared by
all devices, which is what makes the law transferable; the fixed costs are per device (they
depend on the host CPU and the driver, not on the GPU's data sheet). Features are those of
:mod:`onnxsplit.cost.features` at batch 1 (the family sums of :class:`onnxsplit.cost.fit.Sample`);
activation features and FLOPs scale with the batch, parameters do not.

Fitting (:func:`fit_transfer`) is bounded least squares on the relative error (scipy ``lsq_linear``,
BVLS) with physical bounds: a Conv/Gemm/MatMul family never beats the peak (``k_c >= 1``), a
family that touches its data never beats the bandwidth (``k_m >= 1``), everything else ``>= 0``; a
feature that never exceeds its resolution in the data (:data:`onnxsplit.cost.fit.MIN_FEATURE_RANGE`)
gets 0. :func:`leave_one_device_out` measures what matters for an
unmeasured target: each device in turn is predicted by a law fitted on the *other* devices, from
its data sheet alone, its fixed costs being the mean of the others' (nothing of it is fitted).

:func:`transferred_cost_model` turns a law into an ordinary :class:`~onnxsplit.cost.model.CostModel`
for a target/runtime/precision: ``mflops`` coefficient ``k_c / P``, ``in_mb``/``out_mb`` ``k_m *
s / B``, ``param_mb`` ``k_p * s / B`` (``s`` the byte scale of the precision), marked ``calibrated: false`` (an
estimate, not a measurement). The fixed costs are not a data-sheet quantity: for runtimes that
launch one kernel per operator like the measured PyTorch-eager runs (``ort-cuda``), ``one`` and the
per-inference overhead are the measured devices' means; for runtimes that fuse the graph into few
engine kernels (:data:`TARGET_FIXED_COST_RUNTIMES`: ``ort-trt``), they are the target file's
``kernel_overhead_us`` / ``inference_overhead_us``, since desktop PyTorch launch costs would
overstate them.
For ``int8``, a family whose operators the target does not run in int8 (``[ops] int8_ops``) keeps
its fp32 peak and bytes, as the roofline does; for ``fp16`` every family uses the fp16 peak.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

from ..targets import PRECISIONS, Target
from .features import FEATURES
from .fit import MIN_FEATURE_RANGE, FitError, accuracy_metrics
from .kernels import FAMILIES
from .model import CostModel
from .roofline import BYTES_SCALE

__all__ = [
    "DeviceSpec",
    "FAMILY_OPS",
    "TARGET_FIXED_COST_RUNTIMES",
    "TransferLaw",
    "TransferSample",
    "fit_transfer",
    "leave_one_device_out",
    "transferred_cost_model",
]

#: an operator of each family, to look up whether a target runs the family in int8 (``int8_ops``)
FAMILY_OPS: dict[str, tuple[str, ...]] = {
    "conv": ("Conv",), "conv_pw": ("Conv",), "conv_dw": ("Conv",), "conv_grouped": ("Conv",),
    "conv_transpose": ("ConvTranspose",),
    "gemm": ("Gemm", "MatMul"), "matmul": ("MatMul",), "pool": ("MaxPool", "AveragePool", "GlobalAveragePool"),
    "elementwise": ("Add", "Mul", "Relu", "Clip"), "transcendental": ("Sigmoid",), "resize": ("Resize",),
    "data_movement": ("Concat",),
}

_TERMS = ("compute", "activation_bytes", "param_bytes")
#: runtimes whose per-kernel and per-inference fixed costs come from the target file, not from the
#: measured PyTorch-eager devices (see the module docstring)
TARGET_FIXED_COST_RUNTIMES = frozenset({"ort-trt"})
#: families whose kernels do arithmetic that the FLOP count measures: no kernel beats the peak, so
#: their compute inverse efficiency is at least 1
COMPUTE_BOUND_FAMILIES = frozenset({"conv", "conv_pw", "conv_dw", "conv_grouped", "conv_transpose", "gemm",
                                    "matmul"})
#: families whose kernels do not necessarily move their bytes (metadata-only reshapes): every other
#: family reads and writes its activations at most at the memory bandwidth (inverse efficiency >= 1)
NO_TRAFFIC_FAMILIES = frozenset({"reshape"})


@dataclass(frozen=True)
class DeviceSpec:
    """Data-sheet numbers of a device: peak fp32 GFLOP/s and memory bandwidth GB/s."""

    name: str
    peak_gflops: float
    bandwidth_gbps: float

    def __post_init__(self) -> None:
        for key in ("peak_gflops", "bandwidth_gbps"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise FitError(f"device '{self.name}': {key} must be a positive number, got {v!r}")


@dataclass
class TransferSample:
    """One measured latency: a model's per-family feature sums at batch 1, run at ``batch`` on ``device``."""

    name: str
    device: str
    batch: int
    family_features: dict[str, dict[str, float]]
    latency_ms: float


@dataclass
class TransferLaw:
    """Fitted law (see the module docstring): shared inverse efficiencies, per-device fixed costs."""

    #: family -> {"compute": k_c, "activation_bytes": k_m, "param_bytes": k_p} (dimensionless)
    efficiency_inverse: dict[str, dict[str, float]]
    #: device -> family -> fixed ms per kernel
    fixed_ms: dict[str, dict[str, float]]
    #: device -> ms per inference
    overhead_ms: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def families(self) -> list[str]:
        return sorted(self.efficiency_inverse)

    def mean_fixed_ms(self) -> dict[str, float]:
        """Per-family fixed cost averaged over the measured devices (what an unmeasured one gets)."""
        devs = sorted(self.fixed_ms)
        return {f: float(np.mean([self.fixed_ms[d].get(f, 0.0) for d in devs])) for f in self.families}

    def mean_overhead_ms(self) -> float:
        return float(np.mean(list(self.overhead_ms.values())))

    def predict(self, family_features: Mapping[str, Mapping[str, float]], spec: DeviceSpec, batch: int = 1) -> float:
        """Latency in ms of a model (per-family feature sums at batch 1) at ``batch`` on ``spec``;
        fixed costs are ``spec.name``'s when it was measured, else the measured devices' mean."""
        fixed = self.fixed_ms.get(spec.name) or self.mean_fixed_ms()
        t = self.overhead_ms.get(spec.name, self.mean_overhead_ms())
        for fam, v in family_features.items():
            k = self.efficiency_inverse.get(fam)
            if k is None:
                raise FitError(f"family '{fam}' has no transferred law (fitted: {', '.join(self.families)})")
            t += sum(k[term] * x for term, x in zip(_TERMS, _scaled_terms(v, batch, spec)))
            t += fixed.get(fam, 0.0) * v["one"]
        return float(t)

    def to_json(self) -> dict[str, Any]:
        return {"efficiency_inverse": self.efficiency_inverse, "fixed_ms": self.fixed_ms,
                "overhead_ms": self.overhead_ms}


def _raw_terms(v: Mapping[str, float]) -> tuple[float, float, float]:
    """A family's batch-1 (MFLOP, activation MB, weight MB): what the three inverse efficiencies multiply."""
    return v["mflops"], v["in_mb"] + v["out_mb"], v["param_mb"]


def _scaled_terms(v: Mapping[str, float], batch: int, spec: DeviceSpec) -> tuple[float, float, float]:
    """:func:`_raw_terms` at ``batch`` on ``spec``, in ms at 100 % efficiency (weights do not scale with the batch)."""
    mflops, act_mb, param_mb = _raw_terms(v)
    return mflops * batch / spec.peak_gflops, act_mb * batch / spec.bandwidth_gbps, param_mb / spec.bandwidth_gbps


def _design(samples: Sequence[TransferSample], fams: list[str], devices: list[str],
            specs: Mapping[str, DeviceSpec]) -> np.ndarray:
    nf, nd = len(fams), len(devices)
    fi = {f: j for j, f in enumerate(fams)}
    di = {d: j for j, d in enumerate(devices)}
    A = np.zeros((len(samples), 3 * nf + nf * nd + nd))
    for i, s in enumerate(samples):
        sp = specs[s.device]
        d = di[s.device]
        for fam, v in s.family_features.items():
            j = fi[fam]
            A[i, 3 * j:3 * j + 3] = _scaled_terms(v, s.batch, sp)
            A[i, 3 * nf + d * nf + j] = v["one"]
        A[i, 3 * nf + nf * nd + d] = 1.0
    return A


def fit_transfer(samples: Sequence[TransferSample], specs: Mapping[str, DeviceSpec], *,
                 ridge: float = 1e-6) -> TransferLaw:
    """Fit the law on measurements of several devices: least squares on the relative error, each
    inverse efficiency bounded below by its physical limit (:data:`COMPUTE_BOUND_FAMILIES`:
    ``k_c >= 1``; every family but :data:`NO_TRAFFIC_FAMILIES`: ``k_m >= 1``; the rest ``>= 0``)."""
    if not samples:
        raise FitError("no measurements to fit a transfer law")
    devices = sorted({s.device for s in samples})
    missing = [d for d in devices if d not in specs]
    if missing:
        raise FitError(f"no data-sheet numbers for device(s) {missing}; give a DeviceSpec for each")
    fams = sorted({f for s in samples for f in s.family_features})
    unknown = [f for f in fams if f not in FAMILIES or f == "constant"]
    if unknown:
        raise FitError(f"unknown op family {unknown}; known: {', '.join(f for f in FAMILIES if f != 'constant')}")
    for s in samples:
        if not (math.isfinite(s.latency_ms) and s.latency_ms > 0) or s.batch < 1:
            raise FitError(f"measurement '{s.name}' on {s.device}: latency must be > 0 ms and batch >= 1, "
                           f"got {s.latency_ms!r} ms at batch {s.batch!r}")
        for fam, v in s.family_features.items():
            lacking = [f for f in FEATURES if f not in v]
            if lacking:
                raise FitError(f"measurement '{s.name}': family '{fam}' lacks feature(s) {lacking}")
    y = np.array([s.latency_ms for s in samples])
    X = _design(samples, fams, devices, specs)
    nf, nd = len(fams), len(devices)
    # physical bounds: compute-bound families never beat the peak (k_c >= 1); data-touching families
    # never beat the memory bandwidth (k_m >= 1); everything else >= 0
    lower = np.zeros(X.shape[1])
    for j, f in enumerate(fams):
        lower[3 * j] = 1.0 if f in COMPUTE_BOUND_FAMILIES else 0.0
        lower[3 * j + 1] = 0.0 if f in NO_TRAFFIC_FAMILIES else 1.0
    # a feature that never exceeds its resolution (e.g. the 4-byte scalar of a Mul) is not identifiable
    raw_max = np.zeros(3 * nf)
    for s in samples:
        for fam, v in s.family_features.items():
            j = fams.index(fam)
            raw_max[3 * j:3 * j + 3] = np.maximum(raw_max[3 * j:3 * j + 3], _raw_terms(v))
    resolution = np.tile([MIN_FEATURE_RANGE["mflops"], MIN_FEATURE_RANGE["in_mb"], MIN_FEATURE_RANGE["param_mb"]], nf)
    active = np.linalg.norm(X, axis=0) > 1e-12
    active[:3 * nf] &= raw_max > resolution
    lower[~active] = 0.0
    A = X[:, active] / y[:, None]
    norms = np.linalg.norm(A, axis=0)
    As = A / norms
    b = np.ones(len(samples))
    lo = lower[active] * norms
    if ridge > 0:
        k = As.shape[1]
        As = np.vstack([As, math.sqrt(ridge) * np.eye(k)])
        b = np.concatenate([b, math.sqrt(ridge) * lo])  # shrink toward the physical bound
    sol = np.maximum(lsq_linear(As, b, bounds=(lo, np.full(len(lo), np.inf)), method="bvls").x, lo)  # -1e-19 -> 0
    coef = np.zeros(X.shape[1])
    coef[active] = sol / norms
    eff = {f: {t: float(coef[3 * j + i]) for i, t in enumerate(_TERMS)} for j, f in enumerate(fams)}
    fixed = {d: {f: float(coef[3 * nf + di * nf + j]) for j, f in enumerate(fams)} for di, d in enumerate(devices)}
    overhead = {d: float(coef[3 * nf + nf * nd + di]) for di, d in enumerate(devices)}
    law = TransferLaw(eff, fixed, overhead, info={"devices": devices, "n_samples": len(samples)})
    pred = [law.predict(s.family_features, specs[s.device], s.batch) for s in samples]
    law.info["train"] = accuracy_metrics(pred, list(y))
    return law


def leave_one_device_out(samples: Sequence[TransferSample], specs: Mapping[str, DeviceSpec], *,
                         evaluate: Sequence[TransferSample] | None = None) -> dict[str, dict[str, Any]]:
    """For each device: fit on the other devices' ``samples``, predict its ``evaluate`` rows (default:
    its ``samples``) from its data sheet only (fixed costs: the others' mean). Returns
    ``{device: metrics}`` (:func:`onnxsplit.cost.fit.accuracy_metrics`, plus ``by_batch``)."""
    evaluate = list(samples if evaluate is None else evaluate)
    devices = sorted({s.device for s in samples})
    if len(devices) < 2:
        raise FitError("leave-one-device-out needs measurements of at least two devices")
    out: dict[str, dict[str, Any]] = {}
    for d in devices:
        law = fit_transfer([s for s in samples if s.device != d], specs)
        rows = [s for s in evaluate if s.device == d]
        blind = DeviceSpec(f"{d} (unmeasured)", specs[d].peak_gflops, specs[d].bandwidth_gbps)
        pred = [law.predict(s.family_features, blind, s.batch) for s in rows]
        res = accuracy_metrics(pred, [s.latency_ms for s in rows])
        res["by_batch"] = {}
        for b in sorted({s.batch for s in rows}):
            idx = [i for i, s in enumerate(rows) if s.batch == b]
            res["by_batch"][str(b)] = accuracy_metrics([pred[i] for i in idx], [rows[i].latency_ms for i in idx])
        out[d] = res
    return out


def _family_precision(target: Target, family: str, precision: str) -> str:
    if precision != "int8":
        return precision
    ops = FAMILY_OPS.get(family, ())
    return "int8" if any(op in target.int8_ops for op in ops) else "fp32"


def transferred_cost_model(law: TransferLaw, target: Target, runtime: str, precision: str, *,
                           provenance: Mapping[str, Any], accuracy: Mapping[str, Any],
                           version: str = "1") -> CostModel:
    """The law evaluated for ``target``'s data sheet: an uncalibrated :class:`CostModel`."""
    if precision not in PRECISIONS:
        raise FitError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    if runtime not in target.runtimes:
        raise FitError(f"target '{target.name}' has no runtime '{runtime}'; it offers {', '.join(target.runtimes)}")
    if runtime in TARGET_FIXED_COST_RUNTIMES:
        fixed = dict.fromkeys(law.efficiency_inverse, target.kernel_overhead_us / 1e3)
        overhead_ms = target.inference_overhead_us / 1e3
        fixed_source = f"target file {target.path or target.name}: [roofline] kernel_overhead_us / inference_overhead_us"
    else:
        fixed = law.mean_fixed_ms()
        overhead_ms = law.mean_overhead_ms()
        fixed_source = "mean of the measured devices (PyTorch-eager launch costs)"
    families: dict[str, dict[str, float]] = {}
    used: dict[str, str] = {}
    bw = target.mem_bandwidth_gbps
    for fam, k in law.efficiency_inverse.items():
        p = _family_precision(target, fam, precision)
        used[fam] = p
        peak_gflops = target.peak_ops_per_s(p) / 1e9
        s = BYTES_SCALE[p]
        families[fam] = {
            "mflops": k["compute"] / peak_gflops,
            "in_mb": k["activation_bytes"] * s / bw,
            "out_mb": k["activation_bytes"] * s / bw,
            "param_mb": k["param_bytes"] * s / bw,
            "one": fixed[fam],
        }
    prov = {
        "date": _dt.date.today().isoformat(),
        **dict(provenance),
        "n_samples": int(law.info.get("n_samples", 1)) or 1,
        "transfer": {
            "method": "onnxsplit.cost.transfer: inverse efficiencies shared by the measured devices, scaled by "
                      "this target's data sheet",
            "fixed_costs_from": fixed_source,
            "measured_devices": list(law.info.get("devices", [])),
            "target_peak_gflops": {p: target.peak_ops_per_s(p) / 1e9 for p in PRECISIONS},
            "target_mem_bandwidth_gbps": bw,
            "family_precision": used,
            "law": law.to_json(),
        },
    }
    model = CostModel(target=target.name, runtime=runtime, precision=precision, version=str(version),
                      features=FEATURES, families=families, overhead_ms=overhead_ms,
                      provenance=prov, accuracy=dict(accuracy), calibrated=False)
    CostModel.from_json(model.to_json())  # validates
    return model
