"""Kernel grouping: which IR nodes a runtime executes as one fused kernel.

Runtimes fuse: onnxruntime's CPU provider folds ``Conv -> BatchNormalization -> Add(residual) ->
Relu`` into one (NCHWc) convolution, ``MatMul -> Add(bias) -> Tanh`` into one ``FusedGemm``,
``Div/Erf/Add/Mul/Mul`` into one ``Gelu``... The cost of such a group is *not* the sum of the
unfused nodes' costs, so latency is predicted per :class:`Kernel`.

A kernel has a *head* (the node that carries the kernel's predicted latency in per-node tables) and
*members* (head included, graph order). The rules (:class:`FusionRules`) follow what onnxruntime 1.32
with default optimizations actually emits on x86 (checked by dumping ``optimized_model_filepath``):

* **Conv** head, followers along a single-consumer chain (the intermediate tensor read only by the
  next follower and not a graph output): ``BatchNormalization`` and ``Add/Sub/Mul/Div`` by a
  constant (ConvBN/ConvAdd/ConvMul fusions), then one residual ``Add`` of another computed tensor
  (NCHWc "Sum" fusion; x86 only), then one activation of ``conv_activations`` (Relu, Clip,
  Sigmoid, Tanh, LeakyRelu, HardSigmoid, and HardSwish unless it produces a graph output).
* **MatMul/Gemm** head: a constant bias ``Add`` (MatMul+Add -> Gemm), a ``Mul/Div`` by a constant
  scalar (FusedMatMul), then one activation of ``gemm_activations`` when the input is 2-D
  (FusedGemm). A ``Transpose`` that only swaps the last two axes and feeds only the MatMul is
  absorbed (TransposeMatMul fusion).
* Quantized graphs: ``DequantizeLinear`` inputs and a ``QuantizeLinear`` output of a head are part
  of its kernel (QDQ -> QLinearConv/QLinearMatMul).
* Elementwise patterns that become one kernel: erf-Gelu (``Div, Erf, Add, Mul, Mul`` -> Gelu) and
  SiLU (``x * Sigmoid(x)`` -> QuickGelu).
* Constant-foldable nodes (every input constant, or ``Shape``/``Size`` of a static tensor) are
  kernels of family ``constant``: onnxruntime computes them once at session creation (0 ms).

Every other node is a kernel of its own. Op families (``family`` of the head) select the
coefficients of the cost model: see :func:`op_family`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from ..flops import DATA_MOVEMENT_OPS, ELEMENTWISE_FLOPS
from ..ir import Graph, Node

__all__ = [
    "FAMILIES",
    "FAMILY_PARENT",
    "TRANSCENDENTAL_OPS",
    "resolve_family",
    "FusionRules",
    "Kernel",
    "fusion_rules",
    "group_kernels",
    "group_kernels_for",
    "kernel_signature",
    "mark_int8_fallbacks",
    "mark_merged_transposes",
    "op_family",
    "QUANTIZED_OPS",
    "uses_int8_fallbacks",
]

#: op families and what they cover (the coefficients of a cost model are per family)
FAMILIES: dict[str, str] = {
    "conv": "Conv, group 1, kernel larger than 1x1 (+ fused BN/bias/residual/activation)",
    "conv_pw": "Conv, group 1, 1x1 (pointwise)",
    "conv_dw": "Conv with one input channel per group (depthwise)",
    "conv_grouped": "Conv with 1 < group and more than one input channel per group (AlexNet, ShuffleNet, ResNeXt "
                    "style: per-group GEMMs, priced like a depthwise one by artifacts fitted before the family "
                    "existed)",
    "conv_transpose": "ConvTranspose",
    "gemm": "Gemm, or MatMul with a constant weight (linear layer) (+ fused bias/activation)",
    "matmul": "MatMul of two computed tensors (attention scores/context), Einsum",
    "pool": "MaxPool, AveragePool, LpPool, global pools",
    "elementwise": "unary/binary/variadic elementwise ops and activations (arithmetic, compare, Relu/Clip, ...)",
    "transcendental": "elementwise kernels with an exp/erf/tanh/log/pow/sqrt per element: Sigmoid, Tanh, Erf, "
                      "Exp, Pow, Sqrt, Softplus, ..., Gelu/SiLU patterns",
    "norm": "BatchNormalization (unfused), LayerNormalization, Instance/Group/RMS normalization",
    "lrn": "LRN (cross-channel window and a pow per element: its own cost law, far above a normalization's)",
    "softmax": "Softmax, LogSoftmax, Hardmax",
    "reduce": "Reduce*, ArgMax/ArgMin, CumSum, TopK",
    "data_movement": "Transpose, Concat, Split, Slice, Gather*, Pad, Tile, Expand, Cast, ...",
    "reshape": "Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, Shape (metadata only)",
    "resize": "Resize, Upsample, GridSample",
    "rnn": "LSTM, GRU, RNN",
    "control_flow": "If, Loop, Scan (subgraphs are not costed)",
    "other": "ops without a family (custom domains, model-local functions, ...)",
    "constant": "constant-foldable nodes: computed once when the session is created (0 ms)",
    "int8_fallback": "int8 graphs on onnxruntime CPU: an elementwise/transcendental kernel the static quantizer "
                     "leaves in fp32 next to quantized ops (HardSigmoid, Div, Erf, Pow, ...): it runs between a "
                     "DequantizeLinear and a QuantizeLinear (see mark_int8_fallbacks)",
    "transpose_merged": "int8 graphs on onnxruntime CPU: a Transpose of the graph whose input onnxruntime keeps in NHWC "
                        "(e.g. a channel shuffle's after its Reshape): merged with the layout Transpose into one "
                        "permutation that moves the innermost axis, element by element on uint8 (see "
                        "mark_merged_transposes)",
    "layout_reorder": "graphs on onnxruntime CPU: a layout conversion onnxruntime inserts, no graph node (predicted "
                      "by onnxsplit.cost.layout, charged to the kernel that pays for it; see layout_kernels): fp32, "
                      "a ReorderInput/ReorderOutput between NCHW and the blocked NCHWc layout of its NCHWc "
                      "convolutions; int8, a Transpose between NCHW and the NHWC layout of its QLinearConv",
}

#: a family a cost model may lack falls back to its parent's law (older artifacts, and data sets
#: too small to separate them, e.g. HELP's CNNs have no LRN): see :func:`resolve_family`
FAMILY_PARENT: dict[str, str] = {"transcendental": "elementwise", "lrn": "norm", "int8_fallback": "elementwise",
                                  "conv_grouped": "conv_dw", "transpose_merged": "data_movement"}

#: op types onnxruntime's static quantizer quantizes (its QDQ and QOperator registries, onnxruntime
#: 1.32: ``onnxruntime.quantization.registry``), fixed here so that a kernel's family does not change
#: with the installed onnxruntime (``tests/test_cost.py`` compares it with the installed registries)
QUANTIZED_OPS = frozenset({
    "Add", "ArgMax", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "ConvTranspose", "CumSum",
    "EmbedLayerNormalization", "Flatten", "Gather", "GatherElements", "Gemm", "GlobalAveragePool",
    "InstanceNormalization", "LayerNormalization", "LeakyRelu", "MatMul", "MaxPool", "Mul", "Pad", "Relu", "Reshape",
    "Resize", "Sigmoid", "Slice", "Softmax", "Split", "Squeeze", "TopK", "Transpose", "Unsqueeze", "Where",
})

#: elementwise ops whose per-element work is a transcendental function (kernel family
#: ``transcendental``): an order of magnitude slower per element than an add
TRANSCENDENTAL_OPS = frozenset({
    "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Softplus", "Softsign", "Elu", "Selu",
    "Celu", "Mish", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "Gelu", "FastGelu", "QuickGelu", "BiasGelu", "ThresholdedRelu",
})


def resolve_family(families: Any, family: str) -> str | None:
    """The family whose law prices a ``family`` kernel in ``families``: itself, else its parent
    (:data:`FAMILY_PARENT`), else None (not modelled)."""
    if family in families:
        return family
    parent = FAMILY_PARENT.get(family)
    return parent if parent is not None and parent in families else None


_HEAD_CONV = {"Conv", "ConvInteger", "QLinearConv", "FusedConv"}
_HEAD_MATMUL = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "FusedGemm"}
_POOL = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxRoiPool",
         "RoiAlign"}
_NORM = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
         "LpNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
         "MeanVarianceNormalization"}
_SOFTMAX = {"Softmax", "LogSoftmax", "Hardmax"}
_REDUCE = {"ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean", "ReduceSumSquare", "ReduceL1",
           "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin", "CumSum", "TopK"}
_RESHAPE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size"}
_RESIZE = {"Resize", "Upsample", "GridSample"}
_RNN = {"LSTM", "GRU", "RNN"}
_CONTROL = {"If", "Loop", "Scan", "SequenceMap"}
_EXTRA_ELEMENTWISE = {"Max", "Min", "Sum", "Mean", "Gelu", "FastGelu", "QuickGelu", "BiasGelu", "Swish",
                      "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Clip", "Where"}
#: ops that onnxruntime never constant-folds (random or control flow)
_NOT_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                 "Bernoulli", "If", "Loop", "Scan", "SequenceMap"}
_CONST_BINARY = {"Add", "Sub", "Mul", "Div"}


@dataclass(frozen=True)
class FusionRules:
    """What a runtime fuses (see the module docstring)."""

    name: str
    conv_bn: bool = True
    conv_const_binary: bool = True
    conv_residual_add: bool = True
    conv_activations: frozenset[str] = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid",
                                                  "HardSwish"})
    #: activations fused only when their output is not a graph output (onnxruntime expands a
    #: HardSwish that produces a graph output into HardSigmoid + Mul instead)
    conv_activations_not_at_output: frozenset[str] = frozenset({"HardSwish"})
    gemm_bias: bool = True
    gemm_scale: bool = True
    gemm_activations: frozenset[str] = frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"})
    transpose_into_matmul: bool = True
    qdq: bool = True
    gelu_pattern: bool = True
    silu_pattern: bool = True
    fold_constants: bool = True


_RULES: dict[str, FusionRules] = {
    # onnxruntime CPU provider, default (ORT_ENABLE_ALL) optimizations; NCHWc residual fusion on x86
    "ort-cpu": FusionRules("ort-cpu"),
    # CUDA provider: cuDNN conv+bias+activation(+residual add) fusion, Gemm bias
    "ort-cuda": FusionRules("ort-cuda", conv_activations=frozenset({"Relu"}),
                            gemm_activations=frozenset()),
    # TensorRT fuses at least what the CPU provider does (and more: pointwise chains)
    "ort-trt": FusionRules(
        "ort-trt",
        conv_activations=frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu"}),
        gemm_activations=frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "Clip", "HardSwish"}),
    ),
    "tvm": FusionRules("tvm", conv_activations=frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu",
                                                           "HardSigmoid", "HardSwish"})),
    # int8 (static QDQ) models on the CPU provider: QLinearConv/QGemm take Relu/Clip into their
    # output quantization; every other follower is a kernel of its own (QLinearAdd, QLinearMul,
    # QLinearSigmoid, or an fp32 op between DequantizeLinear and QuantizeLinear)
    "ort-cpu-int8": FusionRules("ort-cpu-int8", conv_residual_add=False, conv_activations=frozenset({"Relu", "Clip"}),
                                conv_activations_not_at_output=frozenset(), gemm_activations=frozenset({"Relu"}),
                                silu_pattern=False),
}


def fusion_rules(runtime: str | FusionRules | None) -> FusionRules:
    """Fusion rules of a runtime name (``ort-cpu`` when None or unknown)."""
    if isinstance(runtime, FusionRules):
        return runtime
    return _RULES.get(runtime or "ort-cpu", _RULES["ort-cpu"])


@dataclass
class Kernel:
    """One executed kernel: a head node and the nodes fused into it."""

    head: str  # IR node name carrying the kernel's latency
    members: tuple[str, ...]  # IR node names, head included, graph order
    family: str
    op_types: tuple[str, ...]  # op types of the members, same order
    flops: int
    cost_known: bool  # every member has a FLOP formula
    in_nbytes: int
    out_nbytes: int
    param_nbytes: int
    fused_pattern: str = ""  # "", "gelu", "silu", or "+".join of follower ops
    features: dict[str, float] = field(default_factory=dict)
    #: the kernel's configuration (:func:`kernel_signature`): family, member ops, input/output/
    #: parameter shapes and the head's shape-relevant attributes. Two kernels with the same
    #: signature do the same work; a cost model may carry a fitted cost per signature.
    signature: str = ""

    @property
    def followers(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != self.head)

    @property
    def nbytes(self) -> int:
        return self.in_nbytes + self.out_nbytes + self.param_nbytes

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "members": list(self.members),
            "family": self.family,
            "op_types": list(self.op_types),
            "flops": self.flops,
            "cost_known": self.cost_known,
            "in_nbytes": self.in_nbytes,
            "out_nbytes": self.out_nbytes,
            "param_nbytes": self.param_nbytes,
            "features": dict(self.features),
            "signature": self.signature,
        }


# ------------------------------------------------------------------------------------ helpers
def _attr(node: Node, name: str, default: Any = None) -> Any:
    for a in node.proto.attribute:
        if a.name == name:
            try:
                return helper.get_attribute_value(a)
            except Exception:  # noqa: BLE001
                return default
    return default


class _Ctx:
    """Per-graph lookup helpers shared by the grouping passes."""

    def __init__(self, graph: Graph, rules: FusionRules):
        self.graph = graph
        self.rules = rules
        self.foldable: set[str] = set()
        if rules.fold_constants:
            self._find_foldable()

    def _find_foldable(self) -> None:
        g = self.graph
        for n in g.compute_nodes:
            if n.op_type in _NOT_FOLDABLE or n.domain not in ("", "ai.onnx"):
                continue
            if n.op_type in ("Shape", "Size") and n.inputs:
                t = g.tensors[n.inputs[0]]
                if t.type is not None and t.type.is_static:
                    self.foldable.add(n.name)
                    continue
            if n.all_inputs and all(self.is_const(t) for t in n.all_inputs):
                self.foldable.add(n.name)

    def is_const(self, tname: str) -> bool:
        t = self.graph.tensors[tname]
        if t.kind in ("initializer", "constant"):
            return True
        return t.producer is not None and t.producer in self.foldable

    def const_value(self, tname: str) -> np.ndarray | None:
        """Value of an initializer or Constant output (None otherwise)."""
        g = self.graph
        if tname in g.initializers:
            try:
                return numpy_helper.to_array(g.initializers[tname])
            except Exception:  # noqa: BLE001
                return None
        t = g.tensors.get(tname)
        if t is not None and t.kind == "constant" and t.producer is not None:
            proto = g.node(t.producer).proto
            for a in proto.attribute:
                if a.name == "value":
                    try:
                        return numpy_helper.to_array(a.t)
                    except Exception:  # noqa: BLE001
                        return None
                if a.name == "value_float":
                    return np.array(a.f, np.float32)
        return None

    def is_scalar_const(self, tname: str) -> bool:
        if not self.is_const(tname):
            return False
        shape = self.graph.tensors[tname].shape
        return shape is not None and all(isinstance(d, int) for d in shape) and int(np.prod(shape or (1,))) == 1

    def sole_consumer(self, tname: str) -> Node | None:
        """The only (compute) consumer of a tensor that is not a graph output, else None."""
        t = self.graph.tensors[tname]
        if t.is_graph_output or len(t.consumers) != 1:
            return None
        n = self.graph.node(t.consumers[0])
        return None if n.is_replicable else n

    def rank(self, tname: str) -> int | None:
        s = self.graph.tensors[tname].shape
        return None if s is None else len(s)


def op_family(node: Node, graph: Graph, *, consts: _Ctx | None = None) -> str:
    """The cost-model family of a node (see :data:`FAMILIES`)."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx", "com.microsoft", "com.microsoft.nchwc"):
        return "other"
    if op in _HEAD_CONV:
        group = int(_attr(node, "group", 1) or 1)
        w_idx = 3 if op == "QLinearConv" else 1
        w = graph.tensors[node.proto.input[w_idx]].shape if len(node.proto.input) > w_idx else None
        if group > 1:
            # weight [C_out, C_in / group, kh, kw]: one input channel per group is depthwise
            per_group = w[1] if w is not None and len(w) > 1 else None
            return "conv_grouped" if per_group is not None and int(per_group) > 1 else "conv_dw"
        k = _attr(node, "kernel_shape") or (list(w[2:]) if w is not None and len(w) > 2 else None)
        if k is not None and all(int(d) == 1 for d in k):
            return "conv_pw"
        return "conv"
    if op == "ConvTranspose":
        return "conv_transpose"
    if op in _HEAD_MATMUL:
        if op in ("Gemm", "FusedGemm"):
            return "gemm"
        b_idx = 3 if op == "QLinearMatMul" else 1
        b = node.proto.input[b_idx] if len(node.proto.input) > b_idx else ""
        ctx = consts or _Ctx(graph, fusion_rules(None))
        if b and ctx.is_const(b):
            return "gemm"
        # B produced by DequantizeLinear of a constant: a quantized weight
        if b and graph.tensors[b].producer is not None:
            p = graph.node(graph.tensors[b].producer)
            if p.op_type == "DequantizeLinear" and p.inputs and ctx.is_const(p.inputs[0]):
                return "gemm"
        return "matmul"
    if op == "Einsum":
        return "matmul"
    if op in _POOL:
        return "pool"
    if op in _NORM:
        return "norm"
    if op == "LRN":
        return "lrn"
    if op in _SOFTMAX:
        return "softmax"
    if op in _REDUCE:
        return "reduce"
    if op in _RESIZE:
        return "resize"
    if op in _RESHAPE:
        return "reshape"
    if op in _RNN:
        return "rnn"
    if op in _CONTROL:
        return "control_flow"
    if op in DATA_MOVEMENT_OPS:
        return "data_movement"
    if op in ELEMENTWISE_FLOPS or op in _EXTRA_ELEMENTWISE:
        return "elementwise"
    return "other"


