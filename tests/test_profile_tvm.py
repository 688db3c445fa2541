"""``onnxsplit profile --runtime tvm``: TVM builds of the profiler's samples, timed in this process or
on a board through a TVM RPC tracker (here: a loopback tracker + RPC server).

The argument checks run without TVM; the tests marked ``tvm`` import it (a few seconds) and compile
tiny graphs; the ``slow`` ones time a handful of kernels and fit a cost model from the CSV.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxsplit.cli import main
from onnxsplit.errors import UsageError
from onnxsplit.profile import CSV_COLUMNS, ProfileError, read_profile_csv, run_profile

HAVE_TVM = importlib.util.find_spec("tvm") is not None
X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_tvm = pytest.mark.skipif(not HAVE_TVM, reason="needs apache-tvm (pip install 'onnxsplit[tvm]')")
x86_only = pytest.mark.skipif(not X86, reason="times host-x86 (x86-64) TVM builds on this machine")

FAST = dict(warmup=1, reps=3, rounds=1, max_seconds=0.05)


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


# ------------------------------------------------------------------------------------ argument errors (no TVM)
def test_non_runnable_target_without_rpc_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.csv"
    rc = main(["profile", "--target", "rpi4", "--runtime", "tvm", "-o", str(out), "--kernels", "1", "--no-models"])
    err = _one_line_error(capsys)
    assert rc == 2 and "--rpc HOST:PORT --device-key KEY" in err and "aarch64" in err and "rpi4" in err
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written, not even a temp file


def test_rpc_argument_errors(tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    with pytest.raises(UsageError, match="--rpc needs --device-key"):
        run_profile("host-x86", out, rpc="127.0.0.1:9190")
    with pytest.raises(UsageError, match="--device-key needs --rpc"):
        run_profile("host-x86", out, runtime="tvm", device_key="pi")
    with pytest.raises(UsageError, match="profile the 'tvm' runtime"):
        run_profile("host-x86", out, runtime="ort-cpu", rpc="127.0.0.1:9190", device_key="pi")
    with pytest.raises(UsageError, match="use HOST:PORT"):
        run_profile("host-x86", out, rpc="no-port", device_key="pi")
    with pytest.raises(ProfileError, match="times onnxruntime .* or TVM .*, not 'tflite-cpu'"):
        run_profile("rpi4", out, runtime="tflite-cpu", allow_arch_mismatch=True)
    assert not out.exists()


def test_missing_cross_compiler_is_named(tmp_path: Path, monkeypatch) -> None:
    from onnxsplit.compile import tvm_backend as tb

    real = tb.shutil.which
    monkeypatch.setattr(tb.shutil, "which", lambda name: None if name.startswith("aarch64") else real(name))
    with pytest.raises(tb.ToolchainError, match=r"aarch64-linux-gnu-g\+\+.*apt-get install g\+\+-aarch64-linux-gnu") as ei:
        run_profile("rpi4", tmp_path / "x.csv", rpc="127.0.0.1:1", device_key="pi")  # before any network/compile
    assert "\n" not in str(ei.value) and not (tmp_path / "x.csv").exists()


# ------------------------------------------------------------------------------------ tracker errors (TVM)
@pytest.mark.tvm
@needs_tvm
def test_unreachable_tracker_is_a_one_line_error(tmp_path: Path) -> None:
    from onnxsplit.compile.tune import RPCError

    t0 = time.perf_counter()
    with pytest.raises(RPCError, match="cannot reach the RPC tracker at 127.0.0.1:1") as ei:
        run_profile("host-x86", tmp_path / "x.csv", rpc="127.0.0.1:1", device_key="local", n_kernels=1)
    assert time.perf_counter() - t0 < 30 and "\n" not in str(ei.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.tvm
@needs_tvm
def test_gpu_target_without_gpu_needs_rpc(tmp_path: Path) -> None:
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a CUDA GPU is visible: server-gpu's TVM builds can be timed here")
    with pytest.raises(ProfileError, match="no cuda device is visible here: pass --rpc HOST:PORT --device-key KEY") as ei:
        run_profile("server-gpu", tmp_path / "x.csv", runtime="tvm", n_kernels=1)
    assert "\n" not in str(ei.value) and not list(tmp_path.iterdir())


@pytest.mark.tvm
@needs_tvm
def test_unreachable_tracker_cli(tmp_path: Path, capsys) -> None:
    rc = main(["profile", "--target", "host-x86", "--runtime", "tvm", "--rpc", "127.0.0.1:1", "--device-key", "local",
               "-o", str(tmp_path / "x.csv"), "--kernels", "1", "--no-models"])
    assert rc == 2 and "cannot reach the RPC tracker at 127.0.0.1:1" in _one_line_error(capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.tvm
@needs_tvm
def test_unknown_device_key_is_a_one_line_error(rpc_tracker, tmp_path: Path) -> None:
    from onnxsplit.compile.tune import RPCError

    with pytest.raises(RPCError, match="no RPC server with device key 'no-such-board'") as ei:
        run_profile("host-x86", tmp_path / "x.csv", rpc=f"127.0.0.1:{rpc_tracker}", device_key="no-such-board")
    assert "local" in str(ei.value) and "\n" not in str(ei.value) and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------ profiling runs
@pytest.fixture(scope="module")
def host_x86_runs_here() -> None:
    """host-x86's TVM code (mcpu znver4: AVX-512) runs on this CPU (else the loopback server would crash)."""
    from onnxsplit.compile import tvm_backend as tb
    from onnxsplit.targets import load_target

    missing = tb.missing_cpu_features(load_target("host-x86").tvm_target)
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing[:3])} used by host-x86's TVM target")


