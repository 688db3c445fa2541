"""Compile an ONNX half with Apache TVM (Relax) for a target, export a shared library, validate it.

Tested with ``apache-tvm==0.27.0.post1`` + ``apache-tvm-ffi==0.1.14.post1`` (``pip install
'onnxsplit[tvm]'``). TVM is imported lazily, on the first call that needs it: importing this module
is cheap and works without TVM.

Pipeline of :func:`compile_half`:

1. the model's graph inputs must have static shapes (they give ``shape_dict``/``dtype_dict``);
   model-local functions are inlined; ops the TVM ONNX importer lacks are refused up front with
   :class:`UnsupportedOpError` naming the op and the node;
2. ``from_onnx`` -> ``DecomposeOpsForInference`` -> the default Relax pipeline for the target (the
   same one ``tvm.compile`` would pick: dlight schedules for GPUs, none for CPUs) -> ``tvm.compile``;
3. ``export_library`` to ``out_dir/<name>.so`` with the C++ compiler for the target's *host* triple
   (host ``g++`` when it matches this machine, ``aarch64-linux-gnu-g++`` for aarch64 hosts, CUDA
   targets included: their kernels travel as CUDA source inside the library and are compiled for
   ``arch`` on the device when the library is loaded); a missing cross compiler raises
   :class:`ToolchainError` *before* any compile work;
4. ``out_dir/<name>.json``: sidecar with the target, inputs/outputs, versions and the int8 mode.

Honest int8 reporting: TVM 0.27 imports QDQ models as ``R.quantize``/``R.dequantize`` around float
compute. :func:`compile_half` counts the quantize/dequantize ops in the Relax module, the dtypes of
the compute ops (conv/matmul/dense), and the multiplications of 8-bit integers in the lowered TIR.
For an ordinary QDQ model that gives ``int8_mode = "dequantize-compute-quantize (fp32 compute; no
int8 kernels)"``: int8 saves weight storage (library size), not compute.

Validation (:func:`validate_artifact`), per build:

* every build: the ELF header of the library (64-bit shared object, ``e_machine`` = the target's
  host architecture);
* CPU builds for this machine's architecture: the library is loaded in this process and its outputs
  compared with onnxruntime (optimizations off) - unless the target uses CPU features this machine
  lacks (e.g. ``mcpu = "znver4"`` AVX-512 code on an AVX2-only host), which is reported, not run;
* CPU builds for aarch64 on an x86 machine: optionally (``emulate=True``, slow and needs ``qemu-user``)
  run under ``qemu-aarch64`` with the aarch64 TVM runtime from the PyPI wheels and a small C++
  runner (downloaded/compiled once into ``~/.cache/onnxsplit``), compared with onnxruntime;
* CUDA builds: the CUDA kernel source is present in the library; numerics are checked only when
  the host part matches this machine and a CUDA GPU is visible.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxSplitError, ShapeError

__all__ = [
    "ArtifactValidationError",
    "CompiledArtifact",
    "TVMCompileError",
    "TVMNotAvailableError",
    "ToolchainError",
    "UnsupportedOpError",
    "aarch64_runner",
    "compile_bundle",
    "compile_half",
    "elf_machine",
    "export_compiler",
    "import_half",
    "ms_fuse_passes",
    "open_tuning_db",
    "missing_cpu_features",
    "tvm_available",
    "validate_artifact",
]

ARTIFACT_SCHEMA = "onnxsplit.tvm-artifact/1"
#: versions this module was tested with (pip install 'onnxsplit[tvm]' pins them)
TESTED_TVM = "0.27.0.post1"
TESTED_TVM_FFI = "0.1.14.post1"
INSTALL_HINT = "pip install 'onnxsplit[tvm]' (apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1)"

INT8_NA = "n/a"
#: numerical tolerances of :func:`validate_artifact`: max |tvm - ort| <= atol + rtol * max |ort|
RTOL_FP32 = 1e-4
ATOL_FP32 = 1e-6
#: QDQ models: TVM computes in fp32 and re-quantizes; a value that lands on a rounding boundary can
#: move by one quantization step (and that step propagates), so the check is looser.
RTOL_QDQ = 5e-2


# ----------------------------------------------------------------------------------- errors
class TVMNotAvailableError(OnnxSplitError, ImportError):
    """apache-tvm is not installed (or fails to import)."""


class ToolchainError(OnnxSplitError):
    """The C++ (cross) compiler needed to export the library is missing."""


class UnsupportedOpError(OnnxSplitError):
    """TVM's ONNX importer cannot convert an op of the model."""


class TVMCompileError(OnnxSplitError):
    """TVM failed to import, compile or export a model."""


class ArtifactValidationError(OnnxSplitError):
    """A compiled library failed validation (wrong machine, missing CUDA code, wrong numerics)."""


# ---------------------------------------------------------------------------- lazy import
@functools.lru_cache(maxsize=1)
def _import_tvm():
    try:
        import tvm  # noqa: F401
        from tvm import relax  # noqa: F401
        from tvm.relax.frontend.onnx import from_onnx  # noqa: F401
    except Exception as exc:  # ImportError, or a broken dependency (tvm_ffi imports torch if present)
        raise TVMNotAvailableError(
            f"Apache TVM is needed to compile halves but could not be imported "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); install it with: {INSTALL_HINT}"
        ) from exc
    ffi = _dist_version("apache-tvm-ffi")
    if ffi and ffi != TESTED_TVM_FFI:
        warnings.warn(
            f"apache-tvm-ffi {ffi} is installed; onnxsplit was tested with {TESTED_TVM_FFI} "
            f"(newer ffi releases crash when serializing TIR with apache-tvm {TESTED_TVM}): {INSTALL_HINT}",
            stacklevel=3,
        )
    return tvm


def tvm_available() -> bool:
    """True if Apache TVM imports (this imports it: takes seconds the first time)."""
    try:
        _import_tvm()
    except TVMNotAvailableError:
        return False
    return True


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# -------------------------------------------------------------------------------------- ELF
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86-64", 183: "aarch64", 243: "riscv"}
#: target triple architecture -> ELF machine name
_ARCH_TO_MACHINE = {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "aarch64", "arm64": "aarch64",
                    "riscv64": "riscv", "armv7l": "arm", "arm": "arm"}


