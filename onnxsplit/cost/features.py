"""Kernel features for the learned latency models (every feature has a unit).

A *kernel* (see :mod:`onnxsplit.cost.kernels`) is what a runtime executes as one unit: a head node
(Conv, Gemm, MatMul, ...) plus the nodes fused into it (BatchNormalization, bias Add, activation),
or a single unfused node. Its predicted latency is linear in these features, with non-negative
per-op-family coefficients (:mod:`onnxsplit.cost.model`)::

    latency_ms(kernel) = sum_f coef[family][f] * feature_f(kernel)

==============  ======  ============================================================================
feature         unit    definition
==============  ======  ============================================================================
``mflops``      MFLOP   arithmetic operations of all member nodes / 10**6 (``onnxsplit.flops``
                        conventions: 2 per MAC, elementwise work per output element)
``in_mb``       MB      bytes of the activation tensors the kernel reads from outside itself
                        (graph inputs and other kernels' outputs; each tensor once) / 10**6
``out_mb``      MB      bytes of the tensors the kernel writes that are read outside it or are graph
                        outputs (the last member's outputs if nothing reads them) / 10**6
``param_mb``    MB      bytes of the constant inputs (initializers, Constant nodes, constant-folded
                        values) the kernel reads, each once / 10**6
``one``         1       the constant 1: its coefficient is the fixed cost per kernel, in ms
==============  ======  ============================================================================

Coefficient units follow: ms/MFLOP, ms/MB, ms/MB, ms/MB, ms. Bytes are those of the graph as
given (fp32 for an fp32 model); an ``int8`` cost model is fitted on the same fp32 features and its
coefficients absorb the smaller quantized tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["FEATURES", "FEATURE_UNITS", "COEFFICIENT_UNITS", "FEATURE_DESCRIPTIONS", "feature_vector"]

#: canonical feature order
FEATURES: tuple[str, ...] = ("mflops", "in_mb", "out_mb", "param_mb", "one")

FEATURE_UNITS: dict[str, str] = {
    "mflops": "MFLOP",
    "in_mb": "MB",
    "out_mb": "MB",
    "param_mb": "MB",
    "one": "1",
}

COEFFICIENT_UNITS: dict[str, str] = {
    "mflops": "ms/MFLOP",
    "in_mb": "ms/MB",
    "out_mb": "ms/MB",
    "param_mb": "ms/MB",
    "one": "ms",
}

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "mflops": "arithmetic operations of the kernel's nodes / 1e6 (onnxsplit.flops conventions)",
    "in_mb": "bytes of activation tensors read from outside the kernel / 1e6",
    "out_mb": "bytes of tensors written that are read outside the kernel or are graph outputs / 1e6",
    "param_mb": "bytes of constant inputs (initializers, Constants, folded values) / 1e6",
    "one": "constant 1 (fixed cost per kernel)",
}

# A family's features beyond these are unused; kept for clarity of the JSON artifact.
assert set(FEATURES) == set(FEATURE_UNITS) == set(COEFFICIENT_UNITS) == set(FEATURE_DESCRIPTIONS)


def feature_vector(values: Mapping[str, float], names: tuple[str, ...] = FEATURES) -> list[float]:
    """Values of ``names`` in order (a missing feature is an error, never 0)."""
    missing = [n for n in names if n not in values]
    if missing:
        raise KeyError(f"missing kernel feature(s) {missing}; known: {list(FEATURES)}")
    return [float(values[n]) for n in names]
