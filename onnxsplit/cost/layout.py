"""Where onnxruntime's CPU provider reorders tensors between NCHW and its blocked NCHWc layout.

On x86, onnxruntime's ``NchwcTransformer`` (all graph optimizations on, the default) runs eligible
convolutions in the blocked layout NCHWc (channels in blocks of 16 on AVX-512, 8 on AVX2) and keeps
tensors in that layout through the ops that accept it (activations, element-wise sums, pools,
channel concatenation, ...). Where an NCHWc tensor meets an op that does not accept it, or a graph
output, it inserts a ``ReorderOutput``; where an NCHW tensor enters an NCHWc convolution, a
``ReorderInput``. A reorder copies the whole tensor: a one-kernel graph of a convolution pays two,
a convolution inside a chain of NCHWc ops none. Kernel-level cost models that ignore this charge
every convolution for reorders that only some of them pay.

:func:`nchwc_reorders` predicts these reorders from the graph alone (onnxsplit's own rules, written
from onnxruntime's observable behaviour and checked against the optimized graphs onnxruntime saves:
``tests/test_cost_layout.py``). Contract: for a graph with static shapes, it returns one
:class:`Reorder` per reordered tensor (a tensor is reordered at most once per direction, as
onnxruntime shares one reorder among all consumers), each naming the IR node that pays for it: the
consumer of a ``ReorderInput``, the producer of a ``ReorderOutput``. Nodes it does not know keep
NCHW, so an unknown op can only add reorders, never hide one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..ir import Graph, Node

__all__ = ["DEFAULT_NCHWC_BLOCK", "Reorder", "nchwc_reorders", "nchwc_tensors"]

#: channel block of the NCHWc layout on the measured host-x86 machine (AVX-512: 16 floats)
DEFAULT_NCHWC_BLOCK = 16

#: ops that keep an NCHWc input in NCHWc (one data input, same channel count out)
_PASS_UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "BatchNormalization"})
#: activations that stay NCHWc only fused into the Conv that produces their input (its only consumer)
_FUSED_ONLY = frozenset({"Clip", "LeakyRelu"})
#: element-wise ops onnxruntime runs on NCHWc inputs when every input is NCHWc with the same shape
_PASS_BINARY = frozenset({"Add", "Sum", "Mul"})
#: ops onnxruntime folds into the Conv before them when their other operands are constants
_CONST_FOLDABLE = frozenset({"BatchNormalization", "Mul", "Add", "Sub", "Div"})
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"})


@dataclass(frozen=True)
class Reorder:
    """One inserted layout conversion of ``tensor`` (``kind``: ``"input"`` NCHW → NCHWc, or
    ``"output"`` NCHWc → NCHW), paid by IR node ``node``; ``nbytes``: the tensor's size."""

    tensor: str
    kind: str
    node: str
    nbytes: int


def _shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    try:
        t = graph.tensor(name)
    except KeyError:
        return None
    s = t.shape
    if s is None or any(d is None for d in s):
        return None
    return tuple(int(d) for d in s)  # type: ignore[arg-type]


def _is_fp32(graph: Graph, name: str) -> bool:
    try:
        return graph.tensor(name).dtype in ("float", "float32")
    except KeyError:
        return False


def _is_const(graph: Graph, name: str, folded: frozenset[str] | set[str] = frozenset()) -> bool:
    """An initializer (also one an old exporter lists among the graph inputs), a constant, or the
    output of a constant-folded node (``folded``: such outputs)."""
    return graph.tensor(name).kind in ("initializer", "constant") or name in graph.initializers or name in folded


def _conv_mode(graph: Graph, node: Node, block: int, folded: set[str]) -> str | None:
    """How onnxruntime runs a Conv: ``"nchwc"`` (NCHWc in and out), ``"nchw_in"`` (reads NCHW
    directly, writes NCHWc: fewer input channels than a block), or None (stays NCHW)."""
    if len(node.inputs) < 2 or not _is_fp32(graph, node.inputs[0]):
        return None
    x, w = _shape(graph, node.inputs[0]), _shape(graph, node.inputs[1])
    if x is None or w is None or len(x) != 4 or len(w) != 4:
        return None
    if not _is_const(graph, node.inputs[1], folded):
        return None  # weights computed at run time: not transformed
    attrs = {a.name: a for a in node.proto.attribute}
    group = int(attrs["group"].i) if "group" in attrs else 1
    c_out, c_in = w[0], w[1] * group
    if group == 1:
        # output channels are padded up to a whole block; fewer input channels than a block: the
        # convolution reads the NCHW tensor directly
        return "nchw_in" if c_in < block else "nchwc"
    if group == c_in == c_out:  # depthwise
        return "nchwc"
    return None


