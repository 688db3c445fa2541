"""The command line: inspect and split, their JSON, errors and atomic outputs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxsplit import zoo
from onnxsplit.bundle import sha256_file
from onnxsplit.cli import main
from onnxsplit.runtime_ort import random_feeds, run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "resnet.onnx"
    onnx.save_model(zoo.resnet_like(), str(path))
    return path


def test_inspect_json_lists_candidates_and_bottlenecks(model_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(model_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nodes"] == len(zoo.resnet_like().graph.node)
    assert info["macs"] > 0 and info["flops"] >= 2 * info["macs"]
    assert info["op_histogram"]["Conv"] >= 5
    cands = info["candidates"]
    assert len(cands) == info["compute_nodes"] + 1
    assert cands[0]["compression_ratio"] == pytest.approx(1.0)
    assert cands[-1]["boundary_nbytes"] == 0
    best = float("inf")
    for c in cands:
        if 0 < c["index"] < len(cands) - 1:
            assert c["natural_bottleneck"] == (c["compression_ratio"] < 1)
            assert c["compressive_bottleneck"] == (c["compression_ratio"] < best)
        best = min(best, c["compression_ratio"])
    assert any(c["compressive_bottleneck"] for c in cands)


def test_inspect_text_summary(capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "compressive" in out and "candidates" in out
    assert re.search(r"^9\s+squeeze\.conv\s+1\.0 KB\s+1\s+0\.083\s+compressive", out, re.M)


def test_split_writes_models_manifest_and_is_exact(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["split", str(model_path), "--at", "10", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bit-identical" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == "onnxsplit.manifest/1"
    assert manifest["source"]["sha256"] == sha256_file(model_path)
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest
    edge = onnx.load(str(out / "edge" / "model.onnx"))
    cloud = onnx.load(str(out / "cloud" / "model.onnx"))
    onnx.checker.check_model(edge, full_check=True)
    onnx.checker.check_model(cloud, full_check=True)
    assert len(manifest["plan"]["edge_nodes"]) == 10
    # Recombine from the files, as a user would.
    model = zoo.resnet_like()
    feeds = random_feeds(model)
    e = run(edge, feeds, optimize=False)
    cloud_in = {b["name"]: (e if b["source"] == "edge" else feeds)[b["name"]] for b in manifest["plan"]["boundary"]}
    c = run(cloud, cloud_in, optimize=False)
    assert np.array_equal(c["logits"], run(model, feeds, optimize=False)["logits"])


def test_split_by_cut_tensor_and_by_edge_nodes(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["split", str(model_path), "--cut", "stem.pool.out", "-o", str(tmp_path / "a"), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in a["boundary"]] == ["stem.pool.out"]
    nodes = ",".join(a["edge_nodes"])
    assert main(["split", str(model_path), "--edge-nodes", nodes, "-o", str(tmp_path / "b"), "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["edge_nodes"] == a["edge_nodes"] and b["boundary"] == a["boundary"]


def test_existing_output_is_refused_then_replaced_with_force(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["split", str(model_path), "--at", "3", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main(["split", str(model_path), "--at", "3", "-o", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()


def test_failed_split_leaves_nothing_behind(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["split", str(model_path), "--edge-nodes", "stem.relu", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: plan is not closed under predecessors") and "\n" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["inspect", "missing.onnx"], "model file not found: missing.onnx"),
        (["split", "{model}", "--cut", "nope", "-o", "{tmp}/x"], "unknown tensor 'nope'"),
        (["split", "{model}", "--at", "500", "-o", "{tmp}/x"], "cut index 500 out of range"),
        (["inspect", "{model}", "--input-shape", "foo:1x2"], "'foo', which is not an input"),
        (["inspect", "{model}", "--input-shape", "bad"], "bad --input-shape 'bad'"),
    ],
)
def test_errors_are_one_line_with_exit_2(args: list[str], needle: str, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [a.format(model=model_path, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def test_console_script_and_module_entry_points(tmp_path: Path) -> None:
    for cmd in (["onnxsplit", "--version"], [sys.executable, "-m", "onnxsplit", "--version"]):
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert res.returncode == 0 and res.stdout.startswith("onnxsplit "), res


def test_readme_usage_examples_run(tmp_path: Path) -> None:
    """Every `onnxsplit ...` line in the README's usage block runs and exits 0."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- usage-start -->", 1)[1].split("<!-- usage-end -->", 1)[0]
    commands = [ln.strip() for ln in block.splitlines() if ln.strip().startswith("onnxsplit ")]
    assert len(commands) >= 3
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for cmd in commands:
        res = subprocess.run(shlex.split(cmd, comments=True), cwd=tmp_path, capture_output=True, text=True, check=False)
        assert res.returncode == 0, (cmd, res.stderr)
