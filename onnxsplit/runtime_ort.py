"""onnxruntime helpers: sessions with stated optimization settings, feeds, and runs.

Models larger than protobuf's 2 GB limit are saved with external data to a temporary folder and
loaded from there (onnxruntime cannot take them as bytes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from .protoutil import over_proto_limit, save_with_external_data
from onnx import helper



def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise ImportError("onnxruntime is required: pip install onnxruntime") from exc
    return onnxruntime


def quiet_onnxruntime() -> None:
    """Silence onnxruntime's default logger (errors still surface as exceptions)."""
    _ort().set_default_logger_severity(4)


def make_session(model: onnx.ModelProto, *, optimize: bool = True, threads: int | None = None):
    """An InferenceSession on the CPU provider.

    ``optimize=False`` disables every graph optimization (ORT_DISABLE_ALL): kernels run node by
    node, which is what makes split-and-recombine bit-identical to the original model.
    ``threads`` sets intra-op threads (None = onnxruntime's default).
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 4  # failures surface as exceptions; no duplicate log lines
    if threads is not None:
        so.intra_op_num_threads = threads
    if not over_proto_limit(model):
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="onnxsplit-ort-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_with_external_data(model, path, "model.onnx.data")
        # onnxruntime has read (or mapped) the data once the session exists; the files can go.
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def graph_input_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that must be fed (initializer-backed inputs excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _static_shape(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = vi.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)


def zero_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {vi.name: np.zeros(_static_shape(vi), _np_dtype(vi.type.tensor_type.elem_type)) for vi in graph_input_infos(model)}


def _gather_index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs used directly as Gather indices into an initializer: input -> table size."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    bounds: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] in inputs and dims.get(n.input[0]):
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            table = dims[n.input[0]]
            bounds[n.input[1]] = min(bounds.get(n.input[1], table[axis]), table[axis])
    return bounds


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs by dtype: floats ~ N(0,1), ints in [0, 4) (below the table size for inputs
    that index an embedding table directly, e.g. BERT's token_type_ids: [0, 2)), bools uniform."""
    rng = np.random.default_rng(seed)
    bounds = _gather_index_bounds(model)
    feeds = {}
    for vi in graph_input_infos(model):
        dt = _np_dtype(vi.type.tensor_type.elem_type)
        shape = _static_shape(vi)
        if dt.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[vi.name] = rng.integers(0, max(1, min(4, bounds.get(vi.name, 4))), size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise TypeError(f"cannot make random data for input '{vi.name}' of dtype {dt}")
    return feeds


def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, optimize: bool = True, session=None) -> dict[str, np.ndarray]:
    """Run a model; returns {output name: array}."""
    sess = session or make_session(model, optimize=optimize)
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    values = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values))
