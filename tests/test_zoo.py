"""Tests for onnxsplit.zoo: every model is valid, static, runnable, and has the structure it claims."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from onnxsplit.zoo import (
    FUNCTION_DOMAIN,
    IR_VERSION,
    OPSET,
    ZOO,
    random_dag_model,
    random_inputs,
)

# (seed, n_nodes) pairs covering tiny to largish random DAGs.
DAG_CASES = [(seed, n) for seed, n in zip(range(30), [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 60] * 2)]


@functools.cache
def zoo_model(name: str) -> onnx.ModelProto:
    return ZOO[name]()


@functools.cache
def session(name: str) -> ort.InferenceSession:
    return _session(zoo_model(name))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _dims(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
        return None
    return tuple(d.dim_value for d in tt.shape.dim)


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and, recursively, every subgraph of its nodes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attr.g)
            for g in attr.graphs:
                yield from _all_graphs(g)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


def _outer_refs(sub: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads but does not define itself (its outer-scope captures)."""
    local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
    local |= {o for n in sub.node for o in n.output}
    return {i for n in sub.node for i in n.input if i and i not in local}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> indices of the top-level nodes reading it (directly or via a subgraph)."""
    uses: dict[str, list[int]] = {}
    for idx, node in enumerate(graph.node):
        names = set(node.input)
        for sub in _subgraphs(node):
            names |= _outer_refs(sub)
        for name in names - {""}:
            uses.setdefault(name, []).append(idx)
    return uses


def _run(model: onnx.ModelProto, sess: ort.InferenceSession, seed: int = 0) -> list[np.ndarray]:
    outs = sess.run(None, random_inputs(model, seed))
    assert len(outs) == len(model.graph.output)
    for vi, arr in zip(model.graph.output, outs):
        assert arr.shape == _dims(vi), vi.name
        assert arr.dtype == np.float32, vi.name
        assert np.all(np.isfinite(arr)), vi.name
    return outs


def _check_common(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] == OPSET
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = _dims(vi)
        assert dims is not None and dims[0] == 1, f"{vi.name} is not static batch-1: {vi.type}"
    node_names = [n.name for g in _all_graphs(model.graph) for n in g.node]
    assert all(node_names) and len(node_names) == len(set(node_names))
    produced = [o for g in _all_graphs(model.graph) for n in g.node for o in n.output]
    declared = [i.name for g in _all_graphs(model.graph) for i in list(g.input) + list(g.initializer)]
    assert len(produced + declared) == len(set(produced + declared))
    # Every top-level tensor gets a static shape from strict shape inference.
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes = {vi.name: _dims(vi) for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for node in model.graph.node:
        for out in node.output:
            assert shapes.get(out) is not None, f"{out} has no static inferred shape"


# -- every zoo model ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_valid_and_runs(name: str) -> None:
    model = zoo_model(name)
    _check_common(model)
    outs = _run(model, session(name))
    assert any(np.any(o != 0) for o in outs)
    assert all(float(np.abs(o).max()) < 1e3 for o in outs)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_deterministic(name: str) -> None:
    assert ZOO[name](seed=0).SerializeToString() == zoo_model(name).SerializeToString()
    other = ZOO[name](seed=1)
    a = {t.name: onnx.numpy_helper.to_array(t) for t in zoo_model(name).graph.initializer}
    b = {t.name: onnx.numpy_helper.to_array(t) for t in other.graph.initializer}
    assert a.keys() == b.keys()
    if any(v.dtype == np.float32 and v.size > 8 for v in a.values()):
        assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_zoo_names() -> None:
    assert set(ZOO) == {
        "resnet", "mobilenetv2", "inception", "unet", "transformer", "if", "loop", "multi_io",
        "shared_init", "many_consumers", "local_function", "constants", "tiny_cnn",
    }


# -- structural claims ----------------------------------------------------------------------


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


def test_resnet_structure() -> None:
    m = zoo_model("resnet")
    ops = _ops(m)
    assert ops["Add"] >= 4 and ops["BatchNormalization"] >= 8 and ops["MaxPool"] == 1
    assert [n.op_type for n in m.graph.node[-3:]] == ["GlobalAveragePool", "Flatten", "Gemm"]
    proj = [n for n in m.graph.node if n.op_type == "Conv" and helper.get_node_attr_value(n, "strides") == [2, 2]
            and helper.get_node_attr_value(n, "kernel_shape") == [1, 1]]
    assert len(proj) == 1


def test_mobilenetv2_structure() -> None:
    m = zoo_model("mobilenetv2")
    inits = {t.name for t in m.graph.initializer}
    depthwise = [n for n in m.graph.node if n.op_type == "Conv" and helper.get_node_attr_value(n, "group") > 1]
    assert len(depthwise) >= 4
    for n in depthwise:
        w = next(t for t in m.graph.initializer if t.name == n.input[1])
        assert w.dims[1] == 1 and w.dims[0] == helper.get_node_attr_value(n, "group")
    clips = [n for n in m.graph.node if n.op_type == "Clip"]
    assert len(clips) >= 8 and all(n.input[1] in inits and n.input[2] in inits for n in clips)
    assert len({(n.input[1], n.input[2]) for n in clips}) == 1  # shared min/max initializers
    assert _ops(m)["Add"] >= 2


def test_inception_structure() -> None:
    m = zoo_model("inception")
    concats = [n for n in m.graph.node if n.op_type == "Concat"]
    assert len(concats) == 2 and all(len(n.input) == 4 for n in concats)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert any(helper.get_node_attr_value(n, "dilations") == [2, 2] for n in convs)
    assert any(helper.get_node_attr_value(n, "kernel_shape") == [5, 5] for n in convs)
    assert _ops(m)["AveragePool"] == 1 and _ops(m)["Gemm"] == 1


def test_unet_structure() -> None:
    m = zoo_model("unet")
    ops = _ops(m)
    assert ops["ConvTranspose"] >= 1 and ops["Resize"] >= 1 and ops["MaxPool"] == 3
    producer = {o: i for i, n in enumerate(m.graph.node) for o in n.output}
    spans = [i - producer[t] for i, n in enumerate(m.graph.node) if n.op_type == "Concat"
             for t in n.input if t in producer]
    assert max(spans) >= 15  # a long skip from the first encoder level to the last decoder level
    assert _dims(m.graph.output[0]) == (1, 2, 32, 32)


def test_transformer_structure() -> None:
    m = zoo_model("transformer")
    ops = _ops(m)
    assert ops["LayerNormalization"] == 5 and ops["Softmax"] == 2 and ops["Erf"] == 2
    assert ops["MatMul"] >= 2 * 8 and ops["Reshape"] >= 2 * 4 and ops["Transpose"] >= 2 * 4
    assert _dims(m.graph.input[0]) == (1, 16, 32)
    assert [_dims(o) for o in m.graph.output] == [(1, 16, 32), (1, 32)]


def test_if_model_structure() -> None:
    m = zoo_model("if")
    inits = {t.name for t in m.graph.initializer}
    produced = {o: i for i, n in enumerate(m.graph.node) for o in n.output}
    (idx, node), = [(i, n) for i, n in enumerate(m.graph.node) if n.op_type == "If"]
    assert node.input[0] in produced  # the condition is computed from data
    for sub in _subgraphs(node):
        refs = _outer_refs(sub)
        assert refs & inits, "branch reads no outer initializer"
        assert any(produced.get(r, idx) < idx for r in refs), "branch reads no outer computed tensor"
    assert _consumers(m.graph)[node.output[0]]  # the If output feeds later nodes


def test_if_model_takes_both_branches() -> None:
    m, sess = zoo_model("if"), session("if")
    results = {tuple(np.round(sess.run(None, {"x": x})[0].ravel(), 5))
               for x in (np.ones((1, 8), np.float32), -np.ones((1, 8), np.float32))}
    assert len(results) == 2
    assert "x" in random_inputs(m)


def test_loop_model_structure() -> None:
    m = zoo_model("loop")
    inits = {t.name for t in m.graph.initializer}
    uses = _consumers(m.graph)
    for op in ("Loop", "Scan"):
        (node,) = [n for n in m.graph.node if n.op_type == op]
        (body,) = _subgraphs(node)
        assert _outer_refs(body), f"{op} body reads nothing from the outer scope"
        assert all(uses.get(o) for o in node.output), f"some {op} output feeds nothing"
        if op == "Loop":
            assert node.input[0] in inits
            assert _outer_refs(body) - inits, "Loop body reads no outer computed tensor"


def test_multi_io_structure() -> None:
    m = zoo_model("multi_io")
    assert len(m.graph.input) == 2 and len(m.graph.output) == 3
    assert _dims(m.graph.input[0]) != _dims(m.graph.input[1])
    uses = _consumers(m.graph)
    n = len(m.graph.node)
    assert any(uses.get(o.name) for o in m.graph.output), "no graph output is consumed internally"
    assert any(min(uses[i.name]) < n // 3 and max(uses[i.name]) > 2 * n // 3 for i in m.graph.input)


def test_shared_initializer_structure() -> None:
    m = zoo_model("shared_init")
    inits = {t.name for t in m.graph.initializer}
    first, last = m.graph.node[0], m.graph.node[-1]
    assert set(first.input) & set(last.input) & inits
    assert len(m.graph.node) >= 20


def test_many_consumers_structure() -> None:
    m = zoo_model("many_consumers")
    uses = _consumers(m.graph)
    hub, idxs = max(uses.items(), key=lambda kv: len(kv[1]))
    assert hub == "hub" and len(idxs) >= 8
    n = len(m.graph.node)
    assert min(idxs) < n // 4 and max(idxs) >= n - 3  # spread from start to end


def test_local_function_structure() -> None:
    m = zoo_model("local_function")
    assert len(m.functions) == 1
    f = m.functions[0]
    assert f.domain == FUNCTION_DOMAIN
    assert {o.domain: o.version for o in m.opset_import}[FUNCTION_DOMAIN] == 1
    calls = [n for n in m.graph.node if n.domain == f.domain and n.op_type == f.name]
    assert len(calls) == 2


def test_constants_structure() -> None:
    m = zoo_model("constants")
    assert not any(n.op_type == "Constant" for n in m.graph.node[3:])  # constants come first...
    uses = _consumers(m.graph)
    n = len(m.graph.node)
    consts = [o for nd in m.graph.node if nd.op_type == "Constant" for o in nd.output]
    assert len(consts) >= 2
    assert any(min(uses[c]) < n // 3 and max(uses[c]) > 2 * n // 3 for c in consts)  # ...used early and late
    producer = {o: nd for nd in m.graph.node for o in nd.output}
    assert any(producer[o.name].op_type == "Identity" for o in m.graph.output)


def test_tiny_cnn_structure() -> None:
    m = zoo_model("tiny_cnn")
    assert 20 <= len(m.graph.node) <= 40
    assert _dims(m.graph.input[0]) == (1, 3, 32, 32) and _dims(m.graph.output[0]) == (1, 10)
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    shapes = {vi.name: _dims(vi) for vi in inferred.graph.value_info}
    chans = [shapes[n.output[0]][1] for n in m.graph.node if n.op_type == "Conv"]
    squeeze = chans.index(min(chans))
    assert min(chans) <= 4 and max(chans[:squeeze]) >= 32 and max(chans[squeeze + 1:]) >= 32


# -- random DAGs ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed,n_nodes", DAG_CASES)
def test_random_dag(seed: int, n_nodes: int) -> None:
    m = random_dag_model(seed, n_nodes=n_nodes)
    _check_common(m)
    assert len(m.graph.node) == n_nodes
    assert 1 <= len(m.graph.input) <= 2 and 1 <= len(m.graph.output) <= 3
    assert m.graph.output[-1].name == m.graph.node[-1].output[0]
    uses = _consumers(m.graph)
    outputs = {o.name for o in m.graph.output}
    for node in m.graph.node:  # no dead code
        assert all(o in uses or o in outputs for o in node.output), node.name
    for vi in m.graph.input:
        assert vi.name in uses
    _run(m, _session(m), seed)
    assert m.SerializeToString() == random_dag_model(seed, n_nodes=n_nodes).SerializeToString()


def test_random_dag_features_occur() -> None:
    """Across seeds the generator produces skips, fan-out, shared weights and consumed outputs."""
    shared_init = consumed_output = multi_output = two_inputs = 0
    max_fanout = max_skip = 0
    for seed in range(40):
        m = random_dag_model(seed, n_nodes=20)
        uses = _consumers(m.graph)
        inits = {t.name for t in m.graph.initializer}
        producer = {o: i for i, n in enumerate(m.graph.node) for o in n.output}
        shared_init += any(len(uses.get(i, [])) > 1 for i in inits)
        consumed_output += any(o.name in uses for o in m.graph.output)
        multi_output += any(len(n.output) > 1 for n in m.graph.node)
        two_inputs += len(m.graph.input) == 2
        max_fanout = max(max_fanout, *(len(v) for k, v in uses.items() if k not in inits))
        max_skip = max(max_skip, *(i - producer[t] for i, n in enumerate(m.graph.node)
                                   for t in n.input if t in producer))
    assert shared_init and consumed_output and multi_output and 0 < two_inputs < 40
    assert max_fanout >= 4 and max_skip >= 10


def test_random_dag_options() -> None:
    m = random_dag_model(3, n_nodes=7, n_inputs=2, shape=(1, 6, 3, 5), n_outputs=1)
    assert len(m.graph.input) == 2 and len(m.graph.output) == 1
    assert _dims(m.graph.output[0]) == (1, 6, 3, 5)
    _run(m, _session(m))
    with pytest.raises(ValueError):
        random_dag_model(0, n_nodes=0)
    with pytest.raises(ValueError):
        random_dag_model(0, shape=(1, 3, 4, 4))


# -- random_inputs --------------------------------------------------------------------------


def test_random_inputs_dtypes_and_initializer_inputs() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["f"], ["y"], name="id")],
        "g",
        [
            helper.make_tensor_value_info("f", onnx.TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [2]),
            helper.make_tensor_value_info("j", onnx.TensorProto.INT32, [1, 2]),
            helper.make_tensor_value_info("b", onnx.TensorProto.BOOL, [4]),
            helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
        initializer=[onnx.numpy_helper.from_array(np.zeros(2, np.float32), "w")],
    )
    feeds = random_inputs(helper.make_model(graph), seed=5)
    assert set(feeds) == {"f", "i", "j", "b"}
    assert feeds["f"].dtype == np.float32 and feeds["f"].shape == (1, 3)
    assert feeds["i"].dtype == np.int64 and np.all((feeds["i"] >= 0) & (feeds["i"] < 4))
    assert feeds["j"].dtype == np.int32 and feeds["j"].shape == (1, 2)
    assert feeds["b"].dtype == np.bool_
    again = random_inputs(helper.make_model(graph), seed=5)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
