"""AveragePool -> depthwise Conv, a rewrite applied before int8 quantization.

Why: onnxruntime runs a quantized ``AveragePool`` (``DequantizeLinear -> AveragePool ->
QuantizeLinear``, fused into the contrib op ``QLinearAveragePool``) with a reference CPU kernel
that is 5-15x slower than its fp32 ``AveragePool`` (which uses the vectorised NCHWc kernels).
Leaving the pool in fp32 is not enough: wherever the next op is quantized, onnxruntime's QDQ
transformer fuses the pool's ``DequantizeLinear``/``QuantizeLinear`` neighbours back into
``QLinearAveragePool``. An average pool is a depthwise convolution with constant weights, and
onnxruntime's int8 depthwise ``QLinearConv`` is fast, so onnxsplit quantizes that instead
(``tools/bench_int8_ops.py`` prints the three variants side by side).

Contract of :func:`avgpool_to_depthwise_conv`:

- Input: an ONNX model (not modified). Output: a copy in which every rewritable ``AveragePool``
  is replaced by ``Conv(group=C)`` with weights ``1 / (kh * kw)`` (shape ``[C, 1, kh, kw]``,
  float32) and the pool's ``strides`` and ``pads``; the Conv keeps the pool's node name and output
  tensor. Where ``count_include_pad = 0`` and the pool has padding, the border windows average
  fewer values: the Conv writes ``<output>_dwsum`` and a ``Mul`` named ``<pool name>/border``
  multiplies it by a constant map ``kh * kw / count`` (shape ``[1, C, Ho, Wo]``, or ``[1, 1, Ho, Wo]``
  above 2^18 elements) into the pool's output.
  Every other node, tensor and attribute is unchanged; the result equals the original up to
  float32 rounding.
- Rewritable: a float32 pool on a 4-D input whose channel count is known (from the model's
  shapes or shape inference), ``auto_pad`` ``NOTSET`` or ``VALID``, dilations 1, and
  ``ceil_mode = 0`` (or a ceil mode that does not change the output size), and a window no larger
  than the padded input where its size is known. For the border map the
  input height and width must be known too. Any other pool is left as it is and listed in
  :attr:`PoolRewrite.skipped` with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["PoolRewrite", "avgpool_to_depthwise_conv"]

#: the border map of a count_include_pad=0 pool has the pool's full output shape up to this many
#: elements (1 MB in float32), above it ``[1, 1, Ho, Wo]`` (broadcast over the channels)
_FULL_MAP_MAX_ELEMENTS = 1 << 18


@dataclass
class PoolRewrite:
    """Result of :func:`avgpool_to_depthwise_conv`."""

    model: onnx.ModelProto
    rewritten: list[str] = field(default_factory=list)  # node names of the replaced pools
    skipped: dict[str, str] = field(default_factory=dict)  # pool node name -> why it was left alone


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``taken`` (which it is added to)."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[list[int | None], int]]:
    """tensor name -> (dims, elem_type) from the model's value infos, after shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - fall back to what the model already states
        inferred = model
    out: dict[str, tuple[list[int | None], int]] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        out[vi.name] = (dims, tt.elem_type)
    for init in g.initializer:
        out[init.name] = (list(init.dims), init.data_type)
    return out


def _window_counts(size: int, k: int, s: int, pad_begin: int, n_out: int) -> np.ndarray:
    """How many of the k window taps of each output position fall inside [0, size)."""
    starts = np.arange(n_out) * s - pad_begin
    return np.minimum(starts + k, size) - np.maximum(starts, 0)