def elf_machine(path: str | os.PathLike[str]) -> str:
    """Machine of an ELF file from its header (``x86-64``, ``aarch64``, ...); raises if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ArtifactValidationError(f"{path} is not an ELF file")
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    return _ELF_MACHINES.get(machine, f"e_machine={machine}")


def _elf_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(20)
    order = "little" if head[5:6] == b"\x01" else "big"
    return {"class": {1: 32, 2: 64}.get(head[4], 0), "type": int.from_bytes(head[16:18], order)}


# ------------------------------------------------------------------------------- toolchain
def _host_triple(tvm_target: Mapping[str, Any]) -> str:
    """LLVM triple of the CPU code: the target itself (llvm) or its ``host`` (cuda, ...)."""
    t = tvm_target if tvm_target.get("kind") == "llvm" else tvm_target.get("host", {})
    return str(t.get("mtriple") or f"{platform.machine()}-linux-gnu")


def _triple_arch(triple: str) -> str:
    arch = triple.split("-")[0].lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def _this_arch() -> str:
    return _triple_arch(platform.machine())


def _kind(tvm_target: Mapping[str, Any]) -> str:
    k = tvm_target.get("kind")
    return "llvm-cpu" if k == "llvm" else str(k)


def export_compiler(tvm_target: Mapping[str, Any], *, label: str = "the library") -> str:
    """The C++ compiler that links a library for the target's host triple; :class:`ToolchainError` if absent."""
    arch = _triple_arch(_host_triple(tvm_target))
    if arch == _this_arch():
        cc = os.environ.get("CXX") or "g++"
        if shutil.which(cc) is None:
            raise ToolchainError(
                f"exporting {label} for this machine ({arch}) needs a C++ compiler, but '{cc}' is not on PATH; "
                "install one with: apt-get install g++"
            )
        return cc
    cc = f"{arch}-linux-gnu-g++"
    if shutil.which(cc) is None:
        pkg = {"aarch64": "g++-aarch64-linux-gnu", "x86_64": "g++-x86-64-linux-gnu",
               "riscv64": "g++-riscv64-linux-gnu"}.get(arch, f"g++-{arch}-linux-gnu")
        raise ToolchainError(
            f"cross-compiling {label} for {arch} needs {cc}, which is not on PATH; install it with: "
            f"apt-get install {pkg} (the ONNX halves do not need it)"
        )
    return cc


def _export_fcompile(cc: str, triple: str) -> Any:
    """The ``fcompile`` for ``export_library``: link with ``cc``, for the target's host ``triple``.

    ``export_library`` packs the Relax VM bytecode (and any device code) into a ``devc.o`` object
    built for the triple of the module's LLVM code. A half without compute kernels (e.g. an edge
    half that is a lone Identity: no PrimFuncs, hence no LLVM module) has none, and TVM then asks
    the *default host* compiler (``$CXX`` / ``g++ -dumpmachine``, not ``cc``) for the triple: an
    x86-64 ``devc.o`` that a cross linker rejects ("incompatible with aarch64 output"). Naming the
    target's triple here makes that object match the library in every case.
    """
    _import_tvm()
    from tvm.support import cc as tvm_cc

    return tvm_cc.cross_compiler(cc, get_target_triple=lambda: triple)


# ------------------------------------------------------------------------------ model info
def _np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _feed_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _static_inputs(model: onnx.ModelProto, label: str) -> list[dict[str, Any]]:
    out = []
    for vi in _feed_infos(model):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise TVMCompileError(f"{label}: input '{vi.name}' is not a tensor; TVM compiles tensor inputs only")
        shape = []
        for axis, d in enumerate(tt.shape.dim):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                sym = d.dim_param or "?"
                raise ShapeError(
                    f"{label}: input '{vi.name}' axis {axis} is dynamic ('{sym}'); TVM needs static shapes: "
                    f"load the model with --input-shape {vi.name}:..."
                )
            shape.append(int(d.dim_value))
        out.append({"name": vi.name, "shape": shape, "dtype": _np_dtype(tt.elem_type).name})
    return out


def _output_infos(model: onnx.ModelProto) -> list[dict[str, Any]]:
    outs = list(model.graph.output)
    if any(not o.type.tensor_type.HasField("shape") for o in outs):
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            outs = list(inferred.graph.output)
        except Exception:  # noqa: BLE001 - shapes are informational here
            pass
    res = []
    for o in outs:
        tt = o.type.tensor_type
        shape = [int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField("shape") else None
        res.append({"name": o.name, "shape": shape, "dtype": _np_dtype(tt.elem_type).name})
    return res


def _iter_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_nodes(g)


def _node_label(node: onnx.NodeProto) -> str:
    return f"'{node.name}'" if node.name else f"(unnamed, output '{node.output[0] if node.output else '?'}')"


def _check_supported_ops(model: onnx.ModelProto, label: str) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convert = _get_convert_map()
    bad: dict[str, list[onnx.NodeProto]] = {}
    for node in _iter_nodes(model.graph):
        op = node.op_type
        domain = node.domain or ""
        qual = op if domain in ("", "ai.onnx") else f"{domain}::{op}"
        if op in ("If", "Constant") and domain in ("", "ai.onnx"):
            continue
        # the importer dispatches on op_type only: ops of other domains are real only for com.microsoft
        if op not in convert or domain not in ("", "ai.onnx", "com.microsoft"):
            bad.setdefault(qual, []).append(node)
    if bad:
        qual, nodes = next(iter(bad.items()))
        more = f" (and {len(nodes) - 1} more node(s) of that op)" if len(nodes) > 1 else ""
        others = f"; also unsupported: {', '.join(list(bad)[1:])}" if len(bad) > 1 else ""
        raise UnsupportedOpError(
            f"{label}: TVM's ONNX importer does not support op '{qual}' (node {_node_label(nodes[0])}{more}){others}; "
            "keep that part on onnxruntime (choose a cut that puts it on a side you do not compile)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # TVM errors end with the message after a traceback; prefer the last 'Error:' line
    for ln in reversed(lines):
        if "Error" in ln and ":" in ln:
            return ln[:400]
    return (lines[-1] if lines else type(exc).__name__)[:400]


def _import_relax(model: onnx.ModelProto, inputs: list[dict[str, Any]], label: str):
    """ONNX -> Relax IRModule; converter failures name the node."""
    tvm = _import_tvm()
    from tvm.relax.frontend import onnx as onnx_frontend

    shape_dict = {i["name"]: i["shape"] for i in inputs}
    dtype_dict = {i["name"]: i["dtype"] for i in inputs}
    current: dict[str, Any] = {}
    importer_cls = getattr(getattr(onnx_frontend, "onnx_frontend", None), "ONNXGraphImporter", None)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            if importer_cls is None:  # pragma: no cover - other TVM versions
                return onnx_frontend.from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict)
            # from_onnx, with the converter call wrapped to remember the node being converted
            importer = importer_cls(shape_dict, dtype_dict, keep_params_in_input=False, sanitize=True)
            original = importer._convert_operator

            def convert(op_name, inputs_, attrs, opset):  # noqa: ANN001
                current["op"] = op_name
                current["node"] = (attrs.get("tvm_custom") or {}).get("name", "")
                return original(op_name, inputs_, attrs, opset)

            importer._convert_operator = convert
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
            return importer.from_onnx(model.graph, opset)
    except OnnxSplitError:
        raise
    except tvm.error.OpNotImplemented as exc:  # the importer's own check (we check first; kept as a net)
        raise UnsupportedOpError(f"{label}: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001
        if "op" in current:
            node = current.get("node") or "?"
            raise UnsupportedOpError(
                f"{label}: TVM's ONNX importer failed on op '{current['op']}' (node '{node}'): {_first_line(exc)}"
            ) from exc
        raise TVMCompileError(f"{label}: TVM could not import the model: {_first_line(exc)}") from exc


# ----------------------------------------------------------------------------- int8 analysis
_COMPUTE_OPS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d", "relax.nn.conv1d_transpose",
                "relax.nn.conv2d_transpose", "relax.matmul", "relax.linear", "relax.nn.dense", "relax.einsum")
_QUANT_ONNX_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                   "MatMulInteger", "ConvInteger", "MatMulInteger16")


