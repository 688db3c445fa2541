"""`onnxsplit compile`: the whole pipeline into one folder, then served and run end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxsplit import zoo
from onnxsplit.bundle import sha256_file
from onnxsplit.cli import main
from onnxsplit.runtime_ort import make_session, run

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits_cnn.onnx"
CALIB = ROOT / "examples" / "digits_calib.npz"


@pytest.fixture()
def resnet(tmp_path: Path) -> Path:
    path = tmp_path / "resnet.onnx"
    onnx.save_model(zoo.resnet_like(), str(path))
    return path


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_compile_int8_with_calibration_writes_checked_bundle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "digits"
    assert main(["compile", str(DIGITS), "--target", "arm-cpu", "--calib", str(CALIB), "--backend", "ort", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "predicted total" in text and "calibrated" in text
    m = _manifest(out)
    assert m["kind"] == "compile" and m["schema"] == "onnxsplit.manifest/1"
    assert m["targets"]["edge"]["name"] == "rpi4" and m["targets"]["cloud"]["name"] == "server-gpu-a100"
    assert isinstance(m["predicted"]["edge_calibrated"], bool) and m["predicted"]["total_ms"] > 0
    q = m["quantization"]
    assert q["plan_selection"]["candidates"], "the accuracy-budgeted search reports what it tried"
    for rel, digest in m["files"].items():
        assert sha256_file(out / rel) == digest
    edge = onnx.load(str(out / "edge" / "model.onnx"))
    onnx.checker.check_model(edge, full_check=True)
    if q.get("edge_precision") == "int8":
        assert any(n.op_type == "QuantizeLinear" for n in edge.graph.node)
        assert q["accuracy"]["outputs"][0]["top1_agreement"] >= 0.99


def test_compile_splits_serves_and_runs_end_to_end(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """At a fast link the plan uses the cloud; the embedded server + edge runner reproduce the model."""
    from onnxsplit.runtime import CloudServer, EdgeRunner

    out = tmp_path / "bundle"
    argv = ["compile", str(resnet), "--target", "arm-cpu", "--bandwidth", "1gbps", "--rtt", "1ms",
            "--quantize", "none", "--backend", "ort", "-o", str(out)]
    assert main(argv) == 0
    m = _manifest(out)
    assert m["plan"]["cloud_nodes"] and m["plan"]["boundary"], "at 1 Gbps the cloud should be used"
    assert (out / "triton" / m["name"] / "config.pbtxt").is_file()
    model = zoo.resnet_like()
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    # onnxruntime's float results depend on the intra-op thread count: 1 thread on every side.
    ref = run(model, {"image": x}, session=make_session(model, optimize=False, threads=1))["logits"]
    with CloudServer(out, port=0, optimize=False, threads=1) as srv, EdgeRunner(out, srv.url, optimize=False, threads=1) as r:
        res = r.infer({"image": x})
    assert not res.fallback
    assert res.outputs["logits"].tobytes() == ref.tobytes()


def test_compile_builds_tvm_libraries_or_records_why_not(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tvm"
    argv = ["compile", str(resnet), "--target", "host-x86", "--cloud", "host-x86", "--bandwidth", "1gbps",
            "--rtt", "0ms", "--quantize", "none", "--backend", "tvm", "-o", str(out)]
    assert main(argv) == 0
    compiled = _manifest(out)["compiled"]
    from onnxsplit.compile import tvm_available

    if not tvm_available():
        assert "error" in compiled and "pip install" in compiled["error"]
        return
    for side in ("edge", "cloud"):
        info = compiled.get(side)
        if info is None:
            continue
        assert "error" not in info, info
        assert info["machine"] == "x86-64"
        assert (out / info["files"][0]).is_file()


def test_missing_cross_toolchain_is_recorded_and_onnx_still_written(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxsplit.compile import tvm_available

    if not tvm_available():
        pytest.skip("apache-tvm not installed (pip install 'onnxsplit[tvm]')")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("g++", "gcc", "cc", "c++"):  # a PATH with the host compiler but no aarch64 cross compiler
        for d in os.environ.get("PATH", "").split(os.pathsep):
            if (Path(d) / tool).is_file():
                (bin_dir / tool).symlink_to(Path(d) / tool)
                break
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "cross"
    argv = ["compile", str(resnet), "--target", "arm-cpu", "--quantize", "none", "--backend", "both", "-o", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "g++-aarch64-linux-gnu" in err
    m = _manifest(out)
    assert "aarch64-linux-gnu" in json.dumps(m["compiled"])
    assert (out / "edge" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--target", "toaster"], "toaster"),
        (["--target", "jetson", "--bandwidth", "warp9"], "warp9"),
        (["--target", "jetson", "--calib", "/nonexistent/calib"], "/nonexistent/calib"),
    ],
)
def test_compile_errors_leave_nothing_behind(extra: list[str], needle: str, resnet: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "never"
    assert main(["compile", str(resnet), *extra, "--backend", "ort", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_compile_bad_calibration_shape_is_named(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "calib.npz"
    np.savez(bad, image=np.zeros((4, 3, 16, 16), np.float32))
    assert main(["compile", str(resnet), "--target", "jetson", "--calib", str(bad), "--backend", "ort", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "image" in err and "3,32,32" in err.replace(" ", "").replace("x", ",")


def test_compile_dynamic_emits_every_policy_plan(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from onnxsplit.dynamic_bundle import load_dynamic_bundle

    out = tmp_path / "dyn"
    argv = ["compile", str(resnet), "--target", "arm-cpu", "--rtt", "0ms", "--dynamic", "--batch-sizes", "1,8",
            "--quantize", "none", "-o", str(out), "--json"]
    assert main(argv) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["schema"] == "onnxsplit.dynamic/1"
    policy = json.loads((out / "policy.json").read_text())
    assert {r["batch_size"] for r in policy["rows"]} == {1, 8}
    bundle = load_dynamic_bundle(out)
    plan_dirs = sorted(p.name for p in (out / "plans").iterdir())
    assert len(plan_dirs) >= 2  # at least all-edge and all-cloud
    for mbps in (0.1, 10.0, 10_000.0):
        k = bundle.lookup(mbps, 1)
        assert (bundle.plan_dir(k) / "manifest.json").is_file()


def test_compile_dynamic_with_an_edge_cpu_limit(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--edge-cpu-limit on compile --dynamic: the bundle's link records the quota and every plan is priced
    with the edge at that share (all-edge: 1/CPUs x the unlimited prediction)."""
    base = ["compile", str(resnet), "--target", "arm-cpu", "--rtt", "5ms", "--dynamic", "--quantize", "none", "--json"]
    assert main([*base, "-o", str(tmp_path / "free")]) == 0
    free = json.loads(capsys.readouterr().out)
    assert main([*base, "-o", str(tmp_path / "lim"), "--edge-cpu-limit", "0.5/10ms"]) == 0
    lim = json.loads(capsys.readouterr().out)
    assert lim["link"]["edge_quota"] == {"quota_ms": 5.0, "period_ms": 10.0, "request_cpu_ms": 0.0, "cpu_spread": 0.25}
    assert "edge_quota" not in free["link"]
    edge_free = next(p for p in free["plans"] if p["kind"] == "all-edge")
    edge_lim = next(p for p in lim["plans"] if p["kind"] == "all-edge")
    for bw, ms in edge_free["predicted_ms"].items():
        assert edge_lim["predicted_ms"][bw] == pytest.approx(2.0 * ms)
    assert main([*base, "-o", str(tmp_path / "bad"), "--edge-cpu-limit", "0.5", "--objective", "energy"]) == 2
    assert "not 'energy'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
