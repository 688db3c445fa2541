"""onnxsplit.netgen: random realistic training networks for the cost models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxsplit.ir import Graph
from onnxsplit.netgen import net_model, net_specs
from onnxsplit.profile import ProfileError, build_spec, graph_of_spec


def test_same_spec_same_model() -> None:
    for spec in net_specs(6, start=100):
        a, b = net_model(spec), net_model(json.loads(json.dumps(spec)))
        assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    assert net_model(net_specs(1, start=3)[0]).SerializeToString() != net_model(net_specs(1, start=4)[0]).SerializeToString()


def test_nets_are_valid_static_and_within_budget() -> None:
    ops: set[str] = set()
    for spec in net_specs(40, max_mflops=800.0):
        m = build_spec(spec)
        onnx.checker.check_model(m, full_check=True)
        g = Graph(m)
        g.require_static_shapes()
        assert g.total_flops / 1e6 <= 800.0, spec
        assert not g.unknown_cost_nodes(), spec
        ops |= set(g.op_histogram())
    # the vocabulary is actually exercised: blocks real exported models are made of
    for op in ("Conv", "BatchNormalization", "HardSigmoid", "Clip", "Concat", "Resize", "LRN", "MatMul", "Softmax",
               "GlobalAveragePool", "MaxPool", "Transpose", "ReduceMean"):
        assert op in ops, op


def test_nets_run_in_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    for spec in net_specs(8, start=20, max_mflops=300.0):
        m = net_model(spec)
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([int(d) for d in i.shape]).astype(np.float32)
        outs = s.run(None, {i.name: x})
        assert all(np.isfinite(o).all() for o in outs), spec


# sha256 of the graph (deterministic serialization), first 16 hex digits: the fitted CSV rows are
# rebuilt from their spec, so a vocabulary change that alters an existing version's graphs would
# silently re-label measurements with other networks.
_GOLDEN = {(1, 0): "aa14de207637313e", (1, 5): "48de7b6cfa793f8f", (1, 200): "8c4fcfef91920f36", (2, 0): "acdeb4b073bdfe07", (2, 162): "8eaabb365d1d94d4"}


def _graph_digest(spec: dict) -> str:
    import hashlib

    return hashlib.sha256(net_model(spec).graph.SerializeToString(deterministic=True)).hexdigest()[:16]


@pytest.mark.parametrize("version,seed", sorted(_GOLDEN))
def test_existing_vocabularies_do_not_change(version: int, seed: int) -> None:
    assert _graph_digest(net_specs(1, start=seed, version=version)[0]) == _GOLDEN[(version, seed)]


def test_v2_nets_are_small_valid_and_run() -> None:
    ort = pytest.importorskip("onnxruntime")
    kinds = set()
    for spec in net_specs(30, version=2):
        m = net_model(spec)
        onnx.checker.check_model(m, full_check=True)
        g = Graph(m)
        g.require_static_shapes()
        assert not g.unknown_cost_nodes(), spec
        assert g.total_flops / 1e6 < 400.0, spec
        shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        kinds.add(len(shape))
        if len(shape) == 4:  # a CIFAR/MNIST-scale image
            assert shape[:2] == [1, 3] and 28 <= shape[2] <= 64 and shape[2] == shape[3], spec
        else:  # a short token sequence
            assert shape[0] == 1 and shape[1] <= 64 and shape[2] <= 128, spec
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([int(d) for d in i.shape]).astype(np.float32)
        assert all(np.isfinite(o).all() for o in s.run(None, {i.name: x})), spec
    assert kinds == {3, 4}


def test_budget_lowers_resolution_and_bad_version_is_an_error() -> None:
    spec = net_specs(1, start=7)[0]
    small = Graph(net_model({**spec, "max_mflops": 60.0}))
    assert small.total_flops / 1e6 <= 60.0
    with pytest.raises(ProfileError, match="version 9"):
        net_model({**spec, "v": 9})
    with pytest.raises(ProfileError, match="version 3"):
        net_specs(1, version=3)


def test_profile_rows_name_and_rebuild_nets(tmp_path: Path) -> None:
    from onnxsplit.cli import main
    from onnxsplit.profile import read_profile_csv

    out = tmp_path / "nets.csv"
    assert main(["profile", "--target", "host-x86", "-o", str(out), "--kernels", "0", "--no-models", "--nets", "2",
                 "--reps", "3", "--rounds", "1", "--warmup", "1", "--max-seconds", "0.05", "--quiet"]) == 0
    rows = [r for r in read_profile_csv(out) if r["kind"] == "model"]
    assert [r["name"] for r in rows] == ["net:v1,seed=0", "net:v1,seed=1"]
    out2 = tmp_path / "small.csv"
    assert main(["profile", "--target", "host-x86", "-o", str(out2), "--kernels", "0", "--no-models", "--nets", "2",
                 "--net-version", "2", "--net-start", "162", "--reps", "3", "--rounds", "1", "--warmup", "1",
                 "--max-seconds", "0.05", "--quiet"]) == 0
    rows2 = [r for r in read_profile_csv(out2) if r["kind"] == "model"]
    assert [r["name"] for r in rows2] == ["net:v2,seed=162", "net:v2,seed=163"]
    for r in rows + rows2:
        assert float(r["median_ms"]) > 0
        assert graph_of_spec(r["spec"]).model.SerializeToString() == build_spec(r["spec"]).SerializeToString()


def test_negative_nets_is_a_one_line_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from onnxsplit.cli import main

    assert main(["profile", "--target", "host-x86", "-o", str(tmp_path / "x.csv"), "--nets", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--nets must be >= 0" in err[0]
    assert not (tmp_path / "x.csv").exists()
