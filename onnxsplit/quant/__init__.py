"""int8 quantization of the edge half (onnxruntime static QDQ) with an accuracy budget.

Modules: :mod:`~onnxsplit.quant.calib` (calibration data loading and validation),
:mod:`~onnxsplit.quant.quantize` (the pass over a :class:`~onnxsplit.split.SplitModels`:
:func:`quantize_split` -> :class:`QuantizedSplit`), :mod:`~onnxsplit.quant.metrics` (top-1
agreement, cosine, SQNR, max abs; :class:`Budget`), :mod:`~onnxsplit.quant.sensitivity`
(per-node sensitivity), :mod:`~onnxsplit.quant.budget` (mixed precision within a budget, and the
accuracy-budgeted choice among searched plans).
"""

from .budget import (
    BudgetFit,
    QuantPlanSelection,
    fit_budget,
    mixed_problem,
    quantize_for_split,
    select_quantized_plan,
    verify_split_dir,
)
from .calib import CalibrationData, CalibrationError, load_calibration, synthetic_calibration
from .metrics import Budget, OutputMetrics, compare_runs
from .quantize import (
    BOUNDARY_DTYPES,
    BoundaryQuant,
    ModelQuantizer,
    QuantizationError,
    QuantizedSplit,
    load_split_dir,
    quantize_split,
)
from .sensitivity import NodeSensitivity, SensitivityAnalyzer, node_sensitivity

__all__ = [
    "BOUNDARY_DTYPES",
    "BoundaryQuant",
    "Budget",
    "BudgetFit",
    "CalibrationData",
    "CalibrationError",
    "ModelQuantizer",
    "NodeSensitivity",
    "OutputMetrics",
    "QuantPlanSelection",
    "QuantizationError",
    "QuantizedSplit",
    "SensitivityAnalyzer",
    "compare_runs",
    "fit_budget",
    "load_calibration",
    "load_split_dir",
    "mixed_problem",
    "node_sensitivity",
    "quantize_for_split",
    "quantize_split",
    "select_quantized_plan",
    "synthetic_calibration",
    "verify_split_dir",
]
