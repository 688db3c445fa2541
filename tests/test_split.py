"""The split mechanism: hand-written plans in, two models out, cloud(edge(x)) == model(x)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import onnxsplit
from onnxsplit import zoo
from onnxsplit.conformance import candidate_edge_sets, check_cuts
from onnxsplit.errors import PlanError
from onnxsplit.runtime_ort import random_feeds, run
from onnxsplit.split import edge_nodes_for_cut, edge_nodes_prefix, split_model


def _graph(model: onnx.ModelProto) -> onnxsplit.Graph:
    return onnxsplit.load_graph(model)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_every_cut_of_every_zoo_model_recombines_bit_exactly(name: str) -> None:
    graph = _graph(zoo.ZOO[name]())
    cuts = candidate_edge_sets(graph)
    assert len(cuts) >= 3
    report = check_cuts(graph, random_feeds(graph.model, seed=1), cuts, name=name)
    assert report.ok, report.failures[:3]
    assert report.cuts_checked == len(cuts)


@pytest.mark.parametrize("name", ["resnet", "transformer", "inception", "if"])
def test_default_onnxruntime_optimizations_agree_within_1e_5(name: str) -> None:
    graph = _graph(zoo.ZOO[name]())
    cuts = candidate_edge_sets(graph, max_cuts=12)
    report = check_cuts(graph, random_feeds(graph.model), cuts, optimize=True, rtol=1e-5, atol=1e-6)
    assert report.ok, report.failures[:3]


def test_fan_out_tensor_is_sent_once_and_consumers_all_read_it() -> None:
    graph = _graph(zoo.many_consumers())
    hub = max(graph.tensors.values(), key=lambda t: len(t.consumers))
    assert len(hub.consumers) >= 8
    parts = split_model(graph, edge_nodes_for_cut(graph, [hub.name]))
    names = [b.name for b in parts.boundary]
    assert names.count(hub.name) == 1
    assert [o.name for o in parts.edge.graph.output].count(hub.name) == 1
    assert [i.name for i in parts.cloud.graph.input].count(hub.name) == 1
    assert parts.boundary_nbytes == sum(b.nbytes for b in parts.boundary)


def test_graph_input_read_late_is_sent_raw_and_early_output_returned_by_edge() -> None:
    graph = _graph(zoo.multi_io())
    # Put only the first few nodes on the edge; the late consumer of an input runs in the cloud.
    k = 3
    parts = split_model(graph, edge_nodes_prefix(graph, k))
    raw = [b for b in parts.boundary if b.source == "input"]
    assert raw, "a graph input read by cloud nodes must be sent raw"
    for b in raw:
        assert b.name in graph.inputs
        assert b.name in [i.name for i in parts.cloud.graph.input]
    # An early graph output that is also consumed later: returned by the edge, and sent once.
    early = [n for n in graph.outputs if graph.tensors[n].consumers]
    assert early
    full = split_model(graph, edge_nodes_for_cut(graph, early))
    for name in early:
        assert full.output_sources[name] == "edge"
        assert name in [o.name for o in full.edge.graph.output]
        assert name in [b.name for b in full.boundary]
    feeds = random_feeds(graph.model)
    ref = run(graph.model, feeds, optimize=False)
    got = full.run(feeds)
    assert list(got) == graph.outputs  # original order
    for name in graph.outputs:
        assert ref[name].tobytes() == got[name].tobytes()


def test_shared_initializer_present_on_both_sides_and_names_preserved() -> None:
    model = zoo.shared_initializer()
    model.metadata_props.add(key="author", value="somebody")
    model.doc_string = "doc"
    graph = _graph(model)
    parts = split_model(graph, edge_nodes_prefix(graph, len(graph.compute_nodes) // 2))
    edge_inits = {t.name for t in parts.edge.graph.initializer}
    cloud_inits = {t.name for t in parts.cloud.graph.initializer}
    assert edge_inits & cloud_inits, "the shared weight must be on both sides"
    original_names = {n.name for n in model.graph.node}
    for side in (parts.edge, parts.cloud):
        assert {n.name for n in side.graph.node} <= original_names
        assert side.ir_version == model.ir_version
        assert list(side.opset_import) == list(model.opset_import)
        assert side.doc_string == "doc"
        assert {p.key: p.value for p in side.metadata_props}["author"] == "somebody"
        onnx.checker.check_model(side, full_check=True)
    # Together the sides hold every original node exactly once.
    got = [n.name for n in parts.edge.graph.node] + [n.name for n in parts.cloud.graph.node]
    assert sorted(got) == sorted(original_names)


def test_local_functions_and_constants_carry_over() -> None:
    graph = _graph(zoo.local_function_model())
    parts = split_model(graph, edge_nodes_prefix(graph, 1))
    for side in (parts.edge, parts.cloud):
        assert [f.name for f in side.functions] == [f.name for f in graph.model.functions]
    cgraph = _graph(zoo.constants_model())
    consts = [n for n in cgraph.nodes if n.is_replicable]
    assert consts
    mid = split_model(cgraph, edge_nodes_prefix(cgraph, len(cgraph.compute_nodes) // 2))
    assert not any(b.name in {o for c in consts for o in c.outputs} for b in mid.boundary), "constants are never sent"


def test_if_node_outer_scope_tensor_becomes_boundary() -> None:
    graph = _graph(zoo.if_model())
    if_node = next(n for n in graph.nodes if n.op_type == "If")
    assert if_node.implicit_inputs
    # Everything before the If on the edge, the If in the cloud: its implicit inputs must cross.
    edge = graph.ancestors(p.name for p in graph.predecessors(if_node))
    parts = split_model(graph, edge)
    crossing = {b.name for b in parts.boundary}
    for name in if_node.implicit_inputs:
        if graph.tensors[name].kind == "activation":
            assert name in crossing
        if graph.tensors[name].kind == "initializer":
            assert name in {t.name for t in parts.cloud.graph.initializer}


def test_all_edge_and_all_cloud_plans() -> None:
    graph = _graph(zoo.resnet_like())
    all_edge = split_model(graph, [n.name for n in graph.compute_nodes])
    assert all_edge.cloud is None and all_edge.boundary == []
    all_cloud = split_model(graph, [])
    assert all_cloud.edge is None
    assert [b.source for b in all_cloud.boundary] == ["input"]
    feeds = random_feeds(graph.model)
    ref = run(graph.model, feeds, optimize=False)
    for parts in (all_edge, all_cloud):
        got = parts.run(feeds)
        assert all(ref[k].tobytes() == got[k].tobytes() for k in graph.outputs)


def test_plan_not_closed_names_the_edge_cloud_edge_path() -> None:
    graph = _graph(zoo.tiny_cnn())
    nodes = [n.name for n in graph.compute_nodes]
    edge = {nodes[0], nodes[2]}  # skips nodes[1], which nodes[2] needs
    with pytest.raises(PlanError) as err:
        split_model(graph, edge)
    msg = str(err.value)
    assert f"edge node '{nodes[2]}' needs '{nodes[1]}'" in msg
    assert f"{nodes[0]} -> {nodes[1]} -> {nodes[2]}" in msg
    assert "\n" not in msg


def test_unknown_names_and_bad_cuts_are_clear_errors() -> None:
    graph = _graph(zoo.tiny_cnn())
    with pytest.raises(PlanError, match="unknown node 'nope'"):
        split_model(graph, ["nope"])
    with pytest.raises(PlanError, match="unknown tensor 'conv1'.*similar: conv1"):
        edge_nodes_for_cut(graph, ["conv1"])
    with pytest.raises(PlanError, match="cannot cut at 'image': it is a graph input"):
        edge_nodes_for_cut(graph, ["image"])
    with pytest.raises(PlanError, match="cut index 99 out of range"):
        edge_nodes_prefix(graph, 99)


def test_cut_adds_crossing_skip_connections_automatically() -> None:
    """extract_model needs every crossing tensor; here the residual skip is found for the user."""
    graph = _graph(zoo.resnet_like())
    add = next(n for n in graph.nodes if n.op_type == "Add")
    conv_branch = next(i for i in add.inputs if graph.tensors[i].producer and graph.tensors[i].producer.endswith(".bn"))
    edge = edge_nodes_for_cut(graph, [conv_branch])
    parts = split_model(graph, edge)
    assert {b.name for b in parts.boundary} == set(add.inputs)


def test_empty_node_names_get_unique_ir_names_and_keep_originals() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"], name="Relu_0"),
        helper.make_node("Abs", ["b"], ["c"]),
        helper.make_node("Add", ["c", "a"], ["y"], name=""),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    graph = _graph(model)
    names = [n.name for n in graph.nodes]
    assert len(set(names)) == 4
    report = check_cuts(graph, random_feeds(graph.model), candidate_edge_sets(graph))
    assert report.ok and report.cuts_checked == 5
    parts = split_model(graph, edge_nodes_prefix(graph, 2))
    assert [n.name for n in parts.edge.graph.node] == ["", "Relu_0"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_nodes=st.integers(1, 30), data=st.data())
def test_random_dag_models_split_exactly_at_random_closed_sets(seed: int, n_nodes: int, data) -> None:  # noqa: ANN001
    graph = _graph(zoo.random_dag_model(seed, n_nodes=n_nodes))
    compute = [n.name for n in graph.compute_nodes]
    # A random predecessor-closed set: the ancestors of a random subset of nodes.
    picks = data.draw(st.lists(st.sampled_from(compute), max_size=4))
    edge = graph.ancestors(picks)
    report = check_cuts(graph, random_feeds(graph.model, seed=seed % 1000), [("random", edge)])
    assert report.ok, report.failures
    parts = split_model(graph, edge)
    # The boundary is exactly the set of tensors produced on the edge (or raw inputs) read in the cloud.
    cloud = set(compute) - edge
    expected = {
        t.name
        for t in graph.tensors.values()
        if t.kind in ("activation", "input")
        and (t.kind == "input" or t.producer in edge)
        and any(c in cloud for c in t.consumers)
    }
    if parts.cloud is not None:
        assert {b.name for b in parts.boundary} == expected


def test_split_does_not_mutate_the_callers_model() -> None:
    model = zoo.tiny_cnn()
    before = model.SerializeToString()
    graph = onnxsplit.load_graph(model)
    split_model(graph, edge_nodes_prefix(graph, 5))
    assert model.SerializeToString() == before


def test_sides_have_static_boundary_types() -> None:
    graph = _graph(zoo.unet_like())
    parts = split_model(graph, edge_nodes_prefix(graph, 7))
    for b in parts.boundary:
        t = graph.tensors[b.name]
        assert b.shape == t.shape and b.nbytes == np.prod(b.shape) * 4
