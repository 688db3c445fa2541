#!/usr/bin/env python3
"""Latency cost models from measured whole-model latencies (HELP / HW-NAS-Bench data).

Data: ``<repo>/../shared/data/help-latency/`` (override with ``ONNXSPLIT_HELP_LATENCY_DIR``),
two CSV files converted without change of values from the HELP repository
(https://github.com/HayeonLee/HELP, MIT License, (c) 2024 HayeonLee); the NAS-Bench-201
``raspi4`` column is HW-NAS-Bench's Raspberry Pi 4 measurement (TFLite, fp32, batch 1). The data
is read from that folder only and never copied into the repository; the models and CSVs this
tool writes go to a cache folder outside the repository (default
``~/.cache/onnxsplit/help-latency/``). Fitted cost models (``cost_models/<target>/...json``)
carry that provenance in their metadata.

What is here
------------
* :func:`nasbench201_onnx` / :func:`fbnet_onnx`: the two search spaces rebuilt as ONNX with
  ``onnx.helper`` exactly as the data README describes (opset 17, IR 8, float32, static
  1x3x32x32 input, deterministic random weights, real inference ``BatchNormalization`` nodes so
  that Conv+BN+ReLU fusion is visible to a cost model). Node ``cell3.n2.e0.conv3x3.conv`` writes
  tensor ``cell3.n2.e0.conv3x3.conv.out``; its parameters are ``...conv.weight`` etc.
* NAS-Bench-201 ``none`` edges, two representations (``none_mode``):

  ``"prune"`` (default; the README's semantics, what a graph-optimising converter runs): a
  ``none`` edge contributes nothing; a cell node whose incoming edges are all ``none`` (or come
  only from such zero nodes) is zero, and the ops reading a zero node are dropped as well; ops
  whose result reaches the cell output only through ``none`` edges are dead and dropped. An arch
  whose cell output is zero is *degenerate* (:func:`nb201_is_degenerate`): its network output
  does not depend on the input; the builder then emits each cell as ``Mul(x, 0)`` (a valid
  model) and the dataset filters such archs out, as the README says.

  ``"mul0"`` (PyTorch eager semantics: NAS-Bench-201's ``Zero`` op is ``x.mul(0.)``): every
  edge is computed, ``none`` as ``Mul(x, 0)``, so ops feeding only zero edges still run. The
  PyTorch-measured columns (GPUs, Xeons) follow this far better than ``prune`` (on
  ``gold_6226`` an op-count regression explains R^2 0.98 with ``mul0`` vs 0.82 with ``prune``;
  fitted on ``titan_rtx_1``, NB201 holdout MAPE 2-3 % vs 11 %), while the TFLite ``raspi4``
  column follows ``prune`` (NB201 holdout MAPE 17 % vs 36 %), so :data:`RUNTIME_NONE_MODE` picks
  ``mul0`` for the ``pytorch-*`` runtimes and ``prune`` for ``tflite-cpu``.
* ``dataset``: model ids, archs, the chosen device column, a deterministic train/holdout split
  (SHA-256 of ``"<space>:<arch>"``, 20 % holdout) into a CSV under the cache folder
  (``--write-models`` also writes the ONNX files; rebuilding one takes 10-60 ms, see
  :func:`build_model`). Degenerate NB201 archs (341 of 15,625) are left out.
* ``fit``: samples both spaces (half each), builds the IR graphs (:func:`build_graph`, from a
  weightless skeleton: ~35 ms a graph), fits ``onnxsplit.cost.fit.fit_from_whole_models`` on the
  train split (per-family laws plus, nn-Meter style, an own cost for every kernel configuration
  seen in at least ``--config-min-count`` training models: ``onnxsplit.cost.fit.fit_kernel_configs``),
  reports holdout MAPE, median APE and Spearman rank correlation (overall and per
  space), stores them as the artifact's ``accuracy`` and writes
  ``cost_models/<target>/<runtime>-<precision>.json`` (``--all``: the three :data:`TARGETS`).

Run ``python tools/help_latency.py --help``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = "ONNXSPLIT_HELP_LATENCY_DIR"
DEFAULT_CACHE = Path("~/.cache/onnxsplit/help-latency")
NB201_CSV = "nasbench201_latency_ms.csv"
FBNET_CSV = "fbnet_latency_ms.csv"

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "input"
INPUT_SHAPE = (1, 3, 32, 32)
HOLDOUT_FRACTION = 0.2

SOURCE = {
    "repository": "https://github.com/HayeonLee/HELP",
    "license": "MIT",
    "copyright": "(c) 2024 HayeonLee",
    "files": [
        "data/nasbench201/latency/*.pt",
        "data/nasbench201/str_arch2idx.pt",
        "data/fbnet/latency/*.pt",
        "data/fbnet/metainfo.pt",
    ],
    "citation": (
        "Hayeon Lee, Sewoong Lee, Song Chong, Sung Ju Hwang. Hardware-Adaptive Efficient Latency "
        "Prediction for NAS via Meta-Learning (HELP). NeurIPS 2021. https://github.com/HayeonLee/HELP ; "
        "Chaojian Li, Zhongzhi Yu, Yonggan Fu, Yongan Zhang, Yang Zhao, Haoran You, Qixuan Yu, Yue Wang, "
        "Yingyan Lin. HW-NAS-Bench: Hardware-Aware Neural Architecture Search Benchmark. ICLR 2021. "
        "https://github.com/RICE-EIC/HW-NAS-Bench (Raspberry Pi 4 / TFLite numbers)"
    ),
}

#: how NAS-Bench-201 ``none`` edges are represented for each runtime (see the module docstring).
RUNTIME_NONE_MODE = {"tflite-cpu": "prune", "pytorch-cuda": "mul0", "pytorch-cpu": "mul0"}

#: (device column, target, runtime, precision, what it is) for ``fit --all``.
TARGETS = [
    ("raspi4", "rpi4", "tflite-cpu", "fp32", "Raspberry Pi 4 (Cortex-A72), TFLite fp32, batch 1 (HW-NAS-Bench)"),
    ("titan_rtx_1", "titan-rtx", "pytorch-cuda", "fp32", "NVIDIA Titan RTX (TU102, 24 GB), PyTorch, batch 1 (HELP)"),
    ("gold_6226", "xeon-gold-6226", "pytorch-cpu", "fp32", "Intel Xeon Gold 6226, PyTorch, batch 1 (HELP)"),
]


# =============================================================================== data location
def data_dir() -> Path:
    """The help-latency data folder: ``$ONNXSPLIT_HELP_LATENCY_DIR`` or ``<repo>/../shared/data/help-latency``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return (REPO_ROOT.parent / "shared" / "data" / "help-latency").resolve()