def _expr_dtype(expr: Any) -> str:
    for attr in ("ty", "struct_info"):
        info = getattr(expr, attr, None)
        dt = getattr(info, "dtype", None)
        if dt is not None:
            return str(dt)
    return "?"


def _relax_summary(mod: Any) -> tuple[Counter, dict[str, Counter]]:
    """(op name -> count, compute op -> Counter of its data dtypes) over the Relax functions."""
    tvm = _import_tvm()
    from tvm import relax

    ops: Counter = Counter()
    compute: dict[str, Counter] = {}

    def visit(e: Any) -> None:
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            name = e.op.name
            ops[name] += 1
            if name in _COMPUTE_OPS and e.args:
                compute.setdefault(name, Counter())[_expr_dtype(e.args[0])] += 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return ops, compute


def _tir_int8_multiplies(lowered: Any) -> int:
    """Integer multiplications whose operands are 8-bit integers in the lowered TIR (int8 kernels)."""
    _import_tvm()
    from tvm import tirx
    from tvm_ffi.structural import structural_walk

    count = 0

    def strip(e: Any) -> Any:
        while isinstance(e, tirx.Cast):
            e = e.value
        return e

    def on_mul(e: Any) -> None:
        nonlocal count
        if str(e.ty).startswith(("int", "uint")) and any(str(strip(x).ty) in ("int8", "uint8") for x in (e.a, e.b)):
            count += 1

    for _, func in lowered.functions.items():
        if isinstance(func, tirx.PrimFunc):
            structural_walk(func, [(tirx.Mul, on_mul)])
    return count


def _fp_name(dtype: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}.get(dtype, dtype)


def _int8_mode(model: onnx.ModelProto, relax_ops: Counter, compute: dict[str, Counter], tir_int8: int) -> tuple[str, dict]:
    onnx_q = Counter(n.op_type for n in _iter_nodes(model.graph) if n.op_type in _QUANT_ONNX_OPS)
    q_ops = {k: v for k, v in relax_ops.items() if k in ("relax.quantize", "relax.dequantize")}
    compute_dtypes: Counter = Counter()
    for c in compute.values():
        compute_dtypes.update(c)
    details = {
        "onnx_quant_nodes": dict(onnx_q),
        "relax_quantize_ops": q_ops,
        "compute_ops": {k: dict(v) for k, v in compute.items()},
        "tir_int8_multiplies": tir_int8,
    }
    int_compute = sorted(d for d in compute_dtypes if d.startswith(("int", "uint")))
    fp_compute = sorted(d for d in compute_dtypes if d.startswith(("float", "bfloat")))
    if not onnx_q and not q_ops and not int_compute and tir_int8 == 0:
        return INT8_NA, details
    if tir_int8 > 0:
        return f"int8 kernels ({tir_int8} 8-bit integer multiplies in the compiled TIR)", details
    if int_compute and not any(d in ("int8", "uint8") for d in int_compute):
        fp = f"; {'/'.join(_fp_name(d) for d in fp_compute)} elsewhere" if fp_compute else ""
        return f"integer compute in {'/'.join(int_compute)} after widening 8-bit inputs (no int8 kernels{fp})", details
    fp = "/".join(_fp_name(d) for d in fp_compute) or "fp32"
    return f"dequantize-compute-quantize ({fp} compute; no int8 kernels)", details


# ------------------------------------------------------------------------------- artifacts
@dataclass
class CompiledArtifact:
    """A TVM-compiled half: ``path`` (the .so) and ``sidecar`` (the .json beside it)."""

    path: Path
    sidecar: Path
    name: str
    target: dict[str, Any]  # TVM target dict
    target_name: str | None
    machine: str  # ELF e_machine read from the library: "x86-64" | "aarch64" | ...
    kind: str  # "llvm-cpu" | "cuda" | ...
    int8_mode: str
    inputs: list[dict[str, Any]]  # {"name", "relax_name", "shape", "dtype"} in call order
    outputs: list[dict[str, Any]]  # {"name", "shape", "dtype"} in return order
    compile_seconds: float
    size_bytes: int
    int8_details: dict[str, Any] = field(default_factory=dict)
    cuda_kernels: int | None = None  # kernels whose CUDA source is inside the library
    tuning: dict[str, Any] | None = None  # {"database", "records", "tasks", "tuned_tasks"} with a tuning db

    @property
    def host_arch(self) -> str:
        return _triple_arch(_host_triple(self.target))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": ARTIFACT_SCHEMA,
            "library": self.path.name,
            "name": self.name,
            "target_name": self.target_name,
            "tvm_target": self.target,
            "kind": self.kind,
            "machine": self.machine,
            "host_triple": _host_triple(self.target),
            "cuda_code": (
                f"CUDA source for {self.target.get('arch')} ({self.cuda_kernels} kernels) inside the library; "
                "compiled on the device when the library is loaded (NVRTC, or nvcc with TVM_CUDA_COMPILE_MODE=nvcc)"
            ) if self.kind == "cuda" else None,
            "int8_mode": self.int8_mode,
            "int8_details": self.int8_details,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "call": "relax.VirtualMachine(tvm.runtime.load_module(library), device)['main'](*inputs in this order) "
                    "-> a tensor, or a tuple of tensors in the order of outputs",
            "size_bytes": self.size_bytes,
            "compile_seconds": round(self.compile_seconds, 3),
            **({"tuning": self.tuning} if self.tuning else {}),
            "versions": {"apache-tvm": _dist_version("apache-tvm"), "apache-tvm-ffi": _dist_version("apache-tvm-ffi"),
                         "onnx": _dist_version("onnx")},
        }


