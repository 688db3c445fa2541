"""Compute cost (MACs and FLOPs) of a single ONNX operator, from static shapes and attributes.

This module is a pure function of ``(op_type, domain, attrs, input_shapes, output_shapes)`` and
depends on no graph IR, so it can be unit-tested and reused by any caller.

Conventions
-----------
* ``macs`` counts multiply-accumulates of the "dense" part of an op (Conv, ConvTranspose, Gemm,
  MatMul, Einsum, RNN/GRU/LSTM, attention). Every other op has ``macs == 0``.
* ``flops`` counts arithmetic operations: ``2 * macs`` plus the non-MAC work (bias adds,
  activations, normalisation, ...). Integer ops (ConvInteger, MatMulInteger, QLinear*) are
  counted the same way: here "flops" means "arithmetic operations" whatever the data type.
* Convolutions and pools count every kernel tap, padded taps included (that is what the
  hardware computes).
* Elementwise ops cost ``output elements * ELEMENTWISE_FLOPS[op]``; each primitive (add, mul,
  compare, exp, log, sqrt, erf, tanh, ...) counts as 1, and composite functions count their
  primitives, e.g. ``Sigmoid = 1/(1+exp(-x))`` is 4 (neg, exp, add, div). The table below is the
  documentation of every constant.
* Data-movement ops (Reshape, Transpose, Gather, Cast, ...) cost 0 flops and are ``known``.
* ``known`` is False when the op has no formula here (unknown op, control flow, an op whose cost
  depends on tensor *values*) or when a shape the formula needs is missing. ``known=False`` does
  NOT mean "free": callers must treat the cost as unknown. Whatever could be computed is still
  returned (often 0).

Shapes are tuples of non-negative ints or ``None``; a tuple holding anything else (a symbolic
dim, a negative number) is treated as unknown. Attribute values are the already decoded Python
values of :func:`onnx.helper.get_attribute_value` (strings may be ``bytes`` or ``str``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

Shape = tuple[int, ...]
ShapeList = Sequence[Optional[Shape]]

__all__ = [
    "OpCost",
    "op_cost",
    "known_ops",
    "ELEMENTWISE_FLOPS",
    "DATA_MOVEMENT_OPS",
    "UNKNOWN_OPS",
]


@dataclass(frozen=True)
class OpCost:
    macs: int  # multiply-accumulates (0 for ops without them)
    flops: int  # arithmetic ops: 2*macs for conv/matmul + elementwise work
    known: bool  # False when the op has no formula: callers must NOT treat it as free


_UNKNOWN = OpCost(0, 0, False)
_FREE = OpCost(0, 0, True)

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

#: flops per OUTPUT element of elementwise ops (unary, binary with broadcasting, activations).
ELEMENTWISE_FLOPS: dict[str, int] = {
    # binary arithmetic / comparison / logic: one op per output element
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Pow": 1, "Mod": 1, "BitShift": 1,
    "Equal": 1, "Greater": 1, "GreaterOrEqual": 1, "Less": 1, "LessOrEqual": 1,
    "And": 1, "Or": 1, "Xor": 1, "Not": 1,
    "BitwiseAnd": 1, "BitwiseOr": 1, "BitwiseXor": 1, "BitwiseNot": 1,
    "Where": 1,  # select
    # unary primitives
    "Neg": 1, "Abs": 1, "Reciprocal": 1, "Sign": 1, "Floor": 1, "Ceil": 1, "Round": 1,
    "Exp": 1, "Log": 1, "Sqrt": 1, "Erf": 1, "Tanh": 1,
    "Sin": 1, "Cos": 1, "Tan": 1, "Asin": 1, "Acos": 1, "Atan": 1,
    "Sinh": 1, "Cosh": 1, "Asinh": 1, "Acosh": 1, "Atanh": 1,
    "IsNaN": 1, "IsInf": 1,
    # activations (composite: count their primitives)
    "Relu": 1,  # max(x, 0)
    "LeakyRelu": 2,  # compare + mul
    "PRelu": 2,  # compare + mul
    "ThresholdedRelu": 2,  # compare + select
    "Clip": 2,  # max + min
    "Shrink": 3,  # compare + sub/add + select
    "Sigmoid": 4,  # neg, exp, add, div
    "HardSigmoid": 4,  # mul, add, max, min
    "HardSwish": 5,  # hard-sigmoid (4) + mul
    "Elu": 4,  # compare, exp, sub, mul
    "Celu": 5,  # compare, div, exp, sub, mul
    "Selu": 5,  # compare, exp, mul, sub, mul(gamma)
    "Softplus": 3,  # exp, add, log
    "Softsign": 3,  # abs, add, div
    "Mish": 5,  # softplus (3), tanh, mul
    "Gelu": 5,  # exact: div(sqrt2), erf, add, mul, mul   (approximate="tanh" uses 8, see below)
    # quantisation
    "QuantizeLinear": 3,  # div, round, add zero point (saturation is free)
    "DequantizeLinear": 2,  # sub zero point, mul
    "DynamicQuantizeLinear": 5,  # min/max reduction (2) + quantize (3)
}

_GELU_TANH_FLOPS = 8  # 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3)))

#: flops per element for "Softmax"-like ops: max-reduce, sub, exp, sum-reduce, div (or log/sub).
_SOFTMAX_FLOPS = 5
_SOFTMAX_LIKE = {"Softmax": _SOFTMAX_FLOPS, "LogSoftmax": _SOFTMAX_FLOPS, "Hardmax": 1}

#: variadic elementwise ops: (n_inputs - 1) ops per output element (+1 divide for Mean).
_VARIADIC = frozenset({"Max", "Min", "Sum", "Mean"})

#: ops that only move / reinterpret data: 0 flops, known.
DATA_MOVEMENT_OPS: frozenset[str] = frozenset({
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
    "Scatter", "ScatterElements", "ScatterND", "Squeeze", "Unsqueeze", "Flatten", "Identity",
    "Pad", "Expand", "Tile", "Shape", "Size", "Constant", "ConstantOfShape", "Cast", "CastLike",
    "DepthToSpace", "SpaceToDepth", "ReverseSequence", "Compress", "OneHot", "NonZero", "Range",
    "EyeLike", "Dropout", "Trilu", "CenterCropPad", "MaxUnpool", "Optional", "OptionalGetElement",
    "OptionalHasElement", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SplitToSequence", "ConcatFromSequence",
})

#: ops with no formula on purpose (control flow is atomic in the IR; value-dependent cost).
UNKNOWN_OPS: frozenset[str] = frozenset({
    "If", "Loop", "Scan", "SequenceMap", "NonMaxSuppression", "Unique",
})

#: reduce ops: (flops per INPUT element, flops per OUTPUT element)
_REDUCE: dict[str, tuple[int, int]] = {
    "ReduceSum": (1, 0), "ReduceMax": (1, 0), "ReduceMin": (1, 0), "ReduceProd": (1, 0),
    "ReduceMean": (1, 1),  # sum + one divide per output
    "ReduceSumSquare": (2, 0),  # square + add
    "ReduceL1": (2, 0),  # abs + add
    "ReduceL2": (2, 1),  # square + add, sqrt per output
    "ReduceLogSum": (1, 1),  # add, log per output
    "ReduceLogSumExp": (2, 1),  # exp + add, log per output
    "ArgMax": (1, 0), "ArgMin": (1, 0),  # one compare per input
    "CumSum": (1, 0),
}

#: normalisation with statistics: sum, sub-mean, square, sum, mul-by-rsqrt = 5 per element,
#: plus 1 per element for the scale and 1 for the bias when present.
_NORM_STATS_FLOPS = 5


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _valid(shape: Any) -> Optional[Shape]:
    """``shape`` as a tuple of non-negative ints, or None when it is missing / symbolic."""
    if shape is None:
        return None
    try:
        dims = tuple(shape)
    except TypeError:
        return None
    out = []
    for d in dims:
        if isinstance(d, bool):
            return None
        try:
            d = operator.index(d)  # ints and numpy integers; not floats, strings, None
        except TypeError:
            return None
        if d < 0:
            return None
        out.append(d)
    return tuple(out)


def _shape(shapes: ShapeList, i: int) -> Optional[Shape]:
    if shapes is None or i < 0 or i >= len(shapes):
        return None
    return _valid(shapes[i])


def _present(shapes: ShapeList, i: int) -> bool:
    """True when optional input ``i`` is listed (its shape may still be unknown)."""
    return shapes is not None and 0 <= i < len(shapes)


def _numel(shape: Optional[Shape]) -> int:
    return math.prod(shape) if shape is not None else 0


def _str(attrs: dict[str, Any], name: str, default: str) -> str:
    v = attrs.get(name, default) if attrs else default
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", "replace")
    return str(v)


def _int(attrs: dict[str, Any], name: str, default: int) -> int:
    v = attrs.get(name, default) if attrs else default
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _float(attrs: dict[str, Any], name: str, default: float) -> float:
    v = attrs.get(name, default) if attrs else default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _ints(attrs: dict[str, Any], name: str) -> Optional[list[int]]:
    v = attrs.get(name) if attrs else None
    if v is None:
        return None
    try:
        return [int(x) for x in v]
    except (TypeError, ValueError):
        return None


def _broadcast(*shapes: Optional[Shape]) -> Optional[Shape]:
    """Numpy broadcast of the given shapes, or None if one is unknown or they don't broadcast."""
    if not shapes or any(s is None for s in shapes):
        return None
    rank = max(len(s) for s in shapes)  # type: ignore[arg-type]
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}  # type: ignore
        dims.discard(1)
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _out_elems(inputs: ShapeList, outputs: ShapeList) -> Optional[int]:
    """Element count of output 0, from its shape or by broadcasting the known inputs."""
    out = _shape(outputs, 0)
    if out is not None:
        return _numel(out)
    ins = [_valid(s) for s in (inputs or [])]
    if not ins or any(s is None for s in ins):
        return None
    b = _broadcast(*ins)
    return _numel(b) if b is not None else None


