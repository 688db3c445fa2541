"""A zoo of small, structurally realistic ONNX models built directly with ``onnx.helper``.

Every model is opset 17 (default domain), ``ir_version=8``, float32, batch 1, with fully static
input and output shapes, deterministic weights drawn from ``np.random.default_rng(seed)`` and
unique, human-readable node and tensor names (node ``stage1.block0.conv1`` writes tensor
``stage1.block0.conv1.out``; its parameters are ``stage1.block0.conv1.weight`` / ``.bias``).
They are tiny (tens to a couple hundred nodes, 32x32 images or smaller) so that the whole zoo
builds and runs in onnxruntime in well under a second.

What each model exercises in the split machinery:

``resnet_like`` (``"resnet"``)
    Residual skips (``Add``) that cross almost every cut, a strided 1x1 projection on the skip
    path, BatchNormalization, MaxPool, GlobalAveragePool/Flatten/Gemm head.
``mobilenetv2_like`` (``"mobilenetv2"``)
    Inverted residual blocks: depthwise convolutions (``group=channels``), relu6 written as
    ``Clip`` whose min/max are *scalar initializers shared by every Clip in the graph*, residual
    ``Add`` only where shapes match, channel-narrow "project" tensors that make cheap cuts.
``inception_like`` (``"inception"``)
    Wide multi-branch blocks joined by ``Concat``: a cut through a block must ship several
    branch tensors at once; dilated 3x3 and 5x5 convs, MaxPool branch, AveragePool head.
``unet_like`` (``"unet"``)
    Long skip connections from every encoder level to the matching decoder level (a cut in the
    middle must send several feature maps), ``ConvTranspose`` and ``Resize`` (nearest, with a
    scales initializer and an empty optional ``roi`` input) upsampling, dense output map.
``transformer_encoder`` (``"transformer"``)
    Two pre-LN encoder layers: LayerNormalization, MatMul+Add projections, Reshape/Transpose to
    heads (shape initializers shared across layers), batched MatMul, Softmax, Erf-based Gelu,
    residual adds; two outputs (token states and a mean-pooled vector).
``if_model`` (``"if"``)
    An ``If`` whose branches read outer-scope names (a tensor computed before the If *and* an
    outer initializer); the condition is computed from the data at run time. A partitioner must
    treat these implicit inputs as real dependencies of the If node.
``loop_model`` (``"loop"``)
    A ``Loop`` with a constant trip-count initializer and a ``Scan``, both of whose bodies read
    outer-scope tensors/initializers; their outputs (including stacked scan outputs) feed later
    nodes and a graph output. ONNX shape inference cannot derive the Loop outputs' shapes (the
    carried state gets none, the stacked one a symbolic trip dim), so the model declares them in
    ``graph.value_info``, as exporters do; a partitioner must keep/propagate those.
``multi_io`` (``"multi_io"``)
    Two graph inputs of different shapes and three graph outputs; one output is produced early
    and also consumed later, and the vector input is consumed both early and late (so a cloud
    half needs the raw graph input forwarded).
``shared_initializer`` (``"shared_init"``)
    One weight initializer used by the very first and the very last compute node of a long
    chain, so both halves of any cut need a copy.
``many_consumers`` (``"many_consumers"``)
    One "hub" tensor with a dozen consumers spread over the whole graph (fan-out): it crosses
    every cut after it is produced but must be transferred only once.
``local_function_model`` (``"local_function"``)
    A model-local function (``onnxsplit.test.LinearRelu``) called twice; the function
    definition and its opset import must follow the calls into whichever half holds them.
``constants_model`` (``"constants"``)
    ``Constant`` nodes (not initializers) whose outputs are consumed both early and late, and a
    graph output produced by ``Identity``.
``tiny_cnn`` (``"tiny_cnn"``)
    The bundled example: a small image classifier 1x3x32x32 -> 1x10 with an obvious bottleneck
    (a 1x1 conv squeezing 32 channels to 4 mid-network), the natural place to cut.

``random_dag_model`` builds random DAGs of shape-preserving ops (long skips, fan-out, shared
initializers, multi-output nodes, outputs that are also consumed) for property-based tests, and
``random_inputs`` draws feeds for any model's graph inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "OPSET",
    "IR_VERSION",
    "FUNCTION_DOMAIN",
    "ZOO",
    "resnet_like",
    "mobilenetv2_like",
    "inception_like",
    "unet_like",
    "transformer_encoder",
    "if_model",
    "loop_model",
    "multi_io",
    "shared_initializer",
    "many_consumers",
    "local_function_model",
    "constants_model",
    "tiny_cnn",
    "random_dag_model",
    "random_inputs",
]

OPSET = 17
IR_VERSION = 8
FUNCTION_DOMAIN = "onnxsplit.test"

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL

Shape = Sequence[int]


# --------------------------------------------------------------------------------------------
# Graph builder
# --------------------------------------------------------------------------------------------


class _GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one (sub)graph.

    Node ``name`` writes tensor ``name.out`` (or ``name.out0``, ``name.out1``, ... for several
    outputs) unless an explicit output name is given. Every tensor and node name is checked for
    uniqueness; child builders for subgraphs share the name registries (ONNX forbids a subgraph
    from shadowing outer-scope names) and the random generator.
    """

    def __init__(self, name: str, seed: int = 0, *, parent: _GraphBuilder | None = None):
        self.name = name
        self.rng: np.random.Generator = parent.rng if parent else np.random.default_rng(seed)
        self._tensor_names: set[str] = parent._tensor_names if parent else set()
        self._node_names: set[str] = parent._node_names if parent else set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[tuple[str, int, tuple[int, ...] | None]] = []
        self.value_info: list[onnx.ValueInfoProto] = []

    # -- names -------------------------------------------------------------------------------

    def _claim_tensor(self, name: str) -> str:
        if name in self._tensor_names:
            raise ValueError(f"duplicate tensor name {name!r}")
        self._tensor_names.add(name)
        return name

    def _claim_node(self, name: str) -> str:
        if name in self._node_names:
            raise ValueError(f"duplicate node name {name!r}")
        self._node_names.add(name)
        return name

    def sub(self, name: str) -> _GraphBuilder:
        """A builder for a subgraph (If branch, Loop/Scan body) sharing names and rng."""
        return _GraphBuilder(name, parent=self)

    # -- graph inputs / outputs / initializers -------------------------------------------------

    def input(self, name: str, shape: Shape, elem_type: int = FLOAT) -> str:
        """Declare a graph input with a static shape."""
        self.inputs.append(helper.make_tensor_value_info(self._claim_tensor(name), elem_type, list(shape)))
        return name

    def output(self, tensor: str, shape: Shape | None = None, elem_type: int = FLOAT) -> str:
        """Declare ``tensor`` a graph output; ``shape=None`` lets shape inference fill it in."""
        self.outputs.append((tensor, elem_type, None if shape is None else tuple(shape)))
        return tensor

    def annotate(self, tensor: str, shape: Shape, elem_type: int = FLOAT) -> str:
        """Record a value_info shape for an intermediate tensor that inference cannot derive."""
        self.value_info.append(helper.make_tensor_value_info(tensor, elem_type, list(shape)))
        return tensor

    def const(self, name: str, value: np.ndarray | float | int | bool | Sequence[Any]) -> str:
        """Add an initializer holding ``value`` (floats become float32, ints int64)."""
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        self.initializers.append(numpy_helper.from_array(arr, self._claim_tensor(name)))
        return name

    def weight(self, name: str, shape: Shape, fan_in: int, gain: float = 2.0) -> str:
        """A normal(0, gain / fan_in) initializer: He init by default, ``gain=1`` for linear."""
        std = math.sqrt(gain / fan_in)
        return self.const(name, self.rng.standard_normal(tuple(shape)) * std)

    def small(self, name: str, shape: Shape, scale: float = 0.05) -> str:
        """A small random initializer (biases, LayerNorm shifts)."""
        return self.const(name, self.rng.standard_normal(tuple(shape)) * scale)

    # -- nodes --------------------------------------------------------------------------------

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        name: str,
        *,
        out: str | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> str:
        """Add a single-output node and return its output tensor name."""
        return self.node_multi(op_type, inputs, name, outs=[out or f"{name}.out"], domain=domain, **attrs)[0]

    def node_multi(
        self,
        op_type: str,
        inputs: Sequence[str],
        name: str,
        *,
        n_outputs: int | None = None,
        outs: Sequence[str] | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> list[str]:
        """Add a node with several outputs (named ``name.out0``... unless ``outs`` is given)."""
        if outs is None:
            outs = [f"{name}.out{i}" for i in range(n_outputs or 1)]
        outs = [self._claim_tensor(o) for o in outs]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), outs, name=self._claim_node(name), domain=domain, **attrs)
        )
        return outs

    # -- layers -------------------------------------------------------------------------------

    def conv(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        k: int = 3,
        *,
        stride: int = 1,
        group: int = 1,
        dilation: int = 1,
        bias: bool = True,
        gain: float = 2.0,
        out: str | None = None,
    ) -> str:
        """Conv with "same" padding (for odd k) and He-initialized weights.

        Each filter is made zero-mean (then rescaled to the He std) so that post-ReLU inputs,
        whose mean is positive, neither drift activations upwards nor kill whole channels.
        """
        fan_in = (cin // group) * k * k
        w_arr = self.rng.standard_normal((cout, cin // group, k, k))
        if fan_in > 1:
            w_arr -= w_arr.mean(axis=(1, 2, 3), keepdims=True)
            w_arr /= w_arr.std(axis=(1, 2, 3), keepdims=True) + 1e-6
        w = self.const(f"{name}.weight", w_arr * math.sqrt(gain / fan_in))
        ins = [x, w] + ([self.small(f"{name}.bias", (cout,))] if bias else [])
        pad = dilation * (k - 1) // 2
        return self.node(
            "Conv", ins, name, out=out, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
            dilations=[dilation, dilation], group=group,
        )

    def bn(self, x: str, name: str, c: int, gamma: float = 1.0) -> str:
        """Inference-mode BatchNormalization with random but well-conditioned statistics.

        ``gamma`` scales the BN scale (ResNet blocks use 0.5 on the residual branch so the
        residual stream grows slowly).
        """
        rng = self.rng
        scale = self.const(f"{name}.scale", gamma * rng.uniform(0.8, 1.2, c))
        shift = self.small(f"{name}.B", (c,))
        mean = self.small(f"{name}.mean", (c,), scale=0.1)
        var = self.const(f"{name}.var", rng.uniform(0.5, 1.5, c))
        return self.node("BatchNormalization", [x, scale, shift, mean, var], name, epsilon=1e-5)

    def relu(self, x: str, name: str) -> str:
        return self.node("Relu", [x], name)

    def conv_bn_relu(self, x: str, name: str, cin: int, cout: int, k: int = 3, *, stride: int = 1) -> str:
        """``{name}.conv`` -> ``{name}.bn`` -> ``{name}.relu``."""
        y = self.conv(x, f"{name}.conv", cin, cout, k, stride=stride, bias=False)
        return self.relu(self.bn(y, f"{name}.bn", cout), f"{name}.relu")

    def conv_relu(self, x: str, name: str, cin: int, cout: int, k: int = 3, **kw: Any) -> str:
        """``{name}.conv`` -> ``{name}.relu``."""
        return self.relu(self.conv(x, f"{name}.conv", cin, cout, k, **kw), f"{name}.relu")

    def maxpool(self, x: str, name: str, k: int = 2, stride: int | None = None, pad: int = 0) -> str:
        return self.node(
            "MaxPool", [x], name, kernel_shape=[k, k], strides=[stride or k] * 2, pads=[pad] * 4
        )

    def linear(self, x: str, name: str, fin: int, fout: int, gain: float = 1.0) -> str:
        """``{name}.matmul`` (weight ``fin x fout``) -> ``{name}.add`` (bias)."""
        w = self.weight(f"{name}.weight", (fin, fout), fan_in=fin, gain=gain)
        b = self.small(f"{name}.bias", (fout,))
        return self.node("Add", [self.node("MatMul", [x, w], f"{name}.matmul"), b], f"{name}.add")

    def classifier_head(self, x: str, cin: int, n_classes: int = 10, *, pool: str | None = None) -> str:
        """GlobalAveragePool (unless ``pool`` is already 1x1) -> Flatten -> Gemm -> ``logits``."""
        if pool is None:
            pool = self.node("GlobalAveragePool", [x], "head.pool")
        flat = self.node("Flatten", [pool], "head.flatten", axis=1)
        w = self.weight("head.fc.weight", (cin, n_classes), fan_in=cin, gain=1.0)
        b = self.small("head.fc.bias", (n_classes,))
        return self.output(self.node("Gemm", [flat, w, b], "head.fc", out="logits"))

    # -- finishing ----------------------------------------------------------------------------

    def graph(self, output_shapes: dict[str, tuple[int, ...]] | None = None) -> onnx.GraphProto:
        """The GraphProto; outputs without an explicit shape take ``output_shapes[name]``."""
        outs = []
        for name, elem_type, shape in self.outputs:
            if shape is None and output_shapes is not None:
                shape = output_shapes.get(name)
            outs.append(helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape)))
        return helper.make_graph(
            self.nodes, self.name, self.inputs, outs, initializer=self.initializers, value_info=self.value_info
        )

    def model(
        self,
        *,
        extra_opsets: Sequence[tuple[str, int]] = (),
        functions: Sequence[onnx.FunctionProto] = (),
        doc: str = "",
    ) -> onnx.ModelProto:
        """Finish the model, filling static output shapes by strict shape inference."""
        opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]

        def make(graph: onnx.GraphProto) -> onnx.ModelProto:
            m = helper.make_model(
                graph, opset_imports=opsets, ir_version=IR_VERSION, functions=list(functions),
                producer_name="onnxsplit.zoo",
            )
            m.doc_string = doc
            return m

        inferred = onnx.shape_inference.infer_shapes(
            make(self.graph()), check_type=True, strict_mode=True, data_prop=True
        )
        shapes: dict[str, tuple[int, ...]] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                shapes[vi.name] = tuple(d.dim_value for d in dims)
        missing = [n for n, _, s in self.outputs if s is None and n not in shapes]
        if missing:
            raise ValueError(f"{self.name}: no static shape inferred for outputs {missing}")
        return make(self.graph(shapes))