def _target_dict_and_name(target: Any) -> tuple[dict[str, Any], str | None]:
    if isinstance(target, Mapping):
        return dict(target), None
    from ..targets import Target, load_target

    t = target if isinstance(target, Target) else load_target(target)
    return t.tvm_target, t.name


def _prepare_model(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception:  # noqa: BLE001 - the support check below names what is left
            pass
    return model


def import_half(model: onnx.ModelProto, inputs: list[dict[str, Any]], label: str):
    """ONNX half -> Relax IRModule ready for a pipeline (``from_onnx`` + ``DecomposeOpsForInference``).

    Sets ``relax_name`` on each entry of ``inputs`` (from :func:`_static_inputs`). Shared by
    :func:`compile_half` and the MetaSchedule tuner (``onnxsplit.compile.tune``), so both see the
    same module and tuning records match at compile time."""
    _import_tvm()
    from tvm import relax

    _check_supported_ops(model, label)
    mod = _import_relax(model, inputs, label)
    params = list(mod["main"].params)
    if len(params) != len(inputs):  # pragma: no cover - importer contract
        raise TVMCompileError(f"{label}: Relax main takes {len(params)} inputs, the model has {len(inputs)}")
    for spec, p in zip(inputs, params):
        spec["relax_name"] = str(getattr(p, "name_hint", None) or getattr(p, "name", ""))
    try:
        return relax.transform.DecomposeOpsForInference()(mod)
    except Exception as exc:  # noqa: BLE001
        raise TVMCompileError(f"{label}: TVM could not prepare the module: {_first_line(exc)}") from exc


def ms_fuse_passes(tgt: Any) -> list[Any]:
    """The passes before MetaSchedule's database lookup (as in ``meta_schedule.relax_integration.
    compile_relax``): library dispatch, LegalizeOps, fusion. Tasks are extracted after them."""
    _import_tvm()
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline_mod

    try:
        dispatch = list(relax_pipeline_mod.library_dispatch_passes(tgt))
    except (ValueError, AttributeError):
        dispatch = []
    return [*dispatch, relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]


def _tuned_pipeline(tgt: Any) -> Any:
    """Relax pipeline applying a MetaSchedule database (enter the database and the target first):
    fuse -> ``MetaScheduleApplyDatabase`` -> dlight for untuned GPU functions -> lower/finalize."""
    tvm = _import_tvm()
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline_mod
    from tvm.s_tir import dlight as dl

    try:
        lower = list(relax_pipeline_mod.dataflow_lower_passes(tgt))
        finalize = list(relax_pipeline_mod.finalize_passes(tgt))
    except (ValueError, AttributeError):  # CPU backends in 0.27 (the same fallback as compile_relax)
        lower = [relax.transform.RewriteDataflowReshape(), relax.transform.ToNonDataflow(),
                 relax.transform.RemovePurityChecking(), relax.transform.CallTIRRewrite()]
        finalize = [relax.transform.StaticPlanBlockMemory(), relax.transform.LowerAllocTensor(),
                    relax.transform.KillAfterLastUse(), relax.transform.LowerRuntimeBuiltin(),
                    relax.transform.ComputePrimValue(), relax.transform.VMShapeLower(),
                    relax.transform.AttachGlobalSymbol()]
    gpu = relax_pipeline_mod.BackendDispatcher.is_gpu_target(tgt)

    @tvm.transform.module_pass(opt_level=3)
    def _pipeline(mod, _ctx):  # noqa: ANN001, ANN202
        mod = tvm.transform.Sequential(ms_fuse_passes(tgt))(mod)
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        if gpu:
            mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                          dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)
        return tvm.transform.Sequential(lower + finalize)(mod)

    return _pipeline


def open_tuning_db(path: str | os.PathLike[str]) -> Any:
    """The MetaSchedule ``JSONDatabase`` in ``path`` (``database_workload.json`` +
    ``database_tuning_record.json``); :class:`TVMCompileError` if it is not there."""
    _import_tvm()
    from tvm.s_tir import meta_schedule as ms

    root = Path(path)
    wl, rec = root / "database_workload.json", root / "database_tuning_record.json"
    if not wl.is_file() or not rec.is_file():
        raise TVMCompileError(f"{root} is not a tuning database (needs database_workload.json and "
                              "database_tuning_record.json; create one with `onnxsplit tune`)")
    return ms.database.JSONDatabase(str(wl), str(rec), allow_missing=False)


