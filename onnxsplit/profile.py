"""The profiler: time sampled kernels and whole models with onnxruntime or TVM, write a CSV.

``onnxsplit profile --target host-x86 -o data.csv`` measures *this* machine with onnxruntime;
``onnxsplit profile --target T --runtime tvm [--rpc HOST:PORT --device-key KEY] -o data.csv`` times
TVM builds of the same samples, here or on a board behind a TVM RPC tracker (see *TVM runtime*).
The samples:

1. **kernels**: a seeded random sample of realistic single-kernel graphs (Conv 3x3/1x1/depthwise
   with BN/activation fusions, ConvTranspose, linear layers, batched MatMul, attention blocks,
   pooling, elementwise ops and the Gelu/SiLU patterns, normalizations, Softmax, reductions,
   data movement, Resize), see :func:`sample_kernel_specs`;
2. **models**: whole models (:mod:`onnxsplit.zoo` models and size variants of them, random DAGs,
   and ResNet/MobileNetV2/VGG-style CNNs at realistic resolutions), see :func:`model_specs`;
3. an **overhead** row: a one-Identity model (the fixed cost of ``session.run``; TVM: one ``Neg`` of
   a 1x1 tensor, as TVM cannot link a library without compute for another ISA).

Every measured graph is described by a JSON ``spec`` from which :func:`build_spec` rebuilds it
bit-for-bit, so the fitter recomputes kernel features with the current code. ``int8`` rows time the
same graph after ``onnxruntime.quantization.quantize_static`` (QDQ format, uint8 activations /
int8 weights, per-channel weights, calibrated on random inputs); their features are those of the
fp32 graph.

Timing protocol (per graph): an ``InferenceSession`` with onnxruntime's **default** graph
optimizations, ``intra_op_num_threads`` pinned to ``--threads`` (default: the physical cores, which
is onnxruntime's own default), ``inter_op_num_threads = 1``, sequential execution; random inputs
(fixed seed); ``rounds`` rounds, spread over the whole run (round-robin over all samples; one
live session at a time, created for the round), each of ``warmup`` untimed runs then ``reps``
timed ``session.run`` calls (fewer when one run
exceeds the per-round time budget, never fewer than 3); the measurement is the **median** of a
round, the lowest over the rounds (a round hit by a burst of background load is discarded);
samples whose two lowest round medians differ by more than 10% get up to 6 extra rounds.
Measure on an otherwise idle machine: persistent background load inflates every round.

TVM runtime (``--runtime tvm``; ``--rpc`` implies it): each sample (the int8 ones after the same QDQ
quantization) is imported with ``tvm.relax.frontend.onnx.from_onnx`` and compiled for the target's
``[tvm] target`` exactly as ``onnxsplit compile`` builds a half without a tuning database
(:func:`onnxsplit.compile.tvm_backend.compile_half`: default Relax pipeline, no MetaSchedule tuning,
library exported with the host ``g++``, ``aarch64-linux-gnu-g++`` for aarch64 and Jetson targets, CUDA
kernels as source compiled on the device when loaded). Untuned TVM CPU code is often much slower than
onnxruntime: the CSV measures what ``compile`` ships. Where it runs:

* without ``--rpc``: in this process, only when the target's code runs here (an llvm target of this
  machine's architecture whose CPU features this CPU has, e.g. ``host-x86``; a CUDA target with a GPU
  here); otherwise a one-line error asks for ``--rpc``. TVM's thread pool gets ``--threads`` threads
  (default: the physical cores), the number it really uses is recorded;
* ``--rpc HOST:PORT --device-key KEY``: through a TVM RPC tracker (on the board:
  ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``; only the TVM runtime is needed
  there). The tracker and the key are checked up front with bounded timeouts
  (:func:`onnxsplit.compile.tune.check_rpc`), one session is requested for the whole run, every
  library is uploaded and loaded on the board, device ``cpu`` or ``cuda`` per the target's kind.
  ``--threads`` can only lower the server's pool (start the server with ``TVM_NUM_THREADS=N``).

Timing uses the same rounds as onnxruntime (lowest per-round median, extra rounds for unstable
samples), with ``time_evaluator`` on the device's clock (``invoke_stateful`` after ``set_input``):
per round ``warmup`` untimed runs, a one-run probe, then up to ``reps`` measurements, each the mean
of ``number`` runs (``number`` chosen so that one measurement lasts >= 0.2 ms; at most 100). A sample
TVM cannot import, compile or run is skipped with its reason (a ``skipped ...`` line on stderr and
in :attr:`ProfileResult.skipped`), never written with a made-up latency. Rows have ``runtime = tvm``,
which ``onnxsplit cost-model fit data.csv --target T`` fits as ``cost_models/T/tvm-<precision>.json``.

CSV columns (:data:`CSV_COLUMNS`; units in the names):

==================  =============================================================================
``kind``            ``kernel`` | ``model`` | ``overhead``
``name``            sample name (unique per precision)
``spec``            JSON spec to rebuild the fp32 graph (:func:`build_spec`)
``family``          op family of the sample's main kernel (kernel rows), else empty
``n_kernels``       number of kernels of the graph (:func:`onnxsplit.cost.group_kernels`)
``target``          target name the measurement is for
``runtime``         ``ort-cpu`` | ``ort-cuda`` | ``ort-trt`` | ``tvm``
``precision``       ``fp32`` | ``int8``
``split``           empty (fit decides) or ``validate`` (external model: accuracy only, never fitted)
``threads``         intra-op threads (``tvm``: threads of TVM's pool on the measuring device)
``warmup``          untimed runs
``reps``            timed runs (all rounds; ``tvm``: measurements, each the mean of ``number`` runs)
``rounds``          timing rounds done for this sample (see below)
``median_ms``       the lowest per-round median latency, ms
``min_ms``          fastest run, ms
``p90_ms``          90th percentile, ms
``mean_ms``         mean, ms
``mflops``          MFLOP of the graph (sum over kernels)
``in_mb``           graph input bytes / 1e6 (kernel rows: the kernel's ``in_mb`` feature)
``out_mb``          output bytes / 1e6 (kernel rows: the kernel's ``out_mb``)
``param_mb``        parameter bytes / 1e6
``onnxruntime``     onnxruntime version (empty for ``tvm`` rows)
``host``            ``platform.machine()`` and processor model of the measuring machine; through RPC
                    ``rpc:KEY@HOST:PORT`` (the tracker and device key)
``loadavg_1m``      1-minute load average at the end of the run (background load inflates times);
                    empty when measured through RPC
``priority``        ``high`` when the timing ran with raised CPU priority (``--high-priority``)
``tvm``             apache-tvm version that compiled the sample (``tvm`` rows), else empty
``tvm_target``      the TVM target dict (JSON) the sample was compiled for (``tvm`` rows), else empty
``qdq_scheme``      ``int8`` rows: how :func:`quantize_qdq` quantized the graph (:data:`QDQ_SCHEME`;
                    empty in files written before the column existed); ``fp32`` rows: empty
==================  =============================================================================

On a remote board: install onnxsplit there (``pip install onnxsplit``), run the same command with
the board's target (``onnxsplit profile --target rpi4 -o rpi4.csv``; the command refuses to label
measurements of an x86 machine as an aarch64 target), copy the CSV back and fit anywhere with
``onnxsplit cost-model fit rpi4.csv --target rpi4``. For the TVM runtime the board needs only TVM's
RPC server: ``onnxsplit profile --target rpi4 --runtime tvm --rpc TRACKER:9190 --device-key rpi4
-o rpi4-tvm.csv`` runs here, compiles here and times there.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import OnnxSplitError

__all__ = [
    "CSV_COLUMNS",
    "HighPriority",
    "ProfileError",
    "ProfileResult",
    "build_spec",
    "graph_of_spec",
    "default_threads",
    "feeds_for",
    "measure_model",
    "model_specs",
    "quantize_qdq",
    "read_profile_csv",
    "run_profile",
    "sample_kernel_specs",
]


class ProfileError(OnnxSplitError):
    """Profiling cannot run here (wrong machine, missing provider, bad spec, bad CSV)."""


CSV_COLUMNS: tuple[str, ...] = (
    "kind", "name", "spec", "family", "n_kernels", "target", "runtime", "precision", "split",
    "threads", "warmup", "reps", "rounds", "median_ms", "min_ms", "p90_ms", "mean_ms",
    "mflops", "in_mb", "out_mb", "param_mb", "onnxruntime", "host", "loadavg_1m", "priority", "tvm", "tvm_target",
    "qdq_scheme",
)

_PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_OPSET = 17
FLOAT = TensorProto.FLOAT


# ============================================================================ graph construction
class _B:
    """Minimal deterministic ONNX graph builder for the profiler's specs."""

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def input(self, shape: Sequence[int], elem: int = FLOAT, name: str | None = None) -> str:
        name = name or self._id("in")
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def const(self, arr: Any, name: str | None = None) -> str:
        arr = np.asarray(arr)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        name = name or self._id("c")
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, ins: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        outs = [self._id(f"{op.lower()}_out") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(ins), outs, name=self._id(op), **attrs))
        return outs[0] if n_out == 1 else outs

    # layers -------------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1,
             bias: bool = True, pad: int | None = None) -> str:
        fan_in = max(1, (cin // group) * k * k)
        w = self.const(self.rng.standard_normal((cout, cin // group, k, k)) * math.sqrt(2.0 / fan_in))
        ins = [x, w] + ([self.const(self.rng.standard_normal(cout) * 0.05)] if bias else [])
        p = (k - 1) // 2 if pad is None else pad
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4, group=group)

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        return self.node("BatchNormalization", [x, self.const(r.uniform(0.5, 1.0, c)), self.const(r.standard_normal(c) * 0.05),
                                                self.const(r.standard_normal(c) * 0.05), self.const(r.uniform(0.8, 1.2, c))],
                         epsilon=1e-5)

    def act(self, x: str, kind: str) -> str:
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "clip":
            return self.node("Clip", [x, self.const(np.float32(0.0)), self.const(np.float32(6.0))])
        if kind == "sigmoid":
            return self.node("Sigmoid", [x])
        if kind == "tanh":
            return self.node("Tanh", [x])
        if kind == "hswish":
            return self.node("HardSwish", [x])
        if kind == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        if kind == "gelu":
            t = self.node("Div", [x, self.const(np.float32(math.sqrt(2.0)))])
            t = self.node("Add", [self.node("Erf", [t]), self.const(np.float32(1.0))])
            return self.node("Mul", [self.node("Mul", [x, t]), self.const(np.float32(0.5))])
        if kind == "leaky":
            return self.node("LeakyRelu", [x], alpha=0.1)
        raise ProfileError(f"unknown activation '{kind}'")

    def linear(self, x: str, fin: int, fout: int, bias: bool = True) -> str:
        w = self.const(self.rng.standard_normal((fin, fout)) * math.sqrt(1.0 / fin))
        y = self.node("MatMul", [x, w])
        return self.node("Add", [y, self.const(self.rng.standard_normal(fout) * 0.05)]) if bias else y

    def layernorm(self, x: str, d: int) -> str:
        return self.node("LayerNormalization", [x, self.const(np.ones(d)), self.const(np.zeros(d))], axis=-1,
                         epsilon=1e-5)

    def model(self) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, FLOAT, None) for o in self.outputs]
        g = helper.make_graph(self.nodes, self.name, self.inputs, outs, initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=8,
                              producer_name="onnxsplit.profile")
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        # give graph outputs their inferred types/shapes
        vi = {v.name: v for v in m.graph.value_info}
        for o in m.graph.output:
            if o.name in vi:
                o.CopyFrom(vi[o.name])
        return m


def _kernel_model(spec: dict[str, Any]) -> onnx.ModelProto:
    op = spec["op"]
    b = _B(f"kernel_{op}", seed=int(spec.get("seed", 0)))
    if op == "conv":
        x = b.input((1, spec["cin"], spec["hw"], spec["hw"]))
        y = b.conv(x, spec["cin"], spec["cout"], spec["k"], spec.get("stride", 1), spec.get("group", 1),
                   bias=spec.get("bias", True))
        for p in spec.get("post", []):
            if p == "bn":
                y = b.bn(y, spec["cout"])
            elif p == "add_const":
                y = b.node("Add", [y, b.const(b.rng.standard_normal((1, spec["cout"], 1, 1)) * 0.05)])
            else:
                y = b.act(y, p)
        b.outputs.append(y)
    elif op == "conv_transpose":
        x = b.input((1, spec["cin"], spec["hw"], spec["hw"]))
        k, s = spec["k"], spec["stride"]
        w = b.const(b.rng.standard_normal((spec["cin"], spec["cout"], k, k)) * math.sqrt(1.0 / spec["cin"]))
        b.outputs.append(b.node("ConvTranspose", [x, w, b.const(np.zeros(spec["cout"]))], kernel_shape=[k, k],
                                strides=[s, s]))
    elif op == "linear":
        shape = (spec["m"], spec["k"]) if spec.get("rank", 2) == 2 else (1, spec["m"], spec["k"])
        x = b.input(shape)
        if spec.get("gemm"):
            w = b.const(b.rng.standard_normal((spec["n"], spec["k"])) * math.sqrt(1.0 / spec["k"]))
            y = b.node("Gemm", [x, w, b.const(np.zeros(spec["n"]))], transB=1)
        else:
            y = b.linear(x, spec["k"], spec["n"], bias=spec.get("bias", True))
        if spec.get("act"):
            y = b.act(y, spec["act"])
        b.outputs.append(y)
    elif op == "matmul":
        h, m, k, n = spec["heads"], spec["m"], spec["k"], spec["n"]
        a = b.input((1, h, m, k))
        c = b.input((1, h, k, n))
        y = b.node("MatMul", [a, c])
        if spec.get("scale"):
            y = b.node("Div", [y, b.const(np.float32(math.sqrt(k)))])
        b.outputs.append(y)
    elif op == "attention":
        h, s, d = spec["heads"], spec["seq"], spec["dh"]
        q, kt, v = b.input((1, h, s, d)), b.input((1, h, d, s)), b.input((1, h, s, d))
        sc = b.node("Div", [b.node("MatMul", [q, kt]), b.const(np.float32(math.sqrt(d)))])
        b.outputs.append(b.node("MatMul", [b.node("Softmax", [sc], axis=-1), v]))
    elif op == "pool":
        x = b.input((1, spec["c"], spec["hw"], spec["hw"]))
        kind = spec["kind"]
        if kind.startswith("Global"):
            b.outputs.append(b.node(kind, [x]))
        else:
            k, s = spec["k"], spec["stride"]
            p = spec.get("pad", 0)
            b.outputs.append(b.node(kind, [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4))
    elif op == "eltwise":
        shape = tuple(spec["shape"])
        x = b.input(shape)
        kind = spec["kind"]
        if kind in ("Add", "Mul", "Sub", "Div"):
            other = b.input(shape) if spec.get("binary", True) else b.const(b.rng.uniform(0.5, 1.5, (1, shape[1]) + (1,) * (len(shape) - 2)))
            y = b.node(kind, [x, other])
        elif kind in ("relu", "clip", "sigmoid", "tanh", "hswish", "silu", "gelu", "leaky"):
            y = b.act(x, kind)
        else:
            y = b.node(kind, [x])
        b.outputs.append(y)
    elif op == "norm":
        kind = spec["kind"]
        if kind == "BatchNormalization":
            x = b.input((1, spec["c"], spec["hw"], spec["hw"]))
            y = b.bn(x, spec["c"])
            if spec.get("relu"):
                y = b.act(y, "relu")
        elif kind == "LayerNormalization":
            x = b.input((1, spec["seq"], spec["d"]))
            y = b.layernorm(x, spec["d"])
        else:  # InstanceNormalization
            x = b.input((1, spec["c"], spec["hw"], spec["hw"]))
            y = b.node("InstanceNormalization", [x, b.const(np.ones(spec["c"])), b.const(np.zeros(spec["c"]))])
        b.outputs.append(y)
    elif op == "softmax":
        x = b.input(tuple(spec["shape"]))
        b.outputs.append(b.node("Softmax", [x], axis=-1))
    elif op == "reduce":
        x = b.input(tuple(spec["shape"]))
        b.outputs.append(b.node(spec["kind"], [x, b.const(np.array(spec["axes"]))], keepdims=1)
                         if spec["kind"] == "ReduceSum" else
                         b.node(spec["kind"], [x], axes=list(spec["axes"]), keepdims=1))
    elif op == "channel_shuffle":  # 1x1 conv -> ShuffleNet's channel shuffle -> 1x1 conv
        c, g, hw = spec["c"], spec["groups"], spec["hw"]
        x = b.input((1, c, hw, hw))
        y = b.conv(x, c, c, 1, 1, spec.get("conv_group", 1), bias=True)
        y = b.node("Reshape", [y, b.const(np.array([1, g, c // g, hw, hw]))])
        y = b.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        y = b.node("Reshape", [y, b.const(np.array([1, c, hw, hw]))])
        b.outputs.append(b.conv(y, c, c, 1, 1, spec.get("conv_group", 1), bias=True))
    elif op == "lrn":  # 1x1 conv + ReLU -> LRN (AlexNet / Inception v1 / ZFNet style; int8: LRN stays fp32)
        c, hw = spec["c"], spec["hw"]
        y = b.act(b.conv(b.input((1, c, hw, hw)), c, c, 1, 1, 1, bias=True), "relu")
        b.outputs.append(b.node("LRN", [y], size=spec.get("size", 5), alpha=1e-4, beta=0.75, bias=1.0))
    elif op == "transpose":
        x = b.input(tuple(spec["shape"]))
        b.outputs.append(b.node("Transpose", [x], perm=list(spec["perm"])))
    elif op == "concat":
        xs = [b.input(tuple(spec["shape"])) for _ in range(spec["n"])]
        b.outputs.append(b.node("Concat", xs, axis=1))
    elif op == "slice":
        shape = tuple(spec["shape"])
        x = b.input(shape)
        half = shape[1] // 2
        b.outputs.append(b.node("Slice", [x, b.const(np.array([0])), b.const(np.array([half])), b.const(np.array([1]))]))
    elif op == "pad":
        shape = tuple(spec["shape"])
        x = b.input(shape)
        p = spec["pad"]
        b.outputs.append(b.node("Pad", [x, b.const(np.array([0, 0, p, p, 0, 0, p, p]))]))
    elif op == "reshape":
        shape = tuple(spec["shape"])
        x = b.input(shape)
        b.outputs.append(b.node("Reshape", [x, b.const(np.array([shape[0], -1]))]))
    elif op == "resize":
        x = b.input((1, spec["c"], spec["hw"], spec["hw"]))
        b.outputs.append(b.node("Resize", [x, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode=spec["mode"]))
    elif op == "gather":
        idx = b.input((1, spec["seq"]), TensorProto.INT64)
        table = b.const(b.rng.standard_normal((spec["vocab"], spec["d"])) * 0.1)
        b.outputs.append(b.node("Gather", [table, idx], axis=0))
    elif op == "overhead":  # the TVM runtime uses "kind": "Neg" (a model without compute cannot be cross-linked)
        x = b.input((1, 1))
        b.outputs.append(b.node(spec.get("kind", "Identity"), [x]))
    else:
        raise ProfileError(f"unknown kernel spec op '{op}'")
    return b.model()


# ---------------------------------------------------------------- realistic CNNs (whole models)
def _cnn_model(spec: dict[str, Any]) -> onnx.ModelProto:
    arch, hw, w = spec["arch"], spec["hw"], spec["width"]
    b = _B(f"{arch}_{hw}_{w}", seed=int(spec.get("seed", 0)))
    x = b.input((1, 3, hw, hw))
    if arch == "resnet":
        y = b.act(b.bn(b.conv(x, 3, w, 7, 2, bias=False), w), "relu")
        y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
        c = w
        for stage, blocks in enumerate(spec.get("blocks", [2, 2, 2, 2])):
            cout = w * 2 ** stage
            for i in range(blocks):
                s = 2 if (i == 0 and stage > 0) else 1
                t = b.act(b.bn(b.conv(y, c, cout, 3, s, bias=False), cout), "relu")
                t = b.bn(b.conv(t, cout, cout, 3, 1, bias=False), cout)
                skip = y if (s == 1 and c == cout) else b.bn(b.conv(y, c, cout, 1, s, bias=False), cout)
                y = b.act(b.node("Add", [t, skip]), "relu")
                c = cout
        y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
        y = b.node("Gemm", [y, b.const(b.rng.standard_normal((c, 100)) * 0.05), b.const(np.zeros(100))])
    elif arch == "mobilenetv2":
        y = b.act(b.conv(x, 3, w, 3, 2), "clip")
        c = w
        for t_exp, cmul, n, s in [(1, 0.5, 1, 1), (6, 0.75, 2, 2), (6, 1, 3, 2), (6, 2, 3, 2), (6, 3, 2, 1), (6, 5, 2, 2)]:
            cout = max(8, int(w * cmul))
            for i in range(n):
                st = s if i == 0 else 1
                hid = c * t_exp
                t = y if t_exp == 1 else b.act(b.conv(y, c, hid, 1), "clip")
                t = b.act(b.conv(t, hid, hid, 3, st, group=hid), "clip")
                t = b.conv(t, hid, cout, 1)
                y = b.node("Add", [y, t]) if (st == 1 and c == cout) else t
                c = cout
        y = b.act(b.conv(y, c, 4 * w, 1), "clip")
        y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
        y = b.node("Gemm", [y, b.const(b.rng.standard_normal((4 * w, 100)) * 0.05), b.const(np.zeros(100))])
    elif arch == "vgg":
        c = 3
        for stage, n in enumerate(spec.get("blocks", [1, 1, 2, 2])):
            cout = w * 2 ** stage
            for _ in range(n):
                x = b.act(b.conv(x, c, cout, 3), "relu")
                c = cout
            x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        y = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
        y = b.act(b.node("Gemm", [y, b.const(b.rng.standard_normal((c, 256)) * 0.05), b.const(np.zeros(256))]), "relu")
        y = b.node("Gemm", [y, b.const(b.rng.standard_normal((256, 100)) * 0.05), b.const(np.zeros(100))])
    elif arch == "yolo":  # SiLU + Concat + Resize + HardSwish: a detection-neck style model
        y = b.act(b.conv(x, 3, w, 3, 2), "silu")
        feats = []
        c = w
        for stage in range(3):
            cout = w * 2 ** (stage + 1)
            y = b.act(b.conv(y, c, cout, 3, 2), "silu")
            t = b.act(b.conv(y, cout, cout // 2, 1), "silu")
            t2 = b.act(b.conv(t, cout // 2, cout // 2, 3), "hswish")
            y = b.act(b.conv(b.node("Concat", [t, t2], axis=1), cout, cout, 1), "silu")
            feats.append((y, cout))
            c = cout
        up = b.node("Resize", [feats[-1][0], "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
        y = b.node("Concat", [up, feats[-2][0]], axis=1)
        y = b.act(b.conv(y, feats[-1][1] + feats[-2][1], feats[-2][1], 1), "silu")
        y = b.node("Sigmoid", [b.conv(y, feats[-2][1], 16, 1)])
    elif arch == "vit":  # patch embedding + encoder layers (LayerNorm, attention, Gelu MLP)
        p, d, heads, layers = spec.get("patch", 16), w, spec.get("heads", 4), spec.get("layers", 2)
        n = (hw // p) ** 2
        y = b.conv(x, 3, d, p, p, pad=0)
        y = b.node("Transpose", [b.node("Reshape", [y, b.const(np.array([1, d, n]))])], perm=[0, 2, 1])
        for _ in range(layers):
            h = b.layernorm(y, d)
            def heads_of(t: str, perm: list[int]) -> str:
                t = b.node("Reshape", [b.linear(t, d, d), b.const(np.array([1, n, heads, d // heads]))])
                return b.node("Transpose", [t], perm=perm)
            q, k, v = heads_of(h, [0, 2, 1, 3]), heads_of(h, [0, 2, 3, 1]), heads_of(h, [0, 2, 1, 3])
            s = b.node("Softmax", [b.node("Div", [b.node("MatMul", [q, k]), b.const(np.float32(math.sqrt(d // heads)))])], axis=-1)
            a = b.node("Reshape", [b.node("Transpose", [b.node("MatMul", [s, v])], perm=[0, 2, 1, 3]), b.const(np.array([1, n, d]))])
            y = b.node("Add", [y, b.linear(a, d, d)])
            h = b.act(b.linear(b.layernorm(y, d), d, 4 * d), "gelu")
            y = b.node("Add", [y, b.linear(h, 4 * d, d)])
        y = b.node("ReduceMean", [b.layernorm(y, d)], axes=[1], keepdims=0)
    else:
        raise ProfileError(f"unknown cnn arch '{arch}'")
    b.outputs.append(y)
    return b.model()


def graph_of_spec(spec: dict[str, Any] | str):  # noqa: ANN201 - returns onnxsplit.ir.Graph
    """The IR graph (static shapes inferred) of a spec: what features are computed from."""
    from .ir import Graph
    from .load import load_model

    return Graph(load_model(build_spec(spec)))


def build_spec(spec: dict[str, Any] | str) -> onnx.ModelProto:
    """Rebuild the (fp32) model a CSV row measured from its ``spec`` (dict or JSON string)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"bad spec {spec[:80]!r}: {exc}") from None
    gen = spec.get("gen")
    if gen == "kernel":
        return _kernel_model(spec)
    if gen == "cnn":
        return _cnn_model(spec)
    if gen == "zoo":
        from . import zoo

        fn = zoo.ZOO.get(spec["name"])
        if fn is None:
            raise ProfileError(f"unknown zoo model '{spec['name']}'; known: {', '.join(zoo.ZOO)}")
        return fn(**spec.get("kwargs", {}))
    if gen == "net":
        from .netgen import net_model

        return net_model(spec)
    if gen == "dag":
        from . import zoo

        return zoo.random_dag_model(spec["seed"], spec["n_nodes"], shape=tuple(spec["shape"]))
    if gen == "file":
        from .load import load_model

        shapes = {k: tuple(v) for k, v in (spec.get("input_shapes") or {}).items()}
        return load_model(spec["path"], shapes or None)
    raise ProfileError(f"unknown spec generator {gen!r} in {spec}")


# ============================================================================ sampling
def _choice(rng: np.random.Generator, values: Sequence[Any]) -> Any:
    return values[int(rng.integers(len(values)))]


def _kernel_spec(family: str, rng: np.random.Generator) -> dict[str, Any]:
    c = lambda v: _choice(rng, v)  # noqa: E731
    if family == "conv":
        hw = c([7, 14, 28, 56, 112])
        cin = c([16, 32, 64, 128, 256]) if hw <= 56 else c([3, 16, 32, 64])
        cout = c([16, 32, 64, 128, 256])
        return {"op": "conv", "cin": cin, "cout": cout, "hw": hw, "k": c([3, 3, 3, 5, 7]) if cin == 3 else c([3, 3, 5]),
                "stride": c([1, 1, 2]), "bias": bool(rng.random() < 0.5),
                "post": c([[], ["relu"], ["bn", "relu"], ["bn"], ["clip"], ["bn", "silu"], ["leaky"], ["bn", "hswish"]])}
    if family == "conv_pw":
        hw = c([1, 7, 14, 28, 56, 112])  # 1x1 spatial: squeeze-excite blocks, conv classifier heads
        ch = [64, 128, 256, 480, 960, 1280] if hw == 1 else [16, 32, 64, 128, 256, 512] if hw <= 28 else [16, 24, 32, 64, 96, 128]
        return {"op": "conv", "cin": c(ch), "cout": c(ch), "hw": hw, "k": 1, "stride": c([1, 1, 1, 2]),
                "bias": bool(rng.random() < 0.5), "post": c([[], ["relu"], ["bn", "relu"], ["clip"], ["bn"], ["bn", "silu"]])}
    if family == "conv_dw":
        hw = c([7, 14, 28, 56, 112])
        ch = c([32, 64, 96, 144, 192, 384, 576]) if hw <= 28 else c([16, 32, 64, 96, 144])
        return {"op": "conv", "cin": ch, "cout": ch, "group": ch, "hw": hw, "k": c([3, 3, 5]), "stride": c([1, 2]),
                "post": c([["clip"], ["relu"], ["bn", "relu"], [], ["bn", "silu"]])}
    if family == "conv_grouped":  # 1 < group, several input channels per group
        hw = c([7, 14, 28, 56])
        group = c([2, 2, 3, 4, 8])
        cin = group * c([4, 8, 16, 24, 32, 48, 64, 96]) if hw <= 28 else group * c([4, 8, 16, 24, 32])
        cout = group * c([4, 8, 16, 24, 32, 48, 64, 96])
        return {"op": "conv", "cin": cin, "cout": cout, "group": group, "hw": hw, "k": c([1, 1, 3, 3, 5]),
                "stride": c([1, 1, 2]), "post": c([[], ["relu"], ["bn", "relu"], ["bn"]])}
    if family == "channel_shuffle":  # a shuffle between convolutions (int8: merges with the NHWC layout)
        hw = c([7, 14, 28, 56])
        groups = c([2, 3, 4, 8])
        ch = groups * (c([8, 16, 24, 34, 48, 68]) if hw <= 28 else c([4, 8, 14, 28]))
        return {"op": "channel_shuffle", "c": ch, "groups": groups, "hw": hw,
                "conv_group": c([1, groups]) if ch // groups > 1 else 1}
    if family == "lrn":
        hw = c([7, 14, 27, 28, 55, 56])
        return {"op": "lrn", "c": c([16, 32, 48, 64, 96, 128, 192, 256]) if hw <= 28 else c([16, 32, 48, 64, 96]),
                "hw": hw, "size": c([3, 5, 5])}
    if family == "conv_transpose":
        return {"op": "conv_transpose", "cin": c([16, 32, 64, 128]), "cout": c([8, 16, 32, 64]), "hw": c([4, 8, 16, 32, 56]),
                "k": 2, "stride": 2}
    if family == "gemm":
        rank = c([2, 3, 3])
        m = 1 if rank == 2 and rng.random() < 0.7 else c([16, 32, 64, 128, 197, 256])
        return {"op": "linear", "m": m, "k": c([64, 128, 256, 384, 512, 768, 1024, 2048]),
                "n": c([10, 64, 128, 256, 384, 512, 768, 1000, 1536, 3072]), "rank": rank,
                "bias": bool(rng.random() < 0.85), "gemm": rank == 2 and rng.random() < 0.3,
                "act": c(["", "", "relu", "gelu", "tanh"])}
    if family == "matmul":
        return {"op": "matmul", "heads": c([1, 2, 4, 8, 12]), "m": c([16, 32, 64, 128, 256]), "k": c([32, 64, 128]),
                "n": c([16, 32, 64, 128, 256]), "scale": bool(rng.random() < 0.3)}
    if family == "attention":
        return {"op": "attention", "heads": c([2, 4, 8, 12]), "seq": c([16, 32, 64, 128, 256]), "dh": c([32, 64])}
    if family == "pool":
        kind = c(["MaxPool", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
        hw = c([7, 14, 28, 56, 112])
        spec = {"op": "pool", "kind": kind, "c": c([16, 32, 64, 128, 256, 512]) if hw <= 28 else c([16, 32, 64]), "hw": hw}
        if not kind.startswith("Global"):
            k = c([2, 3])
            spec.update({"k": k, "stride": 2, "pad": 1 if k == 3 else 0})
        return spec
    if family == "elementwise":
        kind = c(["relu", "sigmoid", "tanh", "clip", "hswish", "silu", "gelu", "leaky", "Add", "Mul", "Add", "Exp",
                  "Sqrt", "Erf", "Mul_bcast"])
        if rng.random() < 0.6:
            shape = [1, c([16, 32, 64, 128, 256]), c([7, 14, 28, 56]), 0]
            shape[3] = shape[2]
        else:
            shape = [1, c([16, 64, 128, 256]), c([64, 256, 768, 1024, 3072])]
        spec = {"op": "eltwise", "kind": kind, "shape": shape}
        if kind == "Mul_bcast":
            spec.update({"kind": "Mul", "binary": False})
        elif kind in ("Sqrt",):
            spec["kind"] = "Abs" if rng.random() < 0.5 else "Neg"
        return spec
    if family == "norm":
        kind = c(["BatchNormalization", "LayerNormalization", "LayerNormalization", "InstanceNormalization"])
        if kind == "LayerNormalization":
            return {"op": "norm", "kind": kind, "seq": c([16, 64, 128, 197, 256]), "d": c([64, 128, 256, 384, 768])}
        return {"op": "norm", "kind": kind, "c": c([16, 32, 64, 128]), "hw": c([14, 28, 56]), "relu": bool(rng.random() < 0.5)}
    if family == "softmax":
        return {"op": "softmax", "shape": [1, c([1, 2, 4, 8, 12]), c([16, 64, 128, 256]), c([16, 64, 128, 256, 1000])]}
    if family == "reduce":
        if rng.random() < 0.5:
            return {"op": "reduce", "kind": c(["ReduceMean", "ReduceSum", "ReduceMax"]),
                    "shape": [1, c([16, 64, 128]), c([14, 28, 56]), c([14, 28, 56])], "axes": c([[1], [2, 3]])}
        return {"op": "reduce", "kind": c(["ReduceMean", "ReduceSum"]), "shape": [1, c([16, 64, 197]), c([128, 384, 768])],
                "axes": [-1]}
    if family == "data_movement":
        kind = c(["transpose", "transpose", "concat", "slice", "pad", "gather"])
        hw = c([7, 14, 28, 56])
        shape4 = [1, c([16, 32, 64, 128]), hw, hw]
        if kind == "transpose":
            if rng.random() < 0.5:
                return {"op": "transpose", "shape": shape4, "perm": c([[0, 2, 3, 1], [0, 1, 3, 2], [0, 3, 1, 2]])}
            return {"op": "transpose", "shape": [1, c([16, 64, 128, 197]), c([4, 8, 12]), c([32, 64])],
                    "perm": c([[0, 2, 1, 3], [0, 2, 3, 1]])}
        if kind == "concat":
            return {"op": "concat", "shape": shape4, "n": c([2, 3, 4])}
        if kind == "slice":
            return {"op": "slice", "shape": shape4}
        if kind == "pad":
            return {"op": "pad", "shape": shape4, "pad": c([1, 2, 3])}
        return {"op": "gather", "vocab": c([1000, 30522]), "d": c([128, 384, 768]), "seq": c([16, 64, 128, 256])}
    if family == "reshape":
        hw = c([7, 14, 28, 56])
        return {"op": "reshape", "shape": [1, c([16, 64, 256]), hw, hw]}
    if family == "resize":
        return {"op": "resize", "c": c([8, 16, 32, 64, 128]), "hw": c([7, 14, 28, 56]), "mode": c(["nearest", "nearest", "linear"])}
    raise ProfileError(f"no kernel sampler for family '{family}'")


#: how many of the sampled kernels each family gets (relative weights)
KERNEL_MIX: dict[str, float] = {
    "conv": 5, "conv_pw": 5, "conv_dw": 4, "conv_grouped": 2, "channel_shuffle": 1, "lrn": 1, "conv_transpose": 1.5,
    "gemm": 5, "matmul": 2, "attention": 1.5,
    "pool": 2.5, "elementwise": 5, "norm": 2, "softmax": 1.5, "reduce": 1.5, "data_movement": 3, "reshape": 1,
    "resize": 1.5,
}


def sample_kernel_specs(n: int, seed: int = 0, *, max_mflops: float = 400.0, max_mb: float = 24.0,
                        families: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """``n`` distinct kernel specs drawn from :data:`KERNEL_MIX` (seeded; sizes capped)."""
    rng = np.random.default_rng(seed)
    fams = list(families) if families is not None else list(KERNEL_MIX)
    unknown = [f for f in fams if f not in KERNEL_MIX]
    if unknown:
        raise ProfileError(f"unknown kernel family {unknown}; known: {', '.join(KERNEL_MIX)}")
    weights = np.array([KERNEL_MIX[f] for f in fams], dtype=float)
    quota = np.maximum(1, np.round(weights / weights.sum() * n)).astype(int) if n >= len(fams) else None
    order: list[str] = []
    if quota is None:
        order = [fams[i] for i in rng.choice(len(fams), size=n, p=weights / weights.sum())]
    else:
        for f, q in zip(fams, quota):
            order += [f] * int(q)
        order = order[:n] if len(order) >= n else order + [fams[i] for i in rng.choice(len(fams), n - len(order))]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for fam in order:
        for _ in range(50):
            spec = {"gen": "kernel", **_kernel_spec(fam, rng)}
            key = json.dumps(spec, sort_keys=True)
            if key in seen or not _within_budget(spec, max_mflops, max_mb):
                continue
            seen.add(key)
            spec["family"] = fam
            out.append(spec)
            break
    return out


def _within_budget(spec: dict[str, Any], max_mflops: float, max_mb: float) -> bool:
    """Cheap size estimate (MFLOP, MB) to keep each sample's run time bounded."""
    op = spec["op"]
    if op == "conv":
        ho = spec["hw"] // spec.get("stride", 1)
        mflops = 2 * spec["cout"] * ho * ho * (spec["cin"] // spec.get("group", 1)) * spec["k"] ** 2 / 1e6
        mb = 4 * (spec["cin"] * spec["hw"] ** 2 + spec["cout"] * ho * ho) / 1e6
    elif op == "linear":
        mflops = 2 * spec["m"] * spec["k"] * spec["n"] / 1e6
        mb = 4 * (spec["k"] * spec["n"] + spec["m"] * (spec["k"] + spec["n"])) / 1e6
    elif op == "matmul":
        mflops = 2 * spec["heads"] * spec["m"] * spec["k"] * spec["n"] / 1e6
        mb = 4 * spec["heads"] * (spec["m"] * spec["k"] + spec["k"] * spec["n"] + spec["m"] * spec["n"]) / 1e6
    elif op == "attention":
        mflops = 4 * spec["heads"] * spec["seq"] ** 2 * spec["dh"] / 1e6
        mb = 4 * spec["heads"] * (3 * spec["seq"] * spec["dh"] + spec["seq"] ** 2) / 1e6
    elif op == "gather":
        mflops, mb = 0.0, 4 * spec["vocab"] * spec["d"] / 1e6
    else:
        shape = spec.get("shape") or [1, spec.get("c", spec.get("cin", 1)), spec.get("hw", 1), spec.get("hw", 1)]
        mflops, mb = 0.0, 4 * 4 * float(np.prod(shape)) / 1e6
    return mflops <= max_mflops and mb <= max_mb


def model_specs(quick: bool = False) -> list[dict[str, Any]]:
    """Whole models to time: the zoo, variants, random DAGs and realistic-resolution CNNs."""
    from . import zoo

    specs: list[dict[str, Any]] = [{"gen": "zoo", "name": n} for n in zoo.ZOO]
    if quick:
        return specs[:3]
    specs += [{"gen": "zoo", "name": "transformer", "kwargs": kw} for kw in (
        {"seq": 32, "d": 64, "heads": 4, "layers": 2},
        {"seq": 64, "d": 128, "heads": 4, "layers": 2},
        {"seq": 128, "d": 128, "heads": 8, "layers": 4},
        {"seq": 128, "d": 256, "heads": 8, "layers": 2},
        {"seq": 256, "d": 256, "heads": 8, "layers": 1},
        {"seq": 16, "d": 512, "heads": 8, "layers": 2},
    )]
    specs += [{"gen": "zoo", "name": "shared_init", "kwargs": kw} for kw in (
        {"depth": 20, "d": 64}, {"depth": 8, "d": 512}, {"depth": 4, "d": 1024})]
    specs += [{"gen": "zoo", "name": "loop", "kwargs": {"trip_count": 16}}]
    specs += [{"gen": "dag", "seed": s, "n_nodes": n, "shape": shp} for s, n, shp in (
        (1, 12, [1, 8, 16, 16]), (2, 24, [1, 16, 32, 32]), (3, 40, [1, 32, 32, 32]), (4, 30, [1, 64, 28, 28]),
        (5, 20, [1, 16, 56, 56]), (6, 40, [1, 8, 64, 64]))]
    specs += [{"gen": "cnn", **kw} for kw in (
        {"arch": "resnet", "hw": 224, "width": 64, "blocks": [2, 2, 2, 2]},
        {"arch": "resnet", "hw": 160, "width": 32, "blocks": [1, 1, 1, 1]},
        {"arch": "resnet", "hw": 112, "width": 64, "blocks": [2, 2, 2, 2]},
        {"arch": "resnet", "hw": 224, "width": 32, "blocks": [2, 2, 2, 2]},
        {"arch": "mobilenetv2", "hw": 224, "width": 32},
        {"arch": "mobilenetv2", "hw": 160, "width": 16},
        {"arch": "mobilenetv2", "hw": 224, "width": 16},
        {"arch": "mobilenetv2", "hw": 128, "width": 32},
        {"arch": "vgg", "hw": 112, "width": 32},
        {"arch": "vgg", "hw": 224, "width": 16},
        {"arch": "yolo", "hw": 320, "width": 16},
        {"arch": "yolo", "hw": 256, "width": 32},
        {"arch": "vit", "hw": 224, "width": 192, "heads": 3, "layers": 4},
        {"arch": "vit", "hw": 128, "width": 128, "heads": 4, "layers": 2},
    )]
    return specs


# ============================================================================ timing
def default_threads() -> int:
    """Physical cores available to this process (onnxruntime's default intra-op thread count)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
    cores = set()
    for c in cpus:
        try:
            sib = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            sib = str(c)
        cores.add(sib)
    return max(1, len(cores))


def _ort():
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def make_timed_session(model: onnx.ModelProto, *, threads: int, providers: Sequence[str]):
    """Session with default graph optimizations and ``threads`` intra-op threads."""
    return make_timed_session_bytes(model.SerializeToString(), threads=threads, providers=providers)


def make_timed_session_bytes(data: bytes, *, threads: int, providers: Sequence[str]):
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=list(providers))


def feeds_for(sess, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs for an onnxruntime session: floats ~ N(0, 1), integer ids 0, masks 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in i.shape]
        dt = types.get(i.type)
        if dt is None:
            raise ProfileError(f"input '{i.name}' has unsupported type {i.type}")
        if np.dtype(dt).kind == "f":
            feeds[i.name] = rng.standard_normal(shape).astype(dt)
        elif np.dtype(dt).kind == "b":
            feeds[i.name] = rng.random(shape) < 0.5
        else:  # indices/ids: 0 is valid for any table; attention masks: all ones
            feeds[i.name] = (np.ones if "mask" in i.name.lower() else np.zeros)(shape, dtype=dt)
    return feeds


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    p90_ms: float
    mean_ms: float
    reps: int
    warmup: int


def measure_model(model: onnx.ModelProto, *, threads: int | None = None, warmup: int = 3, reps: int = 20,
                  max_seconds: float = 0.5, providers: Sequence[str] = ("CPUExecutionProvider",),
                  feeds: dict[str, np.ndarray] | None = None) -> Timing:
    """Median latency of ``model`` (see the module docstring for the protocol)."""
    sess = make_timed_session(model, threads=threads or default_threads(), providers=providers)
    feeds = feeds if feeds is not None else feeds_for(sess)
    names = [o.name for o in sess.get_outputs()]
    t0 = time.perf_counter()
    for _ in range(max(1, warmup)):
        sess.run(names, feeds)
    per_run = (time.perf_counter() - t0) / max(1, warmup)
    n = int(max(3, min(reps, max_seconds / max(per_run, 1e-6))))
    times = np.empty(n)
    for i in range(n):
        s = time.perf_counter_ns()
        sess.run(names, feeds)
        times[i] = (time.perf_counter_ns() - s) / 1e6
    return Timing(float(np.median(times)), float(times.min()), float(np.percentile(times, 90)),
                  float(times.mean()), n, max(1, warmup))


#: the int8 quantization scheme of :func:`quantize_qdq` (and of onnxsplit's edge quantization):
#: measurements taken with another scheme are not comparable (``tools/eval_cost_model.py`` keys its
#: cache by it). ``dwpool``: AveragePool quantized as a depthwise Conv (cost models v4 on).
QDQ_SCHEME = "dwpool"


def quantize_qdq(model: onnx.ModelProto, *, n_calibration: int = 4, seed: int = 0,
                 keep_fp32_ops: Sequence[str] = (), avgpool_as_conv: bool = True) -> onnx.ModelProto:
    """Static QDQ int8 quantization as onnxsplit's edge quantization does it: onnxruntime's
    ``quant_pre_process`` (shape inference and the basic graph optimizations: Conv+BatchNormalization
    folding, ...; skipped if it fails), then ``quantize_static`` with uint8 activations and int8
    per-channel weights, random calibration.

    Old models are normalised first: graph inputs that merely give initializers a default (IR < 4
    style) are dropped, which ``quant_pre_process`` would otherwise turn into required inputs, and
    an opset below 13 is converted to 13 (per-channel DequantizeLinear needs it); where conversion
    fails the weights are quantized per tensor. ``keep_fp32_ops``: op types left in fp32 (every
    other op type onnxruntime's QDQ quantizer knows is quantized; for experiments, e.g.
    ``tools/bench_int8_ops.py``). onnxruntime may still fuse such an op with a DequantizeLinear
    before it and a QuantizeLinear after it (one that belongs to a quantized next op).
    ``avgpool_as_conv`` (default, as the edge quantization): ``AveragePool`` nodes are first
    rewritten as depthwise convolutions (:mod:`onnxsplit.quant.pools`; onnxruntime's
    ``QLinearAveragePool`` is 5-15x slower than the fp32 pool, int8 depthwise ``QLinearConv`` is not);
    ``False`` gives the scheme of the cost models before v4, ``QDQ_SCHEME`` names the current one."""
    ort = _ort()
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = _normalize_for_quantization(model)
    if avgpool_as_conv:
        from .quant.pools import avgpool_to_depthwise_conv

        model = avgpool_to_depthwise_conv(model).model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        try:
            converted = version_converter.convert_version(model, 13)
            onnx.checker.check_model(converted)
            model, opset = converted, 13
        except Exception:  # noqa: BLE001 - keep the original opset, quantize weights per tensor
            pass
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batches = [feeds_for(sess, seed + i) for i in range(n_calibration)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):  # noqa: ANN202
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="onnxsplit-q-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, str(src))
        import logging

        logging.getLogger().setLevel(logging.ERROR)
        from .quant.quantize import preprocess_for_quantization

        if preprocess_for_quantization(src, Path(tmp) / "pre.onnx"):
            src = Path(tmp) / "pre.onnx"
        op_types = None
        if keep_fp32_ops:
            from onnxruntime.quantization.registry import QDQRegistry

            op_types = [op for op in QDQRegistry if op not in set(keep_fp32_ops)]
        quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=opset >= 13,
                        op_types_to_quantize=op_types)
        return onnx.load(str(dst))


def _normalize_for_quantization(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without graph inputs that only give an initializer its default, at IR >= 4, with
    inference-time no-op ``Dropout`` nodes (mask unused) replaced by ``Identity`` (an opset-9 Dropout
    converted to 13 breaks onnxruntime's calibration graph)."""
    inits = {t.name for t in model.graph.initializer}
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dropouts = [k for k, n in enumerate(model.graph.node) if n.op_type == "Dropout" and n.domain in ("", "ai.onnx")
                and not any(o and o in used for o in n.output[1:])]
    if not dropouts and not any(i.name in inits for i in model.graph.input) and model.ir_version >= 4:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [i for i in m.graph.input if i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.ir_version = max(m.ir_version, 4)
    for k in dropouts:  # Dropout(x[, ratio, training]) -> Identity(x)
        n = m.graph.node[k]
        out = n.output[0]
        del n.input[1:]
        del n.output[:]
        n.output.append(out)
        del n.attribute[:]
        n.op_type = "Identity"
    return m


# ============================================================================ profile run
@dataclass
class ProfileResult:
    path: Path | None
    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    wall_s: float = 0.0


def _host() -> str:
    proc = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                proc = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {proc}".strip()


def _arch_matches(target_arch: str) -> bool:
    m = platform.machine().lower()
    aliases = {"x86_64": {"x86_64", "amd64"}, "aarch64": {"aarch64", "arm64"}, "armv7l": {"armv7l"},
               "riscv64": {"riscv64"}}
    return m in aliases.get(target_arch, {target_arch})


def _spec_name(spec: dict[str, Any]) -> str:
    gen = spec["gen"]
    if gen == "zoo":
        kw = spec.get("kwargs") or {}
        return "zoo:" + spec["name"] + ("(" + ",".join(f"{k}={v}" for k, v in kw.items()) + ")" if kw else "")
    if gen == "dag":
        return f"dag:seed={spec['seed']},n={spec['n_nodes']},shape={'x'.join(map(str, spec['shape']))}"
    if gen == "cnn":
        return f"cnn:{spec['arch']}@{spec['hw']},w={spec['width']}"
    if gen == "file":
        return "file:" + Path(spec["path"]).name
    if gen == "net":
        return f"net:v{spec.get('v', 1)},seed={spec['seed']}"
    body = {k: v for k, v in spec.items() if k not in ("gen", "family", "op", "seed")}
    return f"{spec['op']}:" + ",".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items())


class HighPriority:
    """Context manager: raise this process's CPU priority while measuring (Linux; needs root or
    CAP_SYS_NICE).

    Background load on a shared machine (other users' jobs) preempts onnxruntime's worker
    threads and inflates latencies, most for multi-threaded runs longer than a scheduler slice.
    On entry the process nice value is set to -20 (:func:`os.setpriority`); with the kernel's
    autogroup scheduling a process nice value only counts inside its session group, so the
    session group's nice (``/proc/self/autogroup``) is set to -20 too. Both are restored to
    their previous values on exit. Where not permitted it does nothing, and says so in
    ``applied``; with ``enabled=False`` it is a no-op (``applied`` stays False)::

        with HighPriority(enabled=True) as prio:
            if not prio.applied:
                print("measuring at normal priority")
            ...
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.applied = False
        self._old_group: str | None = None
        self._old_nice: int | None = None

    def __enter__(self) -> HighPriority:
        if not self.enabled:
            return self
        try:
            self._old_nice = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, -20)
            self.applied = True
        except (OSError, AttributeError):
            self._old_nice = None
        group = Path("/proc/self/autogroup")
        try:
            text = group.read_text()
            self._old_group = text.rsplit("nice", 1)[1].strip()
            group.write_text("-20")
            self.applied = True
        except (OSError, IndexError):
            self._old_group = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old_group is not None:
            try:
                Path("/proc/self/autogroup").write_text(self._old_group)
            except OSError:
                pass
        if self._old_nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self._old_nice)
            except OSError:
                pass


#: Former private name of :class:`HighPriority`, kept for compatibility.
_HighPriority = HighPriority


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Entry:
    kind: str
    name: str
    spec: dict[str, Any]
    split: str
    precision: str
    model_bytes: bytes  # the (quantized) model: one live session at a time, see _time_rounds
    feeds: dict[str, np.ndarray]
    outputs: list[str]
    meta: dict[str, Any]
    round_medians: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


def run_profile(
    target: str,
    output: str | Path | None,
    *,
    runtime: str | None = None,
    precisions: Sequence[str] = ("fp32",),
    n_kernels: int = 300,
    include_models: bool = True,
    quick_models: bool = False,
    n_nets: int = 0,
    net_version: int = 1,
    net_start: int = 0,
    extra_models: Sequence[dict[str, Any]] = (),
    threads: int | None = None,
    warmup: int = 3,
    reps: int = 15,
    rounds: int = 3,
    max_seconds: float = 0.25,
    seed: int = 0,
    allow_arch_mismatch: bool = False,
    kernel_families: Iterable[str] | None = None,
    high_priority: bool = False,
    progress: Callable[[str], None] | None = None,
    rpc: str | tuple[str, int] | None = None,
    device_key: str | None = None,
    session_timeout: float = 0,
    rpc_timeout: float = 30.0,
    specs: Sequence[tuple[str, dict[str, Any], str]] | None = None,
) -> ProfileResult:
    """Measure kernels and models on this machine for ``target``; write the CSV to ``output``.

    ``n_nets`` adds that many random realistic networks (:func:`onnxsplit.netgen.net_specs`) as
    whole-model samples (independent of ``include_models``, which selects the built-in list):
    vocabulary ``net_version``, seeds ``net_start ..``.
    ``specs`` (``(kind, spec, split)`` triples, e.g. from :func:`redo_specs`) replaces all of these:
    exactly those samples are timed.

    ``high_priority`` raises the profiler's CPU priority during the timing rounds (see
    :class:`HighPriority`): use it on a shared machine so that the medians approximate an idle one.

    Every sample is timed in ``rounds`` rounds spread over the whole run (round-robin over the
    samples), each of ``reps`` runs (fewer when a run takes more than ``max_seconds / reps``,
    never fewer than 3); ``median_ms`` is the lowest of the per-round medians, which discards a
    round disturbed by a burst of background load. ``loadavg_1m`` records the load at the end.

    ``runtime="tvm"``: every sample is compiled with TVM for the target's ``[tvm] target`` and timed
    with ``time_evaluator``, in this process, or on a board through a TVM RPC tracker
    (``rpc="HOST:PORT"``, ``device_key``; ``rpc`` alone implies ``runtime="tvm"``). See the module
    docstring. ``session_timeout`` (s, 0 = none) bounds the RPC session, ``rpc_timeout`` (s) the
    tracker check and the session request.
    """
    from .cost.kernels import group_kernels
    from .errors import UsageError
    from .targets import load_target

    t = load_target(target)
    if rpc is not None and runtime is None:
        runtime = "tvm"
    runtime = runtime or t.default_runtime
    if runtime not in t.runtimes:
        raise ProfileError(f"target '{t.name}' has no runtime '{runtime}'; it offers {', '.join(t.runtimes)}")
    if runtime != "tvm" and (rpc is not None or device_key):
        raise UsageError(f"--rpc/--device-key profile the 'tvm' runtime (TVM RPC), not '{runtime}': pass --runtime tvm, "
                         f"or run `onnxsplit profile --target {t.name} -o FILE.csv` on the device for '{runtime}'")
    for p in precisions:
        if p not in ("fp32", "int8"):
            raise ProfileError(f"profiling precision '{p}' is not supported; use fp32 and/or int8")
    if rounds < 1 or reps < 1:
        raise ProfileError("rounds and reps must be >= 1")
    if threads is not None and threads < 1:
        raise ProfileError("threads must be >= 1")
    tvm_setup = None
    if runtime == "tvm":
        tvm_setup = _tvm_setup(t, rpc, device_key, session_timeout=session_timeout, rpc_timeout=rpc_timeout)
    else:
        if not allow_arch_mismatch and not _arch_matches(t.arch):
            raise ProfileError(
                f"this machine is {platform.machine()} but target '{t.name}' is {t.arch}: profile measures the machine "
                f"it runs on; run `onnxsplit profile --target {t.name} -o {t.name}.csv` on the device, copy the CSV "
                "back and fit it here (or pass --allow-arch-mismatch, or --runtime tvm --rpc HOST:PORT --device-key KEY "
                "to time TVM builds on the board from here)")
        if runtime not in _PROVIDERS:
            offered = ", ".join(r for r in t.runtimes if r in _PROVIDERS or r == "tvm")
            raise ProfileError(f"the profiler times onnxruntime (ort-cpu/ort-cuda/ort-trt) or TVM ('tvm'), not '{runtime}'"
                               + (f": pass --runtime {offered.split(', ')[0]} ({t.name} offers {offered})" if offered else ""))
        ort = _ort()
        providers = _PROVIDERS[runtime]
        if providers[0] not in ort.get_available_providers():
            raise ProfileError(f"onnxruntime here lacks {providers[0]} (available: {', '.join(ort.get_available_providers())}); "
                               f"install the onnxruntime build for '{runtime}'")
    log = progress or (lambda s: None)

    if specs is None:
        overhead = {"gen": "kernel", "op": "overhead", **({"kind": "Neg"} if runtime == "tvm" else {})}
        specs = [("overhead", overhead, "")]
        specs += [("kernel", s, "") for s in sample_kernel_specs(n_kernels, seed, families=kernel_families)]
        if include_models:
            specs += [("model", s, "") for s in model_specs(quick_models)]
        if n_nets > 0:
            from .netgen import net_specs

            specs += [("model", s, "") for s in net_specs(n_nets, start=net_start, version=net_version)]
        specs += [("model", s, "validate") for s in extra_models]

    skipped: list[tuple[str, str]] = []
    t_start = time.perf_counter()
    samples: list[tuple[str, str, dict[str, Any], str, onnx.ModelProto, dict[str, Any]]] = []
    for kind, spec, split in specs:
        name = "overhead" if kind == "overhead" else _spec_name(spec)
        try:
            graph = graph_of_spec(spec)
            fp32 = graph.model
            kernels = [k for k in group_kernels(graph, runtime) if k.family != "constant"]
        except Exception as exc:  # noqa: BLE001 - one bad sample must not stop the run
            skipped.append((name, f"build: {exc}"))
            log(f"skipped {name}: build: {exc}")
            continue
        main = max(kernels, key=lambda k: k.flops, default=None)
        if kind == "kernel" and len(kernels) == 1:
            feats = kernels[0].features
            mf, inn, out, par = feats["mflops"], feats["in_mb"], feats["out_mb"], feats["param_mb"]
        else:
            mf = sum(k.features["mflops"] for k in kernels)
            inn = graph.input_nbytes / 1e6
            out = sum(graph.tensors[o].nbytes or 0 for o in graph.outputs) / 1e6
            par = graph.param_nbytes / 1e6
        meta = {"family": (main.family if kind == "kernel" and main is not None else ""), "n_kernels": len(kernels),
                "mflops": mf, "in_mb": inn, "out_mb": out, "param_mb": par}
        clean = {k: v for k, v in spec.items() if k != "family"}
        samples.append((kind, name, clean, split, fp32, meta))

    if tvm_setup is not None:
        return _run_profile_tvm(t, output, tvm_setup, samples, skipped, precisions=precisions, threads=threads,
                                warmup=warmup, reps=reps, rounds=rounds, max_seconds=max_seconds,
                                high_priority=high_priority, log=log, t_start=t_start)

    threads = threads or default_threads()
    host = _host()
    entries: list[_Entry] = []
    for i, (kind, name, clean, split, fp32, meta) in enumerate(samples):
        for prec in precisions:
            try:
                model = fp32 if prec == "fp32" else quantize_qdq(fp32)
                sess = make_timed_session(model, threads=threads, providers=providers)
                feeds = feeds_for(sess)
                outs = [o.name for o in sess.get_outputs()]
                sess.run(outs, feeds)  # fails now rather than in the timing rounds
                del sess
            except Exception as exc:  # noqa: BLE001
                msg = _short_error(exc)
                skipped.append((f"{name} [{prec}]", msg))
                continue
            entries.append(_Entry(kind, name, clean, split, prec, model.SerializeToString(), feeds, outs, meta))
        if (i + 1) % 25 == 0 or i + 1 == len(samples):
            log(f"prepared {i + 1}/{len(samples)} samples ({len(entries)} sessions)")

    with HighPriority(high_priority) as prio:
        if high_priority:
            log("high priority " + ("applied" if prio.applied else "NOT applied (not permitted here)"))
        _time_rounds(entries, rounds, reps, max_seconds, log, t_start, threads=threads, providers=providers,
                     warmup=warmup)

    load = _loadavg()
    extra = {"threads": threads, "onnxruntime": ort.__version__, "host": host, "loadavg_1m": "" if load is None else load,
             "priority": "high" if (high_priority and prio.applied) else "normal"}
    rows = [_row(e, t.name, runtime, warmup, extra) for e in entries]
    result = ProfileResult(None, rows, skipped, time.perf_counter() - t_start)
    if output is not None:
        result.path = write_profile_csv(rows, output)
    return result


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _row(e: Any, target: str, runtime: str, warmup: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a timed entry (:class:`_Entry` or :class:`_TVMEntry`)."""
    times = np.array(e.times)
    m = e.meta
    return {
        "kind": e.kind, "name": e.name, "spec": json.dumps(e.spec, sort_keys=True), "family": m["family"],
        "n_kernels": m["n_kernels"], "target": target, "runtime": runtime, "precision": e.precision,
        "split": e.split, "warmup": max(1, warmup), "reps": len(times), "rounds": len(e.round_medians),
        "median_ms": round(min(e.round_medians), 6), "min_ms": round(float(times.min()), 6),
        "p90_ms": round(float(np.percentile(times, 90)), 6), "mean_ms": round(float(times.mean()), 6),
        "mflops": round(m["mflops"], 6), "in_mb": round(m["in_mb"], 6), "out_mb": round(m["out_mb"], 6),
        "param_mb": round(m["param_mb"], 6), "qdq_scheme": QDQ_SCHEME if e.precision == "int8" else "", **extra,
    }


def _stable(e: _Entry, tol: float) -> bool:
    """The two lowest round medians agree within ``tol`` (relative)."""
    if len(e.round_medians) < 2:
        return False
    a, b = sorted(e.round_medians)[:2]
    return b <= a * (1 + tol)


def _time_rounds(entries: list[_Entry], rounds: int, reps: int, max_seconds: float,
                 log: Callable[[str], None], t_start: float, *, threads: int, providers: Sequence[str],
                 warmup: int, extra_rounds: int = 6, tol: float = 0.1) -> None:
    """``rounds`` rounds over every entry, then up to ``extra_rounds`` more over the unstable ones.

    Only one session is alive at a time: an idle onnxruntime thread pool keeps spinning for a
    while after a run, and hundreds of live sessions' spinning workers would compete with the
    session being timed.
    """
    import gc

    for r in range(rounds + extra_rounds):
        todo = entries if r < rounds else [e for e in entries if not _stable(e, tol)]
        if not todo:
            break
        for e in todo:
            sess = make_timed_session_bytes(e.model_bytes, threads=threads, providers=providers)
            s = time.perf_counter_ns()
            for _ in range(max(1, warmup)):
                sess.run(e.outputs, e.feeds)
            first = (time.perf_counter_ns() - s) / 1e6 / max(1, warmup)
            n = int(max(3, min(reps, max_seconds * 1e3 / max(first, 1e-3))))
            times = []
            for _ in range(n):
                s = time.perf_counter_ns()
                sess.run(e.outputs, e.feeds)
                times.append((time.perf_counter_ns() - s) / 1e6)
            del sess
            gc.collect(0)
            e.round_medians.append(float(np.median(times)))
            e.times.extend(times)
        log(f"round {r + 1} done: {len(todo)} samples ({time.perf_counter() - t_start:.0f} s, load {_loadavg()})")


# ============================================================================ TVM runtime
#: TVM target kind -> device type string (``tvm.device`` / ``RPCSession.device``)
_TVM_DEVICES = {"llvm": "cpu", "c": "cpu", "cuda": "cuda", "rocm": "rocm", "opencl": "opencl", "vulkan": "vulkan",
                "metal": "metal"}
#: time_evaluator: enough runs per repeat that one repeat lasts at least this long (timer resolution)
_TVM_MIN_REPEAT_MS = 0.2
_TVM_MAX_NUMBER = 100


@dataclass
class _TVMSetup:
    tvm_target: dict[str, Any]
    device: str  # "cpu" | "cuda" | ...
    cc: str  # C++ compiler that links the libraries (host g++ or a cross compiler)
    rpc: tuple[str, int] | None
    device_key: str | None
    session_timeout: float
    rpc_timeout: float


@dataclass
class _TVMEntry:
    kind: str
    name: str
    spec: dict[str, Any]
    split: str
    precision: str
    handle: str  # library path (local) or its name in the RPC server's work folder
    inputs: list[dict[str, Any]]  # {"name", "shape", "dtype"} in call order
    feeds: dict[str, np.ndarray]
    meta: dict[str, Any]
    round_medians: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    number: int = 1


def _tvm_setup(t: Any, rpc: str | tuple[str, int] | None, device_key: str | None, *, session_timeout: float,
               rpc_timeout: float) -> _TVMSetup:
    """Check that TVM profiling of target ``t`` can run (before any compile work); one-line errors."""
    from .compile import tvm_backend as tb
    from .errors import UsageError

    tvm_dict = t.tvm_target
    kind = str(tvm_dict.get("kind"))
    device = _TVM_DEVICES.get(kind)
    if device is None:
        raise ProfileError(f"target '{t.name}': profiling TVM '{kind}' builds is not supported "
                           f"(supported kinds: {', '.join(_TVM_DEVICES)})")
    host_arch = tb._triple_arch(tb._host_triple(tvm_dict))
    hint = "pass --rpc HOST:PORT --device-key KEY (a TVM RPC tracker with the board's RPC server)"
    if rpc is None:
        if device_key:
            raise UsageError("--device-key needs --rpc HOST:PORT (the TVM RPC tracker the board's server registered with)")
        if host_arch != tb._this_arch():
            raise ProfileError(f"target '{t.name}' runs {host_arch} code, this machine is {tb._this_arch()}: TVM "
                               f"profiling times the target's builds on the board itself: {hint}")
        rpc_addr = None
    else:
        if isinstance(rpc, str):
            from .compile.tune import parse_hostport

            rpc_addr = parse_hostport(rpc)
        else:
            rpc_addr = (str(rpc[0]), int(rpc[1]))
        if not device_key:
            raise UsageError("--rpc needs --device-key KEY (the key the board's RPC server registered with)")
    try:
        cc = tb.export_compiler(tvm_dict, label=f"the profiled samples for {t.name}")
    except tb.ToolchainError as exc:
        msg = str(exc).replace(" (the ONNX halves do not need it)", "")
        raise tb.ToolchainError(f"{msg}; or time onnxruntime on the board itself (`onnxsplit profile --target {t.name} "
                                f"-o {t.name}.csv` there)") from None
    tvm = tb._import_tvm()
    if rpc_addr is None:
        if device != "cpu" and not tvm.device(device, 0).exist:
            raise ProfileError(f"target '{t.name}' runs {kind} code but no {kind} device is visible here: {hint}")
        missing = tb.missing_cpu_features(tvm_dict)
        if missing:
            raise ProfileError(f"this CPU lacks {', '.join(missing[:4])} used by target '{t.name}' ([tvm] target "
                               f"{json.dumps(tvm_dict)}): {hint}")
    else:
        from .compile.tune import check_rpc

        check_rpc(rpc_addr[0], rpc_addr[1], device_key, timeout=rpc_timeout)
    return _TVMSetup(tvm_dict, device, cc, rpc_addr, device_key, float(session_timeout), float(rpc_timeout))


class _LocalTVM:
    """Loads libraries and runs them in this process (the interface of :class:`_RemoteTVM`)."""

    def __init__(self, device: str):
        import tvm

        self.tvm = tvm
        self.dev = tvm.device(device, 0)

    def upload(self, path: Path) -> str:
        return str(path)

    def load(self, handle: str) -> Any:
        return self.tvm.runtime.load_module(handle)

    def get_function(self, name: str) -> Any:
        return self.tvm.get_global_func(name)

    def close(self) -> None:
        pass


class _RemoteTVM:
    """A session on the board's RPC server, requested through the tracker (bounded wait)."""

    def __init__(self, setup: _TVMSetup):
        import threading

        from tvm import rpc

        host, port = setup.rpc  # type: ignore[misc]
        key = setup.device_key
        result: dict[str, Any] = {}

        def request() -> None:
            try:
                tracker = rpc.connect_tracker(host, port)
                result["sess"] = tracker.request(key, priority=1, session_timeout=setup.session_timeout, max_retry=2)
            except Exception as exc:  # noqa: BLE001
                result["error"] = exc

        th = threading.Thread(target=request, daemon=True)
        th.start()
        th.join(setup.rpc_timeout)
        if th.is_alive():
            from .compile.tune import RPCError

            raise RPCError(f"the RPC tracker {host}:{port} gave no session for device key '{key}' within "
                           f"{setup.rpc_timeout:g} s (the board's server is busy or gone); retry when it is free")
        if "error" in result:
            from .compile.tune import RPCError

            raise RPCError(f"could not get a session for device key '{key}' from the RPC tracker {host}:{port}: "
                           f"{_short_error(result['error'])}")
        self.sess = result["sess"]
        self.dev = self.sess.device(setup.device, 0)
        self._n = 0

    def upload(self, path: Path) -> str:
        self._n += 1
        name = f"onnxsplit-profile-{os.getpid()}-{self._n}-{path.name}"
        self.sess.upload(bytearray(Path(path).read_bytes()), target=name)
        return name

    def load(self, handle: str) -> Any:
        return self.sess.load_module(handle)

    def get_function(self, name: str) -> Any:
        return self.sess.get_function(name)

    def close(self) -> None:
        self.sess = None


def _feeds_for_inputs(inputs: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs (as :func:`feeds_for`) for a compiled library's ``inputs``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in inputs:
        dt = np.dtype(i["dtype"])
        shape = [int(d) for d in i["shape"]]
        if dt.kind == "f":
            feeds[i["name"]] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[i["name"]] = rng.random(shape) < 0.5
        else:
            feeds[i["name"]] = (np.ones if "mask" in i["name"].lower() else np.zeros)(shape, dtype=dt)
    return feeds


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a new thread and return its result (re-raising its exception).

    TVM's CPU thread pool is per calling thread and sized when it is created: a fresh thread gets a
    pool sized by ``TVM_NUM_THREADS`` as set now, whatever TVM ran before in this process."""
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    th = threading.Thread(target=run, name="onnxsplit-profile-tvm", daemon=True)  # daemon: Ctrl-C ends the run
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _run_profile_tvm(t: Any, output: str | Path | None, setup: _TVMSetup, samples: list[tuple], skipped: list,
                     *, precisions: Sequence[str], threads: int | None, warmup: int, reps: int, rounds: int,
                     max_seconds: float, high_priority: bool, log: Callable[[str], None],
                     t_start: float) -> ProfileResult:
    from .compile import tvm_backend as tb

    tvm = tb._import_tvm()
    target_label = f"{t.name} ({json.dumps(setup.tvm_target, sort_keys=True)})"
    where = f"RPC tracker {setup.rpc[0]}:{setup.rpc[1]} key '{setup.device_key}'" if setup.rpc else "this process"
    log(f"TVM profiling for {target_label}: {len(samples)} samples x {len(precisions)} precision(s), timed in {where}")

    def work() -> tuple[list[_TVMEntry], int, bool]:
        local = setup.rpc is None
        if local:
            # TVM sizes this thread's pool from TVM_NUM_THREADS (else half the logical CPUs on x86)
            want = threads or default_threads()
            old = os.environ.get("TVM_NUM_THREADS")
            os.environ["TVM_NUM_THREADS"] = str(want)
            try:
                session: Any = _LocalTVM(setup.device)
                session.get_function("runtime.config_threadpool")(1, want)
                n_threads = int(session.get_function("runtime.NumThreads")())
            finally:
                if old is None:
                    os.environ.pop("TVM_NUM_THREADS", None)
                else:
                    os.environ["TVM_NUM_THREADS"] = old
        else:
            session = _RemoteTVM(setup)
            try:
                if threads:  # can only lower the server's pool (TVM_NUM_THREADS of the server process)
                    session.get_function("runtime.config_threadpool")(1, int(threads))
                n_threads = int(session.get_function("runtime.NumThreads")())
            except Exception as exc:  # noqa: BLE001 - an old server without these functions
                log(f"could not read/set the board's TVM thread count: {_short_error(exc)}")
                n_threads = int(threads or 0)
        if threads and n_threads != threads:
            log(f"TVM runs {n_threads} thread(s), not the {threads} asked for"
                + ("" if local else " (start the board's RPC server with TVM_NUM_THREADS=N)"))
        entries: list[_TVMEntry] = []
        with tempfile.TemporaryDirectory(prefix="onnxsplit-profile-tvm-") as tmp:
            for i, (kind, name, clean, split, fp32, meta) in enumerate(samples):
                for prec in precisions:
                    label = f"{name} [{prec}]"
                    try:
                        model = fp32 if prec == "fp32" else quantize_qdq(fp32)
                        with _quiet_stderr():
                            art = tb.compile_half(model, setup.tvm_target, Path(tmp), name=f"s{i}-{prec}", cc=setup.cc)
                        handle = session.upload(art.path)
                    except (tb.ToolchainError, tb.TVMNotAvailableError):
                        raise
                    except Exception as exc:  # noqa: BLE001 - TVM cannot import/compile this sample: skip it
                        msg = _short_error(exc)
                        # drop compile_half's "<library> (<target>): " label and its advice about cuts
                        msg = msg.split("): ", 1)[1] if msg.startswith(f"s{i}-{prec} (") and "): " in msg else msg
                        msg = msg.split("; keep that part on onnxruntime", 1)[0]
                        skipped.append((label, msg))
                        log(f"skipped {label}: {msg}")
                        continue
                    inputs = [{k: x[k] for k in ("name", "shape", "dtype")} for x in art.inputs]
                    entries.append(_TVMEntry(kind, name, clean, split, prec, handle, inputs, _feeds_for_inputs(inputs),
                                             meta))
                if (i + 1) % 25 == 0 or i + 1 == len(samples):
                    log(f"compiled {i + 1}/{len(samples)} samples ({len(entries)} libraries, "
                        f"{time.perf_counter() - t_start:.0f} s)")
            if high_priority and not local:
                log("--high-priority raises this machine's priority only: not applied to the RPC timing")
            with HighPriority(high_priority and local) as prio:
                _time_rounds_tvm(entries, session, rounds, reps, max_seconds, warmup, log, t_start, skipped)
            session.close()
        return entries, n_threads, bool(high_priority and local and prio.applied)

    entries, n_threads, high = _in_thread(work)
    entries = [e for e in entries if e.round_medians]
    if samples and not entries:
        hint = (f" (is the device behind key '{setup.device_key}' a {t.arch} {setup.device} device like {t.name}?)"
                if setup.rpc else "")
        raise ProfileError(f"TVM could not time any sample for {t.name}: "
                           + (skipped[-1][1] if skipped else "no samples") + hint)
    load = _loadavg() if setup.rpc is None else None
    host = _host() if setup.rpc is None else f"rpc:{setup.device_key}@{setup.rpc[0]}:{setup.rpc[1]}"
    extra = {"threads": n_threads or "", "onnxruntime": "", "host": host, "loadavg_1m": "" if load is None else load,
             "priority": "high" if high else "normal", "tvm": getattr(tvm, "__version__", ""),
             "tvm_target": json.dumps(setup.tvm_target, sort_keys=True)}
    rows = [_row(e, t.name, "tvm", warmup, extra) for e in entries]
    result = ProfileResult(None, rows, skipped, time.perf_counter() - t_start)
    if output is not None:
        result.path = write_profile_csv(rows, output)
    return result


@contextlib.contextmanager
def _quiet_stderr():
    """Silence TVM's C++ warnings (written to fd 2) while compiling; progress lines stay readable."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(fd, 2)
    finally:
        os.close(fd)


def _run_error(exc: BaseException) -> str:
    """One line from a TVM (RPC) runtime error: the remote message, not the RPC wrapper's header."""
    from .compile.tvm_backend import _first_line

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.endswith("Error caught from RPC call:") and i + 1 < len(lines):
            return " ".join(lines[i + 1:])[:300]
    return _first_line(exc)[:300]


def _time_rounds_tvm(entries: list[_TVMEntry], session: Any, rounds: int, reps: int, max_seconds: float, warmup: int,
                     log: Callable[[str], None], t_start: float, skipped: list, *, extra_rounds: int = 6,
                     tol: float = 0.1) -> None:
    """As :func:`_time_rounds`, with ``time_evaluator`` (on the board's clock when remote).

    Per entry and round: load the library, set the inputs (``set_input``; timed through
    ``invoke_stateful``, which also works over RPC for functions returning tuples), ``warmup`` untimed
    runs, a one-run probe; then ``repeat`` = ``reps`` (fewer when over ``max_seconds``, never fewer than
    3) measurements of ``number`` runs each (``number`` such that a repeat lasts >= 0.2 ms, at most
    100). A sample that fails is dropped with its reason in ``skipped`` (never a 0 latency).
    """
    from tvm import relax
    import tvm

    dev = session.dev
    failed: set[int] = set()
    for r in range(rounds + extra_rounds):
        todo = [e for e in entries if id(e) not in failed and (r < rounds or not _stable(e, tol))]
        if not todo:
            break
        for e in todo:
            try:
                vm = relax.VirtualMachine(session.load(e.handle), dev)
                args = [tvm.runtime.tensor(np.ascontiguousarray(e.feeds[i["name"]]), device=dev) for i in e.inputs]
                vm.set_input("main", *args)
                for _ in range(max(1, warmup)):
                    vm.invoke_stateful("main")
                dev.sync()
                probe_ms = float(vm.time_evaluator("invoke_stateful", dev, number=1, repeat=1)("main").mean) * 1e3
                number = int(min(_TVM_MAX_NUMBER, max(1, math.ceil(_TVM_MIN_REPEAT_MS / max(probe_ms, 1e-6)))))
                n = int(max(3, min(reps, max_seconds * 1e3 / max(probe_ms * number, 1e-6))))
                res = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=n)("main")
                times = [float(x) * 1e3 for x in res.results]
                del vm, args
            except Exception as exc:  # noqa: BLE001
                msg = f"run: {_run_error(exc)}"
            else:
                msg = "" if times and all(math.isfinite(x) and x > 0 for x in times) else \
                    f"run: non-positive or non-finite times {times[:3]}"
            if msg:
                failed.add(id(e))
                skipped.append((f"{e.name} [{e.precision}]", msg))
                log(f"skipped {e.name} [{e.precision}]: {msg}")
                e.round_medians.clear()
                e.times.clear()
                continue
            e.number = number
            e.round_medians.append(float(np.median(times)))
            e.times.extend(times)
        log(f"round {r + 1} done: {len(todo)} samples ({time.perf_counter() - t_start:.0f} s)")


def write_profile_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write rows with :data:`CSV_COLUMNS` atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CSV_COLUMNS})
    fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".csv", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def read_profile_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a profile CSV (numbers parsed); :class:`ProfileError` on a missing column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{p}: profile CSV not found (write one with `onnxsplit profile --target T -o {p}`)") from None
    reader = csv.DictReader(io.StringIO(text))
    cols = reader.fieldnames or []
    required = ("kind", "name", "target", "runtime", "precision", "median_ms")
    missing = [c for c in required if c not in cols]
    if missing:
        raise ProfileError(f"{p}: missing column(s) {missing}; expected the columns of onnxsplit.profile.CSV_COLUMNS")
    rows = []
    for i, r in enumerate(reader, start=2):
        row: dict[str, Any] = dict(r)
        for k in ("median_ms", "min_ms", "p90_ms", "mean_ms", "mflops", "in_mb", "out_mb", "param_mb"):
            if row.get(k) not in (None, ""):
                try:
                    row[k] = float(row[k])
                except ValueError:
                    raise ProfileError(f"{p}: line {i}: column '{k}' is not a number: {row[k]!r}") from None
        row["_line"] = i
        rows.append(row)
    return rows


def redo_specs(rows: Sequence[dict[str, Any]], *, precision: str,
               with_op: str | None = None) -> list[tuple[str, dict[str, Any], str]]:
    """``(kind, spec, split)`` of the rows of an earlier profile in ``precision`` (see
    :func:`read_profile_csv`), to time them again with :func:`run_profile` (``specs=``), e.g. after
    a change to :func:`quantize_qdq`. ``with_op``: only rows whose fp32 graph contains that ONNX op
    type. A row without a usable spec is a :class:`ProfileError` naming its line."""
    out = []
    for r in rows:
        if r.get("precision") != precision:
            continue
        try:
            spec = r["spec"] if isinstance(r.get("spec"), dict) else json.loads(r.get("spec") or "")
        except ValueError:
            raise ProfileError(f"line {r.get('_line', '?')} ({r.get('name')}): column 'spec' is not JSON; "
                               "only rows written by `onnxsplit profile` can be timed again") from None
        if with_op is not None:
            try:
                ops = {n.op_type for n in build_spec(spec).graph.node}
            except Exception as exc:  # noqa: BLE001
                raise ProfileError(f"line {r.get('_line', '?')} ({r.get('name')}): cannot rebuild its graph: {exc}") from None
            if with_op not in ops:
                continue
        out.append((str(r["kind"]), {k: v for k, v in spec.items() if k != "family"}, str(r.get("split") or "")))
    return out


def merge_profile_rows(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """``old`` with every row that ``new`` re-timed (same kind, spec, precision and split) replaced in
    place, keeping the old row's name; rows of ``new`` without a match are appended. Returns the rows
    and how many were replaced."""
    def key(r: Mapping[str, Any]) -> tuple[str, str, str, str]:
        spec = r.get("spec") or ""
        try:
            spec = json.dumps(spec if isinstance(spec, dict) else json.loads(spec), sort_keys=True)
        except ValueError:
            pass
        return str(r["kind"]), spec, str(r["precision"]), str(r.get("split") or "")

    fresh = {key(r): r for r in new}
    out, used = [], set()
    for r in old:
        k = key(r)
        if k in fresh:
            out.append({**fresh[k], "name": r["name"]})
            used.add(k)
        else:
            out.append({c: v for c, v in r.items() if c != "_line"})
    out += [r for r in new if key(r) not in used]
    return out, len(used)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