def data_available(path: Path | None = None) -> bool:
    d = path or data_dir()
    return (d / NB201_CSV).is_file() and (d / FBNET_CSV).is_file()


# =============================================================================== graph builder
class _Builder:
    """Minimal ``onnx.helper`` graph builder with readable, unique names and seeded weights."""

    def __init__(self, seed: int = 0, weights: bool = True):
        self.rng = np.random.default_rng(seed)
        self.weights = weights  # False: float parameters carry dims but no data (IR-only skeleton)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()
        self._const_cache: dict[tuple, str] = {}

    def _claim(self, name: str) -> str:
        if name in self.names:
            raise ValueError(f"duplicate name {name}")
        self.names.add(name)
        return name

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), self._claim(name)))
        return name

    def param(self, name: str, shape: tuple[int, ...], dist: str, a: float, b: float) -> str:
        """A float32 parameter drawn from ``normal(a, b)`` or ``uniform(a, b)`` (no data when
        ``weights`` is False: dims and type only, enough for shapes, MACs and bytes)."""
        if not self.weights:
            t = TensorProto(name=self._claim(name), data_type=TensorProto.FLOAT, dims=list(shape))
            self.inits.append(t)
            return name
        draw = self.rng.normal if dist == "normal" else self.rng.uniform
        return self.init(name, draw(a, b, shape).astype(np.float32))

    def const(self, name: str, arr: np.ndarray) -> str:
        """A shared constant initializer (created once per distinct value)."""
        arr = np.asarray(arr)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            self._const_cache[key] = self.init(name, arr)
        return self._const_cache[key]

    def node(self, op: str, inputs: Sequence[str], name: str, **attrs) -> str:
        out = self._claim(f"{name}.out")
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=self._claim(name), **attrs))
        return out

    # ---------------------------------------------------------------------------- layers
    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             bias: bool = False) -> str:
        fan_in = cin // groups * k * k
        ins = [x, self.param(f"{name}.weight", (cout, cin // groups, k, k), "normal", 0.0, math.sqrt(2.0 / fan_in))]
        if bias:
            ins.append(self.param(f"{name}.bias", (cout,), "normal", 0.0, 0.05))
        return self.node("Conv", ins, name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, dilations=[1, 1], group=groups)

    def bn(self, x: str, name: str, c: int) -> str:
        ins = [
            x,
            self.param(f"{name}.scale", (c,), "uniform", 0.5, 1.5),
            self.param(f"{name}.bias", (c,), "normal", 0.0, 0.1),
            self.param(f"{name}.mean", (c,), "normal", 0.0, 0.1),
            self.param(f"{name}.var", (c,), "uniform", 0.5, 1.5),
        ]
        return self.node("BatchNormalization", ins, name, epsilon=1e-5)

    def relu(self, x: str, name: str) -> str:
        return self.node("Relu", [x], name)

    def add(self, xs: Sequence[str], name: str) -> str:
        """Sum of tensors as a chain of binary ``Add`` (what PyTorch's ``sum`` / TFLite run)."""
        acc = xs[0]
        for i, x in enumerate(xs[1:]):
            acc = self.node("Add", [acc, x], name if len(xs) == 2 else f"{name}{i}")
        return acc

    def mul0(self, x: str, name: str) -> str:
        return self.node("Mul", [x, self.const("zero", np.array(0.0, np.float32))], name)

    def avgpool(self, x: str, name: str, k: int, stride: int, pad: int) -> str:
        return self.node("AveragePool", [x], name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, count_include_pad=0)

    def head(self, x: str, cin: int, classes: int) -> str:
        x = self.node("GlobalAveragePool", [x], "head.gap")
        x = self.node("Flatten", [x], "head.flatten", axis=1)
        w = self.param("head.fc.weight", (classes, cin), "normal", 0.0, math.sqrt(1.0 / cin))
        b = self.param("head.fc.bias", (classes,), "normal", 0.0, 0.01)
        return self.node("Gemm", [x, w, b],
                         "head.fc", transB=1)

    def model(self, out: str, classes: int, graph_name: str, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(INPUT_SHAPE))],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, classes])],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxsplit-tools-help_latency", doc_string=doc)
        m.ir_version = IR_VERSION
        return m


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# =============================================================================== NAS-Bench-201
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_C, NB201_N, NB201_CLASSES = 16, 5, 10


def parse_nb201(arch: str) -> list[tuple[str, int, int]]:
    """``|op~j|+|op~j|op~j|+|...|`` -> edges ``(op, source node, target node)``, nodes 0..3."""
    parts = arch.strip().strip("|").split("|+|")
    if len(parts) != 3:
        raise ValueError(f"not a NAS-Bench-201 arch string (need 3 cell nodes): {arch!r}")
    edges = []
    for t, part in enumerate(parts, start=1):
        ops = part.strip("|").split("|")
        if len(ops) != t:
            raise ValueError(f"cell node {t} of {arch!r} needs {t} inputs, has {len(ops)}")
        for item in ops:
            op, _, src = item.partition("~")
            if op not in NB201_OPS or not src.isdigit() or int(src) >= t:
                raise ValueError(f"bad edge {item!r} in {arch!r}")
            edges.append((op, int(src), t))
    if sorted((s, t) for _, s, t in edges) != sorted((s, t) for t in (1, 2, 3) for s in range(t)):
        raise ValueError(f"{arch!r} must list every edge j->t (j < t) exactly once")
    return edges


def nb201_live_edges(arch: str) -> tuple[list[tuple[str, int, int]], bool]:
    """Edges that really compute under ``prune`` semantics, and whether the arch is degenerate."""
    edges = parse_nb201(arch)
    zero = {0: False}
    for t in (1, 2, 3):
        zero[t] = not any(op != "none" and not zero[s] for op, s, tt in edges if tt == t)
    live = [e for e in edges if e[0] != "none" and not zero[e[1]]]
    used = {3: True}
    for t in (2, 1):
        used[t] = any(s == t and used[tt] for _, s, tt in live)
    live = [e for e in live if used[e[2]]]
    return live, zero[3]


def nb201_is_degenerate(arch: str) -> bool:
    """True when ``none`` edges disconnect the cell output from the cell input."""
    return nb201_live_edges(arch)[1]


