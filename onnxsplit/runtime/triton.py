"""A Triton Inference Server model repository for the cloud half of a bundle.

Layout (what ``tritonserver --model-repository OUT/triton`` loads)::

    OUT/triton/<model_name>/config.pbtxt
    OUT/triton/<model_name>/1/model.onnx        (+ model.onnx.data when the model has external data)

``platform: "onnxruntime_onnx"``, ``max_batch_size: 0`` (the bundle's shapes are full shapes, batch
included), inputs/outputs with ``TYPE_FP32``/``TYPE_UINT8``/... and dims. A rank-0 tensor is
declared as ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }`` (Triton's rule for scalars). Triton
serves the same KServe v2 protocol as ``onnxsplit serve``, so :class:`~onnxsplit.runtime.EdgeRunner`
talks to either.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .bundle import Bundle, BundleError, TensorSpec, _model_io, load_bundle
from .protocol import triton_type


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a protobuf text-format string literal (same escapes for printable text)


def _io_block(kind: str, specs: list[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(specs):
        dims = [-1 if d is None else int(d) for d in t.shape]
        lines.append("  {")
        lines.append(f"    name: {_q(t.name)}")
        lines.append(f"    data_type: {triton_type(t.datatype)}")
        if dims:
            lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
        else:
            lines.append("    dims: [ 1 ]")
            lines.append("    reshape: { shape: [ ] }")
        lines.append("  }" + ("," if i < len(specs) - 1 else ""))
    lines.append("]")
    return lines


def triton_config(model_name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], *, instances: int = 1,
                  kind: str = "KIND_AUTO") -> str:
    """config.pbtxt text for an ONNX model served by Triton's onnxruntime backend."""
    lines = [
        f"name: {_q(model_name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        "max_batch_size: 0",
        *_io_block("input", inputs),
        *_io_block("output", outputs),
        f"instance_group [ {{ count: {int(instances)} kind: {kind} }} ]",
    ]
    return "\n".join(lines) + "\n"


def write_triton_model(model_path: str | Path, model_name: str, out_dir: str | Path, *, instances: int = 1) -> Path:
    """Write ``out_dir/<model_name>/{config.pbtxt,1/model.onnx}`` for one ONNX file; returns the model folder.

    Sibling files of ``model_path`` (external data) are copied along.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BundleError(f"model file {model_path} not found")
    inputs, outputs = _model_io(model_path)
    root = Path(out_dir) / model_name
    version = root / "1"
    if root.exists():
        shutil.rmtree(root)
    version.mkdir(parents=True)
    for f in model_path.parent.iterdir():  # the model and its external data files
        if f.is_file():
            dest = version / ("model.onnx" if f == model_path else f.name)
            try:
                os.link(f, dest)
            except OSError:
                shutil.copyfile(f, dest)
    (root / "config.pbtxt").write_text(triton_config(model_name, inputs, outputs, instances=instances))
    return root


def write_triton_repository(bundle_dir: str | Path | Bundle, out_dir: str | Path | None = None, *,
                            instances: int = 1) -> Path:
    """A Triton model repository for the bundle's cloud half (default ``<bundle>/triton``); returns the model folder."""
    bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(bundle_dir)
    if bundle.cloud_path is None:
        raise BundleError(f"bundle {bundle.root} has no cloud model (an all-edge plan): there is nothing to serve")
    out = Path(out_dir) if out_dir is not None else bundle.root / "triton"
    return write_triton_model(bundle.cloud_path, bundle.model_name, out, instances=instances)
