"""TVM backend (onnxsplit.compile.tvm_backend): compile halves, export, validate.

Needs apache-tvm (``pip install 'onnxsplit[tvm]'``); the aarch64 tests need
``apt-get install g++-aarch64-linux-gnu`` (skipped with a reason otherwise), the emulation test
also ``qemu-user`` and a one-time download of the aarch64 TVM wheels (marked slow).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

import onnxsplit  # noqa: E402
from onnxsplit import zoo  # noqa: E402
from onnxsplit.compile import (  # noqa: E402
    ArtifactValidationError,
    TVMNotAvailableError,
    ToolchainError,
    UnsupportedOpError,
    compile_bundle,
    compile_half,
    tvm_available,
    validate_artifact,
)
from onnxsplit.compile import tvm_backend  # noqa: E402
from onnxsplit.errors import OnnxSplitError  # noqa: E402
from onnxsplit.runtime_ort import random_feeds  # noqa: E402
from onnxsplit.targets import load_target  # noqa: E402

pytestmark = pytest.mark.tvm

GENERIC_X86 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
QDQ_MODE = "dequantize-compute-quantize (fp32 compute; no int8 kernels)"
HAS_AARCH64_CXX = shutil.which("aarch64-linux-gnu-g++") is not None
needs_aarch64_cxx = pytest.mark.skipif(
    not HAS_AARCH64_CXX, reason="aarch64-linux-gnu-g++ not on PATH (apt-get install g++-aarch64-linux-gnu)")
needs_x86 = pytest.mark.skipif(tvm_backend._this_arch() != "x86_64", reason="runs x86-64 code in-process")


@pytest.fixture(scope="module")
def tiny_parts() -> onnxsplit.SplitModels:
    graph = onnxsplit.load_graph(zoo.tiny_cnn())
    return onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, 9))


def host_x86_target() -> dict:
    """host-x86's TVM target, without mcpu when this CPU lacks its features (e.g. AVX-512 on Zen 3)."""
    t = load_target("host-x86").tvm_target
    return t if not tvm_backend.missing_cpu_features(t) else GENERIC_X86


def qdq_quantize(model: onnx.ModelProto, work: Path) -> onnx.ModelProto:  # noqa: ARG001 - work kept for callers
    """Static QDQ int8 (the profiler's quantizer: MinMax, per-channel int8 weights, uint8 activations)."""
    from onnxsplit.profile import quantize_qdq as _quantize

    return _quantize(model, n_calibration=4)


# ------------------------------------------------------------------------------ host x86
@needs_x86
def test_host_x86_edge_half_matches_onnxruntime(tiny_parts, tmp_path) -> None:
    target = host_x86_target()
    art = compile_half(tiny_parts.edge, target, tmp_path, name="edge")
    assert art.path == tmp_path / "edge.so" and art.path.is_file()
    assert art.machine == "x86-64" and art.kind == "llvm-cpu" and art.int8_mode == "n/a"
    side = json.loads((tmp_path / "edge.json").read_text())
    assert side["schema"] == "onnxsplit.tvm-artifact/1" and side["tvm_target"] == target
    assert side["inputs"] == [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32", "relax_name": "image"}]
    assert side["outputs"][0]["name"] == "squeeze.conv.out" and side["versions"]["apache-tvm"]
    assert side["int8_mode"] == "n/a"

    feeds = random_feeds(tiny_parts.edge, seed=3)
    v = validate_artifact(art, tiny_parts.edge, feeds)
    assert v["elf"] == "x86-64"
    assert v["numerics"]["ok"] and v["numerics"]["max_rel"] <= 1e-4
    assert v["numerics"]["ran_on"] == "this machine (in-process)"
    json.dumps(v)  # JSON-ready


@needs_x86
def test_multi_input_multi_output_order(tmp_path) -> None:
    """Two inputs, three outputs (one also read later): call order and tuple unpacking."""
    model = onnxsplit.load_graph(zoo.multi_io()).model
    art = compile_half(model, GENERIC_X86, tmp_path, name="multi")
    assert [i["name"] for i in art.inputs] == ["image", "vector"]
    assert [o["name"] for o in art.outputs] == ["early_features", "mask", "logits"]
    v = validate_artifact(art, model, random_feeds(model, seed=1))
    assert [o["name"] for o in v["numerics"]["outputs"]] == ["early_features", "mask", "logits"]
    assert v["numerics"]["max_rel"] <= 1e-4


@needs_x86
def test_wrong_numerics_are_caught(tiny_parts, tmp_path) -> None:
    art = compile_half(tiny_parts.cloud, GENERIC_X86, tmp_path, name="cloud")
    # validate against a different model with the same interface: numbers must not match
    other = onnxsplit.split_model(g := onnxsplit.load_graph(zoo.tiny_cnn(seed=7)), onnxsplit.edge_nodes_prefix(g, 9)).cloud
    with pytest.raises(ArtifactValidationError, match="differs from onnxruntime"):
        validate_artifact(art, other)


@needs_x86
def test_cpu_features_missing_here_are_not_run(tiny_parts, tmp_path) -> None:
    target = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "sapphirerapids"}  # AMX, AVX512-FP16
    missing = tvm_backend.missing_cpu_features(target)
    if not missing:
        pytest.skip("this CPU has every sapphirerapids feature")
    art = compile_half(tiny_parts.edge, target, tmp_path, name="spr")
    v = validate_artifact(art, tiny_parts.edge)
    assert v["elf"] == "x86-64" and "numerics" not in v
    assert "lacks" in v["numerics_skipped"] and missing[0] in v["numerics_skipped"]


