"""Loading: every bad input gets a one-line error naming the culprit and what would work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxsplit
from onnxsplit import zoo
from onnxsplit.bundle import save_model
from onnxsplit.errors import ModelLoadError, ShapeError, UsageError
from onnxsplit.load import load_model, parse_input_shapes
from onnxsplit.runtime_ort import random_feeds, run


def _dynamic_model(batch: str = "batch") -> onnx.ModelProto:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 8, 8])
    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"], name="relu")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "nope.onnx")
    assert "model file not found" in _one_line(e) and "nope.onnx" in str(e.value)


def test_empty_corrupt_and_truncated_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty.onnx is empty"):
        load_model(empty)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe this is not protobuf" * 10)
    with pytest.raises(ModelLoadError, match="garbage.onnx is not a valid ONNX model"):
        load_model(garbage)
    good = zoo.tiny_cnn().SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError) as e:
        load_model(truncated)
    assert "truncated.onnx" in _one_line(e)


def test_opset_and_ir_version_errors() -> None:
    m = zoo.tiny_cnn()
    m.opset_import[0].version = 999
    with pytest.raises(ModelLoadError, match="opset 999.*supports up to"):
        load_model(m)
    m = zoo.tiny_cnn()
    m.opset_import[0].version = 3
    with pytest.raises(ModelLoadError, match="opset 3, older than.*version_converter"):
        load_model(m)
    m = zoo.tiny_cnn()
    m.ir_version = 99
    with pytest.raises(ModelLoadError, match="IR version 99"):
        load_model(m)


def test_checker_failure_names_the_problem() -> None:
    m = zoo.tiny_cnn()
    m.graph.node[3].input[0] = "does_not_exist"
    with pytest.raises(ModelLoadError) as e:
        load_model(m)
    assert "fails onnx.checker" in _one_line(e) and "does_not_exist" in str(e.value)


def test_external_data_loads_and_missing_external_data_is_named(tmp_path: Path) -> None:
    model = zoo.resnet_like()
    path = tmp_path / "m.onnx"
    to_save = onnx.ModelProto()
    to_save.CopyFrom(model)  # save_model(save_as_external_data=True) rewrites its argument
    onnx.save_model(to_save, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    graph = onnxsplit.load_graph(path)
    feeds = random_feeds(graph.model)
    assert np.array_equal(run(graph.model, feeds)["logits"], run(model, feeds)["logits"])
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError) as e:
        load_model(path)
    msg = _one_line(e)
    assert "weights.bin" in msg and "missing" in msg and "tensor '" in msg


def test_dynamic_axis_without_hint_names_input_and_axis() -> None:
    with pytest.raises(ShapeError) as e:
        load_model(_dynamic_model())
    msg = _one_line(e)
    assert "input 'images'" in msg and "dynamic axis 0 ('batch')" in msg and "--input-shape images:1x3x8x8" in msg


def test_input_shape_hint_makes_everything_static() -> None:
    graph = onnxsplit.load_graph(_dynamic_model(), {"images": (2, 3, 8, 8)})
    assert graph.tensors["images"].shape == (2, 3, 8, 8)
    assert graph.tensors["c"].shape == (2, 3, 8, 8)
    assert graph.tensors["y"].nbytes == 2 * 3 * 8 * 8 * 4


def test_input_shape_hint_errors() -> None:
    with pytest.raises(UsageError, match="'img', which is not an input.*inputs: images"):
        load_model(_dynamic_model(), {"img": (1, 3, 8, 8)})
    with pytest.raises(UsageError, match="rank 2 but input 'images' has rank 4"):
        load_model(_dynamic_model(), {"images": (1, 3)})
    with pytest.raises(UsageError, match="axis 1 of input 'images', which is fixed at 3"):
        load_model(_dynamic_model(), {"images": (1, 4, 8, 8)})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("x:1x3x224x224", {"x": (1, 3, 224, 224)}), ("a:b:1,2", {"a:b": (1, 2)}), ("ids:1x16", {"ids": (1, 16)})],
)
def test_parse_input_shapes(spec: str, expected: dict) -> None:
    assert parse_input_shapes([spec]) == expected


@pytest.mark.parametrize("spec", ["x", "x:", ":1x2", "x:1xa", "x:0x3"])
def test_parse_input_shapes_rejects(spec: str) -> None:
    with pytest.raises(UsageError, match="bad --input-shape"):
        parse_input_shapes([spec])


def test_shapes_onnx_cannot_infer_come_from_onnxruntime() -> None:
    """A Reshape whose target comes from a computed tensor: data propagation may fail; ORT fills in."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"], name="nz"),  # data-dependent shape
        helper.make_node("Shape", ["nz"], ["s"], name="shape"),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("ReduceSum", ["sf"], ["y"], name="sum", keepdims=0),
    ]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    graph = onnxsplit.load_graph(m)
    assert graph.tensors["nz"].shape == (2, 0)  # zeros input: no non-zero element
    assert graph.tensors["y"].shape == ()


def test_simplify_keeps_outputs() -> None:
    model = zoo.resnet_like()
    graph = onnxsplit.load_graph(model, simplify=True)
    assert len(graph.nodes) < len(model.graph.node)  # BatchNorm folded into Conv
    feeds = random_feeds(model)
    np.testing.assert_allclose(run(graph.model, feeds)["logits"], run(model, feeds)["logits"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_model_over_2gb_with_external_data_loads_and_splits(tmp_path: Path) -> None:
    """Two 1.1 GB weights: over protobuf's 2 GB limit, so only external data can hold them."""
    n = 1100 * 1000 * 1000 // 4
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])
    w1 = numpy_helper.from_array(np.full(n, 0.5, np.float32), "w1")
    w2 = numpy_helper.from_array(np.full(n, 2.0, np.float32), "w2")
    nodes = [helper.make_node("Mul", ["x", "w1"], ["a"], name="mul"), helper.make_node("Add", ["a", "w2"], ["y"], name="add")]
    model = helper.make_model(helper.make_graph(nodes, "big", [x], [y], [w1, w2]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "big.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="big.data")
    del model, w1, w2
    graph = onnxsplit.load_graph(path)
    assert graph.tensors["a"].nbytes == n * 4
    parts = onnxsplit.split_model(graph, ["mul"])
    assert [b.name for b in parts.boundary] == ["a"]
    feeds = {"x": np.ones(n, np.float32)}
    for _ in range(2):  # running must not strip the data out of the split models
        out = parts.run(feeds)["y"]
        assert out[0] == 2.5 and out[-1] == 2.5
    del out
    # The whole model runs through the external-data path of make_session (over 2 GB).
    assert run(graph.model, feeds)["y"][-1] == 2.5
    files = save_model(graph.model, tmp_path / "again" / "model.onnx")
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    assert files[0].stat().st_size < 10_000
    assert onnxsplit.load_graph(files[0]).tensors["w2"].nbytes == n * 4