# --------------------------------------------------------------------------------------------
# CNNs
# --------------------------------------------------------------------------------------------


def _basic_block(g: _GraphBuilder, x: str, name: str, cin: int, cout: int, stride: int = 1) -> str:
    """ResNet basic block; a strided 1x1 conv+BN projects the skip when the shape changes."""
    y = g.conv_bn_relu(x, f"{name}.unit1", cin, cout, stride=stride)
    y = g.conv(y, f"{name}.unit2.conv", cout, cout, bias=False)
    y = g.bn(y, f"{name}.unit2.bn", cout, gamma=0.5)
    skip = x
    if stride != 1 or cin != cout:
        skip = g.conv(x, f"{name}.proj.conv", cin, cout, k=1, stride=stride, bias=False, gain=1.0)
        skip = g.bn(skip, f"{name}.proj.bn", cout, gamma=0.5)
    return g.relu(g.node("Add", [y, skip], f"{name}.add"), f"{name}.relu")


def resnet_like(*, seed: int = 0) -> onnx.ModelProto:
    """ResNet-style classifier 1x3x32x32 -> 1x10 with residual blocks and a projection skip."""
    g = _GraphBuilder("resnet_like", seed)
    x = g.input("image", (1, 3, 32, 32))
    x = g.conv_bn_relu(x, "stem", 3, 16)
    x = g.maxpool(x, "stem.pool")  # 16x16
    x = _basic_block(g, x, "stage1.block0", 16, 16)
    x = _basic_block(g, x, "stage1.block1", 16, 16)
    x = _basic_block(g, x, "stage2.block0", 16, 32, stride=2)  # 8x8, projection skip
    x = _basic_block(g, x, "stage2.block1", 32, 32)
    g.classifier_head(x, 32)
    return g.model(doc="ResNet-like: residual Add skips, strided 1x1 projection, BN.")