def compile_half(
    model: onnx.ModelProto | str | os.PathLike[str],
    target: Any,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    cc: str | None = None,
    tuning_db: str | os.PathLike[str] | None = None,
) -> CompiledArtifact:
    """Compile ``model`` for ``target`` (a :class:`~onnxsplit.targets.Target`, a target name, or a TVM
    target dict) into ``out_dir/<name>.so`` + ``out_dir/<name>.json``. See the module docstring.

    ``tuning_db``: a MetaSchedule JSON database folder (``onnxsplit tune``): its best schedules
    replace the default ones for the workloads it holds (``artifact.tuning`` says how many)."""
    tvm_dict, target_name = _target_dict_and_name(target)
    label = f"{name} ({target_name or tvm_dict.get('kind')})"
    cc = cc or export_compiler(tvm_dict, label=f"the '{name}' library for {target_name or json.dumps(tvm_dict)}")
    model = _prepare_model(model)
    inputs = _static_inputs(model, label)
    outputs = _output_infos(model)

    tvm = _import_tvm()
    from tvm import relax

    database = open_tuning_db(tuning_db) if tuning_db is not None else None
    t0 = time.perf_counter()
    mod = import_half(model, inputs, label)
    tuning: dict[str, Any] | None = None
    try:
        tgt = tvm.target.Target(tvm_dict)
        relax_ops, compute = _relax_summary(mod)
        if database is not None:
            from tvm.s_tir import meta_schedule as ms

            with tgt:
                fused = tvm.transform.Sequential(ms_fuse_passes(tgt))(mod)
            tasks = ms.relax_integration.extract_tasks(fused, tgt)
            # tasks with at least one measured record (workloads alone are committed before measuring)
            tuned = sum(1 for t in tasks
                        if any(database.query_tuning_record(m, tgt, t.task_name) is not None for m in t.dispatched))
            tuning = {"database": str(Path(tuning_db)), "records": len(database), "tasks": len(tasks),
                      "tuned_tasks": tuned}
            with tgt, database, tvm.transform.PassContext(opt_level=3):
                lowered = _tuned_pipeline(tgt)(mod)
        else:
            # the pipeline tvm.compile would choose (relax.build): per-target default for GPUs
            pipeline = None
            if "gpu" in list(tgt.keys):
                with contextlib.suppress(ValueError, AttributeError):
                    pipeline = relax.get_default_pipeline(tgt)
            if pipeline is None:
                pipeline = relax.get_pipeline("default")
            with tgt:
                lowered = pipeline(mod)
        tir_int8 = _tir_int8_multiplies(lowered)
        ex = tvm.compile(lowered, target=tgt, relax_pipeline=None)
    except OnnxSplitError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise TVMCompileError(f"{label}: TVM compile failed: {_first_line(exc)}") from exc
    int8_mode, int8_details = _int8_mode(model, relax_ops, compute, tir_int8)

    cuda_kernels = None
    if tvm_dict.get("kind") == "cuda":
        cuda_kernels = sum(_cuda_source(m).count("__global__") for m in _walk_modules(ex.mod))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    so = out_dir / f"{name}.so"
    tmp_so = out_dir / f".{name}.so.tmp"
    try:
        with tempfile.TemporaryDirectory(prefix="onnxsplit-tvm-") as work:
            ex.export_library(str(tmp_so), fcompile=_export_fcompile(cc, _host_triple(tvm_dict)), workspace_dir=work)
    except Exception as exc:  # noqa: BLE001
        tmp_so.unlink(missing_ok=True)
        raise TVMCompileError(f"{label}: exporting the library with {cc} failed: {_first_line(exc)}") from exc
    os.replace(tmp_so, so)
    seconds = time.perf_counter() - t0
    art = CompiledArtifact(
        path=so,
        sidecar=out_dir / f"{name}.json",
        name=name,
        target=tvm_dict,
        target_name=target_name,
        machine=elf_machine(so),
        kind=_kind(tvm_dict),
        int8_mode=int8_mode,
        inputs=inputs,
        outputs=outputs,
        compile_seconds=seconds,
        size_bytes=so.stat().st_size,
        int8_details=int8_details,
        cuda_kernels=cuda_kernels,
        tuning=tuning,
    )
    tmp_json = out_dir / f".{name}.json.tmp"
    tmp_json.write_text(json.dumps(art.to_json(), indent=2) + "\n")
    os.replace(tmp_json, art.sidecar)
    return art


def _walk_modules(mod: Any):
    yield mod
    for m in mod.imports:
        yield from _walk_modules(m)


def _cuda_source(mod: Any) -> str:
    if getattr(mod, "kind", "") != "cuda":
        return ""
    try:
        return str(mod.inspect_source())
    except Exception:  # noqa: BLE001
        return ""


# ------------------------------------------------------------------------------ validation
def _ort_reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ..runtime_ort import run

    return run(model, feeds, optimize=False)


def _compare(art: CompiledArtifact, got: list[np.ndarray], ref: Mapping[str, np.ndarray], rtol: float,
             atol: float, ran_on: str) -> dict[str, Any]:
    per = []
    ok = True
    names = [o["name"] for o in art.outputs]
    if len(got) != len(names):
        raise ArtifactValidationError(f"{art.path}: returned {len(got)} outputs, the model has {len(names)}")
    worst_abs = 0.0
    worst_rel = 0.0
    for name, g in zip(names, got):
        r = np.asarray(ref[name])
        g = np.asarray(g)
        if g.shape != r.shape:
            raise ArtifactValidationError(f"{art.path}: output '{name}' has shape {g.shape}, onnxruntime {r.shape}")
        if r.size == 0:
            per.append({"name": name, "max_abs": 0.0, "max_rel": 0.0, "ok": True})
            continue
        same_nonfinite = True
        if r.dtype.kind == "b" or g.dtype.kind == "b":
            diff = float(np.count_nonzero(g.astype(bool) != r.astype(bool)))
            scale = 1.0
            tol = 0.0
        else:
            g64, r64 = g.astype(np.float64), r.astype(np.float64)
            finite = np.isfinite(r64)
            # NaN/inf must appear at the same places with the same values; the rest is compared
            same_nonfinite = bool(np.array_equal(finite, np.isfinite(g64))) and bool(
                np.array_equal(g64[~finite], r64[~finite], equal_nan=True))
            diff = float(np.max(np.abs(g64[finite] - r64[finite]), initial=0.0))
            scale = float(np.max(np.abs(r64[finite]), initial=0.0))
            # integer outputs: exact, except one step for quantized models (rounding ties)
            tol = (1.0 if rtol >= RTOL_QDQ else 0.0) if r.dtype.kind in "iu" else atol + rtol * scale
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        good = bool(diff <= tol) and same_nonfinite
        ok &= good
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, rel)
        per.append({"name": name, "max_abs": diff, "max_rel": rel, "ok": good})
    result = {
        "reference": "onnxruntime CPU, graph optimizations disabled",
        "ran_on": ran_on,
        "max_abs": worst_abs,
        "max_rel": worst_rel,
        "rtol": rtol,
        "atol": atol,
        "ok": ok,
        "outputs": per,
    }
    if not ok:
        bad = next(p for p in per if not p["ok"])
        raise ArtifactValidationError(
            f"{art.path}: output '{bad['name']}' differs from onnxruntime by {bad['max_abs']:.3g} "
            f"(max |ref|-relative {bad['max_rel']:.3g} > rtol {rtol:g})"
        )
    return result


def _run_in_process(art: CompiledArtifact, feeds: Mapping[str, np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    tvm = _import_tvm()
    from tvm import relax

    lib = tvm.runtime.load_module(str(art.path))
    dev = tvm.cpu() if device == "cpu" else tvm.cuda(0)
    vm = relax.VirtualMachine(lib, dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[i["name"]]), device=dev) for i in art.inputs]
    out = vm["main"](*args)
    items = [out] if hasattr(out, "numpy") else list(out)
    return [np.asarray(o.numpy()) for o in items]


def _host_cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return {f.replace("_", "").replace(".", "").lower() for f in line.split(":", 1)[1].split()}
    return None


def missing_cpu_features(tvm_target: Mapping[str, Any]) -> list[str]:
    """x86 ISA extensions (AVX*, FMA, SSE*, AMX, F16C) the target's ``mcpu``/``mattr`` enable but this CPU lacks."""
    if tvm_target.get("kind") != "llvm" or _triple_arch(_host_triple(tvm_target)) != "x86_64" or _this_arch() != "x86_64":
        return []
    host = _host_cpu_flags()
    if host is None:
        return []
    tvm = _import_tvm()
    from tvm.target import codegen

    try:
        feats = [str(f) for f in codegen.llvm_get_cpu_features(tvm.target.Target(dict(tvm_target)))]
    except Exception:  # noqa: BLE001
        return []
    isa = ("avx", "fma", "f16c", "amx", "sse", "ssse3")
    alias = {"sse3": "pni"}  # /proc/cpuinfo's name for SSE3

    def norm(f: str) -> str:
        f = f.replace("-", "").replace(".", "").replace("_", "").lower()
        return alias.get(f, f)

    missing = [f for f in feats if f.startswith(isa) and norm(f) not in host]
    return sorted(missing)