def _elementwise(per_elem: int, inputs: ShapeList, outputs: ShapeList) -> OpCost:
    n = _out_elems(inputs, outputs)
    if n is None:
        return _UNKNOWN
    return OpCost(0, per_elem * n, True)


def _window_out_dims(
    in_dims: Sequence[int],
    kernel: Sequence[int],
    attrs: dict[str, Any],
    ceil_mode: bool = False,
) -> Optional[list[int]]:
    """Spatial output dims of Conv / pooling (ONNX semantics incl. auto_pad and ceil_mode)."""
    r = len(in_dims)
    if len(kernel) != r:
        return None
    strides = _ints(attrs, "strides") or [1] * r
    dil = _ints(attrs, "dilations") or [1] * r
    pads = _ints(attrs, "pads") or [0] * (2 * r)
    if len(strides) != r or len(dil) != r or len(pads) != 2 * r or min(strides) < 1:
        return None
    auto_pad = _str(attrs, "auto_pad", "NOTSET")
    out = []
    for i in range(r):
        eff_k = dil[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-in_dims[i] // strides[i])
        elif auto_pad == "VALID":
            o = (in_dims[i] - eff_k) // strides[i] + 1
        else:
            span = in_dims[i] + pads[i] + pads[i + r] - eff_k
            if ceil_mode:
                o = -(-span // strides[i]) + 1
                # the last window must start inside the input or the left padding
                if (o - 1) * strides[i] >= in_dims[i] + pads[i]:
                    o -= 1
            else:
                o = span // strides[i] + 1
        out.append(max(o, 0))
    return out


# --------------------------------------------------------------------------------------------
# Per-op formulas. Signature: (op, attrs, inputs, outputs) -> OpCost
# --------------------------------------------------------------------------------------------

_Formula = Callable[[str, dict[str, Any], ShapeList, ShapeList], OpCost]


def _conv_like(
    attrs: dict[str, Any],
    x: Optional[Shape],
    w: Optional[Shape],
    out: Optional[Shape],
    has_bias: bool,
) -> OpCost:
    """Conv with X (N, C, *D), W (M, C/group, *k), Y (N, M, *D_out)."""
    group = max(_int(attrs, "group", 1), 1)
    if out is None and x is not None and len(x) >= 3:
        kernel = _ints(attrs, "kernel_shape") or (list(w[2:]) if w is not None else None)
        m = w[0] if w is not None else None
        if kernel is not None and m is not None:
            dims = _window_out_dims(x[2:], kernel, attrs)
            if dims is not None:
                out = (x[0], m, *dims)
    if out is None:
        return _UNKNOWN
    if w is not None and len(w) >= 2:
        per_out = _numel(w[1:])
    elif x is not None and len(x) >= 2:
        kernel = _ints(attrs, "kernel_shape")
        if kernel is None:
            return _UNKNOWN
        per_out = (x[1] // group) * math.prod(kernel)
    else:
        return _UNKNOWN
    n_out = _numel(out)
    macs = n_out * per_out
    return OpCost(macs, 2 * macs + (n_out if has_bias else 0), True)


def _conv(op, attrs, ins, outs):
    return _conv_like(attrs, _shape(ins, 0), _shape(ins, 1), _shape(outs, 0), _present(ins, 2))


def _conv_integer(op, attrs, ins, outs):
    # ConvInteger(x, w, x_zero_point, w_zero_point): zero points are subtracted on the fly,
    # count one sub per input element of the window: folded into the MAC here.
    return _conv_like(attrs, _shape(ins, 0), _shape(ins, 1), _shape(outs, 0), False)


def _qlinear_conv(op, attrs, ins, outs):
    # QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B)
    c = _conv_like(attrs, _shape(ins, 0), _shape(ins, 3), _shape(outs, 0), _present(ins, 8))
    out = _shape(outs, 0)
    if not c.known or out is None:
        return c
    # requantise each output: mul by the scale ratio, round, add the zero point
    return OpCost(c.macs, c.flops + 3 * _numel(out), True)


def _conv_transpose(op, attrs, ins, outs):
    """ConvTranspose: X (N, C, *D), W (C, M/group, *k): every input element meets every tap."""
    x, w, out = _shape(ins, 0), _shape(ins, 1), _shape(outs, 0)
    if x is None or len(x) < 3:
        return _UNKNOWN
    group = max(_int(attrs, "group", 1), 1)
    if w is not None and len(w) >= 2:
        per_in = _numel(w[1:])
        m = w[1] * group
        kernel = list(w[2:])
    else:
        kernel = _ints(attrs, "kernel_shape")
        if kernel is None or out is None:
            return _UNKNOWN
        m = out[1]
        per_in = (m // group) * math.prod(kernel)
    macs = _numel(x) * per_in
    has_bias = _present(ins, 2)
    if out is None and has_bias:
        out = _conv_transpose_out(attrs, x, m, kernel)
        if out is None:
            return OpCost(macs, 2 * macs, False)
    return OpCost(macs, 2 * macs + (_numel(out) if has_bias else 0), True)


def _conv_transpose_out(attrs, x: Shape, m: int, kernel: Sequence[int]) -> Optional[Shape]:
    r = len(x) - 2
    explicit = _ints(attrs, "output_shape")
    if explicit:
        return (x[0], m, *explicit[-r:])
    strides = _ints(attrs, "strides") or [1] * r
    dil = _ints(attrs, "dilations") or [1] * r
    opad = _ints(attrs, "output_padding") or [0] * r
    pads = _ints(attrs, "pads") or [0] * (2 * r)
    auto_pad = _str(attrs, "auto_pad", "NOTSET")
    if len(kernel) != r:
        return None
    dims = []
    for i in range(r):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            dims.append(x[2 + i] * strides[i])
        else:
            dims.append(strides[i] * (x[2 + i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1
                        - pads[i] - pads[i + r])
    return (x[0], m, *dims)


def _gemm_core(attrs, a, b, has_c) -> OpCost:
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return _UNKNOWN
    m, k = (a[1], a[0]) if _int(attrs, "transA", 0) else (a[0], a[1])
    n = b[0] if _int(attrs, "transB", 0) else b[1]
    macs = m * n * k
    mn = m * n
    extra = 0
    if _float(attrs, "alpha", 1.0) != 1.0:
        extra += mn
    if has_c:
        extra += mn  # + C
        if _float(attrs, "beta", 1.0) != 1.0:
            extra += mn
    return OpCost(macs, 2 * macs + extra, True)


def _gemm(op, attrs, ins, outs):
    """Gemm: Y = alpha * A' B' + beta * C; alpha/beta scaling counted only when != 1."""
    return _gemm_core(attrs, _shape(ins, 0), _shape(ins, 1), _present(ins, 2))


def _matmul_macs(a: Optional[Shape], b: Optional[Shape]) -> Optional[tuple[int, int]]:
    """(macs, output elements) of numpy-style matmul, or None."""
    if a is None or b is None or len(a) == 0 or len(b) == 0:
        return None
    a2 = (1, a[0]) if len(a) == 1 else a
    b2 = (b[0], 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        return None
    batch = _broadcast(a2[:-2], b2[:-2])
    if batch is None:
        return None
    k = a2[-1]
    n_out = _numel(batch) * a2[-2] * b2[-1]
    return n_out * k, n_out


def _matmul(op, attrs, ins, outs):
    r = _matmul_macs(_shape(ins, 0), _shape(ins, 1))
    if r is None:
        return _UNKNOWN
    return OpCost(r[0], 2 * r[0], True)


def _matmul_integer(op, attrs, ins, outs):
    return _matmul(op, attrs, ins, outs)


def _qlinear_matmul(op, attrs, ins, outs):
    # QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)
    r = _matmul_macs(_shape(ins, 0), _shape(ins, 3))
    if r is None:
        return _UNKNOWN
    return OpCost(r[0], 2 * r[0] + 3 * r[1], True)  # + requantise each output


def _einsum(op, attrs, ins, outs):
    """Einsum by left-to-right pairwise contraction (what runtimes do for 2+ operands)."""
    eq = _str(attrs, "equation", "").replace(" ", "")
    shapes = [_valid(s) for s in (ins or [])]
    if not eq or not shapes or any(s is None for s in shapes):
        return _UNKNOWN
    try:
        lhs, _, rhs = eq.partition("->")
        terms = lhs.split(",")
        if len(terms) != len(shapes):
            return _UNKNOWN
        sizes: dict[str, int] = {}
        letter_sets: list[list[str]] = []
        ell_shapes = []
        for term, shape in zip(terms, shapes):
            n_letters = len(term.replace("...", ""))
            n_ell = len(shape) - n_letters  # type: ignore[arg-type]
            if "..." not in term and n_ell != 0:
                return _UNKNOWN
            ell_shapes.append(shape[:0] if "..." not in term else None)
            letters: list[str] = []
            dim = 0
            i = 0
            while i < len(term):
                if term.startswith("...", i):
                    ell = shape[dim:dim + n_ell]  # type: ignore[index]
                    ell_shapes[-1] = ell
                    dim += n_ell
                    i += 3
                    continue
                c = term[i]
                d = shape[dim]  # type: ignore[index]
                if c in sizes and sizes[c] != d and d != 1 and sizes[c] != 1:
                    return _UNKNOWN
                sizes[c] = max(sizes.get(c, 1), d)
                if c not in letters:
                    letters.append(c)
                dim += 1
                i += 1
            letter_sets.append(letters)
        # ellipsis dims become pseudo letters "#0", "#1", ... (right aligned, broadcast)
        ells = [e for e in ell_shapes if e is not None]
        ell = _broadcast(*ells) if ells else ()
        if ell is None:
            return _UNKNOWN
        for t, (term, e) in enumerate(zip(terms, ell_shapes)):
            if e is not None and "..." in term:
                off = len(ell) - len(e)
                letter_sets[t] += [f"#{off + j}" for j in range(len(e))]
        for j, d in enumerate(ell):
            sizes[f"#{j}"] = d
        if "->" in eq:
            out_letters = set(rhs.replace("...", ""))
            if "..." in rhs:
                out_letters |= {f"#{j}" for j in range(len(ell))}
        else:  # implicit: letters seen once, plus the ellipsis
            counts: dict[str, int] = {}
            for term in terms:
                for c in term.replace("...", ""):
                    counts[c] = counts.get(c, 0) + 1
            out_letters = {c for c, n in counts.items() if n == 1}
            out_letters |= {f"#{j}" for j in range(len(ell))}
        macs = 0
        flops = 0
        cur = set(letter_sets[0])
        if len(letter_sets) == 1:
            if cur - out_letters or len(terms[0].replace("...", "")) != len(
                    set(terms[0].replace("...", ""))):
                flops = math.prod(sizes[c] for c in cur)  # a reduction / trace
            return OpCost(0, flops, True)
        for t in range(1, len(letter_sets)):
            nxt = set(letter_sets[t])
            union = cur | nxt
            macs += math.prod(sizes[c] for c in union)
            later = set().union(*letter_sets[t + 1:]) if t + 1 < len(letter_sets) else set()
            cur = union & (later | out_letters)
        return OpCost(macs, 2 * macs + flops, True)
    except (IndexError, KeyError, ValueError, TypeError):
        return _UNKNOWN


def _pool(op, attrs, ins, outs):
    """MaxPool / AveragePool / LpPool: kernel taps x output elements (x2 for LpPool: pow+add)."""
    kernel = _ints(attrs, "kernel_shape")
    if not kernel:
        return _UNKNOWN
    out = _shape(outs, 0)
    x = _shape(ins, 0)
    if out is None and x is not None and len(x) == len(kernel) + 2:
        dims = _window_out_dims(x[2:], kernel, attrs, ceil_mode=bool(_int(attrs, "ceil_mode", 0)))
        if dims is not None:
            out = (x[0], x[1], *dims)
    if out is None:
        return _UNKNOWN
    per = 2 if op == "LpPool" else 1
    return OpCost(0, per * math.prod(kernel) * _numel(out), True)


def _global_pool(op, attrs, ins, outs):
    """GlobalAveragePool / GlobalMaxPool: one op per input element (x2 for GlobalLpPool)."""
    x = _shape(ins, 0)
    if x is None:
        return _UNKNOWN
    per = 2 if op == "GlobalLpPool" else 1
    return OpCost(0, per * _numel(x), True)


def _elementwise_op(op, attrs, ins, outs):
    per = ELEMENTWISE_FLOPS[op]
    if op == "Gelu" and _str(attrs, "approximate", "none") == "tanh":
        per = _GELU_TANH_FLOPS
    return _elementwise(per, ins, outs)


def _variadic(op, attrs, ins, outs):
    n_in = len(ins or [])
    n = _out_elems(ins, outs)
    if n is None:
        return _UNKNOWN
    per = max(n_in - 1, 0) + (1 if op == "Mean" and n_in > 1 else 0)
    return OpCost(0, per * n, True)


def _softmax(op, attrs, ins, outs):
    return _elementwise(_SOFTMAX_LIKE[op], ins, outs)


def _batchnorm(op, attrs, ins, outs):
    """Inference BN folds to a per-channel scale and shift: 2 flops per element.

    In training mode (opset 14+ ``training_mode=1``) the batch statistics add 4 per element.
    """
    x = _shape(ins, 0)
    n = _numel(x) if x is not None else _out_elems([], outs)
    if n is None:
        return _UNKNOWN
    per = 2 + (4 if _int(attrs, "training_mode", 0) else 0)
    return OpCost(0, per * n, True)


def _norm(op, attrs, ins, outs):
    """Instance/Layer/Group normalisation: 5 per element for the statistics, +1 scale, +1 bias."""
    x = _shape(ins, 0)
    n = _numel(x) if x is not None else _out_elems([], outs)
    if n is None:
        return _UNKNOWN
    per = _NORM_STATS_FLOPS
    if op in ("InstanceNormalization", "GroupNormalization"):
        per += 2  # scale and bias are required inputs
    else:  # LayerNormalization: Scale required, B optional
        per += 1 + (1 if _present(ins, 2) else 0)
    return OpCost(0, per * n, True)


def _rms_norm(op, attrs, ins, outs):
    """RMSNormalization: square, sum, mul-by-rsqrt (3) + scale (1) per element."""
    x = _shape(ins, 0)
    n = _numel(x) if x is not None else _out_elems([], outs)
    if n is None:
        return _UNKNOWN
    return OpCost(0, 4 * n, True)


def _lrn(op, attrs, ins, outs):
    """LRN ``y = x / (bias + alpha/size * square_sum)^beta``, per output element:

    ``size`` squares and ``size - 1`` adds for the cross-channel ``square_sum`` (every window tap,
    the zero-padded ones at the channel edges included, as for pools), then one mul by the constant
    ``alpha/size``, one add of ``bias``, one ``pow`` (a primitive, counted 1 like ``Pow``/``Exp`` in
    :data:`ELEMENTWISE_FLOPS`) and one div: ``2*size + 3`` in all.
    """
    size = max(_int(attrs, "size", 1), 1)
    return _elementwise(size + (size - 1) + 4, ins, outs)


def _reduce(op, attrs, ins, outs):
    x = _shape(ins, 0)
    if x is None:
        return _UNKNOWN
    per_in, per_out = _REDUCE[op]
    flops = per_in * _numel(x)
    if per_out:
        out = _shape(outs, 0)
        if out is None:
            return OpCost(0, flops, False)
        flops += per_out * _numel(out)
    return OpCost(0, flops, True)


def _resize(op, attrs, ins, outs):
    """Resize/Upsample per output element: nearest 0, n-linear 2*2^r, cubic 2*4^r.

    r is the number of resized axes (input and output dims differ); with an unknown input shape
    r defaults to rank-2 (the spatial axes of an NC... tensor).
    """
    out = _shape(outs, 0)
    x = _shape(ins, 0)
    if out is None:
        return _UNKNOWN
    mode = _str(attrs, "mode", "nearest").lower()
    if x is not None and len(x) == len(out):
        r = sum(1 for a, b in zip(x, out) if a != b)
    else:
        r = max(len(out) - 2, 1)
    if mode == "nearest":
        per = 0
    elif mode in ("linear", "bilinear", "trilinear"):
        per = 2 * 2 ** r
    elif mode in ("cubic", "bicubic"):
        per = 2 * 4 ** r
    else:
        return _UNKNOWN
    return OpCost(0, per * _numel(out), True)


def _topk(op, attrs, ins, outs):
    """TopK: ~ log2(k) compares per input element (heap selection)."""
    x, out = _shape(ins, 0), _shape(outs, 0)
    if x is None or out is None or not x:
        return _UNKNOWN
    axis = _int(attrs, "axis", -1) % len(x)
    k = out[axis] if axis < len(out) else 1
    return OpCost(0, _numel(x) * max(1, math.ceil(math.log2(max(k, 2)))), True)


# -- recurrent ----------------------------------------------------------------------------------

#: (gates, elementwise flops per hidden unit per step beyond the MACs)
_RNN: dict[str, tuple[int, int]] = {
    # 2 bias adds (Wb, Rb) per gate; f(x) activations; state update
    "RNN": (1, 2 + 1),  # tanh
    "GRU": (3, 6 + 2 * 4 + 1 + 4),  # 2 sigmoids, 1 tanh, h = (1-z)*n + z*h  (4)
    "LSTM": (4, 8 + 3 * 4 + 2 * 1 + 3),  # 3 sigmoids, 2 tanh, c = f*c + i*g, h = o*tanh(c)
}


def _rnn(op, attrs, ins, outs):
    """RNN/GRU/LSTM: X (seq, batch, input) [layout=1: (batch, seq, input)], W (dirs, G*H, I)."""
    x, w = _shape(ins, 0), _shape(ins, 1)
    if x is None or len(x) != 3:
        return _UNKNOWN
    gates, ew = _RNN[op]
    seq, batch = (x[1], x[0]) if _int(attrs, "layout", 0) else (x[0], x[1])
    inp = x[2]
    hidden = _int(attrs, "hidden_size", 0) or (w[1] // gates if w is not None and len(w) == 3 else 0)
    if not hidden:
        return _UNKNOWN
    dirs = 2 if _str(attrs, "direction", "forward") == "bidirectional" else 1
    steps = dirs * seq * batch
    macs = steps * gates * hidden * (inp + hidden)
    return OpCost(macs, 2 * macs + steps * hidden * ew, True)


# -- com.microsoft contrib ops (best effort) -----------------------------------------------------

_CONTRIB_ELEMENTWISE: dict[str, int] = {
    "Gelu": 5, "BiasGelu": 6, "FastGelu": 9, "QuickGelu": 6,  # x*sigmoid(1.702x): mul + 4 + mul
    "BiasAdd": 2, "BiasDropout": 2, "BiasSoftmax": _SOFTMAX_FLOPS + 1,
    "QLinearAdd": 8, "QLinearMul": 8,  # dequant 2x2, op 1, quant 3
    "QLinearSigmoid": 9, "QLinearLeakyRelu": 7, "QLinearSoftmax": _SOFTMAX_FLOPS + 5,
    "QLinearConcat": 5,  # requantise each element
    "RotaryEmbedding": 3,  # x*cos + rotate(x)*sin
    "QuantizeLinear": 3, "DequantizeLinear": 2, "DynamicQuantizeLinear": 5,
}

_FUSED_ACTIVATION = {
    "Relu": 1, "Tanh": 1, "Sigmoid": 4, "LeakyRelu": 2, "Clip": 2, "HardSigmoid": 4,
}


def _fused_activation(attrs) -> int:
    act = _str(attrs, "activation", "")
    return _FUSED_ACTIVATION.get(act, 0 if not act else 4)


def _c_fused_conv(op, attrs, ins, outs):
    # FusedConv(X, W, B, Z): conv + optional sum Z + activation
    c = _conv(op, attrs, ins, outs)
    out = _shape(outs, 0)
    if not c.known or out is None:
        return c
    extra = _numel(out) * (_fused_activation(attrs) + (1 if _present(ins, 3) else 0))
    return OpCost(c.macs, c.flops + extra, True)


def _c_nhwc_conv(op, attrs, ins, outs):
    w, out = _shape(ins, 1), _shape(outs, 0)
    if w is None or out is None or len(w) < 2:
        return _UNKNOWN
    n_out = _numel(out)
    macs = n_out * _numel(w[1:])
    return OpCost(macs, 2 * macs + (n_out if _present(ins, 2) else 0), True)


def _c_fused_gemm(op, attrs, ins, outs):
    c = _gemm(op, attrs, ins, outs)
    out = _shape(outs, 0)
    if not c.known or out is None:
        return c
    return OpCost(c.macs, c.flops + _numel(out) * _fused_activation(attrs), True)


def _c_fused_matmul(op, attrs, ins, outs):
    a, b = _shape(ins, 0), _shape(ins, 1)
    if a is not None and len(a) >= 2 and _int(attrs, "transA", 0):
        a = (*a[:-2], a[-1], a[-2])
    if b is not None and len(b) >= 2 and _int(attrs, "transB", 0):
        b = (*b[:-2], b[-1], b[-2])
    r = _matmul_macs(a, b)
    if r is None:
        return _UNKNOWN
    return OpCost(r[0], 2 * r[0] + (r[1] if _float(attrs, "alpha", 1.0) != 1.0 else 0), True)


def _c_matmul_nbits(op, attrs, ins, outs):
    a = _shape(ins, 0)
    k, n = _int(attrs, "K", 0), _int(attrs, "N", 0)
    if a is None or not k or not n:
        return _UNKNOWN
    macs = _numel(a[:-1]) * k * n
    return OpCost(macs, 2 * macs + 2 * k * n, True)  # + dequantise the weights once


def _c_matmul_to_float(op, attrs, ins, outs):
    # MatMulIntegerToFloat / DynamicQuantizeMatMul: matmul + dequantise (+bias) the output
    r = _matmul_macs(_shape(ins, 0), _shape(ins, 1))
    if r is None:
        return _UNKNOWN
    extra = (5 * _numel(_shape(ins, 0))) if op == "DynamicQuantizeMatMul" else 0
    return OpCost(r[0], 2 * r[0] + 3 * r[1] + extra, True)


def _c_skip_layernorm(op, attrs, ins, outs):
    # SkipLayerNormalization(input, skip, gamma, beta?, bias?)
    x = _shape(ins, 0)
    if x is None:
        return _UNKNOWN
    simplified = op.startswith("SkipSimplified")
    per = (4 if simplified else _NORM_STATS_FLOPS + 1 + (1 if _present(ins, 3) else 0)) + 1
    if _present(ins, 3 if simplified else 4):
        per += 1
    return OpCost(0, per * _numel(x), True)


def _c_simplified_layernorm(op, attrs, ins, outs):
    return _rms_norm(op, attrs, ins, outs)


def _c_embed_layernorm(op, attrs, ins, outs):
    # gathers are free; word + position (+ segment) adds, then layer norm with scale and bias
    out = _shape(outs, 0)
    if out is None:
        return _UNKNOWN
    return OpCost(0, (2 + _NORM_STATS_FLOPS + 2) * _numel(out), True)


def _attention_core(b, s, l, d_qk, d_v, heads) -> tuple[int, int]:
    """(macs, extra flops) of scaled dot-product attention over all heads."""
    macs = b * s * l * (d_qk + d_v)
    extra = b * heads * s * l * (_SOFTMAX_FLOPS + 1)  # scale + softmax
    return macs, extra


def _c_attention(op, attrs, ins, outs):
    """com.microsoft Attention(input (B,S,Din), weights (Din, Dq+Dk+Dv), bias, mask, past...)."""
    x, w = _shape(ins, 0), _shape(ins, 1)
    heads = _int(attrs, "num_heads", 0)
    if x is None or w is None or len(x) != 3 or len(w) != 2 or not heads:
        return _UNKNOWN
    b, s, din = x
    sizes = _ints(attrs, "qkv_hidden_sizes") or [w[1] // 3] * 3
    dq, dv = sizes[0], sizes[2]
    proj = b * s * din * w[1]
    past = _shape(ins, 4)  # (2, B, heads, past_len, head)
    l = s + (past[3] if past is not None and len(past) == 5 else 0)
    macs, extra = _attention_core(b, s, l, dq, dv, heads)
    total = proj + macs
    bias = b * s * w[1] if _present(ins, 2) else 0
    return OpCost(total, 2 * total + extra + bias, True)


def _c_mha(op, attrs, ins, outs):
    """MultiHeadAttention(query (B,S,D), key (B,L,D) | (B,N,L,H), value, bias, ...)."""
    q, k, v = _shape(ins, 0), _shape(ins, 1), _shape(ins, 2)
    heads = _int(attrs, "num_heads", 0)
    if q is None or len(q) != 3 or not heads:
        return _UNKNOWN
    b, s, dq = q
    if k is None or v is None:
        return _UNKNOWN
    if len(k) == 3 and len(v) == 3:
        l, dv = k[1], v[2]
    elif len(k) == 4 and len(v) == 4:
        l, dv = k[2], v[1] * v[3]
    else:
        return _UNKNOWN
    macs, extra = _attention_core(b, s, l, dq, dv, heads)
    return OpCost(macs, 2 * macs + extra, True)


def _c_gqa(op, attrs, ins, outs):
    """GroupQueryAttention(query (B,S,Dq), key (B,S,Dkv), value, past_key (B,Nkv,P,H), ...)."""
    q = _shape(ins, 0)
    heads = _int(attrs, "num_heads", 0)
    if q is None or len(q) != 3 or not heads:
        return _UNKNOWN
    b, s, dq = q
    k = _shape(ins, 1)
    if k is None and _present(ins, 1):
        return _UNKNOWN
    if k is None:  # packed QKV in query
        kv_heads = _int(attrs, "kv_num_heads", heads)
        dq = heads * (dq // (heads + 2 * kv_heads))
    past = _shape(ins, 3)
    l = s + (past[2] if past is not None and len(past) == 4 else 0)
    macs, extra = _attention_core(b, s, l, dq, dq, heads)
    return OpCost(macs, 2 * macs + extra, False if (past is None and _present(ins, 3)) else True)


def _c_qlinear_pool(op, attrs, ins, outs):
    std = "GlobalAveragePool" if op == "QLinearGlobalAveragePool" else "AveragePool"
    # QLinearAveragePool(X, x_scale, x_zp, y_scale, y_zp)
    c = _FORMULAS[std](std, attrs, ins[:1] if ins else ins, outs)
    out = _shape(outs, 0)
    if not c.known or out is None:
        return c
    return OpCost(0, c.flops + 5 * _numel(out), True)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

_FORMULAS: dict[str, _Formula] = {
    "Conv": _conv,
    "ConvInteger": _conv_integer,
    "QLinearConv": _qlinear_conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MatMulInteger": _matmul_integer,
    "QLinearMatMul": _qlinear_matmul,
    "Einsum": _einsum,
    "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool, "GlobalLpPool": _global_pool,
    "BatchNormalization": _batchnorm,
    "InstanceNormalization": _norm, "LayerNormalization": _norm, "GroupNormalization": _norm,
    "RMSNormalization": _rms_norm,
    "LRN": _lrn,
    "Resize": _resize, "Upsample": _resize,
    "TopK": _topk,
    "RNN": _rnn, "GRU": _rnn, "LSTM": _rnn,
}
_FORMULAS.update({op: _elementwise_op for op in ELEMENTWISE_FLOPS})
_FORMULAS.update({op: _softmax for op in _SOFTMAX_LIKE})
_FORMULAS.update({op: _variadic for op in _VARIADIC})
_FORMULAS.update({op: _reduce for op in _REDUCE})
for _op in DATA_MOVEMENT_OPS:
    _FORMULAS[_op] = lambda op, attrs, ins, outs: _FREE
for _op in UNKNOWN_OPS:
    _FORMULAS.pop(_op, None)

_CONTRIB: dict[str, _Formula] = {
    "FusedConv": _c_fused_conv,
    "NhwcConv": _c_nhwc_conv,
    "FusedGemm": _c_fused_gemm,
    "FusedMatMul": _c_fused_matmul,
    "MatMulNBits": _c_matmul_nbits,
    "MatMulIntegerToFloat": _c_matmul_to_float,
    "DynamicQuantizeMatMul": _c_matmul_to_float,
    "SkipLayerNormalization": _c_skip_layernorm,
    "SkipSimplifiedLayerNormalization": _c_skip_layernorm,
    "SimplifiedLayerNormalization": _c_simplified_layernorm,
    "EmbedLayerNormalization": _c_embed_layernorm,
    "Attention": _c_attention,
    "MultiHeadAttention": _c_mha,
    "GroupQueryAttention": _c_gqa,
    "QLinearAveragePool": _c_qlinear_pool,
    "QLinearGlobalAveragePool": _c_qlinear_pool,
}
_CONTRIB.update(
    {op: (lambda per: (lambda op, attrs, ins, outs: _elementwise(per, ins, outs)))(per)
     for op, per in _CONTRIB_ELEMENTWISE.items()}
)

_STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
#: contrib domains: contrib formulas first, then the standard op of the same name (ORT re-registers
#: many standard ops there, e.g. NCHWc Conv/MaxPool, contrib Gelu / LayerNormalization).
_CONTRIB_DOMAINS = frozenset({"com.microsoft", "com.microsoft.nchwc"})


def op_cost(
    op_type: str,
    domain: str,
    attrs: dict[str, Any],
    input_shapes: list[tuple[int, ...] | None],
    output_shapes: list[tuple[int, ...] | None],
) -> OpCost:
    """MACs/FLOPs of one node. ``input_shapes`` lists one entry per node input, in order.

    An omitted optional input (empty name in the NodeProto) should be passed as ``None`` only if
    a later input is present; trailing omitted inputs should simply be left out, since presence
    (e.g. of a Conv bias) is decided by the list length.
    """
    attrs = attrs or {}
    ins = list(input_shapes or [])
    outs = list(output_shapes or [])
    dom = domain or ""
    if dom in _STANDARD_DOMAINS:
        fn = _FORMULAS.get(op_type)
    elif dom in _CONTRIB_DOMAINS:
        fn = _CONTRIB.get(op_type) or _FORMULAS.get(op_type)
    else:
        fn = None
    if fn is None:
        return _UNKNOWN
    try:
        cost = fn(op_type, attrs, ins, outs)
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError):
        return _UNKNOWN
    return OpCost(int(cost.macs), int(cost.flops), bool(cost.known))


def known_ops(domain: str = "") -> frozenset[str]:
    """Op types that have a formula in ``domain`` ("" = standard ONNX, or "com.microsoft")."""
    if domain in _STANDARD_DOMAINS:
        return frozenset(_FORMULAS)
    if domain in _CONTRIB_DOMAINS:
        return frozenset(_FORMULAS) | frozenset(_CONTRIB)
    return frozenset()