# ------------------------------------------------------------------------------------ grouping
def _conv_followers(ctx: _Ctx, head: Node, taken: set[str]) -> list[Node]:
    r = ctx.rules
    out: list[Node] = []
    t = head.outputs[0] if head.outputs else None
    stage = 0  # 0: BN/const binary allowed, 1: after residual add, 2: done
    while t is not None:
        c = ctx.sole_consumer(t)
        if c is None or c.name in taken or c.domain not in ("", "ai.onnx") or len(c.outputs) < 1:
            break
        op = c.op_type
        others = [i for i in c.inputs if i != t]
        if stage == 0 and r.conv_bn and op == "BatchNormalization" and c.inputs[0] == t and \
                all(ctx.is_const(i) for i in others) and len(c.outputs) == 1:
            pass
        elif stage == 0 and r.conv_const_binary and op in _CONST_BINARY and len(others) == 1 and \
                ctx.is_const(others[0]) and (op in ("Add", "Mul") or c.inputs[0] == t):
            pass
        elif stage == 0 and r.conv_residual_add and op == "Add" and len(others) == 1 and \
                not ctx.is_const(others[0]) and _same_shape(ctx, t, others[0]):
            stage = 1
        elif op in r.conv_activations and c.inputs[0] == t and all(ctx.is_const(i) for i in others) and not (
                op in r.conv_activations_not_at_output and ctx.graph.tensors[c.outputs[0]].is_graph_output):
            out.append(c)
            break
        else:
            break
        out.append(c)
        t = c.outputs[0]
    return out