def avgpool_to_depthwise_conv(model: onnx.ModelProto) -> PoolRewrite:
    """Replace rewritable ``AveragePool`` nodes by depthwise convolutions (see the module docstring)."""
    pools = [n for n in model.graph.node if n.op_type == "AveragePool" and n.domain in ("", "ai.onnx")]
    result = PoolRewrite(model=model)
    if not pools:
        return result
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shapes = _shapes(out)
    taken = {t for n in out.graph.node for t in (*n.input, *n.output)} | {i.name for i in out.graph.initializer}
    taken |= {n.name for n in out.graph.node}

    def fresh(base: str) -> str:
        return unique_name(base, taken)

    new_nodes: list[onnx.NodeProto] = []
    for idx, node in enumerate(out.graph.node):
        if node.op_type != "AveragePool" or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        label = node.name or f"AveragePool_{idx}"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        kernel = list(attrs.get("kernel_shape", []))
        dims, elem = shapes.get(node.input[0], (None, 0))
        why = None
        if len(kernel) != 2:
            why = f"kernel_shape {kernel} is not 2-D"
        elif elem != onnx.TensorProto.FLOAT:
            why = "input is not float32"
        elif dims is None or len(dims) != 4 or dims[1] is None:
            why = "input channel count unknown (give the model static shapes)"
        elif auto_pad not in ("NOTSET", "VALID"):
            why = f"auto_pad {auto_pad}"
        elif any(d != 1 for d in attrs.get("dilations", [1, 1])):
            why = f"dilations {list(attrs['dilations'])}"
        if why is None:
            kh, kw = kernel
            strides = list(attrs.get("strides", [1, 1]))
            pads = [0, 0, 0, 0] if auto_pad == "VALID" else list(attrs.get("pads", [0, 0, 0, 0]))
            cip = int(attrs.get("count_include_pad", 0))
            hw = dims[2:]
            if int(attrs.get("ceil_mode", 0)):
                if None in hw:
                    why = "ceil_mode with unknown input height/width"
                else:
                    for ax in range(2):
                        span = hw[ax] + pads[ax] + pads[ax + 2] - kernel[ax]
                        if span % strides[ax]:
                            why = "ceil_mode changes the output size"
            if why is None and any(hw[ax] is not None and hw[ax] + pads[ax] + pads[ax + 2] < kernel[ax] for ax in range(2)):
                why = "window larger than the padded input"  # onnxruntime's pool accepts it, Conv does not
            bordered = cip == 0 and any(pads)
            if why is None and bordered and None in hw:
                why = "count_include_pad=0 with padding needs the input height/width"
        if why is not None:
            result.skipped[label] = why
            new_nodes.append(node)
            continue
        channels = int(dims[1])
        w_name = fresh(f"{label}/dw_weight")
        out.graph.initializer.append(
            numpy_helper.from_array(np.full((channels, 1, kh, kw), 1.0 / (kh * kw), np.float32), w_name))
        y = node.output[0]
        conv_out = fresh(f"{y}_dwsum") if bordered else y
        new_nodes.append(helper.make_node("Conv", [node.input[0], w_name], [conv_out], name=node.name or label,
                                          group=channels, kernel_shape=[kh, kw], strides=strides, pads=pads))
        if bordered:
            n_out = [(hw[ax] + pads[ax] + pads[ax + 2] - kernel[ax]) // strides[ax] + 1 for ax in range(2)]
            ch = _window_counts(hw[0], kh, strides[0], pads[0], n_out[0])
            cw = _window_counts(hw[1], kw, strides[1], pads[1], n_out[1])
            scale = (kh * kw) / np.outer(ch, cw).astype(np.float32)
            m_name = fresh(f"{label}/border_scale")
            # full [1, C, Ho, Wo] map where small: onnxruntime's QLinearMul is ~1.4x faster without broadcasting
            shape = (1, channels, *n_out) if channels * math.prod(n_out) <= _FULL_MAP_MAX_ELEMENTS else (1, 1, *n_out)
            out.graph.initializer.append(numpy_helper.from_array(np.broadcast_to(scale, shape).astype(np.float32), m_name))
            new_nodes.append(helper.make_node("Mul", [conv_out, m_name], [y], name=fresh(f"{label}/border")))
        result.rewritten.append(node.name or label)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    if result.rewritten:
        result.model = out
    return result

