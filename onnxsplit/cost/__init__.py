"""Latency cost models: kernel grouping, features, roofline fallback, learned models, prediction.

Python API::

    from onnxsplit.cost import predict
    table = predict(graph, "host-x86", precision="fp32")     # runtime: the target's default
    table.latency_ms["stem.conv"], table.fused_into["stem.bn"], table.total_ms, table.calibrated

Modules: :mod:`~onnxsplit.cost.kernels` (fusion grouping, op families),
:mod:`~onnxsplit.cost.layout` (onnxruntime CPU's NCHWc layout reorders, kernels of their own),
:mod:`~onnxsplit.cost.features` (features with units), :mod:`~onnxsplit.cost.roofline`,
:mod:`~onnxsplit.cost.model` (JSON artifact ``onnxsplit.costmodel/1``),
:mod:`~onnxsplit.cost.fit` (NNLS fits from per-kernel and whole-model latencies),
:mod:`~onnxsplit.cost.predict` (:class:`CostTable`), :mod:`~onnxsplit.cost.cli` (``profile`` and
``cost-model fit`` subcommands). Measurements: :mod:`onnxsplit.profile`.
"""

from __future__ import annotations

from .features import COEFFICIENT_UNITS, FEATURE_UNITS, FEATURES
from .fit import FitError, Sample, fit_from_kernels, fit_from_whole_models, sample_from_graph
from .kernels import FAMILIES, FusionRules, Kernel, fusion_rules, group_kernels, op_family
from .model import CostModel, CostModelError, cost_model_path, find_cost_model
from .predict import CostTable, predict
from .roofline import roofline_kernel_ms, roofline_overhead_ms

__all__ = [
    "COEFFICIENT_UNITS",
    "CostModel",
    "CostModelError",
    "CostTable",
    "FAMILIES",
    "FEATURES",
    "FEATURE_UNITS",
    "FitError",
    "FusionRules",
    "Kernel",
    "Sample",
    "cost_model_path",
    "find_cost_model",
    "fit_from_kernels",
    "fit_from_whole_models",
    "fusion_rules",
    "group_kernels",
    "op_family",
    "predict",
    "roofline_kernel_ms",
    "roofline_overhead_ms",
    "sample_from_graph",
]
