"""`pip install .` ships the data folders targets/ and cost_models/ inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from onnxsplit.data import data_dir

ROOT = Path(__file__).resolve().parent.parent


def test_data_dirs_found_from_checkout_or_install() -> None:
    for name in ("targets", "cost_models"):
        assert data_dir(name).is_dir()
    with pytest.raises(ValueError):
        data_dir("nope")


def test_wheel_contains_data_folders(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("onnxsplit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("targets", "cost_models"):
        shipped = {n.split(f"onnxsplit/_data/{folder}/", 1)[1] for n in names if n.startswith(f"onnxsplit/_data/{folder}/")}
        in_repo = {p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*") if p.is_file()}
        assert shipped == in_repo, (folder, shipped ^ in_repo)
    assert "onnxsplit/cli.py" in names