def nb201_macs(arch: str, none_mode: str = "prune") -> int:
    """Hand-computed multiply-accumulates of :func:`nasbench201_onnx` (convs + the linear layer).

    Per cell: a 3x3 conv costs C*C*9*H*W and a 1x1 conv C*C*H*W; C*H*W is 16*32*32 = 32*16*16 =
    64*8*8, so every cell costs the same in all three stages. Fixed part: stem 3*16*9*1024,
    basic blocks (16->32 at 16x16, 32->64 at 8x8: conv_a, conv_b, 1x1 shortcut), fc 64*10.
    """
    edges = parse_nb201(arch) if none_mode == "mul0" else nb201_live_edges(arch)[0]
    if none_mode == "prune" and nb201_is_degenerate(arch):
        edges = []
    n3 = sum(op == "nor_conv_3x3" for op, _, _ in edges)
    n1 = sum(op == "nor_conv_1x1" for op, _, _ in edges)
    per_cell = n3 * 16 * 16 * 9 * 32 * 32 + n1 * 16 * 16 * 32 * 32
    fixed = 3 * 16 * 9 * 32 * 32
    for cin, cout, hw in ((16, 32, 16 * 16), (32, 64, 8 * 8)):
        fixed += cin * cout * 9 * hw + cout * cout * 9 * hw + cin * cout * hw
    fixed += 64 * NB201_CLASSES
    return fixed + 3 * NB201_N * per_cell


def _relu_conv_bn(b: _Builder, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
    x = b.relu(x, f"{name}.relu")
    x = b.conv(x, f"{name}.conv", cin, cout, k, stride)
    return b.bn(x, f"{name}.bn", cout)


def _nb201_cell(b: _Builder, x: str, name: str, c: int, arch: str, none_mode: str) -> str:
    if none_mode == "mul0":
        edges = parse_nb201(arch)
    else:
        edges, degenerate = nb201_live_edges(arch)
        if degenerate:
            return b.mul0(x, f"{name}.zero")
    nodes = {0: x}
    for t in (1, 2, 3):
        terms = []
        for op, s, tt in edges:
            if tt != t:
                continue
            e = f"{name}.n{t}.e{s}"
            src = nodes[s]
            if op == "none":
                terms.append(b.mul0(src, f"{e}.none"))
            elif op == "skip_connect":
                terms.append(src)
            elif op == "avg_pool_3x3":
                terms.append(b.avgpool(src, f"{e}.avgpool3x3", 3, 1, 1))
            elif op == "nor_conv_1x1":
                terms.append(_relu_conv_bn(b, src, f"{e}.conv1x1", c, c, 1))
            elif op == "nor_conv_3x3":
                terms.append(_relu_conv_bn(b, src, f"{e}.conv3x3", c, c, 3))
        if terms:
            nodes[t] = terms[0] if len(terms) == 1 else b.add(terms, f"{name}.n{t}.sum")
    out = nodes[3]
    if out == x:  # the cell is an identity (e.g. only skip_connect 0->3 is live)
        out = b.node("Identity", [x], f"{name}.identity")
    return out


def _nb201_basic_block(b: _Builder, x: str, name: str, cin: int, cout: int) -> str:
    a = _relu_conv_bn(b, x, f"{name}.a", cin, cout, 3, stride=2)
    bb = _relu_conv_bn(b, a, f"{name}.b", cout, cout, 3)
    sc = b.avgpool(x, f"{name}.shortcut.avgpool", 2, 2, 0)
    sc = b.conv(sc, f"{name}.shortcut.conv", cin, cout, 1)
    return b.add([sc, bb], f"{name}.add")


def nasbench201_onnx(arch: str, *, none_mode: str = "prune", seed: int | None = None,
                     weights: bool = True) -> onnx.ModelProto:
    """NAS-Bench-201 TinyNetwork (C=16, N=5, 10 classes) for a cell string, as ONNX.

    ``none_mode``: ``"prune"`` or ``"mul0"`` (module docstring). ``seed`` defaults to a hash of
    the arch string, so the same arch always gets the same weights. ``weights=False`` gives an
    IR-only skeleton (float parameters with dims but no data; see :func:`build_graph`).
    """
    if none_mode not in ("prune", "mul0"):
        raise ValueError(f"none_mode must be 'prune' or 'mul0', not {none_mode!r}")
    parse_nb201(arch)
    b = _Builder(_seed(arch) if seed is None else seed, weights)
    c = NB201_C
    x = b.conv(INPUT_NAME, "stem.conv", 3, c, 3)
    x = b.bn(x, "stem.bn", c)
    cell = 0
    for stage in range(3):
        if stage:
            x = _nb201_basic_block(b, x, f"block{stage}", c, c * 2)
            c *= 2
        for _ in range(NB201_N):
            x = _nb201_cell(b, x, f"cell{cell}", c, arch, none_mode)
            cell += 1
    x = b.bn(x, "head.bn", c)
    x = b.relu(x, "head.relu")
    out = b.head(x, c, NB201_CLASSES)
    doc = f"NAS-Bench-201 arch {arch} (none_mode={none_mode}); rebuilt by onnxsplit tools/help_latency.py"
    return b.model(out, NB201_CLASSES, "nasbench201", doc)


# =============================================================================== FBNet
FBNET_BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
#: (layers, channels, first stride) of the 7 stages; 22 searchable layers in all.
FBNET_STAGES = ((1, 16, 1), (4, 24, 1), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1))
FBNET_STEM, FBNET_HEAD, FBNET_CLASSES = 16, 1504, 100


def fbnet_layers() -> list[tuple[int, int, int]]:
    """``(cin, cout, stride)`` of the 22 searchable layers."""
    out, cin = [], FBNET_STEM
    for n, cout, s in FBNET_STAGES:
        for i in range(n):
            out.append((cin, cout, s if i == 0 else 1))
            cin = cout
    return out


def parse_fbnet(ops: str | Sequence[str]) -> list[str]:
    ops = ops.split() if isinstance(ops, str) else list(ops)
    if len(ops) != len(fbnet_layers()):
        raise ValueError(f"an FBNet arch has {len(fbnet_layers())} layers, got {len(ops)}")
    bad = [o for o in ops if o not in FBNET_BLOCKS]
    if bad:
        raise ValueError(f"unknown FBNet block(s) {bad}; known: {', '.join(FBNET_BLOCKS)}")
    return ops