def _inverted_residual(
    g: _GraphBuilder, x: str, name: str, cin: int, cout: int, *, expand: int, stride: int, clip: tuple[str, str]
) -> str:
    """MobileNetV2 block: 1x1 expand + relu6, 3x3 depthwise + relu6, 1x1 linear project."""
    hidden = cin * expand
    y = g.conv(x, f"{name}.expand", cin, hidden, k=1)
    y = g.node("Clip", [y, *clip], f"{name}.expand.relu6")
    y = g.conv(y, f"{name}.dw", hidden, hidden, k=3, stride=stride, group=hidden)
    y = g.node("Clip", [y, *clip], f"{name}.dw.relu6")
    y = g.conv(y, f"{name}.project", hidden, cout, k=1, gain=1.0)
    if stride == 1 and cin == cout:
        y = g.node("Add", [x, y], f"{name}.add")
    return y


def mobilenetv2_like(*, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2-style classifier 1x3x32x32 -> 1x10 (depthwise convs, Clip relu6)."""
    g = _GraphBuilder("mobilenetv2_like", seed)
    clip = (g.const("relu6.min", np.float32(0.0)), g.const("relu6.max", np.float32(6.0)))
    x = g.input("image", (1, 3, 32, 32))
    x = g.node("Clip", [g.conv(x, "stem.conv", 3, 16, stride=2), *clip], "stem.relu6")  # 16x16
    blocks = [  # (cin, cout, expand, stride)
        (16, 16, 4, 1),
        (16, 24, 4, 2),  # 8x8
        (24, 24, 4, 1),
        (24, 32, 4, 2),  # 4x4
        (32, 32, 4, 1),
    ]
    for i, (cin, cout, t, s) in enumerate(blocks):
        x = _inverted_residual(g, x, f"block{i}", cin, cout, expand=t, stride=s, clip=clip)
    x = g.node("Clip", [g.conv(x, "last.conv", 32, 64, k=1), *clip], "last.relu6")
    g.classifier_head(x, 64)
    return g.model(doc="MobileNetV2-like: depthwise convs, shared Clip bounds, conditional residuals.")


def _inception_block(g: _GraphBuilder, x: str, name: str, cin: int, *, wide: bool) -> tuple[str, int]:
    """Four branches concatenated on channels; ``wide`` uses a 5x5 conv, else a dilated 3x3."""
    b1 = g.conv_relu(x, f"{name}.b1x1", cin, 8, k=1)
    b2 = g.conv_relu(x, f"{name}.b3x3.reduce", cin, 8, k=1)
    b2 = g.conv_relu(b2, f"{name}.b3x3", 8, 12, k=3)
    b3 = g.conv_relu(x, f"{name}.b5x5.reduce", cin, 4, k=1)
    if wide:
        b3 = g.conv_relu(b3, f"{name}.b5x5", 4, 8, k=5)
    else:
        b3 = g.conv_relu(b3, f"{name}.b5x5", 4, 8, k=3, dilation=2)
    b4 = g.maxpool(x, f"{name}.bpool.pool", k=3, stride=1, pad=1)
    b4 = g.conv_relu(b4, f"{name}.bpool", cin, 4, k=1)
    return g.node("Concat", [b1, b2, b3, b4], f"{name}.concat", axis=1), 8 + 12 + 8 + 4


def inception_like(*, seed: int = 0) -> onnx.ModelProto:
    """GoogLeNet-style classifier 1x3x32x32 -> 1x10 with two 4-branch Concat blocks."""
    g = _GraphBuilder("inception_like", seed)
    x = g.input("image", (1, 3, 32, 32))
    x = g.maxpool(g.conv_relu(x, "stem", 3, 16), "stem.pool")  # 16x16
    x, c = _inception_block(g, x, "mixed1", 16, wide=False)
    x = g.maxpool(x, "mixed1.pool")  # 8x8
    x, c = _inception_block(g, x, "mixed2", c, wide=True)
    pooled = g.node("AveragePool", [x], "head.avgpool", kernel_shape=[8, 8], strides=[8, 8])
    g.classifier_head(x, c, pool=pooled)
    return g.model(doc="Inception-like: multi-branch Concat blocks, dilated and 5x5 convs.")


def unet_like(*, seed: int = 0) -> onnx.ModelProto:
    """U-Net-style segmenter 1x3x32x32 -> 1x2x32x32 with long encoder-decoder skips."""
    g = _GraphBuilder("unet_like", seed)
    x = g.input("image", (1, 3, 32, 32))
    e1 = g.conv_relu(x, "enc1", 3, 8)  # 8 x 32x32
    e2 = g.conv_relu(g.maxpool(e1, "enc1.pool"), "enc2", 8, 16)  # 16 x 16x16
    e3 = g.conv_relu(g.maxpool(e2, "enc2.pool"), "enc3", 16, 32)  # 32 x 8x8
    b = g.conv_relu(g.maxpool(e3, "enc3.pool"), "bottleneck", 32, 32)  # 32 x 4x4

    def up_transpose(t: str, name: str, c: int) -> str:
        w = g.weight(f"{name}.weight", (c, c, 2, 2), fan_in=c, gain=1.0)
        return g.node("ConvTranspose", [t, w, g.small(f"{name}.bias", (c,))], name,
                      kernel_shape=[2, 2], strides=[2, 2])

    scales = g.const("up.scales", np.array([1, 1, 2, 2], np.float32))

    def up_resize(t: str, name: str) -> str:
        return g.node("Resize", [t, "", scales], name, mode="nearest")

    d3 = up_transpose(b, "dec3.up", 32)  # 32 x 8x8
    d3 = g.conv_relu(g.node("Concat", [d3, e3], "dec3.concat", axis=1), "dec3", 64, 16)
    d2 = up_resize(d3, "dec2.up")  # 16 x 16x16
    d2 = g.conv_relu(g.node("Concat", [d2, e2], "dec2.concat", axis=1), "dec2", 32, 8)
    d1 = up_resize(d2, "dec1.up")  # 8 x 32x32
    d1 = g.conv_relu(g.node("Concat", [d1, e1], "dec1.concat", axis=1), "dec1", 16, 8)
    g.output(g.conv(d1, "head.conv", 8, 2, k=1, gain=1.0, out="segmentation"))
    return g.model(doc="U-Net-like: long skip Concats, ConvTranspose and Resize upsampling.")


def tiny_cnn(*, seed: int = 0) -> onnx.ModelProto:
    """The bundled example: 1x3x32x32 -> 1x10 classifier with a 4-channel bottleneck."""
    g = _GraphBuilder("tiny_cnn", seed)
    x = g.input("image", (1, 3, 32, 32))
    x = g.maxpool(g.conv_bn_relu(x, "conv1", 3, 16), "pool1")  # 16 x 16x16
    x = g.maxpool(g.conv_bn_relu(x, "conv2", 16, 32), "pool2")  # 32 x 8x8
    x = g.conv_relu(x, "squeeze", 32, 4, k=1)  # 4 x 8x8: the bottleneck
    x = g.conv_relu(x, "expand", 4, 32, k=1)
    x = g.conv_bn_relu(x, "conv3", 32, 32)
    x = g.conv_bn_relu(x, "conv4", 32, 32, stride=2)  # 32 x 4x4
    g.classifier_head(x, 32)
    return g.model(doc="tiny_cnn: small classifier with a 32->4 channel bottleneck at 8x8.")


# --------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------


def _layer_norm(g: _GraphBuilder, x: str, name: str, d: int) -> str:
    gamma = g.const(f"{name}.gamma", 1.0 + g.rng.standard_normal(d) * 0.05)
    beta = g.small(f"{name}.beta", (d,))
    return g.node("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=1e-5)


def _gelu(g: _GraphBuilder, x: str, name: str, consts: dict[str, str]) -> str:
    """Gelu as ``x * 0.5 * (1 + erf(x / sqrt(2)))``."""
    t = g.node("Div", [x, consts["sqrt2"]], f"{name}.div")
    t = g.node("Erf", [t], f"{name}.erf")
    t = g.node("Add", [t, consts["one"]], f"{name}.add")
    t = g.node("Mul", [x, t], f"{name}.mul")
    return g.node("Mul", [t, consts["half"]], f"{name}.scale")


def _encoder_layer(g: _GraphBuilder, x: str, name: str, *, d: int, consts: dict[str, str]) -> str:
    """Pre-LN encoder layer: x + MHA(LN(x)), then x + MLP(LN(x)).

    The head split/merge shapes come from ``consts`` (shape initializers shared by all layers).
    """
    h = _layer_norm(g, x, f"{name}.ln1", d)

    def heads_of(t: str, proj: str, perm: list[int]) -> str:
        t = g.linear(t, f"{name}.attn.{proj}", d, d)
        t = g.node("Reshape", [t, consts["split_heads"]], f"{name}.attn.{proj}.reshape")
        return g.node("Transpose", [t], f"{name}.attn.{proj}.transpose", perm=perm)

    q = heads_of(h, "q", [0, 2, 1, 3])  # (1, H, S, Dh)
    k = heads_of(h, "k", [0, 2, 3, 1])  # (1, H, Dh, S)
    v = heads_of(h, "v", [0, 2, 1, 3])  # (1, H, S, Dh)
    s = g.node("MatMul", [q, k], f"{name}.attn.scores")
    s = g.node("Div", [s, consts["sqrt_dh"]], f"{name}.attn.scale")
    p = g.node("Softmax", [s], f"{name}.attn.softmax", axis=-1)
    c = g.node("MatMul", [p, v], f"{name}.attn.context")
    c = g.node("Transpose", [c], f"{name}.attn.merge.transpose", perm=[0, 2, 1, 3])
    c = g.node("Reshape", [c, consts["merge_heads"]], f"{name}.attn.merge.reshape")
    c = g.linear(c, f"{name}.attn.out", d, d)
    x = g.node("Add", [x, c], f"{name}.attn.residual")

    h = _layer_norm(g, x, f"{name}.ln2", d)
    h = g.linear(h, f"{name}.mlp.fc1", d, 2 * d)
    h = _gelu(g, h, f"{name}.mlp.gelu", consts)
    h = g.linear(h, f"{name}.mlp.fc2", 2 * d, d)
    return g.node("Add", [x, h], f"{name}.mlp.residual")


def transformer_encoder(
    *, seed: int = 0, seq: int = 16, d: int = 32, heads: int = 4, layers: int = 2
) -> onnx.ModelProto:
    """Transformer encoder over (1, seq, d) tokens -> ``hidden`` (1, seq, d) and ``pooled`` (1, d)."""
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    g = _GraphBuilder("transformer_encoder", seed)
    consts = {
        "split_heads": g.const("const.split_heads_shape", [1, seq, heads, d // heads]),
        "merge_heads": g.const("const.merge_heads_shape", [1, seq, d]),
        "sqrt_dh": g.const("const.sqrt_head_dim", np.float32(math.sqrt(d // heads))),
        "sqrt2": g.const("const.sqrt2", np.float32(math.sqrt(2.0))),
        "one": g.const("const.one", np.float32(1.0)),
        "half": g.const("const.half", np.float32(0.5)),
    }
    x = g.input("tokens", (1, seq, d))
    for i in range(layers):
        x = _encoder_layer(g, x, f"layer{i}", d=d, consts=consts)
    w = g.const("final_ln.gamma", np.ones(d, np.float32))
    b = g.const("final_ln.beta", np.zeros(d, np.float32))
    hidden = g.output(g.node("LayerNormalization", [x, w, b], "final_ln", out="hidden", axis=-1, epsilon=1e-5))
    g.output(g.node("ReduceMean", [hidden], "pool", out="pooled", axes=[1], keepdims=0))
    return g.model(doc="Transformer encoder: LayerNorm, multi-head attention, Erf Gelu MLP.")


# --------------------------------------------------------------------------------------------
# Control flow
# --------------------------------------------------------------------------------------------


def if_model(*, seed: int = 0) -> onnx.ModelProto:
    """An ``If`` on a data-dependent condition whose branches read outer-scope names.

    Both branches read ``features`` (computed before the If) and the outer initializer
    ``branch.weight``; the If output feeds two more nodes.
    """
    g = _GraphBuilder("if_model", seed)
    x = g.input("x", (1, 8))
    feats = g.node("Relu", [g.linear(x, "encoder", 8, 16, gain=2.0)], "encoder.relu", out="features")
    w_branch = g.weight("branch.weight", (16, 16), fan_in=16, gain=1.0)
    total = g.node("ReduceSum", [x], "cond.sum", keepdims=0)
    cond = g.node("Greater", [total, g.const("cond.zero", np.float32(0.0))], "cond.greater")

    then_g = g.sub("then_branch")
    t = then_g.node("MatMul", [feats, w_branch], "then.matmul")
    then_g.output(then_g.node("Relu", [t], "then.relu"), (1, 16))

    else_g = g.sub("else_branch")
    e = else_g.node("MatMul", [feats, w_branch], "else.matmul")
    e = else_g.node("Tanh", [e], "else.tanh")
    else_g.output(else_g.node("Mul", [e, feats], "else.gate"), (1, 16))

    y = g.node("If", [cond], "branch", then_branch=then_g.graph(), else_branch=else_g.graph())
    y = g.node("Add", [y, feats], "merge.add")
    g.output(g.node("Gemm", [y, g.weight("head.weight", (16, 4), fan_in=16, gain=1.0),
                             g.small("head.bias", (4,))], "head", out="y"))
    return g.model(doc="If with outer-scope captures (tensor and initializer), runtime condition.")


def loop_model(*, seed: int = 0, trip_count: int = 3) -> onnx.ModelProto:
    """A ``Loop`` (constant trip count) and a ``Scan``, both bodies reading outer-scope names."""
    g = _GraphBuilder("loop_model", seed)
    x = g.input("x", (1, 8))
    h = g.node("Relu", [g.linear(x, "encoder", 8, 8, gain=2.0)], "encoder.relu", out="features")
    w_rec = g.weight("loop.weight", (8, 8), fan_in=8, gain=1.0)
    trips = g.const("loop.trip_count", np.int64(trip_count))
    keep_going = g.const("loop.cond", np.bool_(True))

    # Loop body: state <- tanh(state @ W + features); scan-out every state.
    body = g.sub("loop_body")
    body.input("loop.body.iter", (), INT64)
    cond_in = body.input("loop.body.cond_in", (), BOOL)
    state = body.input("loop.body.state_in", (1, 8))
    s = body.node("MatMul", [state, w_rec], "loop.body.matmul")
    s = body.node("Add", [s, h], "loop.body.add")
    s = body.node("Tanh", [s], "loop.body.tanh")
    body.output(body.node("Identity", [cond_in], "loop.body.cond"), (), BOOL)
    body.output(s, (1, 8))
    body.output(body.node("Identity", [s], "loop.body.scan"), (1, 8))
    final, stacked = g.node_multi("Loop", [trips, keep_going, h], "loop", body=body.graph(),
                                  outs=["loop.final_state", "loop.stacked_states"])
    # ONNX shape inference gives Loop outputs no (or a symbolic) shape; declare them as value_info.
    g.annotate(final, (1, 8))
    g.annotate(stacked, (trip_count, 1, 8))

    # Scan over the 4 rows of a (4, 8) view of the features: running sum scaled by an outer gain.
    gain = g.const("scan.gain", g.rng.uniform(0.5, 1.0, 8))
    rows = g.node("Reshape", [g.linear(x, "scan.input", 8, 32), g.const("scan.rows_shape", [4, 8])],
                  "scan.rows")
    sbody = g.sub("scan_body")
    acc = sbody.input("scan.body.acc_in", (8,))
    row = sbody.input("scan.body.row", (8,))
    a = sbody.node("Mul", [row, gain], "scan.body.mul")
    a = sbody.node("Add", [acc, a], "scan.body.add")
    sbody.output(a, (8,))
    sbody.output(sbody.node("Tanh", [a], "scan.body.tanh"), (8,))
    acc0 = g.const("scan.acc_init", np.zeros(8, np.float32))
    scan_final, scan_seq = g.node_multi("Scan", [acc0, rows], "scan", body=sbody.graph(), num_scan_inputs=1,
                                        outs=["scan.final_acc", "scan.stacked_acc"])

    # Combine: everything feeds the head.
    mean_state = g.node("ReduceMean", [stacked], "loop.mean", axes=[0], keepdims=0)  # (1, 8)
    scan_flat = g.node("Reshape", [scan_seq, g.const("scan.flat_shape", [1, 32])], "scan.flatten")
    scan_vec = g.node("Unsqueeze", [scan_final, g.const("scan.unsqueeze_axes", [0])], "scan.unsqueeze")
    cat = g.node("Concat", [final, mean_state, scan_vec, scan_flat], "merge.concat", axis=1)  # (1, 56)
    g.output(g.node("Gemm", [cat, g.weight("head.weight", (56, 4), fan_in=56, gain=1.0),
                             g.small("head.bias", (4,))], "head", out="y"))
    g.output(g.node("Transpose", [stacked], "loop.states", out="loop_states", perm=[1, 0, 2]))  # (1, T, 8)
    return g.model(doc="Loop and Scan with outer-scope captures; stacked outputs feed later nodes.")


# --------------------------------------------------------------------------------------------
# Graph-structure corner cases
# --------------------------------------------------------------------------------------------


def multi_io(*, seed: int = 0) -> onnx.ModelProto:
    """Two inputs (image 1x3x16x16, vector 1x8), three outputs, one consumed internally."""
    g = _GraphBuilder("multi_io", seed)
    img = g.input("image", (1, 3, 16, 16))
    vec = g.input("vector", (1, 8))
    v = g.node("Relu", [g.linear(vec, "vec.fc", 8, 8, gain=2.0)], "vec.relu")  # vector used early
    c1 = g.conv_relu(img, "conv1", 3, 8)
    early = g.node("Flatten", [g.node("GlobalAveragePool", [c1], "early.pool")], "early.flatten",
                   out="early_features")  # (1, 8): graph output AND consumed later
    g.output(early)
    c2 = g.conv_relu(g.maxpool(c1, "pool1"), "conv2", 8, 16)  # 16 x 8x8
    g.output(g.node("Sigmoid", [g.conv(c2, "mask.conv", 16, 1, k=1, gain=1.0)], "mask.sigmoid", out="mask"))
    deep = g.node("Flatten", [g.node("GlobalAveragePool", [c2], "deep.pool")], "deep.flatten")  # (1, 16)
    gate = g.node("Sigmoid", [g.node("Add", [early, v], "gate.add")], "gate.sigmoid")  # (1, 8)
    fused = g.node("Concat", [deep, g.node("Mul", [gate, vec], "late.vector_gate")], "fuse.concat", axis=1)
    fc = g.node("Relu", [g.linear(fused, "fuse.fc", 24, 16, gain=2.0)], "fuse.relu")
    g.output(g.node("Gemm", [fc, g.weight("head.weight", (16, 10), fan_in=16, gain=1.0),
                             g.small("head.bias", (10,))], "head", out="logits"))
    return g.model(doc="multi_io: 2 inputs, 3 outputs; an early output and an input reused late.")


def shared_initializer(*, seed: int = 0, depth: int = 10, d: int = 16) -> onnx.ModelProto:
    """A long MatMul/Add/Tanh chain whose first and last MatMul share ``shared.weight``."""
    g = _GraphBuilder("shared_initializer", seed)
    x = g.input("x", (1, d))
    shared = g.weight("shared.weight", (d, d), fan_in=d, gain=1.0)
    h = g.node("MatMul", [x, shared], "first.matmul")
    for i in range(depth):
        h = g.node("Tanh", [g.linear(h, f"chain{i}", d, d, gain=1.5)], f"chain{i}.tanh")
    g.output(g.node("MatMul", [h, shared], "last.matmul", out="y"))
    return g.model(doc="shared_initializer: one weight used by the first and the last node.")


def many_consumers(*, seed: int = 0) -> onnx.ModelProto:
    """A hub tensor read by 12 nodes spread from the start to the end of the graph."""
    g = _GraphBuilder("many_consumers", seed)
    x = g.input("x", (1, 4, 8, 8))
    hub = g.node("Relu", [g.conv(x, "hub.conv", 4, 8)], "hub.relu", out="hub")  # (1, 8, 8, 8)
    # Main chain: each step mixes the hub back in (4 consumers + 1 for the first conv).
    h = g.conv_relu(hub, "chain0", 8, 8)
    for i in range(1, 5):
        h = g.node("Add", [h, hub], f"chain{i}.skip")
        h = g.conv_relu(h, f"chain{i}", 8, 8)
    h = g.node("Mul", [h, g.node("Sigmoid", [hub], "gate.sigmoid")], "gate.mul")
    # Side branches straight off the hub (more consumers).
    sides = [
        g.node("Tanh", [hub], "side.tanh"),
        g.node("Neg", [g.node("Abs", [hub], "side.abs")], "side.neg"),
        g.node("Mul", [hub, g.const("side.scale", np.float32(0.5))], "side.scale"),
        g.node("ReduceMean", [hub], "side.mean", axes=[1], keepdims=1),  # (1, 1, 8, 8), broadcasts
    ]
    total = g.node("Sum", [h, *sides, hub], "merge.sum")
    cat = g.node("Concat", [total, hub], "merge.concat", axis=1)  # (1, 16, 8, 8)
    g.output(g.conv(cat, "head.conv", 16, 4, k=1, gain=1.0, out="y"))
    return g.model(doc="many_consumers: one tensor with >= 8 consumers across the graph.")


def _linear_relu_function() -> onnx.FunctionProto:
    """``LinearRelu(x, w, b) = Relu(x @ w + b)`` in the ``onnxsplit.test`` domain."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "b"], ["xwb"], name="add"),
        helper.make_node("Relu", ["xwb"], ["y"], name="relu"),
    ]
    return helper.make_function(
        FUNCTION_DOMAIN, "LinearRelu", ["x", "w", "b"], ["y"], nodes,
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="Relu(x @ w + b)",
    )


