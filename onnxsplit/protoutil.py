"""Protobuf size helpers: ModelProtos over 2 GB cannot be serialized in one piece."""

from __future__ import annotations

import onnx
from google.protobuf.message import EncodeError

PROTO_LIMIT_NBYTES = 2**31 - 1


def over_proto_limit(model: onnx.ModelProto) -> bool:
    """True when the model cannot be serialized as one protobuf (it needs external data)."""
    try:
        return model.ByteSize() >= PROTO_LIMIT_NBYTES
    except (EncodeError, ValueError, OverflowError):
        return True


def save_with_external_data(model: onnx.ModelProto, path, data_name: str, *, min_nbytes: int = 1024) -> None:  # noqa: ANN001
    """Write ``model`` to ``path`` with initializers ≥ ``min_nbytes`` in ``data_name`` beside it.

    Unlike ``onnx.save_model(..., save_as_external_data=True)`` this never modifies ``model``
    and never copies the whole model in memory.
    """
    from pathlib import Path

    from onnx import numpy_helper

    path = Path(path)
    src = model.graph
    g = onnx.GraphProto()
    g.name, g.doc_string = src.name, src.doc_string
    for field in ("node", "input", "output", "value_info", "sparse_initializer", "quantization_annotation", "metadata_props"):
        getattr(g, field).extend(getattr(src, field))
    offset = 0
    with open(path.parent / data_name, "wb") as data:
        for init in src.initializer:
            t = g.initializer.add()
            raw = init.raw_data if init.HasField("raw_data") else None
            if init.data_location == onnx.TensorProto.EXTERNAL or (raw is None and init.ByteSize() < min_nbytes):
                t.CopyFrom(init)
                continue
            if raw is None:
                raw = numpy_helper.to_array(init).tobytes()
            if len(raw) < min_nbytes:
                t.CopyFrom(init)
                continue
            t.name, t.data_type, t.doc_string = init.name, init.data_type, init.doc_string
            t.dims.extend(init.dims)
            t.data_location = onnx.TensorProto.EXTERNAL
            pad = (-offset) % 4096  # page-aligned for memory mapping
            data.write(b"\0" * pad)
            offset += pad
            data.write(raw)
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                t.external_data.add(key=key, value=value)
            offset += len(raw)
    m = onnx.ModelProto()
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    m.producer_name, m.producer_version = model.producer_name, model.producer_version
    m.domain, m.model_version, m.doc_string = model.domain, model.model_version, model.doc_string
    m.metadata_props.extend(model.metadata_props)
    m.functions.extend(model.functions)
    m.graph.CopyFrom(g)
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
