"""Locating the data folders ``targets/`` and ``cost_models/``.

In a wheel they are installed as ``onnxsplit/_data/<name>`` (see pyproject.toml); in a source
checkout or an editable install they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Folder of the named data set (``targets`` or ``cost_models``)."""
    if name not in ("targets", "cost_models"):
        raise ValueError(f"unknown data folder {name!r}")
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"onnxsplit data folder '{name}' not found (looked in {_PKG / '_data'} and {_PKG.parent}); reinstall onnxsplit"
    )