def local_function_model(*, seed: int = 0) -> onnx.ModelProto:
    """Calls the model-local function ``onnxsplit.test.LinearRelu`` twice, then a Gemm head."""
    g = _GraphBuilder("local_function_model", seed)
    x = g.input("x", (1, 16))
    h = g.node("Mul", [x, g.const("pre.scale", g.rng.uniform(0.5, 1.5, (1, 16)))], "pre.scale")
    for i, (fin, fout) in enumerate([(16, 32), (32, 16)]):
        w = g.weight(f"block{i}.weight", (fin, fout), fan_in=fin)
        b = g.small(f"block{i}.bias", (fout,))
        h = g.node("LinearRelu", [h, w, b], f"block{i}.linear_relu", domain=FUNCTION_DOMAIN)
    h = g.node("Gemm", [h, g.weight("head.weight", (16, 4), fan_in=16, gain=1.0),
                        g.small("head.bias", (4,))], "head")
    g.output(g.node("Softmax", [h], "head.softmax", out="y", axis=-1))
    return g.model(extra_opsets=[(FUNCTION_DOMAIN, 1)], functions=[_linear_relu_function()],
                   doc="local_function_model: a model-local function called twice.")


def constants_model(*, seed: int = 0) -> onnx.ModelProto:
    """``Constant`` nodes consumed early and late, and an ``Identity`` graph output."""
    g = _GraphBuilder("constants_model", seed)
    x = g.input("x", (1, 8))
    scale = g.node("Constant", [], "const.scale",
                   value=numpy_helper.from_array(g.rng.uniform(0.5, 1.5, (1, 8)).astype(np.float32), "scale"))
    shift = g.node("Constant", [], "const.shift",
                   value=numpy_helper.from_array((g.rng.standard_normal(8) * 0.1).astype(np.float32), "shift"))
    alpha = g.node("Constant", [], "const.alpha", value_float=0.25)
    h = g.node("Add", [g.node("Mul", [x, scale], "early.mul"), shift], "early.add")
    h = g.node("Relu", [h], "early.relu")
    for i in range(3):
        h = g.node("Tanh", [g.linear(h, f"mid{i}", 8, 8, gain=1.5)], f"mid{i}.tanh")
    g.output(g.node("Identity", [h], "mid.identity", out="mid_features"))
    h = g.node("Add", [g.node("Mul", [h, scale], "late.mul"), shift], "late.add")
    g.output(g.node("Mul", [h, alpha], "late.alpha", out="y"))
    return g.model(doc="constants_model: Constant nodes used early and late, Identity output.")