def _same_shape(ctx: _Ctx, a: str, b: str) -> bool:
    sa, sb = ctx.graph.tensors[a].shape, ctx.graph.tensors[b].shape
    return sa is not None and sa == sb


def _matmul_followers(ctx: _Ctx, head: Node, taken: set[str]) -> list[Node]:
    r = ctx.rules
    out: list[Node] = []
    t = head.outputs[0] if head.outputs else None
    is_gemm = head.op_type in ("Gemm", "FusedGemm")
    has_bias = is_gemm and len(head.inputs) > 2
    linear = op_family(head, ctx.graph, consts=ctx) == "gemm"
    a_rank = ctx.rank(head.inputs[0]) if head.inputs else None
    while t is not None:
        c = ctx.sole_consumer(t)
        if c is None or c.name in taken or c.domain not in ("", "ai.onnx") or len(c.outputs) != 1:
            break
        op = c.op_type
        others = [i for i in c.inputs if i != t]
        if r.gemm_bias and linear and not has_bias and op == "Add" and len(others) == 1 and ctx.is_const(others[0]):
            shape = ctx.graph.tensors[others[0]].shape
            if shape is None or (len(shape) > 1 and any(d != 1 for d in shape[:-1])):
                break  # not a per-output-feature bias
            has_bias = True
        elif r.gemm_scale and not out and op in ("Mul", "Div") and len(others) == 1 and \
                ctx.is_scalar_const(others[0]) and (op == "Mul" or c.inputs[0] == t):
            pass
        elif op in r.gemm_activations and a_rank == 2 and linear and c.inputs[0] == t and \
                all(ctx.is_const(i) for i in others):
            out.append(c)
            break
        else:
            break
        out.append(c)
        t = c.outputs[0]
    return out