def validate_artifact(
    artifact: CompiledArtifact,
    model: onnx.ModelProto | str | os.PathLike[str] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    rtol: float | None = None,
    atol: float = ATOL_FP32,
    emulate: bool = False,
    download_runtime: bool = True,
) -> dict[str, Any]:
    """Check a compiled library; returns a JSON-ready dict, raises :class:`ArtifactValidationError`.

    ``{"elf": "<machine>", ...}`` always; ``"numerics": {max_abs, max_rel, rtol, ran_on, ...}`` when
    the library ran (here, under qemu with ``emulate=True``, or on a visible CUDA GPU), otherwise
    ``"numerics_skipped": "<why>"``; CUDA builds add ``"cuda_kernels"``. ``feeds`` default to
    random inputs (seed 0); ``rtol`` defaults to 1e-4 (fp32) or 5e-2 (quantized models).
    """
    art = artifact
    result: dict[str, Any] = {}
    # 1. ELF: 64-bit shared object for the host architecture of the target
    expected = _ARCH_TO_MACHINE.get(art.host_arch, art.host_arch)
    machine = elf_machine(art.path)
    header = _elf_header(art.path)
    if machine != expected:
        raise ArtifactValidationError(f"{art.path}: ELF machine is {machine}, the target's host is {expected}")
    if header["type"] != 3:  # ET_DYN
        raise ArtifactValidationError(f"{art.path}: not a shared object (ELF type {header['type']})")
    result["elf"] = machine
    # 2. CUDA: kernel source inside the library
    if art.kind == "cuda":
        data = art.path.read_bytes()
        kernels = data.count(b'extern "C" __global__')
        if kernels == 0:
            raise ArtifactValidationError(f"{art.path}: no CUDA kernel source found in the library")
        result["cuda_kernels"] = kernels
    # 3. numerics
    if model is None:
        result["numerics_skipped"] = "no model given"
        return result
    model = _prepare_model(model)
    if feeds is None:
        from ..runtime_ort import random_feeds

        feeds = random_feeds(model, seed=0)
    if rtol is None:
        rtol = RTOL_FP32 if art.int8_mode == INT8_NA else RTOL_QDQ
    native = art.host_arch == _this_arch()
    if art.kind == "llvm-cpu" and native:
        missing = missing_cpu_features(art.target)
        if missing:
            result["numerics_skipped"] = (
                f"this CPU lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} used by "
                f"mcpu={art.target.get('mcpu')}; run it on the target machine"
            )
            return result
        got = _run_in_process(art, feeds)
        result["numerics"] = _compare(art, got, _ort_reference(model, feeds), rtol, atol, "this machine (in-process)")
    elif art.kind == "cuda" and native:
        why = _cuda_unavailable()
        if why:
            result["numerics_skipped"] = f"CUDA build for {art.target.get('arch')}: {why}; it runs on the device"
        else:
            try:
                got = _run_in_process(art, feeds, device="cuda")
            except Exception as exc:  # noqa: BLE001 - device-side CUDA compile may be unavailable
                result["numerics_skipped"] = f"could not run on the local GPU: {_first_line(exc)}"
            else:
                result["numerics"] = _compare(art, got, _ort_reference(model, feeds), rtol, atol, "local CUDA GPU")
    elif art.kind == "llvm-cpu" and art.host_arch == "aarch64" and _this_arch() == "x86_64":
        if not emulate:
            result["numerics_skipped"] = "aarch64 build: pass emulate=True to run it under qemu-aarch64 (slow)"
        else:
            runner, why = aarch64_runner(download=download_runtime)
            if runner is None:
                result["numerics_skipped"] = why
            else:
                got = _run_emulated(art, feeds, runner)
                result["numerics"] = _compare(art, got, _ort_reference(model, feeds), rtol, atol,
                                              "qemu-aarch64 user-mode emulation")
    else:
        result["numerics_skipped"] = f"{art.kind} build for {art.host_arch} cannot run on this {_this_arch()} machine"
    return result


def _cuda_unavailable() -> str | None:
    tvm = _import_tvm()
    try:
        if tvm.cuda(0).exist:
            return None
    except Exception:  # noqa: BLE001
        pass
    return "no CUDA GPU visible here"


# ------------------------------------------------------------------ aarch64 under qemu-user
_RUNNER_SOURCE = r"""
// Minimal Relax VM runner using only the tvm/ffi headers (onnxsplit: validation under qemu-user).
// usage: tvm_vm_run LIB.so OUT_DIR IN0 [IN1 ...]
//   INi = "<code>:<bits>:<d0>x<d1>x...|scalar:<raw little-endian data file>" (DLPack code: 0 int, 1 uint, 2 float, 6 bool)
// writes OUT_DIR/out<i>.bin, prints one line per output: "out <i> <code> <bits> <d0>x<d1>...|scalar <path>"
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

struct CPUAlloc {
  void AllocData(DLTensor* t) { t->data = std::aligned_alloc(64, ((ffi::GetDataSize(*t) + 63) / 64) * 64 + 64); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

static std::vector<int64_t> parse_dims(const std::string& s) {
  std::vector<int64_t> dims;
  if (s.empty() || s == "scalar") return dims;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, 'x')) dims.push_back(std::stoll(tok));
  return dims;
}

static void write_output(const ffi::Tensor& t, int i, const std::string& out_dir) {
  if (t.device().device_type != kDLCPU || !t.IsContiguous()) {
    std::cerr << "output " << i << " is not a contiguous CPU tensor\n";
    std::exit(3);
  }
  std::string path = out_dir + "/out" + std::to_string(i) + ".bin";
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(t.data_ptr()), ffi::GetDataSize(t));
  std::cout << "out " << i << " " << int(t.dtype().code) << " " << int(t.dtype().bits) << " ";
  if (t.ndim() == 0) std::cout << "scalar";
  for (int d = 0; d < t.ndim(); ++d) std::cout << (d ? "x" : "") << t.shape()[d];
  std::cout << " " << path << "\n";
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: tvm_vm_run LIB.so OUT_DIR [code:bits:dims:path ...]\n";
    return 2;
  }
  try {
    ffi::Module lib = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);  // CPU 0, pooled allocator
    ffi::Function fmain = vm->GetFunction("main").value();
    std::vector<ffi::Tensor> inputs;
    for (int a = 3; a < argc; ++a) {
      std::string spec = argv[a];
      size_t p1 = spec.find(':'), p2 = spec.find(':', p1 + 1), p3 = spec.find(':', p2 + 1);
      DLDataType dt{static_cast<uint8_t>(std::stoi(spec.substr(0, p1))),
                    static_cast<uint8_t>(std::stoi(spec.substr(p1 + 1, p2 - p1 - 1))), 1};
      std::vector<int64_t> dims = parse_dims(spec.substr(p2 + 1, p3 - p2 - 1));
      ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(dims.data(), dims.size()), dt,
                                               DLDevice{kDLCPU, 0});
      std::ifstream f(spec.substr(p3 + 1), std::ios::binary);
      size_t n = ffi::GetDataSize(t);
      f.read(static_cast<char*>(t.data_ptr()), n);
      if (static_cast<size_t>(f.gcount()) != n) {
        std::cerr << "input " << a - 3 << ": expected " << n << " bytes in " << spec.substr(p3 + 1) << "\n";
        return 2;
      }
      inputs.push_back(t);
    }
    std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
    ffi::Any ret;
    fmain.CallPacked(args.data(), static_cast<int32_t>(args.size()), &ret);
    if (auto t = ret.try_cast<ffi::Tensor>()) {
      write_output(*t, 0, argv[2]);
    } else if (auto arr = ret.try_cast<ffi::Array<ffi::Any>>()) {
      for (size_t i = 0; i < arr->size(); ++i) write_output((*arr)[i].cast<ffi::Tensor>(), int(i), argv[2]);
    } else {
      std::cerr << "main returned neither a tensor nor a tuple of tensors\n";
      return 3;
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
"""

