"""The split mechanism: a set of edge nodes in, an edge model and a cloud model out.

Contract of :func:`split_model` (``cloud(edge(x)) == model(x)``):

- The plan is the set E of IR node names that run on the edge. E must be closed under
  predecessors; otherwise :class:`PlanError` names an edge→cloud→edge path.
- **Boundary**: every tensor produced on the edge and read by a cloud node (explicitly or inside a
  cloud If/Loop/Scan body) is an output of the edge model and an input of the cloud model, listed
  once however many cloud nodes read it. Graph inputs read by cloud nodes are *sent raw*: they are
  inputs of the cloud model with their original names, fed by the caller from the original feeds.
- **Outputs**: the edge model also returns the original graph outputs produced on the edge; the
  cloud model returns those produced in the cloud. :meth:`SplitModels.assemble` rebuilds the
  original outputs, in the original order, from the edge results, the cloud results and (for a
  graph input that is also a graph output) the feeds; ``output_sources`` records where each came from.
- Initializers, sparse initializers and Constant nodes are copied into every side that reads them
  (Constants are never sent over the network). Names of nodes and tensors are preserved; IR version,
  opset imports, producer, doc string, metadata and model-local functions carry over.
- A side with no nodes and nothing to return is ``None`` (all-edge plans have no cloud model,
  all-cloud plans no edge model).
- Both models pass ``onnx.checker.check_model(full_check=True)``; with onnxruntime graph
  optimizations disabled the recombined outputs are bit-identical to the original model's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper

from .errors import PlanError
from .ir import Graph, Node, TensorType


@dataclass(frozen=True)
class BoundaryTensor:
    """A tensor sent from the edge to the cloud."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    source: str  # "edge" (an edge-produced activation) or "input" (a raw graph input)

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class SplitModels:
    """The two halves of a split and how to recombine them."""

    edge: onnx.ModelProto | None
    cloud: onnx.ModelProto | None
    edge_nodes: list[str]
    cloud_nodes: list[str]
    boundary: list[BoundaryTensor]
    output_names: list[str]  # original graph outputs, original order
    output_sources: dict[str, str] = field(default_factory=dict)  # name -> "edge" | "cloud" | "input"

    @property
    def boundary_nbytes(self) -> int:
        return sum(b.nbytes for b in self.boundary)

    def cloud_feeds(self, feeds: Mapping[str, np.ndarray], edge_results: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cloud model's inputs: boundary activations from the edge, raw inputs from the feeds."""
        out = {}
        for b in self.boundary:
            src = edge_results if b.source == "edge" else feeds
            if b.name not in src:
                raise PlanError(f"boundary tensor '{b.name}' missing from the {b.source} values")
            out[b.name] = src[b.name]
        return out

    def assemble(
        self,
        feeds: Mapping[str, np.ndarray],
        edge_results: Mapping[str, np.ndarray],
        cloud_results: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Original outputs in original order from the two sides' results."""
        pools = {"edge": edge_results, "cloud": cloud_results, "input": feeds}
        return {name: pools[self.output_sources[name]][name] for name in self.output_names}

    def run(self, feeds: Mapping[str, np.ndarray], *, optimize: bool = False) -> dict[str, np.ndarray]:
        """Run edge then cloud with onnxruntime in this process and assemble the outputs."""
        from .runtime_ort import run

        edge_results = run(self.edge, feeds, optimize=optimize) if self.edge is not None else {}
        cloud_results = (
            run(self.cloud, self.cloud_feeds(feeds, edge_results), optimize=optimize) if self.cloud is not None else {}
        )
        return self.assemble(feeds, edge_results, cloud_results)

    def describe(self) -> dict:
        """JSON-ready description (the plan part of a manifest)."""
        return {
            "edge_nodes": self.edge_nodes,
            "cloud_nodes": self.cloud_nodes,
            "boundary": [b.to_json() for b in self.boundary],
            "boundary_nbytes": self.boundary_nbytes,
            "outputs": [{"name": n, "source": self.output_sources[n]} for n in self.output_names],
        }

    def __str__(self) -> str:  # pragma: no cover - convenience
        return json.dumps(self.describe(), indent=2)


# ------------------------------------------------------------------------------- plan helpers
def edge_nodes_for_cut(graph: Graph, cut_tensors: Iterable[str]) -> set[str]:
    """The smallest edge set that produces the given tensors: their producers and all ancestors.

    Tensors that must cross besides the named ones (skip connections, raw inputs) are added to the
    boundary automatically by :func:`split_model`.
    """
    producers = []
    for name in cut_tensors:
        t = graph.tensor(name)
        if t.kind in ("input", "initializer", "constant"):
            raise PlanError(
                f"cannot cut at '{name}': it is a graph {t.kind}, not a computed tensor; cut at a node output "
                "(see `onnxsplit inspect MODEL`)"
            )
        producers.append(t.producer)
    return graph.ancestors(p for p in producers if p is not None)


def edge_nodes_prefix(graph: Graph, k: int) -> set[str]:
    """The first ``k`` compute nodes of the topological order (always predecessor-closed)."""
    n = len(graph.compute_nodes)
    if not 0 <= k <= n:
        raise PlanError(f"cut index {k} out of range: the model has {n} compute nodes (0..{n})")
    return {node.name for node in graph.compute_nodes[:k]}


def check_closed(graph: Graph, edge: set[str]) -> None:
    """Raise PlanError naming an edge→cloud→edge path when ``edge`` is not predecessor-closed."""
    for node in graph.compute_nodes:
        if node.name not in edge:
            continue
        for pred in graph.predecessors(node):
            if pred.name in edge:
                continue
            path = _path_back_to_edge(graph, pred, edge)
            chain = " -> ".join(p.name for p in path) + f" -> {node.name}"
            head = f"edge node '{path[0].name}' feeds cloud node" if path[0].name in edge else "cloud node"
            raise PlanError(
                f"plan is not closed under predecessors: edge node '{node.name}' needs '{pred.name}', which is "
                f"on the cloud ({head} path {chain}); add '{pred.name}' and its ancestors to the edge set "
                f"or move '{node.name}' to the cloud"
            )


def _path_back_to_edge(graph: Graph, cloud_node: Node, edge: set[str]) -> list[Node]:
    """Shortest chain start→…→cloud_node where start is an edge node (or cloud_node alone)."""
    parent: dict[str, Node | None] = {cloud_node.name: None}
    queue = [cloud_node]
    while queue:
        nxt = []
        for n in queue:
            for p in graph.predecessors(n):
                if p.name in parent:
                    continue
                parent[p.name] = n
                if p.name in edge:
                    path = [p]
                    cur: Node | None = n
                    while cur is not None:
                        path.append(cur)
                        cur = parent[cur.name]
                    return path
                nxt.append(p)
        queue = nxt
    return [cloud_node]


# ---------------------------------------------------------------------------------- mechanism
def split_model(graph: Graph, edge_nodes: Iterable[str]) -> SplitModels:
    """Turn a plan (edge node names) into two models. See the module docstring for the contract."""
    edge: set[str] = set()
    for name in edge_nodes:
        node = graph.node(name)  # raises on unknown names
        if not node.is_replicable:
            edge.add(node.name)
    check_closed(graph, edge)
    cloud = {n.name for n in graph.compute_nodes if n.name not in edge}

    def side_of_tensor(tname: str) -> str:
        t = graph.tensors[tname]
        if t.kind == "activation":
            return "edge" if t.producer in edge else "cloud"
        return t.kind  # input / initializer / constant: available wherever needed

    # Boundary: tensors read by cloud nodes that come from the edge or from the raw inputs.
    boundary_names: dict[str, str] = {}
    for node in graph.compute_nodes:
        if node.name not in cloud:
            continue
        for tname in node.all_inputs:
            side = side_of_tensor(tname)
            if side == "edge":
                boundary_names.setdefault(tname, "edge")
            elif side == "input":
                boundary_names.setdefault(tname, "input")
    # Stable order: raw inputs in graph order, then activations in production order.
    order = {name: i for i, name in enumerate(graph.inputs)}
    base = len(order)
    for node in graph.nodes:
        for out in node.outputs:
            order.setdefault(out, base + len(order))
    boundary = []
    for tname in sorted(boundary_names, key=lambda n: order[n]):
        t = graph.tensors[tname]
        if t.value_kind != "tensor":
            raise PlanError(
                f"the cut crosses '{tname}', a {t.value_kind} value (produced by '{t.producer}'); only tensors are "
                f"sent over the network: move the cut so that '{tname}' is produced and consumed on one side"
            )
        if t.type is None or not t.type.is_static:
            raise PlanError(f"boundary tensor '{tname}' has no static shape; fix input shapes with --input-shape")
        boundary.append(
            BoundaryTensor(tname, tuple(t.type.shape), t.type.dtype, int(t.type.nbytes or 0), boundary_names[tname])  # type: ignore[arg-type]
        )

    # Where each original output is produced.
    output_sources: dict[str, str] = {}
    for name in graph.outputs:
        t = graph.tensors[name]
        if t.kind == "activation":
            output_sources[name] = "edge" if t.producer in edge else "cloud"
        elif t.kind == "input":
            output_sources[name] = "input"
        else:  # initializer or Constant output: emitted by whichever side exists, edge preferred
            output_sources[name] = "edge" if edge or not cloud else "cloud"

    edge_outputs = [n for n in graph.outputs if output_sources[n] == "edge"]
    cloud_outputs = [n for n in graph.outputs if output_sources[n] == "cloud"]
    if not cloud_outputs:  # cloud nodes, if any, are dead code: nothing needs to cross
        boundary = []
    edge_out_all = list(dict.fromkeys(edge_outputs + [b.name for b in boundary if b.source == "edge"]))

    edge_model = _build_side(graph, edge, inputs=None, outputs=edge_out_all, suffix="edge") if edge_out_all else None
    cloud_inputs = [b.name for b in boundary]
    cloud_model = (
        _build_side(graph, cloud, inputs=cloud_inputs, outputs=cloud_outputs, suffix="cloud") if cloud_outputs else None
    )
    return SplitModels(
        edge=edge_model,
        cloud=cloud_model,
        edge_nodes=[n.name for n in graph.compute_nodes if n.name in edge],
        cloud_nodes=[n.name for n in graph.compute_nodes if n.name in cloud],
        boundary=boundary,
        output_names=list(graph.outputs),
        output_sources=output_sources,
    )


def _build_side(
    graph: Graph,
    nodes: set[str],
    *,
    inputs: list[str] | None,
    outputs: list[str],
    suffix: str,
) -> onnx.ModelProto:
    """One side as a ModelProto.

    ``inputs=None`` (edge): the side's inputs are the original graph inputs its nodes read.
    Otherwise (cloud) exactly ``inputs``: boundary activations and raw graph inputs.
    """
    src = graph.model
    side_nodes = [n for n in graph.nodes if n.name in nodes]
    needed: set[str] = set(outputs)
    for n in side_nodes:
        needed.update(n.all_inputs)
    # Constant nodes are replicated; a Constant may itself feed another Constant only via subgraphs.
    consts = [n for n in graph.nodes if n.is_replicable and any(o in needed for o in n.outputs)]
    keep = {n.name for n in side_nodes} | {n.name for n in consts}
    ordered = [n for n in graph.nodes if n.name in keep]

    if inputs is None:
        inputs = [name for name in graph.inputs if name in needed]
    value_infos = {vi.name: vi for vi in list(src.graph.value_info) + list(src.graph.input) + list(src.graph.output)}

    def vi_for(name: str) -> onnx.ValueInfoProto:
        if name in value_infos and value_infos[name].type.WhichOneof("value") is not None:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(value_infos[name])
            return vi
        t = graph.tensors[name]
        if t.type is None:
            raise PlanError(f"tensor '{name}' has no type information; cannot make it a model input/output")
        return t.type.to_value_info(name)

    g = onnx.GraphProto()
    g.name = f"{src.graph.name or 'graph'}_{suffix}"
    g.doc_string = src.graph.doc_string
    g.node.extend(n.proto for n in ordered)
    g.input.extend(vi_for(n) for n in inputs)
    # Initializer-backed inputs (overridable defaults) keep their input entry when used.
    g.input.extend(vi_for(n) for n in graph.inputs_with_initializer if n in needed)
    used_inits = needed
    g.initializer.extend(t for t in src.graph.initializer if t.name in used_inits)
    g.sparse_initializer.extend(t for t in src.graph.sparse_initializer if t.values.name in used_inits)
    g.output.extend(vi_for(n) for n in outputs)
    produced = {o for n in ordered for o in n.outputs}
    io = set(inputs) | set(outputs)
    g.value_info.extend(vi for vi in src.graph.value_info if vi.name in produced and vi.name not in io)
    if src.ir_version < 4:  # before IR 4 every initializer must also be a graph input
        have = {vi.name for vi in g.input}
        g.input.extend(vi_for(t.name) for t in g.initializer if t.name not in have)

    m = onnx.ModelProto()
    m.ir_version = src.ir_version
    m.opset_import.extend(src.opset_import)
    m.producer_name = src.producer_name
    m.producer_version = src.producer_version
    m.domain = src.domain
    m.model_version = src.model_version
    m.doc_string = src.doc_string
    m.metadata_props.extend(src.metadata_props)
    m.functions.extend(src.functions)
    m.graph.CopyFrom(g)
    helper.set_model_props(m, {**{p.key: p.value for p in src.metadata_props}, "onnxsplit.side": suffix})
    return m