def _transpose_predecessors(ctx: _Ctx, head: Node, taken: set[str]) -> list[Node]:
    if not ctx.rules.transpose_into_matmul or head.op_type != "MatMul":
        return []
    out = []
    for tname in head.inputs[:2]:
        t = ctx.graph.tensors[tname]
        if t.producer is None:
            continue
        p = ctx.graph.node(t.producer)
        if p.op_type != "Transpose" or p.name in taken or p.name in ctx.foldable:
            continue
        if ctx.sole_consumer(tname) is None:
            continue
        perm = _attr(p, "perm")
        rank = ctx.rank(p.inputs[0])
        if perm is None or rank is None or rank < 2:
            continue
        expect = list(range(rank - 2)) + [rank - 1, rank - 2]
        if list(perm) == expect:
            out.append(p)
    return out


def _qdq_neighbours(ctx: _Ctx, head: Node, taken: set[str]) -> tuple[list[Node], list[Node]]:
    if not ctx.rules.qdq:
        return [], []
    before = []
    for tname in head.inputs:
        t = ctx.graph.tensors[tname]
        if t.producer is None:
            continue
        p = ctx.graph.node(t.producer)
        if p.op_type == "DequantizeLinear" and p.name not in taken and ctx.sole_consumer(tname) is not None:
            before.append(p)
    return before, []


