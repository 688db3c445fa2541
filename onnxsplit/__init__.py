"""onnxsplit: split ONNX models between an edge device and a cloud server.

Pipeline (each stage a module, plain values between them):
``load`` (ModelProto with static shapes) -> ``ir.Graph`` -> plan (set of edge nodes; searched by
``search`` or given by hand) -> ``split.split_model`` (edge + cloud ModelProtos) -> bundle.

Python API::

    import onnxsplit
    graph = onnxsplit.load_graph("model.onnx", input_shapes={"x": (1, 3, 224, 224)})
    parts = onnxsplit.split_model(graph, onnxsplit.edge_nodes_for_cut(graph, ["layer2.out"]))
    outputs = parts.run(feeds)          # edge then cloud in onnxruntime, original output order
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ModelLoadError, OnnxSplitError, PlanError, ShapeError, UsageError
from .ir import Graph
from .load import load_model
from .split import BoundaryTensor, SplitModels, edge_nodes_for_cut, edge_nodes_prefix, split_model


def load_graph(source, input_shapes=None, *, simplify: bool = False) -> Graph:  # noqa: ANN001
    """Load a model (path or ModelProto) and build its IR; every tensor gets a static shape."""
    graph = Graph(load_model(source, input_shapes, simplify=simplify))
    graph.require_static_shapes()
    return graph


__all__ = [
    "BoundaryTensor",
    "Graph",
    "ModelLoadError",
    "OnnxSplitError",
    "PlanError",
    "ShapeError",
    "SplitModels",
    "UsageError",
    "edge_nodes_for_cut",
    "edge_nodes_prefix",
    "load_graph",
    "load_model",
    "split_model",
]
