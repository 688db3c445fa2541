"""Loading: path or ModelProto in, a checked ModelProto with static shapes out.

Contract of :func:`load_model`:
- never mutates the caller's ModelProto (works on a copy);
- fails with a one-line :class:`ModelLoadError` for missing/corrupt/truncated files, missing
  external data (naming the tensor and the file), IR versions or opsets this onnx cannot handle;
- fails with a one-line :class:`ShapeError` naming the input and axis when an input has a dynamic
  dimension that ``input_shapes`` does not fix;
- returns a model whose graph inputs are static and whose main-graph tensors carry static shapes
  in ``value_info`` (onnx shape inference with data propagation; where that leaves a tensor
  unknown, one onnxruntime run on zeros records the real shapes);
- with ``simplify=True`` runs onnxsim (constant folding, fusions); when onnxsim fails the
  unsimplified model is kept and a warning names the reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from .protoutil import over_proto_limit
from onnx import helper, shape_inference

from .errors import ModelLoadError, ShapeError, UsageError
from .ir import TensorType

# Oldest default-domain opset onnxruntime executes.
MIN_OPSET = 7


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``name:1x3x224x224`` specs (repeatable; also ``name:1,3,224,224``)."""
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        if not sep or not name or not dims:
            raise UsageError(f"bad --input-shape '{spec}': expected NAME:DIMS such as images:1x3x224x224")
        try:
            shape = tuple(int(d) for d in dims.replace(",", "x").split("x"))
        except ValueError:
            raise UsageError(
                f"bad --input-shape '{spec}': dimensions must be positive integers separated by 'x' "
                "(e.g. images:1x3x224x224)"
            ) from None
        if any(d <= 0 for d in shape):
            raise UsageError(f"bad --input-shape '{spec}': every dimension must be ≥ 1")
        out[name] = shape
    return out


