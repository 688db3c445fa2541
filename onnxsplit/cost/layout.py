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

import numpy as np

from ..ir import Graph, Node

__all__ = ["DEFAULT_NCHWC_BLOCK", "Reorder", "nchwc_reorders", "nchwc_tensors", "nhwc_tensors", "nhwc_transposes"]

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
    if (c_in // group) % block == 0 and (c_out // group) % block == 0:  # grouped, whole blocks per group
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



# ------------------------------------------------------------------------------------------ int8: NHWC
#: ops onnxruntime's transpose optimizer moves a layout Transpose through (elementwise, with a
#: handler in its table): their output takes the layout of their inputs when that saves Transposes
_NHWC_PASS = frozenset({
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Exp", "Log", "Sqrt",
    "Reciprocal", "Neg", "Abs", "Floor", "Ceil", "Round", "Sign", "Elu", "Selu", "Softplus", "Softsign", "Identity",
    "Dropout", "Cast", "QuantizeLinear", "DequantizeLinear",
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Mean", "Sum", "Pow", "PRelu", "Where", "Equal", "Greater", "Less",
    "Concat", "Split", "Slice", "Pad", "Resize", "Tile",
})

#: reductions the transpose optimizer moves a Transpose through (renumbering their axes)
_NHWC_REDUCE = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
                          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})


def _int8_nhwc_op(graph: Graph, node: Node, folded: set[str]) -> bool:
    """Does onnxruntime run ``node`` of the fp32 graph, once quantized, in NHWC on x86 whatever its
    input's layout? A 2-D Conv with constant weights (QLinearConv), and an AveragePool, which the
    edge quantization rewrites as a depthwise Conv (:mod:`onnxsplit.quant.pools`). (The uint8
    MaxPool and QLinearGlobalAveragePool run NHWC only when a Transpose moves through them: see
    :func:`nhwc_tensors`.)"""
    op = node.op_type if node.domain in ("", "ai.onnx") else ""
    x = _shape(graph, node.inputs[0]) if node.inputs else None
    if x is None or len(x) != 4 or not _is_fp32(graph, node.inputs[0]):
        return False
    if op == "Conv":
        w = _shape(graph, node.inputs[1]) if len(node.inputs) > 1 else None
        return w is not None and len(w) == 4 and _is_const(graph, node.inputs[1], folded)
    return op == "AveragePool"


def _splits_channels(graph: Graph, node: Node) -> bool:
    """A Reshape of a 4-D ``[N, C, H, W]`` tensor into ``[N, c1, ..., ck, H, W]`` (``c1 * ... * ck =
    C``, a channel shuffle's first step): onnxruntime moves an NHWC→NCHW Transpose through it."""
    x = _shape(graph, node.inputs[0])
    y = _shape(graph, node.outputs[0])
    if x is None or y is None or len(x) != 4 or len(y) < 5:
        return False
    return y[0] == x[0] and y[-2:] == x[2:] and int(np.prod(y[1:-2])) == x[1]


