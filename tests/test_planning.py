"""Glue between IR, cost tables and the search: problem construction, plan -> split, `plan` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxsplit
from onnxsplit import zoo
from onnxsplit.cli import main
from onnxsplit.conformance import check_cuts
from onnxsplit.cost.predict import CostTable
from onnxsplit.planning import build_problem, make_link, plan_model
from onnxsplit.runtime_ort import random_feeds
from onnxsplit.search import search
from onnxsplit.split import split_model
from onnxsplit.targets import load_target


def fake_costs(graph: onnxsplit.Graph, per_mflop_ms: float, name: str) -> CostTable:
    """A cost table proportional to FLOPs (+1 µs per node): a stand-in for a cost model."""
    lat = {n.name: n.flops / 1e6 * per_mflop_ms + 1e-3 for n in graph.compute_nodes}
    return CostTable(name, "fp32", "fake", False, None, lat, {}, 0.0, sum(lat.values()), [], "fake")


SMALL_MODELS = {
    "if": zoo.if_model,
    "local_function": zoo.local_function_model,
    "constants": zoo.constants_model,
    **{f"random-dag-{seed}": (lambda seed=seed: zoo.random_dag_model(seed, n_nodes=18)) for seed in range(4)},
}


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_mincut_on_real_graphs_matches_exhaustive_and_splits_exactly(name: str) -> None:
    graph = onnxsplit.load_graph(SMALL_MODELS[name]())
    assert len(graph.compute_nodes) <= 20  # the exhaustive oracle's limit
    problem = build_problem(graph, fake_costs(graph, 2.0, "edge"), fake_costs(graph, 0.05, "cloud"))
    for mbps in (0.5, 5.0, 50.0, 5000.0):
        link = make_link(mbps, rtt_ms=1.0)
        best = search(problem, link, algorithm="mincut")
        oracle = search(problem, link, algorithm="exhaustive")
        assert best.objective_value == pytest.approx(oracle.objective_value, abs=1e-3)
        # Policy -> mechanism: the searched plan splits exactly and its boundary matches the prediction.
        parts = split_model(graph, best.edge_node_names)
        if parts.cloud is not None:
            predicted_up = {b.name for b in best.boundary_tensors if b.direction == "uplink"}
            assert {b.name for b in parts.boundary} == predicted_up
        report = check_cuts(graph, random_feeds(graph.model), [("searched", set(best.edge_node_names))])
        assert report.ok, report.failures


def test_fan_out_tensor_appears_once_with_all_consumers() -> None:
    graph = onnxsplit.load_graph(zoo.many_consumers())
    problem = build_problem(graph, fake_costs(graph, 1.0, "e"), fake_costs(graph, 0.1, "c"))
    hub = max(graph.tensors.values(), key=lambda t: len(t.consumers))
    specs = [t for t in problem.tensors if t.name == hub.name]
    assert len(specs) == 1 and len(specs[0].consumers) == len(hub.consumers)
    assert specs[0].nbytes == hub.nbytes


def test_edge_unsupported_ops_are_forced_to_the_cloud(tmp_path: Path) -> None:
    text = (Path(load_target("rpi4").path)).read_text()
    text = text.replace('name = "rpi4"', 'name = "no-gemm"').replace("unsupported_ops = []", 'unsupported_ops = ["Gemm"]')
    assert 'unsupported_ops = ["Gemm"]' in text
    path = tmp_path / "no-gemm.toml"
    path.write_text(text)
    target = load_target(str(path))
    graph = onnxsplit.load_graph(zoo.tiny_cnn())
    problem = build_problem(graph, fake_costs(graph, 0.001, "e"), fake_costs(graph, 1.0, "c"), edge_target=target)
    gemm = [i for i, n in enumerate(graph.compute_nodes) if n.op_type == "Gemm"]
    assert gemm and all(np.isinf(problem.edge_ms[i]) for i in gemm)
    plan = search(problem, make_link(1.0))
    assert not set(gemm) & set(plan.edge_nodes)


@pytest.fixture()
def yolo_like(tmp_path: Path) -> Path:
    path = tmp_path / "unet.onnx"
    onnx.save_model(zoo.unet_like(), str(path))
    return path


def test_plan_cli_json_save_and_split_with_plan(yolo_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plan_path = tmp_path / "plan.json"
    argv = ["plan", str(yolo_like), "--target", "arm-cpu", "--cloud", "server-gpu", "--bandwidth", "20mbps", "--rtt", "10ms"]
    assert main([*argv, "--json", "--save", str(plan_path), "--sweep"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads(plan_path.read_text())
    plan = doc["plan"]
    assert plan["algorithm"] == "mincut" and plan["objective"] == "latency"
    assert doc["edge"]["target"] == "rpi4" and isinstance(doc["edge"]["calibrated"], bool)
    assert plan["total_ms"] == pytest.approx(plan["edge_ms"] + plan["transfer_ms"] + plan["fixed_ms"] + plan["cloud_ms"])
    rows = doc["policy"]["rows"]
    assert rows and rows[0]["from_mbps"] == 0
    out = tmp_path / "split"
    assert main(["split", str(yolo_like), "--plan", str(plan_path), "-o", str(out), "--json"]) == 0
    split_doc = json.loads(capsys.readouterr().out)
    assert split_doc["edge_nodes"] == plan["edge_node_names"]
    assert all(v["identical"] for v in split_doc["verification"])


def test_plan_cli_text_table(yolo_like: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(yolo_like), "--target", "jetson", "--bandwidth", "5mbps", "--objective", "throughput"]) == 0
    out = capsys.readouterr().out
    assert "chosen" in out and "calibrated:" in out and "throughput" in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--bandwidth", "fast"], "fast"),
        (["--bandwidth", "20mbps", "--target", "toaster"], "toaster"),
        (["--bandwidth", "20mbps", "--rtt", "10 parsecs"], "10 parsecs"),
        (["--bandwidth", "20mbps", "--max-edge-memory", "lots"], "lots"),
        (["--bandwidth", "20mbps", "--pin-edge", "no.such.node"], "unknown node 'no.such.node'"),
        (["--bandwidth", "20mbps", "--edge-cpu-limit", "lots"], "bad CPU limit 'lots'"),
        (["--bandwidth", "20mbps", "--edge-cpu-limit", "2"], "at most 1 CPU"),
        (["--bandwidth", "20mbps", "--edge-cpu-limit", "0.1/5ms"], "kernel's 1 ms minimum"),
        (["--bandwidth", "20mbps", "--edge-cpu-limit", "0.5", "--objective", "energy"], "not 'energy'"),
    ],
)
def test_plan_cli_bad_values(extra: list[str], needle: str, yolo_like: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["plan", str(yolo_like), "--target", "jetson", *extra]
    if "--target" in extra[2:]:
        argv = ["plan", str(yolo_like), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def test_unknown_target_lists_known_ones(yolo_like: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(yolo_like), "--target", "toaster", "--bandwidth", "1mbps"]) == 2
    err = capsys.readouterr().err
    assert "jetson-orin-nano" in err and "rpi4" in err


def test_split_with_bad_plan_file(yolo_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["split", str(yolo_like), "--plan", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "is not a JSON plan" in capsys.readouterr().err


def test_inspect_with_target_reports_prediction(yolo_like: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(yolo_like), "--target", "host-x86", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["predicted_latency_ms"] > 0
    assert isinstance(info["prediction"]["calibrated"], bool)
    assert all(n["predicted_latency_ms"] >= 0 for n in info["nodes_detail"])


def test_plan_cli_edge_cpu_limit_scales_the_edge_and_models_the_quota(yolo_like: Path, capsys: pytest.CaptureFixture) -> None:
    """--edge-cpu-limit: edge costs x 1/CPUs (the long-run rate), the link records the quota, and a plan's
    latency comes from the quota model (onnxsplit.cpu_quota) rather than the plain sum of its parts."""
    from onnxsplit.cpu_quota import EdgeCpuQuota

    argv = ["plan", str(yolo_like), "--target", "host-x86", "--cloud", "server-gpu", "--bandwidth", "100mbps", "--rtt", "5ms",
            "--json", "--alternatives", "2"]
    assert main(argv) == 0
    free = json.loads(capsys.readouterr().out)
    assert main([*argv, "--edge-cpu-limit", "250m/20ms"]) == 0
    lim = json.loads(capsys.readouterr().out)
    assert lim["link"]["edge_cpu_quota"] == {"quota_ms": 5.0, "period_ms": 20.0, "request_cpu_ms": 0.0, "cpu_spread": 0.25}
    assert "edge_cpu_quota" not in free["link"]
    assert lim["edge"]["whole_model_ms"] == pytest.approx(free["edge"]["whole_model_ms"])  # the predictions themselves
    q = EdgeCpuQuota(5.0, 20.0)
    for p in [lim["plan"], *lim["alternatives"]]:
        if p["fixed_ms"] > 0:  # something runs in the cloud (the rtt is paid)
            off = p["transfer_ms"] + p["fixed_ms"] + p["cloud_ms"]
            assert p["total_ms"] == pytest.approx(q.plan_latency_ms(p["edge_ms"], off), rel=1e-9)
            if p["edge_nodes"]:
                assert p["total_ms"] != pytest.approx(p["edge_ms"] + off, rel=1e-6)  # not the plain sum
        else:
            assert p["total_ms"] == pytest.approx(p["edge_ms"])  # all-edge: back to back at the long-run rate
    chosen = {tuple(free["plan"]["edge_nodes"]): free["plan"]}
    same = [p for p in [lim["plan"], *lim["alternatives"]] if tuple(p["edge_nodes"]) in chosen]
    for p in same:  # the same plan's edge ms is 4x the unlimited one's (0.25 CPU)
        assert p["edge_ms"] == pytest.approx(4 * chosen[tuple(p["edge_nodes"])]["edge_ms"])
    assert main([*argv[:-3], "--edge-cpu-limit", "0.25/20ms"]) == 0
    out = capsys.readouterr().out
    assert "edge CPU limit 0.25 CPU (5 ms per 20 ms period)" in out and "the columns need not add up" in out
    # the same through the API, on a split plan (the CLI's plans above may all be all-edge/all-cloud)
    from onnxsplit.search import evaluate_plan

    graph = onnxsplit.load_graph(str(yolo_like))
    kw = {"edge_target": "host-x86", "cloud_target": "server-gpu", "uplink_mbps": 100.0, "rtt_ms": 5.0}
    res_q, res_free = plan_model(graph, edge_cpu_quota=q, **kw), plan_model(graph, **kw)
    first = (0, 1, 2)
    pq, pf = evaluate_plan(res_q.problem, res_q.link, first), evaluate_plan(res_free.problem, res_free.link, first)
    assert pq.edge_ms == pytest.approx(4 * pf.edge_ms)
    assert pq.total_ms == pytest.approx(q.plan_latency_ms(pq.edge_ms, pq.transfer_ms + pq.fixed_ms + pq.cloud_ms))
    assert pq.total_ms < pq.edge_ms + pq.transfer_ms + pq.fixed_ms + pq.cloud_ms  # its ~0.1 ms of CPU runs unthrottled