def load_model(
    source: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    simplify: bool = False,
    shape_feeds: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """Load, check, fix input shapes, infer every tensor's shape. See the module docstring.

    ``shape_feeds``: sample inputs for the onnxruntime shape fallback (default: zeros), for
    models whose shapes depend on input values.
    """
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        label = "<ModelProto>"
    else:
        model = _read_file(Path(source))
        label = str(source)
    _check_versions(model, label)
    _check_model(model, label)
    model = _apply_input_shapes(model, dict(input_shapes or {}), label)
    if simplify:
        model = _simplify(model, label)
    return infer_static_shapes(model, label, shape_feeds)


# ---------------------------------------------------------------------------------------- files
def _read_file(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory; pass the .onnx file inside it")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes); re-export or re-download the model")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ModelLoadError(
            f"{path} is not a valid ONNX model (protobuf parse failed: {_first_line(exc)}); the file is "
            "corrupt or truncated: re-export or re-download it"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path} parsed as an empty ONNX model (no nodes, no outputs); is it really an .onnx file?")
    _load_external_data(model, path)
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    base = path.parent
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    missing = []
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            if not (base / loc).is_file():
                missing.append((t.name, loc))
    if missing:
        name, loc = missing[0]
        more = f" (and {len(missing) - 1} more tensors)" if len(missing) > 1 else ""
        raise ModelLoadError(
            f"tensor '{name}' of {path} stores its data in external file '{loc}', which is missing from "
            f"{base}{more}; copy the data file next to the model"
        )
    try:
        onnx.load_external_data_for_model(model, str(base))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"could not read external data of {path}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# ------------------------------------------------------------------------------------ checking
def _check_versions(model: onnx.ModelProto, label: str) -> None:
    if model.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(
            f"{label} has IR version {model.ir_version} but the installed onnx {onnx.__version__} supports up "
            f"to {onnx.IR_VERSION}; upgrade onnx (pip install -U onnx) or re-export with an older exporter"
        )
    max_opset = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            if imp.version > max_opset:
                raise ModelLoadError(
                    f"{label} imports default-domain opset {imp.version} but the installed onnx supports up to "
                    f"{max_opset}; upgrade onnx/onnxruntime or re-export with opset ≤ {max_opset}"
                )
            if imp.version < MIN_OPSET:
                raise ModelLoadError(
                    f"{label} uses opset {imp.version}, older than the oldest onnxruntime runs ({MIN_OPSET}); "
                    "convert it with onnx.version_converter.convert_version(model, 13)"
                )


def _check_model(model: onnx.ModelProto, label: str) -> None:
    if over_proto_limit(model):
        return  # too large for the in-memory checker; onnxruntime will validate it
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError and friends
        raise ModelLoadError(f"{label} fails onnx.checker: {_first_line(exc)}") from None


def _apply_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], label: str) -> onnx.ModelProto:
    inits = {t.name for t in model.graph.initializer}
    real_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    names = [vi.name for vi in real_inputs]
    for name in shapes:
        if name not in names:
            raise UsageError(f"--input-shape names '{name}', which is not an input of {label}; inputs: {', '.join(names)}")
    for vi in real_inputs:
        tt = TensorType.from_value_info(vi)
        if tt is None:
            raise ShapeError(f"input '{vi.name}' of {label} is not a tensor (sequence/map inputs are not supported)")
        wanted = shapes.get(vi.name)
        if wanted is not None:
            if tt.shape is not None and len(tt.shape) != len(wanted):
                raise UsageError(
                    f"--input-shape {vi.name}:{'x'.join(map(str, wanted))} has rank {len(wanted)} but input "
                    f"'{vi.name}' has rank {len(tt.shape)} ({_fmt_dims(vi)})"
                )
            if tt.shape is not None:
                for axis, (have, want) in enumerate(zip(tt.shape, wanted)):
                    if have is not None and have != want:
                        raise UsageError(
                            f"--input-shape gives {want} for axis {axis} of input '{vi.name}', which is fixed "
                            f"at {have} ({_fmt_dims(vi)})"
                        )
            _set_dims(vi, wanted)
            continue
        if tt.shape is None:
            raise ShapeError(
                f"input '{vi.name}' of {label} has no shape; pass --input-shape {vi.name}:DIMS (e.g. 1x3x224x224)"
            )
        for axis, d in enumerate(tt.shape):
            if d is None:
                dim = vi.type.tensor_type.shape.dim[axis]
                sym = f" ('{dim.dim_param}')" if dim.dim_param else ""
                example = "x".join(str(x) if x is not None else "1" for x in tt.shape)
                raise ShapeError(
                    f"input '{vi.name}' of {label} has dynamic axis {axis}{sym} ({_fmt_dims(vi)}); pass "
                    f"--input-shape {vi.name}:{example} (input_shapes={{'{vi.name}': ...}} in Python)"
                )
    # Value infos of intermediate tensors may carry stale dynamic dims: drop them, re-infer below.
    del model.graph.value_info[:]
    return model


def _fmt_dims(vi: onnx.ValueInfoProto) -> str:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return "shape [" + ", ".join(dims) + "]"