def _gelu_at(ctx: _Ctx, erf: Node, taken: set[str]) -> list[Node] | None:
    """Match ``x/c -> Erf -> +1 -> *x -> *0.5`` (any order of the two Muls) around an Erf node."""
    g = ctx.graph
    src = g.tensors[erf.inputs[0]].producer if erf.inputs else None
    if src is None:
        return None
    div = g.node(src)
    if div.op_type not in ("Div", "Mul") or len(div.inputs) != 2 or not ctx.is_scalar_const(div.inputs[1]):
        return None
    x = div.inputs[0]
    add = ctx.sole_consumer(erf.outputs[0])
    if add is None or add.op_type != "Add" or not any(ctx.is_scalar_const(i) for i in add.inputs if i != erf.outputs[0]):
        return None
    m1 = ctx.sole_consumer(add.outputs[0])
    if m1 is None or m1.op_type != "Mul":
        return None
    other = [i for i in m1.inputs if i != add.outputs[0]]
    if len(other) != 1:
        return None
    nodes = [div, erf, add, m1]
    if other[0] == x:  # (1+erf) * x, then * 0.5
        m2 = ctx.sole_consumer(m1.outputs[0])
        if m2 is None or m2.op_type != "Mul" or not any(ctx.is_scalar_const(i) for i in m2.inputs if i != m1.outputs[0]):
            return None
        nodes.append(m2)
    else:  # (x * 0.5) * (1+erf)
        p = g.tensors[other[0]].producer
        if p is None:
            return None
        half = g.node(p)
        if half.op_type != "Mul" or x not in half.inputs or not any(ctx.is_scalar_const(i) for i in half.inputs if i != x):
            return None
        if ctx.sole_consumer(half.outputs[0]) is None:
            return None
        nodes.insert(0, half)
    if any(n.name in taken for n in nodes):
        return None
    for n in nodes[:-1]:  # intermediates must stay inside the pattern
        if n.outputs[0] != x and ctx.sole_consumer(n.outputs[0]) is None:
            return None
    return nodes


