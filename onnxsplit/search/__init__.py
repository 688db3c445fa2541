"""Cut-search policy: where to split a DAG between an edge device and the cloud.

Pure numpy/scipy; no ONNX import. Build a :class:`PartitionProblem` (nodes in topological order,
their edge/cloud latencies, the tensors between them), a :class:`Link`, optionally
:class:`Constraints`, then call :func:`search` (one plan), :func:`pareto` (a few trade-offs) or
:func:`sweep` (a bandwidth x batch-size policy table). Modules:
:mod:`~onnxsplit.search.cost` defines the cost model (the one place it is computed),
:mod:`~onnxsplit.search.cut` the exact min-cut and the Lagrangian driver,
:mod:`~onnxsplit.search.milp` the exact MILP, :mod:`~onnxsplit.search.strategies` the registry,
:mod:`~onnxsplit.search.sweep` the policy tables, :mod:`~onnxsplit.search.synthetic` random
CNN-like problems for tests and benchmarks.
"""

from onnxsplit.search.plan import BoundaryTensor, SplitPlan
from onnxsplit.search.problem import (
    BatchModel,
    Constraints,
    Link,
    Objective,
    PartitionProblem,
    TensorSpec,
    scale_batch,
)
from onnxsplit.search.strategies import STRATEGIES, Strategy, evaluate_plan, pareto, search
from onnxsplit.search.sweep import PolicyRow, PolicyTable, sweep

__all__ = [
    "STRATEGIES",
    "BatchModel",
    "BoundaryTensor",
    "Constraints",
    "Link",
    "Objective",
    "PartitionProblem",
    "PolicyRow",
    "PolicyTable",
    "SplitPlan",
    "Strategy",
    "TensorSpec",
    "evaluate_plan",
    "pareto",
    "scale_batch",
    "search",
    "sweep",
]