_DL_CODES = {"i": 0, "u": 1, "f": 2, "b": 6}


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnxsplit"


def aarch64_runner(*, download: bool = True) -> tuple[Path | None, str]:
    """The aarch64 VM runner (with libtvm_runtime.so/libtvm_ffi.so beside it) for qemu validation.

    Looked up in ``$ONNXSPLIT_TVM_AARCH64_RUNTIME`` (a folder holding the two aarch64 libraries;
    the runner is compiled into it), else in ``~/.cache/onnxsplit/``; built there on first use from
    the aarch64 PyPI wheels of the installed TVM versions (``pip download``, ~100 MB, once).
    Returns ``(runner path, "")`` or ``(None, why not)``.
    """
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        return None, "qemu-aarch64 is not on PATH (apt-get install qemu-user)"
    cxx = shutil.which("aarch64-linux-gnu-g++")
    if cxx is None:
        return None, "aarch64-linux-gnu-g++ is not on PATH (apt-get install g++-aarch64-linux-gnu)"
    if not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        return None, "no aarch64 sysroot at /usr/aarch64-linux-gnu (apt-get install g++-aarch64-linux-gnu)"
    tvm_v, ffi_v = _dist_version("apache-tvm"), _dist_version("apache-tvm-ffi")
    env_dir = os.environ.get("ONNXSPLIT_TVM_AARCH64_RUNTIME")
    if env_dir:
        rt = Path(env_dir)
        if not all((rt / lib).is_file() for lib in ("libtvm_runtime.so", "libtvm_ffi.so")):
            return None, f"$ONNXSPLIT_TVM_AARCH64_RUNTIME={rt} lacks libtvm_runtime.so/libtvm_ffi.so"
    else:
        rt = _cache_root() / f"tvm-aarch64-runtime-{tvm_v}-ffi{ffi_v}"
    runner = rt / "tvm_vm_run"
    if runner.is_file():
        return runner, ""
    if not env_dir:
        if not download:
            return None, f"no aarch64 TVM runtime in {rt} (download disabled)"
        try:
            _fetch_aarch64_runtime(rt, tvm_v, ffi_v)
        except Exception as exc:  # noqa: BLE001 - offline, no wheel for this version, ...
            return None, f"could not get the aarch64 TVM runtime: {_first_line(exc)}"
    try:
        _build_runner(rt, cxx)
    except Exception as exc:  # noqa: BLE001
        return None, f"could not build the aarch64 runner: {_first_line(exc)}"
    return runner, ""