def _silu_at(ctx: _Ctx, sig: Node, taken: set[str]) -> list[Node] | None:
    """Match ``x * Sigmoid(x)``."""
    if not sig.inputs:
        return None
    x = sig.inputs[0]
    mul = ctx.sole_consumer(sig.outputs[0])
    if mul is None or mul.op_type != "Mul" or mul.name in taken or sorted(mul.inputs) != sorted([x, sig.outputs[0]]):
        return None
    return [sig, mul]


def group_kernels(graph: Graph, rules: FusionRules | str | None = None) -> list[Kernel]:
    """Partition ``graph.compute_nodes`` into kernels (graph order of their heads)."""
    r = fusion_rules(rules)
    ctx = _Ctx(graph, r)
    taken: set[str] = set()
    groups: list[tuple[Node, list[Node], str]] = []  # head, members, pattern

    for n in graph.compute_nodes:
        if n.name in ctx.foldable:
            groups.append((n, [n], "constant"))
            taken.add(n.name)

    # elementwise patterns first: they claim nodes a head chain must not take
    for n in graph.compute_nodes:
        if n.name in taken:
            continue
        nodes = None
        if r.gelu_pattern and n.op_type == "Erf":
            nodes, pat = _gelu_at(ctx, n, taken), "gelu"
        elif r.silu_pattern and n.op_type == "Sigmoid":
            nodes, pat = _silu_at(ctx, n, taken), "silu"
        if nodes:
            head = nodes[-1]
            groups.append((head, nodes, pat))
            taken.update(m.name for m in nodes)

    for n in graph.compute_nodes:
        if n.name in taken:
            continue
        if n.op_type in _HEAD_CONV and n.domain in ("", "ai.onnx", "com.microsoft"):
            before, _ = _qdq_neighbours(ctx, n, taken)
            follow = _conv_followers(ctx, n, taken | {n.name})
        elif n.op_type in _HEAD_MATMUL and n.domain in ("", "ai.onnx", "com.microsoft"):
            before, _ = _qdq_neighbours(ctx, n, taken)
            before += _transpose_predecessors(ctx, n, taken)
            follow = _matmul_followers(ctx, n, taken | {n.name})
        else:
            continue
        if follow and r.qdq:
            q = ctx.sole_consumer(follow[-1].outputs[0])
            if q is not None and q.op_type == "QuantizeLinear" and q.name not in taken:
                follow.append(q)
        elif r.qdq and n.outputs:
            q = ctx.sole_consumer(n.outputs[0])
            if q is not None and q.op_type == "QuantizeLinear" and q.name not in taken:
                follow = [q]
        members = before + [n] + follow
        groups.append((n, members, "+".join(m.op_type for m in follow)))
        taken.update(m.name for m in members)

    for n in graph.compute_nodes:
        if n.name not in taken:
            groups.append((n, [n], ""))
            taken.add(n.name)

    kernels = [_make_kernel(ctx, head, members, pat) for head, members, pat in groups]
    kernels.sort(key=lambda k: graph.node(k.head).index)
    return kernels


def _make_kernel(ctx: _Ctx, head: Node, members: list[Node], pattern: str) -> Kernel:
    g = ctx.graph
    members = sorted(members, key=lambda m: m.index)
    names = {m.name for m in members}
    produced = {o for m in members for o in m.outputs}
    ins: dict[str, int] = {}
    params: dict[str, int] = {}
    for m in members:
        for tname in m.all_inputs:
            if tname in produced:
                continue
            nb = g.tensors[tname].nbytes or 0
            if ctx.is_const(tname):
                params[tname] = nb
            else:
                ins[tname] = nb
    outs: dict[str, int] = {}
    for m in members:
        for o in m.outputs:
            t = g.tensors[o]
            if t.is_graph_output or any(c not in names for c in t.consumers):
                outs[o] = t.nbytes or 0
    if not outs:
        outs = {o: g.tensors[o].nbytes or 0 for o in members[-1].outputs}
    if pattern == "constant":
        family = "constant"
    elif pattern in ("gelu", "silu"):
        family = "elementwise"
    else:
        family = op_family(head, g, consts=ctx)
    if family == "elementwise" and any(m.op_type in TRANSCENDENTAL_OPS for m in members):
        family = "transcendental"
    flops = sum(m.flops for m in members)
    k = Kernel(
        head=head.name,
        members=tuple(m.name for m in members),
        family=family,
        op_types=tuple(m.op_type for m in members),
        flops=flops,
        cost_known=all(m.cost.known for m in members),
        in_nbytes=sum(ins.values()),
        out_nbytes=sum(outs.values()),
        param_nbytes=sum(params.values()),
        fused_pattern=pattern,
    )
    # the parent family names the configuration: signatures stay those older artifacts were fitted with
    k.signature = kernel_signature(FAMILY_PARENT.get(family, family), k.op_types, [_shape_str(g, t) for t in ins],
                                   [_shape_str(g, t) for t in outs], [_shape_str(g, t) for t in params],
                                   _attr_str(head))
    k.features = {
        "mflops": flops / 1e6,
        "in_mb": k.in_nbytes / 1e6,
        "out_mb": k.out_nbytes / 1e6,
        "param_mb": k.param_nbytes / 1e6,
        "one": 1.0,
    }
    return k


