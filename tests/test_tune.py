"""``onnxsplit tune`` (onnxsplit.compile.tune): MetaSchedule tuning of a half, database reuse, RPC.

Needs apache-tvm with MetaSchedule's dependencies (cloudpickle, psutil, xgboost-cpu) and, for the
RPC tracker, tornado. The first tuning in a process pays ~25 s of one-time TVM initialisation
(``tvm.s_tir.tensor_intrin``); the tuned model is a single 3x3 conv, a handful of trials.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")
pytest.importorskip("xgboost")
pytest.importorskip("psutil")
pytest.importorskip("cloudpickle")

from onnxsplit.cli import main  # noqa: E402
from onnxsplit.compile import compile_bundle, tvm_backend  # noqa: E402
from onnxsplit.compile.tune import RPCError, check_rpc, kernel_rows_from_tuning_db, time_library  # noqa: E402
from onnxsplit.cost.fit import fit_from_kernels  # noqa: E402

pytestmark = [pytest.mark.tvm,
              pytest.mark.skipif(tvm_backend._this_arch() != "x86_64", reason="tunes and runs x86-64 code here")]

TARGET = "host-x86"
#: cheap search for the tests (the default evolutionary search + xgb cost model spends ~15 s more)
FAST = ["--strategy", "replay-trace", "--cost-model", "random"]


def _host_target() -> str | dict:
    from onnxsplit.targets import load_target

    t = load_target(TARGET).tvm_target
    return TARGET if not tvm_backend.missing_cpu_features(t) else {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "W")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "W2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "W2"], ["y"], name="conv2")],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], [w, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def conv_bundle(tmp_path_factory) -> Path:
    """A split folder whose edge half is one 3x3 conv (the cloud half: ReLU + 1x1 conv)."""
    work = tmp_path_factory.mktemp("tune")
    src = work / "conv.onnx"
    onnx.save(_conv_model(), str(src))
    out = work / "bundle"
    assert main(["split", str(src), "--at", "1", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tuned_bundle(conv_bundle) -> tuple[Path, float]:
    t0 = time.perf_counter()
    target = _host_target()
    args = ["tune", str(conv_bundle), "--side", "edge", "--trials", "4", "--trials-per-iter", "4", "--quiet", *FAST]
    args += ["--target", TARGET] if isinstance(target, str) else []
    if not isinstance(target, str):
        pytest.skip("this CPU lacks host-x86's features; tuning it here is refused")
    assert main(args) == 0
    return conv_bundle, time.perf_counter() - t0


def test_tune_writes_database_and_rebuilds_with_it(tuned_bundle) -> None:
    out, _ = tuned_bundle
    db = out / "tuning" / "edge"
    assert (db / "database_workload.json").is_file()
    records = (db / "database_tuning_record.json").read_text().strip().splitlines()
    assert len(records) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    edge = manifest["compiled"]["edge"]
    assert edge["tuning"] == {"database": "tuning/edge", "records": 4, "tasks": 1, "tuned_tasks": 1}
    assert edge["validated"]["numerics"]["ok"] and edge["validated"]["numerics"]["max_rel"] <= 1e-4
    assert "cloud" not in manifest["compiled"]  # only the tuned side is rebuilt
    # write_manifest recomputed the checksums of the rebuilt library
    assert "edge/tvm/model.so" in manifest["files"]


def test_compile_applies_database_and_matches_onnxruntime(tuned_bundle, tmp_path) -> None:
    out, _ = tuned_bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "edge" / "tvm")
    compiled = compile_bundle(copy, _host_target(), None, tuning_db=copy / "tuning")  # edge/ found inside
    edge = compiled["edge"]
    assert compiled["cloud"] is None
    assert edge["tuning"]["tuned_tasks"] == 1 and edge["tuning"]["records"] == 4
    assert edge["validated"]["numerics"]["max_rel"] <= 1e-4  # onnxruntime vs the tuned library
    # the tuned schedule is really used: TIR of the tuned build differs from the default one
    from onnxsplit.runtime_ort import random_feeds

    feeds = random_feeds(onnx.load(str(copy / "edge" / "model.onnx")), seed=0)
    assert time_library(copy / "edge" / "tvm" / "model.so", feeds, number=5, repeat=3) > 0


def test_second_tune_continues_from_the_database(tuned_bundle, capsys) -> None:
    out, _ = tuned_bundle
    # an unnamed handler on MetaSchedule's logger (an application's, or pytest >= 9.2's log capture)
    # made TVM's logger setup fail ("'NoneType' object has no attribute 'format'")
    lg = logging.getLogger("tvm.s_tir.meta_schedule")
    mine = logging.NullHandler()
    lg.addHandler(mine)
    try:
        assert main(["tune", str(out), "--side", "edge", "--target", TARGET, "--trials", "6", "--trials-per-iter", "4",
                     "--no-compile", "--json", "--quiet", *FAST]) == 0
        assert mine in lg.handlers  # given back afterwards
    finally:
        lg.removeHandler(mine)
    report = json.loads(capsys.readouterr().out)
    edge = report["sides"]["edge"]
    assert edge["records_before"] == 4 and edge["records"] == 6 and edge["trials_run"] == 2
    # budget already spent: nothing to do
    assert main(["tune", str(out), "--side", "edge", "--target", TARGET, "--trials", "6", "--no-compile", "--json",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["sides"]["edge"]["trials_run"] == 0


def test_tuning_records_become_cost_model_rows(tuned_bundle, tmp_path, capsys) -> None:
    out, _ = tuned_bundle
    rows = kernel_rows_from_tuning_db(out / "tuning" / "edge", target=TARGET)
    assert len(rows) == 1
    r = rows[0]
    assert r["family"] == "conv" and r["runtime"] == "tvm" and r["median_ms"] > 0
    assert r["mflops"] == pytest.approx(2 * 8 * 4 * 9 * 16 * 16 / 1e6, rel=0.05)
    assert r["param_mb"] == pytest.approx(8 * 4 * 9 * 4 / 1e6) and r["out_mb"] == pytest.approx(8 * 16 * 16 * 4 / 1e6)
    model = fit_from_kernels(rows, target=TARGET, runtime="tvm", includes_overhead=False, holdout_fraction=0.0)
    assert "conv" in model.families
    dest = tmp_path / "m.json"
    assert main(["cost-model", "fit", "--from-tuning-db", str(out / "tuning" / "edge"), "--target", TARGET,
                 "-o", str(dest)]) == 0
    assert json.loads(dest.read_text())["runtime"] == "tvm"


def test_tune_needs_a_target_for_split_folders(conv_bundle, capsys) -> None:
    assert main(["tune", str(conv_bundle), "--side", "edge", "--trials", "1"]) == 2
    assert "pass --target" in capsys.readouterr().err


def test_tune_refuses_foreign_arch_without_rpc(conv_bundle, capsys) -> None:
    assert main(["tune", str(conv_bundle), "--side", "edge", "--target", "rpi4", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--rpc" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------ RPC
def test_bad_tracker_address_is_a_one_line_error(conv_bundle, capsys) -> None:
    t0 = time.perf_counter()
    rc = main(["tune", str(conv_bundle), "--side", "edge", "--target", TARGET, "--trials", "2",
               "--rpc", "127.0.0.1:1", "--device-key", "local"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and time.perf_counter() - t0 < 30
    assert len(err.splitlines()) == 1 and "cannot reach the RPC tracker at 127.0.0.1:1" in err


def test_not_a_tracker_is_a_one_line_error(rpc_tracker) -> None:
    import socket

    with socket.socket() as s:  # a listening socket that never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        t0 = time.perf_counter()
        with pytest.raises(RPCError, match="did not answer as a TVM RPC tracker|not a usable TVM RPC tracker"):
            check_rpc("127.0.0.1", s.getsockname()[1], "local", timeout=3)
        assert time.perf_counter() - t0 < 10


def test_unknown_device_key_is_a_one_line_error(conv_bundle, rpc_tracker, capsys) -> None:
    rc = main(["tune", str(conv_bundle), "--side", "edge", "--target", TARGET, "--trials", "2",
               "--rpc", f"127.0.0.1:{rpc_tracker}", "--device-key", "no-such-board"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no RPC server with device key 'no-such-board'" in err and "local" in err


def test_rpc_device_key_needs_rpc(conv_bundle, capsys) -> None:
    assert main(["tune", str(conv_bundle), "--trials", "1", "--target", TARGET, "--device-key", "x"]) == 2
    assert "--device-key needs --rpc" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_through_rpc_tracker(conv_bundle, rpc_tracker, tmp_path) -> None:
    if not isinstance(_host_target(), str):
        pytest.skip("this CPU lacks host-x86's features")
    copy = tmp_path / "b"
    shutil.copytree(conv_bundle, copy)
    shutil.rmtree(copy / "tuning", ignore_errors=True)
    assert main(["tune", str(copy), "--side", "edge", "--target", TARGET, "--trials", "4", "--trials-per-iter", "4",
                 "--rpc", f"127.0.0.1:{rpc_tracker}", "--device-key", "local", "--quiet", *FAST]) == 0
    records = (copy / "tuning" / "edge" / "database_tuning_record.json").read_text().strip().splitlines()
    assert len(records) == 4
    secs = [json.loads(line)[1][1] for line in records]  # [workload, [trace, run_secs, ...]]
    assert any(s and max(s) < 1 for s in secs)  # measured on the RPC server, not failures (1e10)
    edge = json.loads((copy / "manifest.json").read_text())["compiled"]["edge"]
    assert edge["tuning"]["tuned_tasks"] == 1 and edge["validated"]["numerics"]["ok"]


@pytest.mark.slow
def test_compile_cli_with_tuning_db(tuned_bundle, tmp_path) -> None:
    out, _ = tuned_bundle
    example = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
    dest = tmp_path / "c"
    assert main(["compile", str(example), "--target", TARGET, "--cloud", TARGET, "--backend", "tvm",
                 "--quantize", "none", "--tuning-db", str(out / "tuning"), "-o", str(dest)]) == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    assert (dest / "tuning" / "edge" / "database_workload.json").is_file()
    edge = manifest["compiled"]["edge"]
    assert edge["tuning"]["database"] == "tuning/edge" and edge["tuning"]["records"] >= 4