def _fetch_aarch64_runtime(rt: Path, tvm_v: str | None, ffi_v: str | None) -> None:
    if not tvm_v or not ffi_v:
        raise OnnxSplitError(f"apache-tvm/apache-tvm-ffi not installed: {INSTALL_HINT}")
    rt.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnxsplit-wheels-", dir=rt.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", "manylinux_2_28_aarch64", "--python-version", f"{sys.version_info.major}{sys.version_info.minor}",
               f"apache-tvm=={tvm_v}", f"apache-tvm-ffi=={ffi_v}", "-d", tmp, "-q"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise OnnxSplitError(f"pip download failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        stage = Path(tmp) / "rt"
        stage.mkdir()
        for whl in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(whl) as z:
                for info in z.infolist():
                    n = info.filename
                    if n in ("tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so"):
                        (stage / Path(n).name).write_bytes(z.read(info))
                    elif n.startswith("tvm_ffi/include/") and not n.endswith("/"):
                        dest = stage / "include" / n[len("tvm_ffi/include/"):]
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(z.read(info))
        for lib in ("libtvm_runtime.so", "libtvm_ffi.so"):
            if not (stage / lib).is_file():
                raise OnnxSplitError(f"{lib} not found in the aarch64 wheels")
            if elf_machine(stage / lib) != "aarch64":
                raise OnnxSplitError(f"{lib} from the wheel is not aarch64")
        if rt.exists():
            shutil.rmtree(rt)
        os.rename(stage, rt)


def _build_runner(rt: Path, cxx: str) -> None:
    include = rt / "include"
    if not (include / "tvm" / "ffi").is_dir():  # headers of the installed tvm_ffi (same version)
        import tvm_ffi

        include = Path(tvm_ffi.__file__).parent / "include"
    src = rt / "tvm_vm_run.cc"
    src.write_text(_RUNNER_SOURCE)
    tmp = rt / ".tvm_vm_run.tmp"
    cmd = [cxx, "-std=c++17", "-O1", str(src), f"-I{include}", f"-L{rt}", "-Wl,--no-as-needed",
           "-ltvm_ffi", "-ltvm_runtime", "-Wl,-rpath,$ORIGIN", "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise OnnxSplitError(f"{cxx} failed: {proc.stderr.strip()[-500:]}")
    os.replace(tmp, rt / "tvm_vm_run")


def _run_emulated(art: CompiledArtifact, feeds: Mapping[str, np.ndarray], runner: Path, *, timeout: float = 900) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="onnxsplit-qemu-") as tmp:
        args = []
        for i, spec in enumerate(art.inputs):
            x = np.ascontiguousarray(feeds[spec["name"]])
            code = _DL_CODES.get(x.dtype.kind)
            if code is None:
                raise ArtifactValidationError(f"cannot pass input '{spec['name']}' of dtype {x.dtype} to the runner")
            path = Path(tmp) / f"in{i}.bin"
            x.astype(x.dtype.newbyteorder("<")).tofile(path)
            dims = "x".join(str(d) for d in x.shape) if x.ndim else "scalar"
            args.append(f"{code}:{x.dtype.itemsize * 8}:{dims}:{path}")
        cmd = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(runner), str(art.path), tmp, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ArtifactValidationError(
                f"{art.path}: the aarch64 library failed under qemu (exit {proc.returncode}): "
                f"{(proc.stderr.strip().splitlines() or ['no message'])[-1][:300]}"
            )
        outs = []
        kinds = {0: "i", 1: "u", 2: "f", 6: "b"}
        for line in proc.stdout.splitlines():
            if not line.startswith("out "):
                continue
            _, _, code, bits, dims, path = line.split(" ", 5)
            kind = kinds[int(code)]
            dt = np.dtype(bool) if kind == "b" else np.dtype(f"<{kind}{int(bits) // 8}")
            shape = () if dims == "scalar" else tuple(int(d) for d in dims.split("x"))
            outs.append(np.fromfile(path, dtype=dt).reshape(shape))
        return outs


# ----------------------------------------------------------------------------------- bundles
def _side_feeds(edge: onnx.ModelProto | None, cloud: onnx.ModelProto | None, seed: int):
    from ..runtime_ort import random_feeds, run

    edge_feeds = random_feeds(edge, seed=seed) if edge is not None else {}
    cloud_feeds = None
    if cloud is not None:
        pool = dict(edge_feeds)
        if edge is not None:
            pool.update(run(edge, edge_feeds, optimize=False))  # realistic boundary activations
        rand = random_feeds(cloud, seed=seed)
        cloud_feeds = {k: pool.get(k, v) for k, v in rand.items()}
    return edge_feeds, cloud_feeds


def compile_bundle(
    bundle_dir: str | os.PathLike[str],
    edge_target: Any,
    cloud_target: Any,
    *,
    validate: bool = True,
    emulate: bool = False,
    seed: int = 0,
    errors: str = "raise",
    tuning_db: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compile both halves of a split folder (``onnxsplit split`` output) with TVM.

    Writes ``OUT/edge/tvm/model.{so,json}`` and ``OUT/cloud/tvm/model.{so,json}`` (each folder
    replaced atomically) and returns the JSON-ready value for ``manifest["compiled"]``::

        {"edge": {"files": [...], "target": "rpi4", "tvm_target": {...}, "machine": "aarch64",
                  "kind": "llvm-cpu", "int8_mode": "n/a", "compile_seconds": ..., "size_bytes": ...,
                  "validated": {"elf": "aarch64", "numerics_skipped": "..."}},
         "cloud": {..., "validated": {"elf": "x86-64", "numerics": {"max_abs": ..., ...}}}}

    A side without a model is ``None``. Validation feeds: random edge inputs (``seed``); the cloud
    half gets the edge half's onnxruntime outputs as its boundary inputs. ``errors="record"`` puts
    a failing side's one-line error into ``{"error": ...}`` instead of raising (the other side is
    still compiled); the manifest itself is not touched here.

    ``tuning_db``: MetaSchedule databases (``onnxsplit tune``) to apply: ``{"edge": DIR, "cloud": DIR}``,
    or one folder that holds ``edge/`` and/or ``cloud/`` databases (e.g. ``OUT/tuning``), or one
    database folder used for both sides. A side compiled with a database gets a ``"tuning"`` entry.
    """
    root = Path(bundle_dir)
    if not (root / "manifest.json").is_file():
        raise OnnxSplitError(f"{root} is not a split folder (no manifest.json); create one with `onnxsplit split`")
    models = {}
    for side in ("edge", "cloud"):
        p = root / side / "model.onnx"
        models[side] = onnx.load(str(p)) if p.is_file() else None
    if models["edge"] is None and models["cloud"] is None:
        raise OnnxSplitError(f"{root}: neither edge/model.onnx nor cloud/model.onnx exists")
    edge_feeds, cloud_feeds = _side_feeds(models["edge"], models["cloud"], seed) if validate else (None, None)
    feeds = {"edge": edge_feeds, "cloud": cloud_feeds}
    targets = {"edge": edge_target, "cloud": cloud_target}
    dbs = _side_tuning_dbs(tuning_db)
    out: dict[str, Any] = {}
    for side in ("edge", "cloud"):
        model = models[side]
        if model is None or targets[side] is None:  # no half, or a side the caller does not compile
            out[side] = None
            continue
        final = root / side / "tvm"
        tmp = Path(tempfile.mkdtemp(prefix=".tvm.tmp-", dir=root / side))
        try:
            art = compile_half(model, targets[side], tmp, name="model", tuning_db=dbs[side])
            validated = (validate_artifact(art, model, feeds[side], emulate=emulate) if validate
                         else {"elf": art.machine, "numerics_skipped": "validation disabled"})
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except OnnxSplitError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if errors != "record":
                raise
            out[side] = {"error": str(exc)}
            continue
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        out[side] = {
            "files": [f"{side}/tvm/{art.path.name}", f"{side}/tvm/{art.sidecar.name}"],
            "target": art.target_name,
            "tvm_target": art.target,
            "machine": art.machine,
            "kind": art.kind,
            "int8_mode": art.int8_mode,
            "compile_seconds": round(art.compile_seconds, 3),
            "size_bytes": art.size_bytes,
            "validated": validated,
            **({"tuning": art.tuning} if art.tuning else {}),
        }
    return out


def _side_tuning_dbs(tuning_db: Any) -> dict[str, Path | None]:
    if tuning_db is None:
        return {"edge": None, "cloud": None}
    if isinstance(tuning_db, Mapping):
        return {s: (Path(tuning_db[s]) if tuning_db.get(s) else None) for s in ("edge", "cloud")}
    root = Path(tuning_db)
    if (root / "database_workload.json").is_file():
        return {"edge": root, "cloud": root}
    sides = {s: (root / s if (root / s / "database_workload.json").is_file() else None) for s in ("edge", "cloud")}
    if not any(sides.values()):
        raise TVMCompileError(f"{root}: no tuning database there (expected database_*.json, or edge/ and cloud/ "
                              "folders holding them; create them with `onnxsplit tune`)")
    return sides