#: head attributes that change the work a kernel does (others, e.g. names, do not)
_SIG_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", "perm", "axis", "axes",
              "mode", "transA", "transB", "keepdims", "ceil_mode", "count_include_pad", "output_padding")


def _shape_str(g: Graph, tname: str) -> str:
    t = g.tensors[tname]
    shape = t.shape
    dims = "?" if shape is None else "x".join(str(d) for d in shape) or "s"
    return dims


def _attr_str(node: Node) -> str:
    parts = []
    for a in sorted(node.proto.attribute, key=lambda a: a.name):
        if a.name not in _SIG_ATTRS:
            continue
        v = _attr(node, a.name)
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        parts.append(f"{a.name}={v}")
    return ";".join(parts)


def kernel_signature(family: str, op_types: Iterable[str], in_shapes: Iterable[str], out_shapes: Iterable[str],
                     param_shapes: Iterable[str], attrs: str = "") -> str:
    """``family|Op+Op|in shapes->out shapes|param shapes|head attributes`` (shapes ``1x16x32x32``).

    Input shapes keep the order in which the kernel reads them; parameter shapes are sorted (their
    order does not change the work).
    """
    return (f"{family}|{'+'.join(op_types)}|{','.join(in_shapes)}->{','.join(out_shapes)}|"
            f"{','.join(sorted(param_shapes))}|{attrs}")


def kernel_of_node(kernels: Iterable[Kernel]) -> dict[str, Kernel]:
    """IR node name -> the kernel that contains it."""
    return {m: k for k in kernels for m in k.members}


def uses_int8_fallbacks(runtime: str | None, precision: str | None) -> bool:
    """Do predictions for ``runtime``/``precision`` use the ``ort-cpu-int8`` fusion rules and
    :func:`mark_int8_fallbacks`? (int8 on onnxruntime's CPU provider, the runtime whose quantizer
    and fusions they describe.)"""
    return precision == "int8" and runtime == "ort-cpu"


def group_kernels_for(graph: Graph, runtime: str | None, precision: str | None) -> list[Kernel]:
    """The kernels of ``graph`` as ``runtime`` runs it at ``precision``: :func:`group_kernels` with
    the runtime's fusion rules; for int8 on ort-cpu with the ``ort-cpu-int8`` rules, the fp32 islands
    marked (:func:`mark_int8_fallbacks`) and the Transposes onnxruntime merges with its layout ones
    marked (:func:`mark_merged_transposes`); on ort-cpu (fp32, int8) followed by the layout
    conversions onnxruntime inserts (:func:`layout_kernels`). What predictions and fits both use."""
    if not uses_int8_fallbacks(runtime, precision):
        kernels = group_kernels(graph, runtime)
        if uses_layout_kernels(runtime, precision):
            kernels += layout_kernels(graph, kernels, precision or "fp32")
        return kernels
    from .layout import nhwc_tensors

    kernels = mark_int8_fallbacks(graph, group_kernels(graph, _RULES["ort-cpu-int8"]))
    layout, transposes = nhwc_tensors(graph, skip=_folded_members(kernels))  # simulated once for both
    kernels = mark_merged_transposes(graph, kernels, layout)
    return kernels + layout_kernels(graph, kernels, "int8", found=transposes)


def _folded_members(kernels: Iterable[Kernel]) -> list[str]:
    """Nodes of constant-folded kernels (they do not run)."""
    return [m for k in kernels if k.family == "constant" for m in k.members]


def uses_layout_kernels(runtime: str | None, precision: str | None) -> bool:
    """fp32 and int8 on onnxruntime's CPU provider: its layout conversions (fp32: NCHWc reorders,
    int8: NHWC Transposes) are kernels of their own."""
    return runtime == "ort-cpu" and (precision or "fp32") in ("fp32", "int8")


