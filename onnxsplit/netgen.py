"""Random realistic networks for cost-model training: ``{"gen": "net", "seed": S, "v": 1}``.

A cost model fitted on a handful of hand-written CNNs learns little about what real exported
models contain: decomposed activations (``x * Clip(x + 3, 0, 6) / 6``), squeeze-excitation gates,
unfolded BatchNormalization, LRN, inception branches, dense concatenations, FPN necks with
Resize/ConvTranspose, OCR-style sequence heads, transformers with decomposed LayerNorm/Gelu. This
module draws a whole network from a seeded vocabulary of such blocks, so that ``onnxsplit profile``
can time hundreds of structurally different models (:func:`net_specs`). Vocabulary v1 draws
96-320 pixel inputs (fp32 0.2-30 ms on onnxruntime here); v2 the same blocks at CIFAR/MNIST scale
(28-64 pixels, 0.04-10 ms, median 0.3), the regime of small held-out networks (``onnxsplit profile --nets N
--net-version 2``).

Contract:

* :func:`net_model` is a pure function of the spec: the same ``seed`` and ``v`` give the same
  graph, weights included (CSV rows are rebuilt from their spec when a model is fitted).
  Changing the vocabulary means a new ``v``; old versions stay buildable.
* Every graph has static shapes and one float32 input of batch 1; its MFLOPs stay within
  ``max_mflops`` (the resolution is lowered until it fits).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["NET_VERSIONS", "net_model", "net_specs"]

NET_VERSIONS = (1, 2)

_ACTS = ["relu", "relu", "clip", "hswish", "hswish_dec", "hsig_mul", "silu", "leaky", "sigmoid"]


class _Net:
    """Block vocabulary on top of the profiler's graph builder."""

    def __init__(self, b: Any, rng: np.random.Generator, act: str, use_bn: bool):
        self.b, self.rng, self.act_kind, self.use_bn = b, rng, act, use_bn

    def act(self, x: str, kind: str | None = None) -> str:
        b, kind = self.b, kind or self.act_kind
        f = np.float32
        if kind == "hswish_dec":  # PaddlePaddle export: x * clip(x + 3, 0, 6) / 6
            t = b.node("Clip", [b.node("Add", [x, b.const(f(3.0))]), b.const(f(0.0)), b.const(f(6.0))])
            return b.node("Mul", [x, b.node("Div", [t, b.const(f(6.0))])])
        if kind == "hsig_mul":  # x * HardSigmoid(x)
            return b.node("Mul", [x, b.node("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)])
        return b.act(x, kind)

    def cbr(self, x: str, cin: int, cout: int, k: int = 3, s: int = 1, group: int = 1, act: bool = True) -> str:
        y = self.b.conv(x, cin, cout, k, s, group=group, bias=not self.use_bn)
        if self.use_bn:
            y = self.b.bn(y, cout)
        return self.act(y) if act else y

    def se(self, x: str, c: int) -> str:
        b = self.b
        r = max(8, c // 4)
        g = b.node("GlobalAveragePool", [x])
        g = self.act(b.conv(g, c, r, 1), "relu")
        g = b.conv(g, r, c, 1)
        g = self.act(g, "sigmoid") if self.rng.random() < 0.5 else b.node("HardSigmoid", [g], alpha=0.2, beta=0.5)
        return b.node("Mul", [x, g])

    # blocks: (x, cin, cout, stride) -> y
    def basic(self, x: str, cin: int, cout: int, s: int) -> str:
        t = self.cbr(self.cbr(x, cin, cout, 3, s), cout, cout, 3, act=False)
        skip = x if (s == 1 and cin == cout) else self.cbr(x, cin, cout, 1, s, act=False)
        return self.act(self.b.node("Add", [t, skip]))

    def bottleneck(self, x: str, cin: int, cout: int, s: int) -> str:
        mid = max(8, cout // 4)
        t = self.cbr(self.cbr(self.cbr(x, cin, mid, 1), mid, mid, 3, s), mid, cout, 1, act=False)
        skip = x if (s == 1 and cin == cout) else self.cbr(x, cin, cout, 1, s, act=False)
        return self.act(self.b.node("Add", [t, skip]))

    def inverted(self, x: str, cin: int, cout: int, s: int) -> str:
        e = int(self.rng.choice([3, 4, 6]))
        k = int(self.rng.choice([3, 3, 5]))
        hid = cin * e
        t = self.cbr(x, cin, hid, 1)
        t = self.cbr(t, hid, hid, k, s, group=hid)
        if self.rng.random() < 0.4:
            t = self.se(t, hid)
        t = self.cbr(t, hid, cout, 1, act=False)
        return self.b.node("Add", [x, t]) if (s == 1 and cin == cout) else t

    def dwsep(self, x: str, cin: int, cout: int, s: int) -> str:
        k = int(self.rng.choice([3, 3, 5]))
        t = self.cbr(x, cin, cin, k, s, group=cin)
        if self.rng.random() < 0.25:
            t = self.se(t, cin)
        return self.cbr(t, cin, cout, 1)

    def inception(self, x: str, cin: int, cout: int, s: int) -> str:
        b = self.b
        if s == 2:
            x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        q = max(8, cout // 4)
        b1 = self.cbr(x, cin, q, 1)
        b2 = self.cbr(self.cbr(x, cin, q // 2 + 8, 1), q // 2 + 8, q, 3)
        b3 = self.cbr(self.cbr(x, cin, q // 4 + 8, 1), q // 4 + 8, q, 5)
        b4 = self.cbr(b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), cin,
                      cout - 3 * q, 1)
        return b.node("Concat", [b1, b2, b3, b4], axis=1)

    def dense(self, x: str, cin: int, cout: int, s: int) -> str:
        b = self.b
        if s == 2:
            x = b.node("AveragePool", [self.cbr(x, cin, cin, 1)], kernel_shape=[2, 2], strides=[2, 2])
        g = max(8, (cout - cin) // 3) if cout > cin else 16
        c = cin
        for _ in range(3):
            t = self.cbr(self.cbr(x, c, 2 * g, 1), 2 * g, g, 3)
            x = b.node("Concat", [x, t], axis=1)
            c += g
        return self.cbr(x, c, cout, 1)


def _rng_choice(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _shape_of(b: Any, name: str) -> list[int]:
    """Static shape of tensor ``name`` of the graph built so far (onnx shape inference)."""
    saved = b.outputs
    b.outputs = [name]
    try:
        m = b.model()
    finally:
        b.outputs = saved
    return [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]


_V1_WIDTHS = [16, 16, 24, 32, 32, 48, 64]
_V2_WIDTHS = [8, 16, 16, 16, 24, 32, 32, 48]


def _cnn(b: Any, rng: np.random.Generator, hw: tuple[int, int], *, small: bool = False, stem_stride: int = 2) -> None:
    """A CNN. ``small`` (v2): CIFAR-scale widths, no 7x7 stem, as many stride-2 stages as the input allows.

    The draws from ``rng`` are the same in both modes (v1 graphs must not change)."""
    f = np.float32
    n = _Net(b, rng, _rng_choice(rng, _ACTS), bool(rng.random() < 0.6))
    block_kind = _rng_choice(rng, ["basic", "bottleneck", "inverted", "inverted", "dwsep", "inception", "dense"])
    block = getattr(n, block_kind)
    w0 = int(_rng_choice(rng, _V2_WIDTHS if small else _V1_WIDTHS))
    x = b.input((1, 3, *hw))
    if rng.random() < (0.0 if small else 0.3):  # AlexNet/Inception-v1 style: big stem, LRN, pool
        y = n.cbr(x, 3, w0, 7, 2)
        y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        if rng.random() < 0.5:
            y = b.node("LRN", [y], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    else:
        y = n.cbr(x, 3, w0, 3, stem_stride)
    c = w0
    feats: list[tuple[str, int]] = []
    n_stages = int(rng.integers(3, 6))
    if small:  # every stride-2 stage needs >= 2 pixels: 32x32 after a stride-1 stem allows 4
        n_stages = max(2, min(n_stages, int(math.log2(min(_shape_of(b, y)[2:])))))
    for st in range(n_stages):
        cout = int(round(c * float(_rng_choice(rng, [1.25, 1.5, 2.0, 2.0])) / 8)) * 8 if st else c * 2
        cout = min(max(cout, 16 if small and block_kind != "inception" else 32), 256 if small else 512)
        for i in range(int(rng.integers(1, 5))):
            y = block(y, c, cout, 2 if i == 0 else 1)
            c = cout
        feats.append((y, c))
    head = _rng_choice(rng, ["cls", "cls", "fpn", "seq"])
    if head == "cls":
        y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
        if rng.random() < 0.4:
            y = n.act(b.node("Gemm", [y, b.const(rng.standard_normal((c, 256)) * 0.05), b.const(np.zeros(256))]), "relu")
            c = 256
        y = b.node("Gemm", [y, b.const(rng.standard_normal((c, 100)) * 0.05), b.const(np.zeros(100))])
        if rng.random() < 0.5:
            y = b.node("Softmax", [y], axis=-1)
        b.outputs.append(y)
    elif head == "fpn":  # DB/FPN-style neck: laterals, upsample, add/concat, fuse, sigmoid map
        lat = 32 if c < 256 else 64
        levels = feats[-3:] if len(feats) >= 3 else feats
        p = n.cbr(levels[-1][0], levels[-1][1], lat, 1)
        outs = [p]
        for f_, cf in reversed(levels[:-1]):
            size = _shape_of(b, f_)
            if rng.random() < 0.7 or [2 * d for d in _shape_of(b, p)[2:]] != size[2:]:
                up = b.node("Resize", [p, "", "", b.const(np.array([1, lat, size[2], size[3]]))],
                            mode=_rng_choice(rng, ["nearest", "linear"]))
            else:
                up = b.node("ConvTranspose", [p, b.const(rng.standard_normal((lat, lat, 2, 2)) * 0.1)],
                            kernel_shape=[2, 2], strides=[2, 2])
            p = b.node("Add", [up, n.cbr(f_, cf, lat, 1)])
            outs.append(p)
        if len(outs) > 1 and rng.random() < 0.5:  # concat all levels at the finest resolution
            fine = _shape_of(b, outs[-1])
            ups = [o if k == len(outs) - 1 else
                   b.node("Resize", [o, "", "", b.const(np.array([1, lat, fine[2], fine[3]]))], mode="nearest")
                   for k, o in enumerate(outs)]
            p = b.node("Concat", ups, axis=1)
            lat *= len(outs)
        y = n.cbr(p, lat, lat // 4 + 8, 3)
        b.outputs.append(b.node("Sigmoid", [b.conv(y, lat // 4 + 8, 1, 1)]))
    else:  # OCR-recognition style: pool height away, sequence, linear + softmax
        y = b.node("ReduceMean", [y], axes=[2], keepdims=0)  # (1, C, W)
        y = b.node("Transpose", [y], perm=[0, 2, 1])  # (1, W, C)
        d = int(_rng_choice(rng, [64, 96, 128]))
        y = n.act(b.linear(y, c, d), "relu" if n.act_kind in ("relu", "clip") else "sigmoid")
        y = b.linear(y, d, 96)
        b.outputs.append(b.node("Softmax", [y], axis=-1))


def _transformer(b: Any, rng: np.random.Generator, seq: int, d: int, heads: int, layers: int) -> None:
    f = np.float32
    decomposed = bool(rng.random() < 0.5)  # exporter style: LN/Gelu as primitive ops or fused ops
    x = b.input((1, seq, d))

    def ln(t: str) -> str:
        if not decomposed:
            return b.layernorm(t, d)
        mu = b.node("ReduceMean", [t], axes=[-1], keepdims=1)
        xc = b.node("Sub", [t, mu])
        var = b.node("ReduceMean", [b.node("Pow", [xc, b.const(f(2.0))])], axes=[-1], keepdims=1)
        y = b.node("Div", [xc, b.node("Sqrt", [b.node("Add", [var, b.const(f(1e-5))])])])
        return b.node("Add", [b.node("Mul", [y, b.const(np.ones(d))]), b.const(np.zeros(d))])

    dh = d // heads
    y = x
    for _ in range(layers):
        h = ln(y)

        def split_heads(t: str, perm: list[int]) -> str:
            t = b.node("Reshape", [b.linear(t, d, d), b.const(np.array([1, seq, heads, dh]))])
            return b.node("Transpose", [t], perm=perm)

        q, k, v = split_heads(h, [0, 2, 1, 3]), split_heads(h, [0, 2, 3, 1]), split_heads(h, [0, 2, 1, 3])
        s = b.node("Div", [b.node("MatMul", [q, k]), b.const(f(math.sqrt(dh)))])
        if rng.random() < 0.5:  # additive attention mask
            s = b.node("Add", [s, b.const(np.zeros((1, 1, 1, seq)))])
        a = b.node("MatMul", [b.node("Softmax", [s], axis=-1), v])
        a = b.node("Reshape", [b.node("Transpose", [a], perm=[0, 2, 1, 3]), b.const(np.array([1, seq, d]))])
        y = b.node("Add", [y, b.linear(a, d, d)])
        m = b.act(b.linear(ln(y), d, 4 * d), "gelu" if rng.random() < 0.7 else "relu")
        y = b.node("Add", [y, b.linear(m, 4 * d, d)])
    b.outputs.append(b.node("Tanh", [b.linear(b.node("ReduceMean", [ln(y)], axes=[1], keepdims=0), d, d)]))


def net_model(spec: dict[str, Any]) -> Any:
    """The ONNX model of a ``{"gen": "net", "seed": S, "v": 1|2[, "max_mflops": M]}`` spec.

    v1: 96-320 pixel CNNs (or 32/48 x 160-320 strips) and transformers of 16-256 tokens, widths
    16-512 (fp32 median 1.8 ms on onnxruntime here). v2: the same block vocabulary at CIFAR/MNIST scale
    (28-64 pixel inputs, widths 8-256, a stride-1 stem on small inputs, no 7x7 stem; transformers of
    8-64 tokens, d 32-128), whose cost is mostly per-kernel fixed costs (fp32 median 0.30 ms here,
    90 % within 0.07-2 ms)."""
    from .ir import Graph
    from .profile import ProfileError, _B

    v = int(spec.get("v", 1))
    if v not in NET_VERSIONS:
        raise ProfileError(f"net spec version {v} is unknown; this onnxsplit builds v{', v'.join(map(str, NET_VERSIONS))}")
    seed = int(spec["seed"])
    max_mflops = float(spec.get("max_mflops", 4000.0))
    rng0 = np.random.default_rng([seed, v])
    kind = "transformer" if rng0.random() < 0.2 else "cnn"
    small, stem_stride = v == 2, 2
    if small and kind == "cnn":  # CIFAR/MNIST scale: the sub-millisecond regime v1 (median 1.8 ms) has little of
        h = w = int(_rng_choice(rng0, [28, 32, 32, 32, 48, 64]))
        stem_stride = 1 if h <= 32 or rng0.random() < 0.5 else 2
    elif small:
        seq, d = int(_rng_choice(rng0, [8, 16, 32, 64])), int(_rng_choice(rng0, [32, 64, 96, 128]))
        heads, layers = int(_rng_choice(rng0, [2, 4])), int(rng0.integers(1, 4))
    elif kind == "cnn":
        if rng0.random() < 0.2:
            h, w = int(_rng_choice(rng0, [32, 48])), int(_rng_choice(rng0, [160, 256, 320]))
        else:
            h = w = int(_rng_choice(rng0, [96, 128, 160, 192, 224, 256, 320]))
    else:
        seq, d = int(_rng_choice(rng0, [16, 32, 64, 128, 256])), int(_rng_choice(rng0, [64, 128, 192, 256, 384]))
        heads, layers = int(_rng_choice(rng0, [2, 4, 8])), int(rng0.integers(1, 5))
        while d % heads:
            heads //= 2
    scale = 1.0
    for _ in range(8):  # bounded: lower the resolution / sequence until the budget fits
        b = _B(f"net_v{v}_{seed}", seed=seed)
        rng = np.random.default_rng([seed, v, 1])
        if kind == "cnn":
            hh = max(32, int(round(h * scale / 32)) * 32) if h >= 96 else h
            ww = max(32, int(round(w * scale / 32)) * 32) if not small or scale < 1.0 else w
            _cnn(b, rng, (hh, ww), small=small, stem_stride=stem_stride)
        else:
            _transformer(b, rng, max(8, int(seq * scale)), d, heads, layers)
        model = b.model()
        mflops = Graph(model).total_flops / 1e6
        if mflops <= max_mflops:
            return model
        scale *= 0.75 * math.sqrt(max_mflops / mflops)
    raise ProfileError(f"net spec seed {seed}: cannot fit {max_mflops} MFLOPs (last {mflops:.0f})")


def net_specs(n: int, *, start: int = 0, max_mflops: float = 4000.0, version: int = 1) -> list[dict[str, Any]]:
    """``n`` random-network specs of vocabulary ``version`` (seeds ``start .. start + n - 1``)."""
    if version not in NET_VERSIONS:
        from .profile import ProfileError

        raise ProfileError(f"net spec version {version} is unknown; this onnxsplit builds v{', v'.join(map(str, NET_VERSIONS))}")
    return [{"gen": "net", "seed": s, "v": version, "max_mflops": max_mflops} for s in range(start, start + n)]
