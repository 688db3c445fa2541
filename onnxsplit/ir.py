"""Graph IR: a read-only view of a shape-inferred ONNX model.

Contract:
- Built once from a ModelProto whose main-graph tensors have static shapes (see
  :func:`onnxsplit.load.load_model`); the ModelProto is never mutated.
- ``Graph.nodes`` keeps the model's node order, which ONNX requires to be topological.
- Every node gets a unique IR name: its ONNX name when that is non-empty and unique, otherwise
  ``<op_type>_<index>``. The split mechanism copies the original NodeProtos, so the emitted models
  keep the original names.
- Control-flow nodes (If/Loop/Scan) and calls to model-local functions are atomic nodes. Tensors of
  the outer graph that their subgraphs read are *implicit inputs* of the node: they count as
  dependencies for precedence and for the boundary.
- ``Constant`` nodes (no inputs) are *replicable*: the split mechanism copies them into each side
  that reads them instead of sending their value over the network. They never appear in plans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .errors import PlanError, ShapeError
from .flops import OpCost, op_cost

# Bits per element for ONNX element types numpy cannot size natively.
_SUBBYTE_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2}


def elem_type_name(elem_type: int) -> str:
    """ONNX TensorProto element type -> lower-case name (``float``, ``int64``, ...)."""
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def elem_type_bits(elem_type: int) -> int | None:
    """Bits per element, or None for variable-size types (string)."""
    name = onnx.TensorProto.DataType.Name(elem_type)
    if name in _SUBBYTE_BITS:
        return _SUBBYTE_BITS[name]
    if name in ("STRING", "UNDEFINED"):
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize * 8
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class TensorType:
    """Element type and shape of a tensor (shape None = unknown, dims None = dynamic)."""

    elem_type: int
    shape: tuple[int | None, ...] | None

    @property
    def dtype(self) -> str:
        return elem_type_name(self.elem_type)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) and d >= 0 for d in self.shape)

    @property
    def numel(self) -> int | None:
        return math.prod(self.shape) if self.is_static else None  # type: ignore[arg-type]

    @property
    def nbytes(self) -> int | None:
        bits = elem_type_bits(self.elem_type)
        numel = self.numel
        if bits is None or numel is None:
            return None
        return (numel * bits + 7) // 8

    @staticmethod
    def from_value_info(vi: onnx.ValueInfoProto) -> TensorType | None:
        t = vi.type
        if not t.HasField("tensor_type"):
            return None
        tt = t.tensor_type
        if not tt.HasField("shape"):
            return TensorType(tt.elem_type, None)
        dims: list[int | None] = []
        for d in tt.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else None)
        return TensorType(tt.elem_type, tuple(dims))

    def to_value_info(self, name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, self.elem_type, self.shape)


@dataclass
class Tensor:
    """A named value of the main graph."""

    name: str
    type: TensorType | None
    kind: str  # "input" | "initializer" | "activation" | "constant"
    producer: str | None = None  # IR node name (None for inputs and initializers)
    value_kind: str = "tensor"  # "tensor", or "sequence"/"optional"/"map" (never sent over the network)
    consumers: list[str] = field(default_factory=list)  # IR node names, each listed once
    is_graph_output: bool = False

    @property
    def shape(self) -> tuple[int | None, ...] | None:
        return None if self.type is None else self.type.shape

    @property
    def dtype(self) -> str | None:
        return None if self.type is None else self.type.dtype

    @property
    def nbytes(self) -> int | None:
        return None if self.type is None else self.type.nbytes


@dataclass
class Node:
    """One main-graph node (control flow and function calls are atomic)."""

    name: str
    index: int
    proto: onnx.NodeProto = field(repr=False)
    inputs: tuple[str, ...]  # explicit, non-empty names
    implicit_inputs: tuple[str, ...]  # outer-scope names read by subgraphs
    outputs: tuple[str, ...]  # non-empty names
    cost: OpCost = field(repr=False, default=OpCost(0, 0, False))
    param_nbytes: int = 0  # bytes of initializers this node reads
    output_nbytes: int = 0

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def domain(self) -> str:
        return self.proto.domain

    @property
    def all_inputs(self) -> tuple[str, ...]:
        return self.inputs + tuple(n for n in self.implicit_inputs if n not in self.inputs)

    @property
    def is_replicable(self) -> bool:
        """Constant nodes are copied into every side that reads them."""
        return self.op_type == "Constant" and self.domain in ("", "ai.onnx") and not self.inputs

    @property
    def macs(self) -> int:
        return self.cost.macs

    @property
    def flops(self) -> int:
        return self.cost.flops


def subgraph_free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes (recursively through nested subgraphs)."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {i.values.name for i in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n and n not in defined)
        for sub in _node_subgraphs(node):
            used.update(n for n in subgraph_free_names(sub) if n not in defined)
        defined.update(o for o in node.output if o)
    for out in graph.output:
        if out.name not in defined:
            used.add(out.name)
    return used


def _node_subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            continue
        try:
            out[a.name] = helper.get_attribute_value(a)
        except Exception:  # noqa: BLE001 - an exotic attribute must not break the IR
            continue
    return out


class Graph:
    """Read-only IR over the main graph of a (shape-inferred) ModelProto."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        for sp in g.sparse_initializer:
            self.initializers[sp.values.name] = sp.values  # type: ignore[assignment]
        self.sparse_initializer_names = {sp.values.name for sp in g.sparse_initializer}
        types = _collect_types(model)
        non_tensor = _non_tensor_kinds(model)
        self.tensors: dict[str, Tensor] = {}
        self.inputs: list[str] = []
        self.inputs_with_initializer: list[str] = []  # graph inputs that also have a default
        for vi in g.input:
            if vi.name in self.initializers:
                self.inputs_with_initializer.append(vi.name)
                continue
            self.inputs.append(vi.name)
            self.tensors[vi.name] = Tensor(vi.name, types.get(vi.name), "input")
        for name, init in self.initializers.items():
            self.tensors[name] = Tensor(name, TensorType(init.data_type, tuple(init.dims)), "initializer")
        self.outputs: list[str] = [o.name for o in g.output]

        self.nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        seen_names = {n.name for n in g.node if n.name}
        dup = {n for n in seen_names if sum(1 for m in g.node if m.name == n) > 1}
        for idx, proto in enumerate(g.node):
            name = proto.name if proto.name and proto.name not in dup else f"{proto.op_type}_{idx}"
            while name in self._by_name:
                name = f"{name}_{idx}"
            explicit = tuple(dict.fromkeys(n for n in proto.input if n))
            implicit: set[str] = set()
            for sub in _node_subgraphs(proto):
                implicit |= subgraph_free_names(sub)
            node = Node(
                name=name,
                index=idx,
                proto=proto,
                inputs=explicit,
                implicit_inputs=tuple(sorted(implicit - set(explicit))),
                outputs=tuple(o for o in proto.output if o),
            )
            for tname in node.all_inputs:
                t = self.tensors.get(tname)
                if t is None:
                    raise PlanError(
                        f"node '{name}' ({proto.op_type}) reads tensor '{tname}' that no earlier node, "
                        "input or initializer defines; the graph is not topologically sorted or is "
                        "broken (check it with onnx.checker.check_model)"
                    )
                t.consumers.append(name)
            for out in node.outputs:
                self.tensors[out] = Tensor(
                    out,
                    types.get(out),
                    "constant" if node.is_replicable else "activation",
                    producer=name,
                    value_kind=non_tensor.get(out, "tensor"),
                )
            self.nodes.append(node)
            self._by_name[name] = node
        for name in self.outputs:
            if name not in self.tensors:
                raise PlanError(f"graph output '{name}' is not produced by any node, input or initializer")
            self.tensors[name].is_graph_output = True
        for node in self.nodes:
            self._annotate(node)

    # ------------------------------------------------------------------ construction helpers
    def _annotate(self, node: Node) -> None:
        in_shapes = [self._static_shape(n) if n else None for n in node.proto.input]
        out_shapes = [self._static_shape(n) if n else None for n in node.proto.output]
        if node.is_replicable:
            node.cost = OpCost(0, 0, True)
        else:
            node.cost = op_cost(node.op_type, node.domain, _attrs(node.proto), in_shapes, out_shapes)
        node.param_nbytes = sum(
            self.tensors[n].nbytes or 0 for n in node.all_inputs if self.tensors[n].kind == "initializer"
        )
        node.output_nbytes = sum(self.tensors[o].nbytes or 0 for o in node.outputs)

    def _static_shape(self, name: str) -> tuple[int, ...] | None:
        t = self.tensors.get(name)
        if t is None or t.type is None or not t.type.is_static:
            return None
        return t.type.shape  # type: ignore[return-value]

    # ------------------------------------------------------------------ queries
    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            close = [n for n in self._by_name if name.lower() in n.lower()][:5]
            hint = f"; similar: {', '.join(close)}" if close else "; `onnxsplit inspect MODEL --json` lists node names"
            raise PlanError(f"unknown node '{name}'{hint}") from None

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            close = [n for n in self.tensors if name.lower() in n.lower()][:5]
            hint = f"; similar: {', '.join(close)}" if close else "; `onnxsplit inspect MODEL --json` lists tensor names"
            raise PlanError(f"unknown tensor '{name}'{hint}") from None

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    @cached_property
    def compute_nodes(self) -> list[Node]:
        """Nodes that plans place on a side (every node except replicable Constants)."""
        return [n for n in self.nodes if not n.is_replicable]

    def predecessors(self, node: Node) -> list[Node]:
        """Producer nodes of the node's inputs, replicable Constants excluded."""
        preds: dict[str, Node] = {}
        for tname in node.all_inputs:
            prod = self.tensors[tname].producer
            if prod is not None:
                p = self._by_name[prod]
                if not p.is_replicable:
                    preds[p.name] = p
        return list(preds.values())

    def successors(self, node: Node) -> list[Node]:
        succ: dict[str, Node] = {}
        for out in node.outputs:
            for c in self.tensors[out].consumers:
                succ[c] = self._by_name[c]
        return list(succ.values())

    def ancestors(self, names: Iterable[str]) -> set[str]:
        """IR names of the given nodes and every (non-Constant) node they depend on."""
        stack = [self.node(n) for n in names]
        seen: set[str] = set()
        while stack:
            n = stack.pop()
            if n.name in seen or n.is_replicable:
                continue
            seen.add(n.name)
            stack.extend(self.predecessors(n))
        return seen

    def to_networkx(self):  # noqa: ANN201 - networkx is a runtime dependency, typed loosely
        """DiGraph over compute nodes; edge attribute ``tensors`` lists the tensors carried."""
        import networkx as nx

        dg = nx.DiGraph()
        for n in self.compute_nodes:
            dg.add_node(n.name, op_type=n.op_type, flops=n.flops)
        for n in self.compute_nodes:
            for tname in n.all_inputs:
                prod = self.tensors[tname].producer
                if prod is None or self._by_name[prod].is_replicable:
                    continue
                if dg.has_edge(prod, n.name):
                    dg.edges[prod, n.name]["tensors"].append(tname)
                else:
                    dg.add_edge(prod, n.name, tensors=[tname])
        return dg

    # ------------------------------------------------------------------ summaries
    @property
    def input_nbytes(self) -> int:
        return sum(self.tensors[n].nbytes or 0 for n in self.inputs)

    @property
    def param_nbytes(self) -> int:
        return sum(self.tensors[n].nbytes or 0 for n in self.initializers)

    @property
    def param_count(self) -> int:
        return sum(self.tensors[n].type.numel or 0 for n in self.initializers)  # type: ignore[union-attr]

    @property
    def total_macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
            hist[key] = hist.get(key, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def unknown_cost_nodes(self) -> list[Node]:
        return [n for n in self.compute_nodes if not n.cost.known]

    def require_static_shapes(self) -> None:
        """Raise ShapeError naming the first main-graph tensor without a static shape."""
        for n in self.nodes:
            for out in n.outputs:
                t = self.tensors[out]
                if t.value_kind != "tensor":
                    continue  # sequences/optionals may live inside one side; split refuses to send them
                if t.type is None or not t.type.is_static:
                    raise ShapeError(
                        f"tensor '{out}' (output of node '{n.name}', {n.op_type}) has no static shape "
                        f"({'unknown' if t.type is None else t.type.shape}); fix the input shapes with "
                        "--input-shape NAME:1x3x224x224 or simplify the model with --simplify"
                    )


def _collect_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Types of main-graph values from inputs, outputs, value_info and Constant nodes."""
    g = model.graph
    types: dict[str, TensorType] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = TensorType.from_value_info(vi)
        if tt is None:
            continue
        prev = types.get(vi.name)
        if prev is None or (not prev.is_static and tt.is_static):
            types[vi.name] = tt
    for node in g.node:
        if node.op_type == "Constant" and node.output and node.output[0] not in types:
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = TensorType(a.t.data_type, tuple(a.t.dims))
    return types


def _non_tensor_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Main-graph values typed as sequence/optional/map: name -> kind."""
    g = model.graph
    out = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        which = vi.type.WhichOneof("value")
        if which in ("sequence_type", "optional_type", "map_type", "sparse_tensor_type"):
            out[vi.name] = which.removesuffix("_type")
    return out