def layout_kernels(graph: Graph, kernels: Sequence[Kernel], precision: str = "fp32",
                   found: Sequence[Any] | None = None) -> list[Kernel]:
    """One ``layout_reorder`` kernel per layout conversion onnxruntime inserts into ``graph`` at
    ``precision`` (fp32: :func:`onnxsplit.cost.layout.nchwc_reorders`; int8, the graph quantized:
    :func:`onnxsplit.cost.layout.nhwc_transposes`; ``kernels``: the graph's other kernels).

    Contract: such a kernel has no members (no graph node runs it); its ``head`` is the head of the
    kernel containing the node that pays for the reorder, which carries its time in a prediction
    (added to that kernel's own). Features: the reordered tensor's bytes in and out, a constant.
    Constant-folded kernels do not run and reorder nothing. ``found``: the simulation's
    :class:`~onnxsplit.cost.layout.Reorder` list when the caller has it already.
    """
    from .layout import nchwc_reorders, nhwc_transposes

    head_of = {m: k.head for k in kernels for m in k.members}
    if found is None:
        simulate = nhwc_transposes if precision == "int8" else nchwc_reorders
        found = simulate(graph, skip=_folded_members(kernels))
    names = ("TransposeToNhwc", "TransposeToNchw") if precision == "int8" else ("ReorderInput", "ReorderOutput")
    out: list[Kernel] = []
    for r in found:
        head = head_of.get(r.node)
        if head is None:
            continue
        k = Kernel(head=head, members=(), family="layout_reorder",
                   op_types=(names[0] if r.kind == "input" else names[1],), flops=0, cost_known=True,
                   in_nbytes=r.nbytes, out_nbytes=r.nbytes, param_nbytes=0)
        k.features = {"mflops": 0.0, "in_mb": r.nbytes / 1e6, "out_mb": r.nbytes / 1e6, "param_mb": 0.0, "one": 1.0}
        out.append(k)
    return out


def mark_merged_transposes(graph: Graph, kernels: Iterable[Kernel],
                           layout: dict[str, bool] | None = None) -> list[Kernel]:
    """``kernels`` of ``graph`` as an int8 model runs them on onnxruntime CPU (x86): a kernel that is a
    lone Transpose of the graph whose input onnxruntime keeps in NHWC
    (:func:`onnxsplit.cost.layout.nhwc_tensors`) becomes ``transpose_merged``.

    onnxruntime merges the layout Transpose before it into it: a channel shuffle's 5-D (0, 2, 1, 3, 4)
    becomes (0, 4, 3, 1, 2), which moves the innermost axis and runs element by element on uint8
    (ShuffleNet int8, onnxruntime's profiler: 1.16 ms for 351 KB at 56x56, against 25 us for the 4-D
    layout Transpose of a tensor of that size). A model without a ``transpose_merged`` law prices it
    with its ``data_movement`` law (:data:`FAMILY_PARENT`), as before. ``layout``: the
    simulation's tensor layouts when the caller has them already."""
    import dataclasses

    from .layout import nhwc_tensors

    kernels = list(kernels)
    if layout is None:
        layout = nhwc_tensors(graph, skip=_folded_members(kernels))[0]
    out: list[Kernel] = []
    for k in kernels:
        if k.family == "data_movement" and k.op_types == ("Transpose",):
            node = graph.node(k.head)
            if node.inputs and layout.get(node.inputs[0]):
                k = dataclasses.replace(k, family="transpose_merged")
        out.append(k)
    return out


def mark_int8_fallbacks(graph: Graph, kernels: Iterable[Kernel]) -> list[Kernel]:
    """``kernels`` of ``graph`` as an int8 (static QDQ) model runs them on onnxruntime CPU.

    Contract: an ``elementwise`` or ``transcendental`` kernel whose head op the quantizer does not
    quantize (not in :data:`QUANTIZED_OPS`) and that touches a quantized op (a producer of one of
    its inputs or a consumer of one of its outputs, outside the kernel) becomes ``int8_fallback``:
    onnxruntime runs it in fp32 between a DequantizeLinear and a QuantizeLinear, which costs more
    than the op (PP-LCNet's 30 HardSigmoid islands: 2.1 ms of DequantizeLinear, QuantizeLinear and
    HardSigmoid in a 4.6 ms int8 run, onnxruntime's profiler). Other kernels are returned unchanged;
    a model without an ``int8_fallback`` law prices these with its ``elementwise`` law
    (:data:`FAMILY_PARENT`), as before. A lone op (nothing quantized next to it) stays what it was:
    the quantizer leaves such a graph fp32.
    """
    import dataclasses

    out: list[Kernel] = []
    for k in kernels:
        if k.family in ("elementwise", "transcendental"):
            head_op = k.op_types[k.members.index(k.head)]
            if head_op not in QUANTIZED_OPS and _touches_quantized(graph, k):
                k = dataclasses.replace(k, family="int8_fallback")
        out.append(k)
    return out


def _touches_quantized(graph: Graph, k: Kernel) -> bool:
    members = set(k.members)
    for name in k.members:
        node = graph.node(name)
        for t in node.inputs:
            p = graph.tensors[t].producer if t in graph.tensors else None
            if p is not None and p not in members and graph.node(p).op_type in QUANTIZED_OPS:
                return True
        for t in node.outputs:
            for c in graph.tensors[t].consumers if t in graph.tensors else ():
                if c not in members and graph.node(c).op_type in QUANTIZED_OPS:
                    return True
    return False