# --------------------------------------------------------------------------------------------
# Registry, inputs, random DAGs
# --------------------------------------------------------------------------------------------

ZOO: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet": resnet_like,
    "mobilenetv2": mobilenetv2_like,
    "inception": inception_like,
    "unet": unet_like,
    "transformer": transformer_encoder,
    "if": if_model,
    "loop": loop_model,
    "multi_io": multi_io,
    "shared_init": shared_initializer,
    "many_consumers": many_consumers,
    "local_function": local_function_model,
    "constants": constants_model,
    "tiny_cnn": tiny_cnn,
}


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for ``model``'s graph inputs (inputs that are also initializers excluded).

    Uses the declared static shapes (a symbolic/unknown dim becomes 1) and element types:
    floats are standard normal, integers small non-negative values in [0, 4), bools random.
    """
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, 4, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            raise ValueError(f"random_inputs: unsupported element type {dtype} for input {vi.name!r}")
    return feeds


# Random DAG: op name -> (number of tensor inputs, number of nodes it takes).
_DAG_OPS: dict[str, tuple[int, int]] = {
    "Relu": (1, 1), "Sigmoid": (1, 1), "Tanh": (1, 1), "Neg": (1, 1), "Abs": (1, 1),
    "Add": (2, 1), "Sub": (2, 1), "Mul": (2, 1),
    "Max": (3, 1), "Min": (3, 1), "Sum": (3, 1),
    "Conv": (1, 1), "MatMul": (1, 1),
    "ConcatSlice": (2, 2), "SplitConcat": (1, 2),
}
_DAG_MAX_BOUND = 50.0  # ops whose estimated |output| bound exceeds this are replaced by Tanh


def _dag_bound(op: str, bounds: list[float]) -> float:
    """Rough upper estimate of |output| given estimates of |input| (keeps the DAG tame)."""
    if op in ("Sigmoid", "Tanh"):
        return 1.0
    if op in ("Add", "Sub", "Sum"):
        return sum(bounds)
    if op == "Mul":
        return math.prod(bounds)
    if op in ("Conv", "MatMul"):
        return 2.0 * bounds[0]
    return max(bounds)


def random_dag_model(
    seed: int,
    n_nodes: int = 12,
    n_inputs: int | None = None,
    *,
    shape: Shape = (1, 4, 4, 4),
    n_outputs: int | None = None,
) -> onnx.ModelProto:
    """A random DAG of exactly ``n_nodes`` shape-preserving nodes on tensors of ``shape``.

    Each node reads 1-3 tensors chosen among *all* earlier tensors (graph inputs and previous
    outputs), which yields long skips and fan-out; Conv 1x1 / MatMul weights are sometimes
    shared between nodes, as are the Slice/Split index initializers. Two-node motifs
    (Concat+Slice, Split+Concat) add multi-input and multi-output nodes. The last node merges
    every tensor nobody consumed (``Sum``, or ``Tanh`` of a single one) so there is no dead
    code; besides it, up to two earlier tensors become graph outputs (``n_outputs`` total,
    1-3, drawn when None), typically tensors that are also consumed later. An estimate of each
    tensor's magnitude replaces ops that could blow up by a ``Tanh``.

    ``n_inputs`` (1 or 2) is drawn from the seed when None. ``shape`` must be 4-D with an even
    channel count (dim 1).
    """
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[1] % 2:
        raise ValueError(f"shape must be 4-D with an even channel dim, got {shape}")
    g = _GraphBuilder(f"random_dag_{seed}", seed)
    rng = g.rng
    if n_inputs is None:
        n_inputs = int(rng.integers(1, 3))
    if n_outputs is None:
        n_outputs = int(rng.integers(1, 4))
    c, w_dim = shape[1], shape[3]

    tensors = [g.input(f"in{i}", shape) for i in range(n_inputs)]
    bound: dict[str, float] = {t: 4.0 for t in tensors}
    consumed: set[str] = set()
    weights: dict[str, list[str]] = {"Conv": [], "MatMul": []}
    shared: dict[str, str] = {}

    def shared_const(key: str, value: Sequence[int]) -> str:
        if key not in shared:
            shared[key] = g.const(f"const.{key}", value)
        return shared[key]

    def pick(k: int) -> list[str]:
        unconsumed = [t for t in tensors if t not in consumed]
        first = unconsumed if unconsumed and rng.random() < 0.5 else tensors
        chosen = [first[int(rng.integers(len(first)))]]
        chosen += [tensors[int(rng.integers(len(tensors)))] for _ in range(k - 1)]
        return chosen

    def weight_for(op: str, name: str) -> str:
        pool = weights[op]
        if pool and rng.random() < 0.4:
            return pool[int(rng.integers(len(pool)))]
        if op == "Conv":
            w = g.weight(f"{name}.weight", (c, c, 1, 1), fan_in=c, gain=1.0)
        else:
            w = g.weight(f"{name}.weight", (w_dim, w_dim), fan_in=w_dim, gain=1.0)
        pool.append(w)
        return w

    def emit(op: str, ins: list[str], name: str) -> str:
        if op == "Conv":
            return g.node("Conv", [ins[0], weight_for("Conv", name)], name, kernel_shape=[1, 1])
        if op == "MatMul":
            return g.node("MatMul", [ins[0], weight_for("MatMul", name)], name)
        if op == "ConcatSlice":
            cat = g.node("Concat", ins, f"{name}.concat", axis=1)
            return g.node("Slice", [cat, shared_const("slice_starts", [c // 2]),
                                    shared_const("slice_ends", [c // 2 + c]),
                                    shared_const("slice_axes", [1])], f"{name}.slice")
        if op == "SplitConcat":
            lo, hi = g.node_multi("Split", [ins[0], shared_const("split_sizes", [c // 2, c // 2])],
                                  f"{name}.split", n_outputs=2, axis=1)
            return g.node("Concat", [hi, lo], f"{name}.concat", axis=1)
        return g.node(op, ins, name)

    names = list(_DAG_OPS)
    while len(g.nodes) < n_nodes - 1:
        room = n_nodes - 1 - len(g.nodes)
        op = names[int(rng.integers(len(names)))]
        arity, cost = _DAG_OPS[op]
        if cost > room:
            continue
        ins = pick(arity)
        b = _dag_bound(op, [bound[t] for t in ins])
        if b > _DAG_MAX_BOUND:
            op, ins, b = "Tanh", ins[:1], 1.0
        out = emit(op, ins, f"n{len(g.nodes)}.{op.lower()}")
        consumed.update(ins)
        tensors.append(out)
        bound[out] = b

    produced = tensors[n_inputs:]
    extra = [t for t in produced if rng.random() < 0.5]
    extra = [extra[i] for i in sorted(rng.permutation(len(extra))[: n_outputs - 1])] if extra else []
    dangling = [t for t in tensors if t not in consumed and t not in extra]
    if len(dangling) >= 2:
        last = g.node("Sum", dangling, f"n{len(g.nodes)}.sum", out="out")
    else:
        last = g.node("Tanh", [dangling[0] if dangling else tensors[-1]], f"n{len(g.nodes)}.tanh", out="out")
    for t in extra:
        g.output(t)
    g.output(last)
    return g.model(doc=f"random_dag_model(seed={seed}, n_nodes={n_nodes}, n_inputs={n_inputs})")