# ------------------------------------------------------------------------------- aarch64
@needs_aarch64_cxx
def test_aarch64_build_is_an_aarch64_elf(tiny_parts, tmp_path) -> None:
    art = compile_half(tiny_parts.edge, load_target("rpi4"), tmp_path, name="edge")
    assert art.machine == "aarch64" and art.kind == "llvm-cpu" and art.target_name == "rpi4"
    assert tvm_backend.elf_machine(art.path) == "aarch64"
    v = validate_artifact(art, tiny_parts.edge)
    assert v["elf"] == "aarch64" and "emulate=True" in v["numerics_skipped"]


def _compute_free_edge_half() -> onnx.ModelProto:
    """The edge half of a split whose edge side is a lone Identity: its Relax module has no PrimFuncs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 4])
    nodes = [helper.make_node("Identity", ["x"], ["a"], name="pre.id"), helper.make_node("Relu", ["a"], ["y"], name="act")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    graph = onnxsplit.load_graph(model)
    edge = onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, 1)).edge
    assert [n.op_type for n in edge.graph.node] == ["Identity"]
    return edge


@needs_aarch64_cxx
def test_aarch64_build_of_a_compute_free_half(tmp_path) -> None:
    """No compute kernels -> no LLVM module: the packed VM bytecode must still be built for aarch64.

    (It used to be built for the default host compiler's triple, x86-64, and the aarch64 linker
    refused it: "devc.o is incompatible with aarch64 output".)"""
    edge = _compute_free_edge_half()
    art = compile_half(edge, load_target("rpi4"), tmp_path, name="edge")
    assert art.path.is_file() and art.machine == "aarch64" and art.size_bytes > 0
    head = art.path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1  # 64-bit, little-endian
    assert int.from_bytes(head[16:18], "little") == 3  # ET_DYN: a shared object
    assert int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    v = validate_artifact(art, edge)
    assert v["elf"] == "aarch64"


@needs_x86
def test_compute_free_half_runs_on_this_machine(tmp_path) -> None:
    """The same kind of library (VM bytecode only) loads and matches onnxruntime where it can run."""
    edge = _compute_free_edge_half()
    art = compile_half(edge, GENERIC_X86, tmp_path, name="edge")
    v = validate_artifact(art, edge, random_feeds(edge, seed=2))
    assert v["elf"] == "x86-64" and v["numerics"]["ok"] and v["numerics"]["max_rel"] == 0


@needs_aarch64_cxx
def test_jetson_cuda_build_exports_cuda_source_with_aarch64_host(tiny_parts, tmp_path) -> None:
    art = compile_half(tiny_parts.edge, load_target("jetson"), tmp_path, name="edge")
    assert art.kind == "cuda" and art.machine == "aarch64"
    assert art.target["arch"] == "sm_87" and art.cuda_kernels and art.cuda_kernels > 0
    data = art.path.read_bytes()
    assert b'extern "C" __global__' in data  # kernels travel as CUDA source, compiled on the device
    side = json.loads(art.sidecar.read_text())
    assert "sm_87" in side["cuda_code"] and side["host_triple"] == "aarch64-linux-gnu"
    v = validate_artifact(art, tiny_parts.edge)
    assert v["elf"] == "aarch64" and v["cuda_kernels"] == art.cuda_kernels and "numerics_skipped" in v


def test_missing_cross_toolchain_is_a_clear_error(tiny_parts, tmp_path, monkeypatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "out"
    with pytest.raises(ToolchainError) as info:
        compile_half(tiny_parts.edge, load_target("rpi4"), out, name="edge")
    msg = str(info.value)
    assert isinstance(info.value, OnnxSplitError) and "\n" not in msg
    assert "aarch64-linux-gnu-g++" in msg and "apt-get install g++-aarch64-linux-gnu" in msg
    assert not out.exists()  # nothing compiled or written


@pytest.mark.slow
@needs_aarch64_cxx
def test_aarch64_build_runs_under_qemu(tiny_parts, tmp_path) -> None:
    runner, why = tvm_backend.aarch64_runner(download=True)
    if runner is None:
        pytest.skip(why)
    art = compile_half(tiny_parts.cloud, load_target("rpi5"), tmp_path, name="cloud")
    v = validate_artifact(art, tiny_parts.cloud, random_feeds(tiny_parts.cloud, seed=2), emulate=True)
    assert v["elf"] == "aarch64"
    assert v["numerics"]["ran_on"] == "qemu-aarch64 user-mode emulation"
    assert v["numerics"]["max_rel"] <= 1e-4


# ------------------------------------------------------------------------------------- int8
@needs_x86
def test_qdq_half_reports_truthful_int8_mode(tiny_parts, tmp_path) -> None:
    qdq = qdq_quantize(tiny_parts.edge, tmp_path)
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    art = compile_half(qdq, GENERIC_X86, tmp_path, name="qdq")
    assert art.int8_mode == QDQ_MODE
    d = art.int8_details
    assert d["relax_quantize_ops"]["relax.quantize"] > 0 and d["relax_quantize_ops"]["relax.dequantize"] > 0
    assert d["compute_ops"]["relax.nn.conv2d"] == {"float32": 3} and d["tir_int8_multiplies"] == 0
    assert json.loads(art.sidecar.read_text())["int8_mode"] == QDQ_MODE
    v = validate_artifact(art, qdq, random_feeds(qdq, seed=5))
    assert v["numerics"]["ok"] and v["numerics"]["rtol"] == tvm_backend.RTOL_QDQ


# ------------------------------------------------------------------------------ importer
def _lstm_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 1, 3])
    w = numpy_helper.from_array(np.ones((1, 12, 4), np.float32), "W")
    r = numpy_helper.from_array(np.ones((1, 12, 3), np.float32), "R")
    nodes = [helper.make_node("Relu", ["x"], ["xr"], name="pre"),
             helper.make_node("LSTM", ["xr", "W", "R"], ["y"], name="encoder.lstm1", hidden_size=3)]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=[w, r]),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_op_names_op_and_node(tmp_path) -> None:
    with pytest.raises(UnsupportedOpError) as info:
        compile_half(_lstm_model(), GENERIC_X86, tmp_path, name="lstm")
    msg = str(info.value)
    assert "'LSTM'" in msg and "'encoder.lstm1'" in msg and "\n" not in msg
    assert not (tmp_path / "lstm.so").exists()


def test_converter_failure_names_the_node(tmp_path) -> None:
    node = helper.make_node("MatMulInteger16", ["a", "a"], ["y"], name="bad.mm16", domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match=r"'MatMulInteger16' \(node 'bad.mm16'\)"):
        compile_half(model, GENERIC_X86, tmp_path, name="mm16")


def test_dynamic_input_is_refused(tmp_path) -> None:
    model = zoo.tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(onnxsplit.ShapeError, match="'image' axis 0 is dynamic"):
        compile_half(model, GENERIC_X86, tmp_path, name="dyn")


# -------------------------------------------------------------------------------- bundles
@needs_x86
def test_compile_bundle(tmp_path) -> None:
    from onnxsplit.cli import main

    out = tmp_path / "bundle"
    example = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
    assert main(["split", str(example), "--at", "9", "-o", str(out)]) == 0
    manifest_before = (out / "manifest.json").read_text()
    edge_target = "rpi4" if HAS_AARCH64_CXX else host_x86_target()
    compiled = compile_bundle(out, edge_target, host_x86_target())
    json.dumps(compiled)
    assert (out / "manifest.json").read_text() == manifest_before  # the caller writes the manifest
    for side in ("edge", "cloud"):
        entry = compiled[side]
        assert entry["files"] == [f"{side}/tvm/model.so", f"{side}/tvm/model.json"]
        assert all((out / f).is_file() for f in entry["files"])
        assert entry["int8_mode"] == "n/a" and entry["kind"] == "llvm-cpu"
    assert compiled["cloud"]["machine"] == "x86-64"
    assert compiled["cloud"]["validated"]["numerics"]["max_rel"] <= 1e-4
    if HAS_AARCH64_CXX:
        assert compiled["edge"]["machine"] == "aarch64" and compiled["edge"]["validated"]["elf"] == "aarch64"
    assert not [p for p in (out / "edge").iterdir() if p.name.startswith(".tvm.tmp")]


def test_compile_bundle_needs_a_split_folder(tmp_path) -> None:
    with pytest.raises(OnnxSplitError, match="not a split folder"):
        compile_bundle(tmp_path, "rpi4", "host-x86")


# --------------------------------------------------------------------------------- import
def test_tvm_is_not_imported_by_onnxsplit() -> None:
    code = ("import sys, onnxsplit, onnxsplit.cli, onnxsplit.compile, onnxsplit.compile.tvm_backend; "
            "bad = [m for m in sys.modules if m == 'tvm' or m.startswith('tvm.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_tvm_gives_install_hint(monkeypatch) -> None:
    tvm_backend._import_tvm.cache_clear()
    monkeypatch.setitem(sys.modules, "tvm", None)  # `import tvm` now raises ImportError
    try:
        assert tvm_available() is False
        with pytest.raises(TVMNotAvailableError, match=r"pip install 'onnxsplit\[tvm\]'") as info:
            tvm_backend._import_tvm()
        assert isinstance(info.value, ImportError) and isinstance(info.value, OnnxSplitError)
    finally:
        monkeypatch.undo()
        tvm_backend._import_tvm.cache_clear()
    assert tvm_available() is True
