"""Roofline latency estimate from a target's data file (the uncalibrated fallback).

Per kernel::

    t_ms = max(ops / (peak * compute_efficiency), bytes / (bandwidth * bandwidth_efficiency)) * 1e3
           + kernel_overhead_us / 1e3

* ``ops`` = the kernel's FLOPs (:mod:`onnxsplit.flops`); members without a formula add 0 (the
  memory term still applies: an unknown op is never free).
* ``peak`` = ``peak_gflops_fp32`` / ``peak_gflops_fp16`` / ``peak_gops_int8`` of the target for the
  precision; for ``int8`` a kernel whose head op is not in the target's ``int8_ops`` runs at the
  fp32 peak with fp32 bytes.
* ``bytes`` = input + output + parameter bytes of the kernel, scaled by the element size of the
  precision relative to the graph's (fp16: x0.5, int8: x0.25 of fp32 bytes).
* ``constant`` kernels (constant-folded) cost 0.

Per inference, ``inference_overhead_us`` is added once (:func:`roofline_overhead_ms`).
"""

from __future__ import annotations

from ..targets import PRECISIONS, Target, TargetError
from .kernels import Kernel

__all__ = ["roofline_kernel_ms", "roofline_overhead_ms", "BYTES_SCALE"]

#: bytes of a tensor at this precision relative to the fp32 graph's
BYTES_SCALE: dict[str, float] = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25}


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise TargetError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")


def roofline_kernel_ms(kernel: Kernel, target: Target, precision: str = "fp32") -> float:
    """Roofline time of one kernel on ``target`` in milliseconds (0 for constant kernels)."""
    _check_precision(precision)
    if kernel.family == "constant":
        return 0.0
    head_op = kernel.op_types[kernel.members.index(kernel.head)]
    eff_precision = precision
    if precision == "int8" and head_op not in target.int8_ops:
        eff_precision = "fp32"
    peak = target.peak_ops_per_s(eff_precision) * target.compute_efficiency
    bandwidth = target.mem_bandwidth_bytes_per_s * target.bandwidth_efficiency
    compute_s = kernel.flops / peak  # partial FLOPs of unknown members: a lower bound
    memory_s = kernel.nbytes * BYTES_SCALE[eff_precision] / bandwidth
    return max(compute_s, memory_s) * 1e3 + target.kernel_overhead_us / 1e3


def roofline_overhead_ms(target: Target) -> float:
    """Fixed cost per inference on ``target`` (ms)."""
    return target.inference_overhead_us / 1e3