def _celu_model(path: Path) -> Path:
    """A graph with Celu: onnxruntime runs it, TVM's ONNX importer has no converter for it."""
    g = helper.make_graph([helper.make_node("Celu", ["x"], ["y"], name="celu")], "celu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS  # the onnxruntime path's schema
        return list(reader)


def _check_rows(rows: list[dict[str, str]]) -> None:
    for r in rows:
        assert r["runtime"] == "tvm" and r["target"] == "host-x86" and r["onnxruntime"] == ""
        for col in ("median_ms", "min_ms", "p90_ms", "mean_ms"):
            v = float(r[col])
            assert math.isfinite(v) and v > 0, (r["name"], col, v)
        assert int(r["reps"]) >= 3 and int(r["rounds"]) >= 1 and int(r["threads"]) >= 1
        assert json.loads(r["tvm_target"])["kind"] == "llvm" and r["tvm"]


@pytest.mark.tvm
@needs_tvm
@x86_only
def test_unimportable_sample_is_skipped_with_its_reason(host_x86_runs_here, tmp_path: Path) -> None:
    """In-process path, smallest run: the overhead row is timed, a Celu model is skipped (never a 0 row)."""
    from onnxsplit.cost.cli import _parse_model_arg

    lines: list[str] = []
    out = tmp_path / "p.csv"
    res = run_profile("host-x86", out, runtime="tvm", n_kernels=0, include_models=False,
                      extra_models=[_parse_model_arg(str(_celu_model(tmp_path / "celu.onnx")))], progress=lines.append,
                      **FAST)
    rows = _rows(out)
    assert [r["kind"] for r in rows] == ["overhead"]
    _check_rows(rows)
    assert rows[0]["host"] and not rows[0]["host"].startswith("rpc:")
    assert len(res.skipped) == 1 and res.skipped[0][0] == "file:celu.onnx [fp32]"
    assert "'Celu'" in res.skipped[0][1]
    assert any(ln.startswith("skipped file:celu.onnx [fp32]: ") for ln in lines)  # the stderr line


@pytest.mark.slow
@pytest.mark.tvm
@needs_tvm
@x86_only
def test_profile_through_rpc_tracker_and_fit(host_x86_runs_here, rpc_tracker, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rpc.csv"
    res = run_profile("host-x86", out, rpc=f"127.0.0.1:{rpc_tracker}", device_key="local", n_kernels=3,
                      kernel_families=["conv", "elementwise", "gemm"], include_models=False, **FAST)
    assert res.path == out and not res.skipped
    rows = _rows(out)
    assert [r["kind"] for r in rows] == ["overhead", "kernel", "kernel", "kernel"]
    from onnxsplit.cost.kernels import FAMILY_PARENT

    assert {FAMILY_PARENT.get(r["family"], r["family"]) for r in rows[1:]} == {"conv", "elementwise", "gemm"}
    _check_rows(rows)
    assert all(r["host"] == f"rpc:local@127.0.0.1:{rpc_tracker}" for r in rows)
    conv = next(r for r in rows if r["family"] == "conv")
    assert float(conv["median_ms"]) > float(rows[0]["median_ms"])  # a conv costs more than the empty model
    assert read_profile_csv(out)[1]["runtime"] == "tvm"

    model_path = tmp_path / "tvm-fp32.json"
    assert main(["cost-model", "fit", str(out), "--target", "host-x86", "-o", str(model_path), "--holdout", "0"]) == 0
    capsys.readouterr()
    fitted = json.loads(model_path.read_text())
    assert fitted["runtime"] == "tvm" and fitted["target"] == "host-x86"
    assert {"conv", "elementwise", "gemm"} <= set(fitted["families"])


@pytest.mark.slow
@pytest.mark.tvm
@needs_tvm
@x86_only
def test_profile_in_process_fp32_and_int8(host_x86_runs_here, tmp_path: Path) -> None:
    from onnxsplit.profile import default_threads

    out = tmp_path / "local.csv"
    res = run_profile("host-x86", out, runtime="tvm", n_kernels=2, kernel_families=["conv_dw", "pool"],
                      include_models=False, precisions=("fp32", "int8"), **FAST)
    assert not res.skipped
    rows = _rows(out)
    assert sorted((r["kind"], r["precision"]) for r in rows) == sorted(
        [(k, p) for k in ("overhead", "kernel", "kernel") for p in ("fp32", "int8")])
    _check_rows(rows)
    assert all(1 <= int(r["threads"]) <= default_threads() for r in rows)
    spec = json.loads(next(r for r in rows if r["family"] == "conv_dw")["spec"])
    assert spec["op"] == "conv" and spec["group"] == spec["cin"]  # the spec rebuilds the measured graph
    assert np.isfinite([float(r["median_ms"]) for r in rows]).all()


@pytest.mark.slow
@pytest.mark.tvm
@needs_tvm
@x86_only
def test_profile_cli_through_rpc_tracker(host_x86_runs_here, rpc_tracker, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.csv"
    assert main(["profile", "--target", "host-x86", "--rpc", f"127.0.0.1:{rpc_tracker}", "--device-key", "local",
                 "-o", str(out), "--kernels", "2", "--families", "elementwise,reshape", "--no-models", "--reps", "3",
                 "--rounds", "1", "--warmup", "1", "--max-seconds", "0.05", "--quiet"]) == 0
    assert "wrote 3 rows" in capsys.readouterr().out
    _check_rows(_rows(out))