def _set_dims(vi: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    tt = vi.type.tensor_type
    tt.shape.Clear()
    for d in shape:
        tt.shape.dim.add().dim_value = d


# ----------------------------------------------------------------------------------- shapes
def _simplify(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # noqa: BLE001 - onnxsim fails in many ways on exotic models
        warnings.warn(f"onnxsim could not simplify {label} ({_first_line(exc)}); using the model as is", stacklevel=3)
        return model
    if not ok:
        warnings.warn(f"onnxsim's check failed for {label}; using the unsimplified model", stacklevel=3)
        return model
    return simplified


def infer_static_shapes(
    model: onnx.ModelProto, label: str = "<model>", shape_feeds: Mapping[str, np.ndarray] | None = None
) -> onnx.ModelProto:
    """Fill ``value_info`` with static shapes for every main-graph node output.

    Models over protobuf's 2 GB limit are inferred on a skeleton whose large initializers carry
    dims but no data (shape inference reads only dims of large tensors); the inferred value infos
    are then copied onto the full model.
    """
    big = over_proto_limit(model)
    try:
        skeleton = _skeleton(model) if big else model
        # Data propagation may materialize large initializers; above 2 GB it is turned off.
        inferred = shape_inference.infer_shapes(skeleton, check_type=False, strict_mode=False, data_prop=not big)
        if big:
            del model.graph.value_info[:]
            model.graph.value_info.extend(inferred.graph.value_info)
            inferred = model
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"onnx shape inference failed on {label} ({_first_line(exc)}); using onnxruntime", stacklevel=2)
        inferred = model
    missing = _non_static_outputs(inferred)
    if missing:
        _shapes_from_onnxruntime(inferred, missing, label, shape_feeds)
    return inferred


def _skeleton(model: onnx.ModelProto, min_nbytes: int = 1 << 20) -> onnx.ModelProto:
    """A copy of the graph structure whose initializers above ``min_nbytes`` hold no data."""
    sk = onnx.ModelProto()
    sk.ir_version = model.ir_version
    sk.opset_import.extend(model.opset_import)
    sk.functions.extend(model.functions)
    g = sk.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    for init in model.graph.initializer:
        t = g.initializer.add()
        if len(init.raw_data) >= min_nbytes:
            t.name, t.data_type = init.name, init.data_type
            t.dims.extend(init.dims)
            t.data_location = onnx.TensorProto.EXTERNAL
            t.external_data.add(key="location", value="skeleton-no-data")
        else:
            t.CopyFrom(init)
    return sk


def _non_static_outputs(model: onnx.ModelProto) -> list[str]:
    """Main-graph node outputs without a static tensor shape (sequence/map/optional values excluded)."""
    known: dict[str, TensorType | None] = {}
    non_tensor: set[str] = set()
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        if vi.type.WhichOneof("value") not in (None, "tensor_type"):
            non_tensor.add(vi.name)
            continue
        tt = TensorType.from_value_info(vi)
        if tt is not None and (vi.name not in known or tt.is_static):
            known[vi.name] = tt
    missing = []
    for node in model.graph.node:
        for out in node.output:
            if not out or out in non_tensor or node.op_type == "Constant":
                continue
            tt = known.get(out)
            if tt is None or not tt.is_static:
                missing.append(out)
    return missing


def _shapes_from_onnxruntime(
    model: onnx.ModelProto, missing: list[str], label: str, feeds: Mapping[str, np.ndarray] | None
) -> None:
    """Run the model once on zeros with the missing tensors as extra outputs; record their types."""
    from .runtime_ort import make_session, zero_feeds

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for name in missing:
        if name not in outputs:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    try:
        sess = make_session(probe, optimize=False)
        results = sess.run(missing, dict(feeds) if feeds is not None else zero_feeds(model))
    except Exception as exc:  # noqa: BLE001
        raise ShapeError(
            f"tensor '{missing[0]}' of {label} has no static shape and onnxruntime could not compute it "
            f"({_first_line(exc)}); pass --input-shape for every dynamic input or try --simplify"
        ) from None
    by_name = {vi.name: vi for vi in model.graph.value_info}
    for name, value in zip(missing, results):
        if not isinstance(value, np.ndarray):
            continue  # a sequence/optional value: not a tensor, no shape to record
        arr = value
        elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        vi = helper.make_tensor_value_info(name, elem, arr.shape)
        if name in by_name:
            by_name[name].CopyFrom(vi)
        else:
            model.graph.value_info.append(vi)
    for out in model.graph.output:
        if out.name in missing and isinstance(results[missing.index(out.name)], np.ndarray):
            arr = results[missing.index(out.name)]
            out.CopyFrom(helper.make_tensor_value_info(out.name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