def _fbnet_block(b: _Builder, x: str, name: str, op: str, cin: int, cout: int, stride: int, hw: int) -> str:
    """One searchable layer; ``hw`` is the input's spatial size."""
    if op == "skip":
        if cin == cout and stride == 1:
            return x
        y = b.conv(x, f"{name}.skip.conv", cin, cout, 1, stride)
        y = b.bn(y, f"{name}.skip.bn", cout)
        return b.relu(y, f"{name}.skip.relu")
    parts = op.split("_")
    k, e, g = int(parts[0][1:]), int(parts[1][1:]), 2 if len(parts) == 3 else 1
    mid = cin * e
    y = b.conv(x, f"{name}.pw1.conv", cin, mid, 1, groups=g)
    y = b.bn(y, f"{name}.pw1.bn", mid)
    y = b.relu(y, f"{name}.pw1.relu")
    if g > 1:  # channel shuffle: (N, g, C/g, H, W) -> transpose(0, 2, 1, 3, 4) -> (N, C, H, W)
        y = b.node("Reshape", [y, b.const(f"shape.{g}x{mid // g}x{hw}", np.array([1, g, mid // g, hw, hw], np.int64))],
                   f"{name}.shuffle.reshape1")
        y = b.node("Transpose", [y], f"{name}.shuffle.transpose", perm=[0, 2, 1, 3, 4])
        y = b.node("Reshape", [y, b.const(f"shape.{mid}x{hw}", np.array([1, mid, hw, hw], np.int64))],
                   f"{name}.shuffle.reshape2")
    y = b.conv(y, f"{name}.dw.conv", mid, mid, k, stride, groups=mid)
    y = b.bn(y, f"{name}.dw.bn", mid)
    y = b.relu(y, f"{name}.dw.relu")
    y = b.conv(y, f"{name}.pw2.conv", mid, cout, 1, groups=g)
    y = b.bn(y, f"{name}.pw2.bn", cout)
    if cin == cout and stride == 1:
        y = b.add([y, x], f"{name}.add")
    return y


def fbnet_onnx(ops: str | Sequence[str], *, seed: int | None = None, weights: bool = True) -> onnx.ModelProto:
    """FBNet-space network (CIFAR-100 head, 100 classes) for a list of 22 block types, as ONNX.

    ``seed`` defaults to a hash of the arch; ``weights=False``: IR-only skeleton (as for NB201).
    """
    ops = parse_fbnet(ops)
    b = _Builder(_seed(" ".join(ops)) if seed is None else seed, weights)
    x = b.conv(INPUT_NAME, "stem.conv", 3, FBNET_STEM, 3)
    x = b.bn(x, "stem.bn", FBNET_STEM)
    x = b.relu(x, "stem.relu")
    hw = INPUT_SHAPE[-1]
    for i, (op, (cin, cout, s)) in enumerate(zip(ops, fbnet_layers())):
        x = _fbnet_block(b, x, f"layer{i}", op, cin, cout, s, hw)
        hw //= s
    cin = FBNET_STAGES[-1][1]
    x = b.conv(x, "header.conv", cin, FBNET_HEAD, 1)
    x = b.bn(x, "header.bn", FBNET_HEAD)
    x = b.relu(x, "header.relu")
    out = b.head(x, FBNET_HEAD, FBNET_CLASSES)
    doc = f"FBNet-space arch {' '.join(ops)}; rebuilt by onnxsplit tools/help_latency.py"
    return b.model(out, FBNET_CLASSES, "fbnet", doc)


def fbnet_macs(ops: str | Sequence[str]) -> int:
    """Hand-computed multiply-accumulates of :func:`fbnet_onnx` (convs + the linear layer)."""
    ops = parse_fbnet(ops)
    hw = 32 * 32
    total = 3 * FBNET_STEM * 9 * hw
    for op, (cin, cout, s) in zip(ops, fbnet_layers()):
        hw_out = hw // (s * s)
        if op == "skip":
            if not (cin == cout and s == 1):
                total += cin * cout * hw_out
        else:
            parts = op.split("_")
            k, e, g = int(parts[0][1:]), int(parts[1][1:]), 2 if len(parts) == 3 else 1
            mid = cin * e
            total += cin * mid // g * hw + mid * k * k * hw_out + mid * cout // g * hw_out
        hw = hw_out
    total += FBNET_STAGES[-1][1] * FBNET_HEAD * hw + FBNET_HEAD * FBNET_CLASSES
    return total


# =============================================================================== dataset
@dataclass(frozen=True)
class Sample:
    model_id: str  # "nb201-00042" / "fbnet-0007" (CSV index)
    space: str  # "nb201" | "fbnet"
    index: int
    arch: str
    latency_ms: float
    split: str  # "train" | "holdout"


def split_of(arch: str, holdout_fraction: float = HOLDOUT_FRACTION) -> str:
    """Deterministic split: the first 8 bytes of SHA-256(arch) as a fraction of 2**64."""
    h = int.from_bytes(hashlib.sha256(arch.encode()).digest()[:8], "big") / 2**64
    return "holdout" if h < holdout_fraction else "train"


def read_space(space: str, device: str, *, directory: Path | None = None,
               holdout_fraction: float = HOLDOUT_FRACTION) -> tuple[list[Sample], int]:
    """Samples of one space for one device column; degenerate NB201 archs are left out.

    Returns ``(samples, number of degenerate archs dropped)``.
    """
    return read_columns(space, [device], directory=directory, holdout_fraction=holdout_fraction)[device]


def read_columns(space: str, devices: Sequence[str], *, directory: Path | None = None,
                 holdout_fraction: float = HOLDOUT_FRACTION) -> dict[str, tuple[list[Sample], int]]:
    """:func:`read_space` for several device columns, reading the file once."""
    d = directory or data_dir()
    if not data_available(d):
        raise FileNotFoundError(f"help-latency data not found in {d} (set {ENV_DIR})")
    fname, key, prefix, width = {
        "nb201": (NB201_CSV, "arch", "nb201", 5),
        "fbnet": (FBNET_CSV, "ops", "fbnet", 4),
    }[space]
    out: dict[str, tuple[list[Sample], int]] = {dev: ([], 0) for dev in devices}
    with open(d / fname, newline="") as f:
        reader = csv.DictReader(f)
        for device in devices:
            if device not in (reader.fieldnames or []):
                cols = [c for c in reader.fieldnames or [] if c not in ("index", key)]
                raise SystemExit(f"no column {device!r} in {d / fname}; columns: {', '.join(cols)}")
        for row in reader:
            arch = row[key]
            degenerate = space == "nb201" and nb201_is_degenerate(arch)
            idx = int(row["index"])
            split = None
            for device in devices:
                samples, dropped = out[device]
                lat = float(row[device])
                if degenerate or not math.isfinite(lat) or lat <= 0:
                    out[device] = (samples, dropped + 1)
                    continue
                split = split or split_of(f"{space}:{arch}", holdout_fraction)
                samples.append(Sample(f"{prefix}-{idx:0{width}d}", space, idx, arch, lat, split))
    return out


def build_model(sample: Sample, none_mode: str = "prune", *, weights: bool = True) -> onnx.ModelProto:
    if sample.space == "nb201":
        return nasbench201_onnx(sample.arch, none_mode=none_mode, weights=weights)
    return fbnet_onnx(sample.arch, weights=weights)


def sample_subset(samples: list[Sample], n: int | None, seed: int = 0) -> list[Sample]:
    """Deterministic random subset of ``n`` samples (all when ``n`` is None or large enough)."""
    if n is None or n >= len(samples):
        return list(samples)
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(samples), size=n, replace=False))
    return [samples[i] for i in idx]


def cmd_dataset(args: argparse.Namespace) -> int:
    cache = Path(args.cache).expanduser().resolve()
    if _inside(cache, REPO_ROOT):
        raise SystemExit(f"--cache {cache} is inside the repository; the data must not be copied into it")
    samples, dropped = read_space(args.space, args.device)
    samples = sample_subset(samples, args.limit, args.seed)
    out_dir = cache / args.space
    out_dir.mkdir(parents=True, exist_ok=True)
    models_dir = out_dir / "models" / args.none_mode if args.space == "nb201" else out_dir / "models"
    t0 = time.perf_counter()
    if args.write_models:
        models_dir.mkdir(parents=True, exist_ok=True)
        for s in samples:
            path = models_dir / f"{s.model_id}.onnx"
            if not path.exists():
                onnx.save_model(build_model(s, args.none_mode), str(path))
    csv_path = out_dir / f"{args.device}.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model_id", "space", "index", "arch", "device", "latency_ms", "split", "model_file"])
        for s in samples:
            mf = str(models_dir / f"{s.model_id}.onnx") if args.write_models else ""
            w.writerow([s.model_id, s.space, s.index, s.arch, args.device, repr(s.latency_ms), s.split, mf])
    n_train = sum(s.split == "train" for s in samples)
    print(f"{args.space} / {args.device}: {len(samples)} archs ({dropped} degenerate/invalid dropped); "
          f"split train {n_train} / holdout {len(samples) - n_train}")
    print(f"wrote {csv_path}" + (f" and {len(samples)} models under {models_dir} "
                                 f"({time.perf_counter() - t0:.1f} s)" if args.write_models else
                                 " (models are rebuilt on demand; --write-models to save them)"))
    return 0


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