def nhwc_tensors(graph: Graph, skip: Iterable[str] = ()) -> tuple[dict[str, bool], list[Reorder]]:
    """Simulate onnxruntime's int8 layout work on x86 for the static-QDQ quantization of ``graph``
    (the fp32 graph; quantized as :func:`onnxsplit.profile.quantize_qdq` does): ``(layout,
    transposes)``, ``layout[tensor]`` True where the tensor is NHWC (also a channel-split 5-D
    tensor that onnxruntime keeps permuted).

    onnxruntime runs QLinearConv in NHWC (:func:`_int8_nhwc_op`), wraps each in Transposes and its
    transpose optimizer pushes them down the graph, cancelling pairs. Rules, written from
    onnxruntime's optimized graphs (``tests/test_cost_layout.py``):

    * a BatchNormalization behind a Conv (folded by ``quant_pre_process``) and a Relu/Clip the
      quantizer drops keep the layout for free; a lone BatchNormalization runs NCHW fp32;
    * a Transpose moves through an op with a handler (elementwise ops, Concat, Split, Slice, Pad,
      Resize, reductions, uint8 MaxPool / GlobalAveragePool, a Reshape that splits the channels)
      when onnxruntime's cost check says so: each computed NCHW input costs a Transpose, each NHWC
      one saves one, and the output costs one unless it leads (through such ops) to a Transpose
      that would cancel it, or is smaller than the input; it moves when the sum is negative;
    * an explicit Transpose on an NHWC input merges with the layout one (no extra Transpose; see
      :func:`onnxsplit.cost.kernels.mark_merged_transposes` for what the merged one costs);
    * every other op, and every graph output, needs NCHW.

    What is left: ``"input"`` Transposes (NCHW → NHWC, paid by the consumer) and ``"output"`` ones
    (NHWC → NCHW, paid by the producer), one per tensor and direction; ``nbytes`` counts a byte per
    element where the reading op is one the quantizer quantizes (the Transpose then runs on uint8),
    else four. Not modelled: an explicit Transpose that cancels against the layout one (after a
    ``keepdims=0`` reduction), and graphs onnxruntime changes first in other ways (e.g. identical
    convolutions merged by common-subexpression elimination).
    """
    from .kernels import QUANTIZED_OPS

    skipped = set(skip)
    folded = {o for n in graph.compute_nodes if n.name in skipped for o in n.outputs}
    nhwc: dict[str, bool] = {}
    out: list[Reorder] = []
    done: set[tuple[str, str]] = set()

    def numel(name: str) -> int:
        s = _shape(graph, name)
        return int(np.prod(s)) if s else 0

    def to_nchw(name: str, reader_op: str) -> None:
        if nhwc.get(name) and (name, "output") not in done:
            done.add((name, "output"))
            width = 1 if reader_op in QUANTIZED_OPS or reader_op == "" else 4
            out.append(Reorder(name, "output", graph.tensor(name).producer or name, numel(name) * width))

    def to_nhwc(name: str, node: str) -> None:
        if not nhwc.get(name) and (name, "input") not in done:
            done.add((name, "input"))
            out.append(Reorder(name, "input", node, numel(name)))

    nodes = [n for n in graph.compute_nodes if n.name not in skipped]

    def op_of(n: Node) -> str:
        return n.op_type if n.domain in ("", "ai.onnx") else ""

    def data_of(n: Node) -> list[str]:
        return [i for i in n.inputs if i and not _is_const(graph, i, folded)]

    def movable(n: Node) -> bool:  # a Transpose on its data input can move through it
        op = op_of(n)
        if op in _NHWC_PASS or op in _NHWC_REDUCE or op in ("MaxPool", "GlobalAveragePool"):
            return True
        if op == "BatchNormalization":
            return bool(n.inputs) and _fused_into_conv(graph, n.inputs[0], folded)
        return op == "Reshape" and _splits_channels(graph, n)

    # which tensors lead (through movable ops) to a layout Transpose that a pushed one would cancel:
    # the input of an NHWC convolution, or an explicit Transpose
    leads: dict[str, bool] = {}
    for n in reversed(nodes):
        data = data_of(n)
        if op_of(n) == "Transpose" or (movable(n) and any(leads.get(o) for o in n.outputs)):
            leads.update(dict.fromkeys(data, True))
        elif _int8_nhwc_op(graph, n, folded) and n.inputs[0] in data:
            leads[n.inputs[0]] = True

    for n in nodes:
        op = op_of(n)
        data = data_of(n)
        out_nhwc = False
        if _int8_nhwc_op(graph, n, folded):
            to_nhwc(n.inputs[0], n.name)
            out_nhwc = True
        elif op == "Transpose":
            pass  # merged with the layout Transpose before it (one Transpose either way)
        elif op == "BatchNormalization" and data and nhwc.get(data[0]) and _fused_into_conv(graph, data[0], folded):
            out_nhwc = True  # folded into the Conv before it (quant_pre_process); a lone one runs NCHW fp32
        elif op in ("Relu", "Clip") and data and nhwc.get(data[0]) and _removed_activation(graph, n):
            out_nhwc = True  # the quantizer drops it (its QuantizeLinear clamps): nothing runs
        elif movable(n) and any(nhwc.get(i) for i in data):
            # onnxruntime's cost check: a computed NCHW input costs a Transpose, an NHWC one saves
            # one, and the output costs one unless it leads to a Transpose the pushed one cancels
            # or is smaller than the input (a pool or reduction: the Transpose gets cheaper)
            smaller = numel(n.outputs[0]) < max(numel(i) for i in data)
            cost = sum(-1 if nhwc.get(i) else 1 for i in data) \
                + (0 if smaller or any(leads.get(o) for o in n.outputs) else 1)
            if cost < 0:
                for i in data:
                    to_nhwc(i, n.name)
                out_nhwc = True
                if op in _NHWC_REDUCE:  # on a [N, C, 1, 1] result it only moves size-1 axes: a Reshape (free)
                    y = _shape(graph, n.outputs[0])
                    out_nhwc = not (y is not None and len(y) == 4 and (y[1] == 1 or y[2] * y[3] == 1))
            else:
                for i in data:
                    to_nchw(i, op)
        else:
            for i in data:
                to_nchw(i, op)
        for o in n.outputs:
            nhwc[o] = out_nhwc and len(_shape(graph, o) or ()) >= 4
    for o in graph.model.graph.output:
        to_nchw(o.name, "")
    return nhwc, out


def _removed_activation(graph: Graph, node: Node) -> bool:
    """A Relu/Clip the static QDQ quantizer removes: its input is the only use of the output of a
    quantized op (the op's QuantizeLinear then clamps as the activation would)."""
    from .kernels import QUANTIZED_OPS

    t = graph.tensor(node.inputs[0])
    if t.producer is None or len(t.consumers) != 1 or t.is_graph_output:
        return False
    return graph.node(t.producer).op_type in QUANTIZED_OPS


def nhwc_transposes(graph: Graph, skip: Iterable[str] = ()) -> list[Reorder]:
    """The layout Transposes onnxruntime's CPU provider adds to ``graph`` quantized to int8
    (see :func:`nhwc_tensors`)."""
    return nhwc_tensors(graph, skip)[1]
