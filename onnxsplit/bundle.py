"""Writing output folders atomically, saving models, hashing files, manifests.

Nothing half-written: outputs are written into a temporary sibling folder which is renamed into
place only when everything succeeded; on failure the temporary folder is removed and an existing
output folder is left untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx

from .protoutil import over_proto_limit, save_with_external_data

from .errors import OnnxSplitError

MANIFEST_SCHEMA = "onnxsplit.manifest/1"


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the block finishes without error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OnnxSplitError(f"output path {out} exists and is not a folder; choose another -o")
    if out.exists() and any(out.iterdir()) and not force:
        raise OnnxSplitError(f"output folder {out} already exists and is not empty; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "x")
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_model(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save a model (with external data beside it above 2 GB); returns the files written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not over_proto_limit(model):
        onnx.save_model(model, str(path))
        return [path]
    data = path.with_name(path.name + ".data")
    save_with_external_data(model, path, data.name)
    return [path, data]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_model(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest() if not over_proto_limit(model) else ""


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (manifest.json excluded), keyed by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxsplit", "onnx", "onnxruntime", "onnxsim", "numpy", "apache-tvm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def write_manifest(root: Path, manifest: dict) -> Path:
    manifest = {"schema": MANIFEST_SCHEMA, **manifest, "versions": versions(), "files": file_checksums(root)}
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path