# =============================================================================== fitting
def build_graph(sample: Sample, none_mode: str = "prune", *, fast: bool = True):  # noqa: ANN201 - onnxsplit.Graph
    """The IR graph (``onnxsplit.Graph``) of one sample.

    ``fast=True`` (what ``fit`` uses, ~10x faster): the model is built as a skeleton whose
    float parameters carry dims but no data, shapes come from onnx shape inference, and the IR
    is built directly; the IR (nodes, shapes, MACs, FLOPs, parameter bytes) is the same as
    ``onnxsplit.load_graph`` of the full model, which the tests check. ``fast=False``: the
    full model through ``onnxsplit.load_graph``.
    """
    import onnxsplit

    if not fast:
        return onnxsplit.load_graph(build_model(sample, none_mode))
    from onnx import shape_inference

    model = shape_inference.infer_shapes(build_model(sample, none_mode, weights=False), data_prop=True)
    graph = onnxsplit.Graph(model)
    graph.require_static_shapes()
    return graph


_GRAPHS: dict[tuple[str, str, str], object] = {}  # (space, arch, none_mode) -> Graph, shared by `fit --all`


def build_graphs(samples: list[Sample], none_mode: str) -> list:
    """IR graphs of the samples, in order (serial: a process pool is slower, the graphs pickle slowly).

    Graphs are cached per process: ``fit --all`` reuses them across device columns.
    """
    out = []
    for s in samples:
        key = (s.space, s.arch, none_mode if s.space == "nb201" else "-")
        if key not in _GRAPHS:
            _GRAPHS[key] = build_graph(s, none_mode)
        out.append(_GRAPHS[key])
    return out


def cmd_fit(args: argparse.Namespace) -> int:
    if args.all:
        jobs = TARGETS
    else:
        known = next((t for t in TARGETS if t[0] == args.device), None)
        target = args.target or (known[1] if known else None)
        runtime = args.runtime or (known[2] if known else None)
        if target is None or runtime is None:
            raise SystemExit(f"--target and --runtime are required for device column {args.device!r}")
        jobs = [(args.device, target, runtime, args.precision, known[4] if known else args.device)]
    failed = 0
    for device, target, runtime, precision, what in jobs:
        failed += fit_one(device, target, runtime, precision, what, args) is None
    return 1 if failed else 0