def nchwc_tensors(graph: Graph, block: int = DEFAULT_NCHWC_BLOCK,
                  skip: Iterable[str] = ()) -> tuple[dict[str, bool], list[Reorder]]:
    """Simulate the layout pass: ``(layout, reorders)``, ``layout[tensor]`` True where the tensor is
    NCHWc. ``skip``: IR node names that do not run (constant-folded), ignored."""
    skipped = set(skip)
    folded = {o for n in graph.compute_nodes if n.name in skipped for o in n.outputs}
    nchwc: dict[str, bool] = {}
    reorders: list[Reorder] = []
    reordered_out: set[str] = set()
    reordered_in: set[str] = set()

    def nbytes(name: str) -> int:
        try:
            return int(graph.tensor(name).nbytes or 0)
        except KeyError:
            return 0

    def need_nchw(name: str, node: str) -> None:  # an NCHW consumer reads ``name``
        if nchwc.get(name) and name not in reordered_out:
            reordered_out.add(name)
            reorders.append(Reorder(name, "output", graph.tensor(name).producer or node, nbytes(name)))

    def need_nchwc(name: str, node: str) -> None:  # an NCHWc-only consumer reads ``name``
        if not nchwc.get(name) and name not in reordered_in:
            reordered_in.add(name)
            reorders.append(Reorder(name, "input", node, nbytes(name)))

    for n in graph.compute_nodes:
        if n.name in skipped:
            continue
        op = n.op_type if n.domain in ("", "ai.onnx") else ""
        data = [i for i in n.inputs if not _is_const(graph, i, folded)]
        out_c = False
        if op == "Conv":
            mode = _conv_mode(graph, n, block, folded)
            if mode is not None:
                if mode == "nchwc":
                    need_nchwc(n.inputs[0], n.name)
                else:
                    need_nchw(n.inputs[0], n.name)
                out_c = True
            else:
                for i in data:
                    need_nchw(i, n.name)
        elif op in _PASS_UNARY and len(data) == 1 and nchwc.get(data[0]):
            out_c = True
        elif op in _FUSED_ONLY and len(data) == 1 and nchwc.get(data[0]) and _fused_into_conv(graph, data[0], folded):
            out_c = True
        elif op in _CONST_FOLDABLE and len(data) == 1 and data[0] == n.inputs[0] and nchwc.get(data[0]) \
                and _fused_into_conv(graph, data[0], folded):
            out_c = True  # folded into the Conv (x * scale, x + bias)
        elif op in _PASS_BINARY and data and all(nchwc.get(i) for i in n.inputs) \
                and len({_shape(graph, i) for i in n.inputs}) == 1:  # (x + x lists x once)
            out_c = True
        elif op in _POOLS and data and (nchwc.get(data[0]) or _channels_aligned(graph, data[0], block)):
            need_nchwc(data[0], n.name)
            out_c = True
        elif op == "Concat" and data and all(nchwc.get(i) for i in data) and _concat_on_channels(graph, n, block):
            out_c = True
        else:
            for i in data:
                need_nchw(i, n.name)
        for o in n.outputs:
            nchwc[o] = out_c
    for o in graph.model.graph.output:
        need_nchw(o.name, o.name)
    return nchwc, reorders


def _fused_into_conv(graph: Graph, name: str, folded: set[str]) -> bool:
    """``name`` is a Conv's output, after ops onnxruntime folds into the Conv (BatchNormalization,
    a Mul/Add/Sub/Div by a constant), read by one consumer only."""
    t = graph.tensor(name)
    while t.producer is not None and len(t.consumers) == 1 and not t.is_graph_output:
        p = graph.node(t.producer)
        if p.op_type == "Conv":
            return True
        if p.op_type not in _CONST_FOLDABLE or sum(not _is_const(graph, i, folded) for i in p.inputs) != 1:
            return False
        t = graph.tensor(p.inputs[0])
    return False


def _channels_aligned(graph: Graph, name: str, block: int) -> bool:
    s = _shape(graph, name)
    return s is not None and len(s) == 4 and s[1] % block == 0


def _concat_on_channels(graph: Graph, node: Node, block: int) -> bool:
    attrs = {a.name: a for a in node.proto.attribute}
    axis = int(attrs["axis"].i) if "axis" in attrs else 0
    shapes = [_shape(graph, i) for i in node.inputs]
    if any(s is None or len(s) != 4 for s in shapes):
        return False
    return axis in (1, -3) and all(s[1] % block == 0 for s in shapes)  # type: ignore[index]


def nchwc_reorders(graph: Graph, block: int = DEFAULT_NCHWC_BLOCK, skip: Iterable[str] = ()) -> list[Reorder]:
    """The reorders onnxruntime's CPU provider inserts into ``graph`` (see the module docstring)."""
    return nchwc_tensors(graph, block, skip)[1]

