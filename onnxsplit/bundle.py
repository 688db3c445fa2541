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
    """Yield a temporary folder that becomes ``out`` when the block finishes without error.

    The folder gets the permissions a plain ``mkdir`` would give (0777 minus the umask), not
    ``mkdtemp``'s 0700, so a server running as another user can read the bundle."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OnnxSplitError(f"output path {out} exists and is not a folder; choose another -o")
    if out.exists() and any(out.iterdir()) and not force:
        raise OnnxSplitError(f"output folder {out} already exists and is not empty; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
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


class SharedWeights:
    """One external-data file with a model's initializers that several models' halves reference.

    The halves of every plan of a dynamic bundle read the same weights. ONNX external data lets a
    model reference tensors at offsets of a file; onnxruntime only reads such a file from the
    model's own folder, so :meth:`place` puts a *hard link* to the one file into each half's
    folder: every plan stays a self-contained bundle, and the weights are on disk once (copy the
    bundle with ``tar`` or ``rsync -H`` to keep it so; a plain copy duplicates them, still correct).
    Where hard links are impossible the file is copied (:attr:`linked` says which happened).

    Contract: :meth:`externalize` moves an initializer to the file only when its name is in the
    file *and* its bytes are identical (a quantized or folded weight of the same name stays in the
    model); ``min_nbytes`` smaller tensors stay in the model.
    """

    FILE = "weights.bin"

    def __init__(self, model: onnx.ModelProto, path: Path, *, min_nbytes: int = 1024, align: int = 64):
        from onnx import numpy_helper

        self.path = Path(path)
        self.index: dict[str, tuple[int, int, str]] = {}  # name -> (offset, length, sha256 of the bytes)
        self.linked = True
        self.places = 0
        offset = 0
        with open(self.path, "wb") as f:
            for t in model.graph.initializer:
                if t.name in self.index or t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
                    continue
                data = numpy_helper.to_array(t).tobytes()
                if len(data) < min_nbytes:
                    continue
                pad = -offset % align
                f.write(b"\0" * pad)
                offset += pad
                f.write(data)
                self.index[t.name] = (offset, len(data), hashlib.sha256(data).hexdigest())
                offset += len(data)
        self.nbytes = offset

    def externalize(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
        """A copy of ``model`` whose shareable initializers reference :attr:`FILE`; and how many."""
        from onnx import numpy_helper

        out = onnx.ModelProto()
        out.CopyFrom(model)
        n = 0
        for t in out.graph.initializer:
            entry = self.index.get(t.name)
            if entry is None or t.data_location == onnx.TensorProto.EXTERNAL:
                continue
            data = numpy_helper.to_array(t).tobytes()
            if len(data) != entry[1] or hashlib.sha256(data).hexdigest() != entry[2]:
                continue
            dims, dtype, name = list(t.dims), t.data_type, t.name
            t.Clear()
            t.name, t.data_type = name, dtype
            t.dims.extend(dims)
            t.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", self.FILE), ("offset", str(entry[0])), ("length", str(entry[1]))):
                kv = t.external_data.add()
                kv.key, kv.value = key, value
            n += 1
        return out, n

    def place(self, folder: Path) -> Path:
        """Hard-link (else copy) the file into ``folder``; returns the placed path."""
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / self.FILE
        try:
            os.link(self.path, dest)
        except OSError:
            shutil.copyfile(self.path, dest)
            self.linked = False
        self.places += 1
        return dest

    def save(self, model: onnx.ModelProto, path: Path) -> list[Path]:
        """Save ``model`` at ``path`` with its shareable weights in the shared file (placed beside
        it when the model references it); returns the files written."""
        shared, n = self.externalize(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        if n == 0:
            return save_model(model, path)
        onnx.save_model(shared, str(path))
        return [path, self.place(path.parent)]


def disk_usage(root: Path) -> int:
    """Bytes of the files under ``root``, each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file; remembered per (device, inode, size, mtime), so the hard links of one
    shared weights file (:class:`SharedWeights`) are hashed once."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if len(_SHA_CACHE) > 4096:
            _SHA_CACHE.clear()
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


_SHA_CACHE: dict[tuple[int, int, int, int], str] = {}


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