def _samples_for(device: str, n_total: int, seed: int) -> tuple[list[Sample], dict]:
    """``n_total`` archs, half from each space (deterministic), and the counts for provenance."""
    per_space = {"nb201": n_total // 2, "fbnet": n_total - n_total // 2}
    chosen: list[Sample] = []
    counts: dict[str, dict[str, int]] = {}
    for space, n in per_space.items():
        rows, dropped = read_space(space, device)
        sub = sample_subset(rows, n, seed)
        chosen += sub
        counts[space] = {"available": len(rows), "dropped_degenerate_or_invalid": dropped, "sampled": len(sub),
                         "train": sum(s.split == "train" for s in sub),
                         "holdout": sum(s.split == "holdout" for s in sub)}
    return chosen, counts


def fit_one(device: str, target: str, runtime: str, precision: str, what: str,
            args: argparse.Namespace) -> dict | None:
    """Fit one (device column -> target/runtime/precision) model; None when it cannot be saved."""
    from onnxsplit.cost import fit as F
    from onnxsplit.cost.model import CostModelError
    from onnxsplit.targets import RUNTIMES

    none_mode = args.none_mode or RUNTIME_NONE_MODE.get(runtime, "prune")
    rules = _rules(args.rules or runtime)
    t_start = time.perf_counter()
    chosen, counts = _samples_for(device, args.samples, args.seed)
    t0 = time.perf_counter()
    graphs = build_graphs(chosen, none_mode)
    t_build = time.perf_counter() - t0
    train = [i for i, s in enumerate(chosen) if s.split == "train"]
    hold = [i for i, s in enumerate(chosen) if s.split == "holdout"]
    provenance = {
        "source": (f"HELP repository (https://github.com/HayeonLee/HELP) whole-model latencies, column '{device}' "
                   f"of {NB201_CSV} and {FBNET_CSV}: {what}"),
        "source_path": str(data_dir()),
        "license": "MIT (HELP repository, (c) 2024 HayeonLee); NAS-Bench-201 raspi4 numbers from HW-NAS-Bench",
        "citation": SOURCE["citation"],
        "source_files": SOURCE["files"],
        "device_column": device,
        "device": what,
        "columns_used": {"nb201": ["index", "arch", device], "fbnet": ["index", "ops", device]},
        "models": ("NAS-Bench-201 TinyNetwork (C=16, N=5, 10 classes) and FBNet-space networks (100 classes), "
                   "1x3x32x32 fp32, rebuilt as ONNX by tools/help_latency.py from the data README"),
        "nb201_none_mode": none_mode,
        "fusion_rules": rules if isinstance(rules, str) else rules.name,
        "sample_counts": counts,
        "n_train_models": len(train),
        "n_holdout_models": len(hold),
        "split": f"holdout when the first 8 bytes of sha256('<space>:<arch>') / 2**64 < {HOLDOUT_FRACTION}",
        "sample_seed": args.seed,
        "date": _dt.date.today().isoformat(),
        "tool": "python tools/help_latency.py " + " ".join(getattr(args, "argv", ["fit"])),
    }
    # the artifact validator only knows the runtimes of onnxsplit.targets.RUNTIMES
    fit_runtime = runtime if runtime in RUNTIMES else "ort-cpu"
    t0 = time.perf_counter()
    model = F.fit_from_whole_models(
        [graphs[i] for i in train], [chosen[i].latency_ms for i in train],
        target=target, runtime=fit_runtime, precision=precision, provenance=provenance,
        holdout_fraction=args.inner_holdout, seed=args.seed, rules=rules,
        names=[chosen[i].model_id for i in train],
        kernel_configs=not getattr(args, "no_kernel_configs", False),
        config_min_count=getattr(args, "config_min_count", 5),
        cv_folds=getattr(args, "cv_folds", 0),
        version=getattr(args, "version", "2"),
        robust=getattr(args, "robust", "none"),
    )
    t_fit = time.perf_counter() - t0
    hold_samples = {i: F.sample_from_graph(graphs[i], chosen[i].latency_ms, name=chosen[i].model_id, rules=rules)
                    for i in hold}
    table = {"all": F.accuracy_metrics(*_pred_true(F, model, [hold_samples[i] for i in hold]))}
    for space in ("nb201", "fbnet"):
        ss = [hold_samples[i] for i in hold if chosen[i].space == space]
        table[space] = F.accuracy_metrics(*_pred_true(F, model, ss))
    inner = model.accuracy.get("holdout")
    model.accuracy = {
        "holdout": {**table["all"], "level": "whole model",
                    "split": "sha256 of the arch string (tools/help_latency.py), NB201 + FBNet"},
        "holdout_nb201": {**table["nb201"], "level": "whole model"},
        "holdout_fbnet": {**table["fbnet"], "level": "whole model"},
        "train_models": model.accuracy.get("train_models"),
    }
    if inner and inner.get("n"):
        model.accuracy["holdout_inner_random"] = inner
    wall = time.perf_counter() - t_start
    print(f"\n{target} <- {device} ({runtime}, {precision}; NB201 none_mode={none_mode}, fusion rules={provenance['fusion_rules']}): "
          f"train {len(train)}, holdout {len(hold)}; graphs {t_build:.1f} s, fit {t_fit:.1f} s, total {wall:.1f} s")
    print(f"  {'holdout':<8}{'n':>6}{'MAPE':>9}{'medAPE':>9}{'Spearman':>10}")
    for k, m in [*table.items(), ("(train)", model.accuracy["train_models"])]:
        print(f"  {k:<8}{m['n']:>6}{_fmt(m['mape_pct'], '.1f', '%'):>9}{_fmt(m['median_ape_pct'], '.1f', '%'):>9}"
              f"{_fmt(m['spearman'], '.3f'):>10}")
    result = {"target": target, "runtime": runtime, "table": table, "wall_s": wall, "path": None}
    model.runtime = runtime
    out = Path(args.out_dir) / target / f"{runtime}-{precision}.json"
    if args.dry_run:
        print("  (dry run: nothing written)")
        return result
    try:
        model.save(out)
    except CostModelError as exc:
        print(f"  NOT written: {exc}", file=sys.stderr)
        return None
    print(f"  wrote {out}")
    result["path"] = str(out)
    return result


# =============================================================================== transfer to unmeasured GPUs
#: the measured GPUs of the HELP data (column prefix -> data-sheet numbers). FP32 peak = CUDA cores x 2 x
#: boost clock; bandwidth from the memory interface. Sources: NVIDIA product pages / whitepapers (GTX 1080
#: Ti: 3584 cores, 1582 MHz, 484 GB/s; RTX 2080 Ti reference: 4352 cores, 1545 MHz, 616 GB/s; TITAN RTX:
#: 16.3 TFLOPS, 672 GB/s (targets/titan-rtx.toml); TITAN X (Pascal, 2016): 3584 cores, 1531 MHz, 480 GB/s;
#: TITAN Xp: 3840 cores, 1582 MHz, 547.7 GB/s). HELP calls the fourth one "titanx"; it is taken to be the
#: Pascal TITAN X: its batch-256 NB201 latencies are ~1.15x the TITAN Xp's, as the data sheets predict
#: (the Maxwell GTX TITAN X, 6.6 TFLOPS / 336 GB/s, would be ~1.7x).
HELP_GPUS: dict[str, tuple[str, float, float]] = {
    "1080ti": ("GeForce GTX 1080 Ti", 11340.0, 484.0),
    "2080ti": ("GeForce RTX 2080 Ti", 13450.0, 616.0),
    "titan_rtx": ("TITAN RTX", 16300.0, 672.0),
    "titanx": ("TITAN X (Pascal)", 10970.0, 480.0),
    "titanxp": ("TITAN Xp", 12150.0, 547.7),
}
#: batch sizes measured per space (columns <gpu>_<batch>)
HELP_GPU_BATCHES = {"nb201": (1, 32, 256), "fbnet": (1, 32, 64)}
#: unmeasured GPU targets that get a transferred (calibrated: false) cost model, and for which runtimes
TRANSFER_TARGETS = ("jetson-orin-nano", "jetson-agx-orin", "server-gpu-a100", "server-gpu-h100")
TRANSFER_RUNTIMES = ("ort-trt", "ort-cuda")


def transfer_dataset(n_total: int, seed: int = 0):  # noqa: ANN201 - (samples, kernels by arch, counts)
    """GPU measurements of ``n_total`` archs (half per space) at every measured batch size.

    Returns ``(rows, kernels, counts)``: ``rows`` are ``(split, TransferSample)``; ``kernels`` maps a
    model id to its kernels (for the roofline comparison). Features come from the graph rebuilt with
    PyTorch-eager fusion rules and ``mul0`` none-edges, as the titan-rtx model is fitted.
    """
    from onnxsplit.cost import fit as F
    from onnxsplit.cost.kernels import group_kernels
    from onnxsplit.cost.transfer import TransferSample

    rules = _rules("pytorch-eager")
    rows, kernels, counts = [], {}, {}
    for space, batches in HELP_GPU_BATCHES.items():
        read = read_columns(space, [f"{gpu}_{b}" for gpu in HELP_GPUS for b in batches])
        cols = {(gpu, b): {s.arch: s.latency_ms for s in read[f"{gpu}_{b}"][0]} for gpu in HELP_GPUS for b in batches}
        base = read["titan_rtx_1"][0]
        sub = sample_subset(base, n_total // 2 if space == "nb201" else n_total - n_total // 2, seed)
        counts[space] = {"sampled": len(sub), "train": sum(s.split == "train" for s in sub),
                         "holdout": sum(s.split == "holdout" for s in sub)}
        for s, g in zip(sub, build_graphs(sub, "mul0")):
            ff = F.sample_from_graph(g, 1.0, rules=rules).family_features
            kernels[s.model_id] = [k for k in group_kernels(g, rules) if k.family != "constant"]
            for (gpu, b), col in cols.items():
                lat = col.get(s.arch)
                if lat is not None:
                    rows.append((s.split, TransferSample(s.model_id, gpu, b, ff, lat)))
    return rows, kernels, counts


def _roofline_gpu_ms(kernels: list, spec, batch: int, roof) -> float:  # noqa: ANN001
    """The uncalibrated roofline (efficiencies and overheads of ``roof``, a target) for a GPU's data sheet."""
    t = roof.inference_overhead_us / 1e3
    for k in kernels:
        compute = k.flops * batch / (spec.peak_gflops * 1e9 * roof.compute_efficiency)
        memory = ((k.in_nbytes + k.out_nbytes) * batch + k.param_nbytes) / (spec.bandwidth_gbps * 1e9 * roof.bandwidth_efficiency)
        t += max(compute, memory) * 1e3 + roof.kernel_overhead_us / 1e3
    return t


def cmd_transfer(args: argparse.Namespace) -> int:
    from onnxsplit.cost.fit import accuracy_metrics
    from onnxsplit.cost.model import CostModelError
    from onnxsplit.cost.transfer import DeviceSpec, fit_transfer, leave_one_device_out, transferred_cost_model
    from onnxsplit.targets import PRECISIONS, load_target

    from onnxsplit.targets import TargetError

    try:  # bad --targets: one line, before minutes of work
        targets = [load_target(name) for name in args.targets]
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    no_gpu = [t.name for t in targets if not set(TRANSFER_RUNTIMES) & set(t.runtimes)]
    if no_gpu:
        print(f"error: target(s) {', '.join(no_gpu)} offer none of the runtimes {', '.join(TRANSFER_RUNTIMES)}; "
              "the transfer is for GPU targets", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    specs = {g: DeviceSpec(g, peak, bw) for g, (_, peak, bw) in HELP_GPUS.items()}
    rows, kernels, counts = transfer_dataset(args.samples, args.seed)
    train = [s for split, s in rows if split == "train"]
    hold = [s for split, s in rows if split == "holdout"]
    print(f"{len(train)} train / {len(hold)} holdout measurements ({len(HELP_GPUS)} GPUs x batch sizes; "
          f"{counts}); data {time.perf_counter() - t0:.1f} s")
    logo = leave_one_device_out(train, specs, evaluate=hold)
    roof = load_target("titan-rtx")  # the roofline assumptions every GPU target file uses
    base = {}
    for d in HELP_GPUS:
        rr = [s for s in hold if s.device == d]
        base[d] = accuracy_metrics([_roofline_gpu_ms(kernels[s.name], specs[d], s.batch, roof) for s in rr],
                                   [s.latency_ms for s in rr])
    print("\nleave-one-GPU-out (fitted on the other GPUs' train archs; the held-out GPU enters only through its "
          "data sheet) vs the roofline of the target files, on holdout archs:")
    batches = sorted({b for bs in HELP_GPU_BATCHES.values() for b in bs})
    head = f"  {'GPU':<22}{'n':>6}{'within10':>10}{'MAPE':>8}" + "".join(f"{'b=' + str(b):>10}" for b in batches) + \
        f"{'roofline w10/MAPE':>20}"
    print(head)
    for d, m in logo.items():
        bb = "".join(f"{_fmt(m['by_batch'].get(str(b), {}).get('mape_pct'), '.1f', '%'):>10}" for b in batches)
        print(f"  {HELP_GPUS[d][0]:<22}{m['n']:>6}{_fmt(m['within_10_pct'], '.1f', '%'):>10}"
              f"{_fmt(m['mape_pct'], '.1f', '%'):>8}{bb}"
              f"{_fmt(base[d]['within_10_pct'], '.1f', '%'):>11}/{_fmt(base[d]['mape_pct'], '.1f', '%')}")
    law = fit_transfer(train, specs)
    pooled = {"n": sum(m["n"] for m in logo.values())}
    for key in ("within_10_pct", "mape_pct", "median_ape_pct"):
        pooled[key] = round(sum(m[key] * m["n"] for m in logo.values()) / pooled["n"], 3)
    pooled["spearman"] = None
    print(f"  {'pooled':<22}{pooled['n']:>6}{pooled['within_10_pct']:>9.1f}%{pooled['mape_pct']:>7.1f}%")
    print("\nshared inverse efficiencies (1 / achieved fraction of peak) and mean fixed cost per kernel:")
    fixed = law.mean_fixed_ms()
    for f, k in law.efficiency_inverse.items():
        print(f"  {f:<15} compute {k['compute']:9.2f}  activations {k['activation_bytes']:8.2f}  "
              f"weights {k['param_bytes']:8.2f}  fixed {fixed[f] * 1e3:7.1f} us")
    provenance = {
        "source": ("transferred: HELP repository (https://github.com/HayeonLee/HELP) whole-model latencies of 5 GPUs "
                   f"(columns <gpu>_<batch>, gpu in {', '.join(HELP_GPUS)}; NB201 batch 1/32/256, FBNet 1/32/64) "
                   "-> this target's data sheet"),
        "source_path": str(data_dir()),
        "license": "MIT (HELP repository, (c) 2024 HayeonLee)",
        "citation": SOURCE["citation"],
        "source_files": SOURCE["files"],
        "measured_gpus": {g: {"name": n, "peak_gflops_fp32": p, "mem_bandwidth_gbps": b}
                          for g, (n, p, b) in HELP_GPUS.items()},
        "models": "NAS-Bench-201 and FBNet-space networks, 32x32 inputs, rebuilt by tools/help_latency.py "
                  "(PyTorch-eager kernels, mul0 none-edges)",
        "sample_counts": counts,
        "caveats": ("PyTorch-eager measurements on x86 desktop hosts: per-kernel fixed costs are those hosts' launch "
                    "costs (a Jetson's CPU is slower; TensorRT launches fewer, fused kernels); efficiencies of "
                    "small 32x32 CNNs; not validated on this target. Profile a real board (onnxsplit profile) to "
                    "calibrate."),
        "tool": "python tools/help_latency.py " + " ".join(getattr(args, "argv", ["transfer"])),
    }
    accuracy = {"holdout": {**pooled, "level": "whole model, leave-one-GPU-out over the 5 measured GPUs "
                            "(each predicted from its data sheet by a law fitted on the others)"},
                "leave_one_gpu_out": {d: {k: v for k, v in m.items()} for d, m in logo.items()},
                "roofline_same_rows": base}
    if args.dry_run:
        print("\n(dry run: nothing written)")
        return 0
    written = 0
    for target in targets:
        for runtime in TRANSFER_RUNTIMES:
            if runtime not in target.runtimes:
                continue
            for precision in PRECISIONS:
                model = transferred_cost_model(law, target, runtime, precision, provenance=provenance,
                                               accuracy=accuracy, version=args.version)
                out = Path(args.out_dir) / target.name / f"{runtime}-{precision}.json"
                try:
                    model.save(out)
                except CostModelError as exc:
                    print(f"  NOT written: {exc}", file=sys.stderr)
                    return 1
                written += 1
    print(f"\nwrote {written} transferred cost models (calibrated: false) under {args.out_dir} for "
          f"{', '.join(args.targets)}; {time.perf_counter() - t0:.1f} s")
    return 0


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def _rules(name: str):  # noqa: ANN202 - str or onnxsplit.cost.kernels.FusionRules
    """Fusion rules by name; ``pytorch-eager``: nothing fused (PyTorch eager runs Conv, BN, ReLU,
    Add as separate kernels; Linear is one addmm). Other names go to ``onnxsplit.cost.kernels``."""
    if name != "pytorch-eager":
        return name
    from onnxsplit.cost.kernels import FusionRules

    return FusionRules("pytorch-eager", conv_bn=False, conv_const_binary=False, conv_residual_add=False,
                       conv_activations=frozenset(), gemm_bias=True, gemm_scale=False,
                       gemm_activations=frozenset(), transpose_into_matmul=False, qdq=False,
                       gelu_pattern=False, silu_pattern=False)


def _pred_true(F, model, samples) -> tuple[list[float], list[float]]:  # noqa: ANN001
    return ([F.predict_model_sample(model, s) for s in samples],
            [s.latency_ms for s in samples])


# =============================================================================== CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="help_latency", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dataset", help="write a CSV (and optionally the ONNX models) for one space/device")
    d.add_argument("--space", choices=["nb201", "fbnet"], required=True)
    d.add_argument("--device", default="raspi4", help="latency column (see the data README)")
    d.add_argument("--limit", type=int, default=None, help="random subset of N archs (deterministic)")
    d.add_argument("--cache", default=str(DEFAULT_CACHE), help="output folder, outside the repository")
    d.add_argument("--write-models", action="store_true", help="also save the ONNX models")
    d.add_argument("--none-mode", choices=["prune", "mul0"], default="prune")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_dataset)
    f = sub.add_parser("fit", help="fit a cost model on NB201+FBNet samples of one device column")
    f.add_argument("--device", default="raspi4")
    f.add_argument("--target", default=None)
    f.add_argument("--runtime", default=None)
    f.add_argument("--precision", default="fp32")
    f.add_argument("--samples", type=int, default=3000, help="total archs sampled (half from each space)")
    f.add_argument("--none-mode", choices=["prune", "mul0"], default=None,
                   help="NB201 none-edge representation (default: by runtime)")
    f.add_argument("--inner-holdout", type=float, default=0.0,
                   help="holdout_fraction passed to fit_from_whole_models (the tool holds out its own split)")
    f.add_argument("--rules", default=None, help="fusion rules name (default: the runtime's)")
    f.add_argument("--no-kernel-configs", action="store_true",
                   help="family laws only (no per-kernel-configuration costs)")
    f.add_argument("--config-min-count", type=int, default=5,
                   help="a kernel configuration gets its own cost when it occurs in at least N training models")
    f.add_argument("--robust", choices=["none", "slow", "both"], default="none",
                   help="robust refit damping rows the law misses by more than 5 %% (onnxsplit cost-model fit --robust)")
    f.add_argument("--cv-folds", type=int, default=0,
                   help="k-fold cross-validation inside the train split, stored as accuracy.cross_validation (0: off)")
    f.add_argument("--version", default="2", help="artifact version string (default 2: family laws + kernel configs)")
    f.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out-dir", default=str(REPO_ROOT / "cost_models"))
    f.add_argument("--all", action="store_true", help="fit every target of TARGETS")
    f.set_defaults(func=cmd_fit)
    t = sub.add_parser("transfer", help="fit efficiencies on the 5 measured GPUs and write uncalibrated cost "
                                         "models for unmeasured GPU targets (Jetson, A100, H100)")
    t.add_argument("--samples", type=int, default=1000, help="archs sampled (half from each space)")
    t.add_argument("--targets", nargs="+", default=list(TRANSFER_TARGETS), help="targets to write models for")
    t.add_argument("--version", default="1", help="artifact version string")
    t.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out-dir", default=str(REPO_ROOT / "cost_models"))
    t.set_defaults(func=cmd_transfer)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
