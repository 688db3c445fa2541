"""KServe v2 / Open Inference Protocol over HTTP/REST, with Triton's binary tensor data extension.

Shared by the cloud server and the edge client. What goes over the wire:

- JSON body: ``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data"}], "outputs"?}``
  where ``data`` is the tensor flattened in row-major order (nested lists are accepted too).
- Binary extension: the body is a JSON header followed by raw tensor bytes. The header's length is
  given by the ``Inference-Header-Content-Length`` HTTP header; each binary tensor carries
  ``"parameters": {"binary_data_size": N}`` instead of ``data`` and its N bytes follow the header
  in the order the tensors are listed. Numbers are little-endian, C order; BYTES elements are each
  a 4-byte little-endian length followed by the bytes. The request asks for binary outputs with
  ``"parameters": {"binary_data_output": true}`` (all outputs) or per requested output
  ``"parameters": {"binary_data": true}``.

Tensors are never converted on the way: an array is sent with its own dtype, and the receiver
checks it against what the model declares (``FP32`` for float activations, ``UINT8`` for an
int8-quantized boundary, ...). Binary tensors are read straight into their final numpy buffer and
sent straight from the array's memory (no intermediate copy of the payload).
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# v2 datatype <-> numpy dtype. BYTES is variable-size (numpy object arrays of bytes/str).
_V2_TO_NP: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
try:  # bfloat16 has no numpy dtype of its own; ml_dtypes (an onnx dependency) provides one
    import ml_dtypes  # type: ignore[import-not-found]

    _V2_TO_NP["BF16"] = np.dtype(ml_dtypes.bfloat16)
except Exception:  # pragma: no cover - ml_dtypes missing
    pass
_NP_TO_V2 = {dt: name for name, dt in _V2_TO_NP.items() if name != "BYTES"}

# ONNX TensorProto element type name -> v2 datatype
_ONNX_TO_V2 = {
    "FLOAT": "FP32",
    "UINT8": "UINT8",
    "INT8": "INT8",
    "UINT16": "UINT16",
    "INT16": "INT16",
    "INT32": "INT32",
    "INT64": "INT64",
    "STRING": "BYTES",
    "BOOL": "BOOL",
    "FLOAT16": "FP16",
    "DOUBLE": "FP64",
    "UINT32": "UINT32",
    "UINT64": "UINT64",
    "BFLOAT16": "BF16",
}
# Extra spellings accepted for manifest dtype strings (ONNX lower-case names and numpy names).
_NAME_TO_V2 = {k.lower(): v for k, v in _ONNX_TO_V2.items()} | {
    "float32": "FP32",
    "float64": "FP64",
    "bool_": "BOOL",
    "str": "BYTES",
    "object": "BYTES",
    "bytes": "BYTES",
}


class ProtocolError(Exception):
    """A request or response that breaks the protocol; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(" ".join(str(message).split()))
        self.status = status


# ------------------------------------------------------------------------------- datatypes
def datatype_of(arr: np.ndarray) -> str:
    """The v2 datatype of a numpy array (``FP32``, ``UINT8``, ``BYTES`` for str/bytes/object)."""
    dt = arr.dtype
    if dt.kind in "OUS":
        return "BYTES"
    name = _NP_TO_V2.get(dt.newbyteorder("=") if dt.byteorder not in "=|" else dt)
    if name is None:
        raise ProtocolError(f"numpy dtype {dt} has no KServe v2 datatype")
    return name


def np_dtype(datatype: str) -> np.dtype:
    """numpy dtype for a v2 datatype; ProtocolError for unknown names."""
    try:
        return _V2_TO_NP[datatype]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_V2_TO_NP))
        raise ProtocolError(f"unknown datatype {datatype!r} (known: {known})") from None


def onnx_datatype(elem_type: int) -> str:
    """v2 datatype for an ONNX TensorProto element type (``1`` -> ``FP32``)."""
    import onnx

    name = onnx.TensorProto.DataType.Name(elem_type)
    if name not in _ONNX_TO_V2:
        raise ProtocolError(f"ONNX element type {name} cannot be sent over KServe v2", status=500)
    return _ONNX_TO_V2[name]


def datatype_from_name(name: str) -> str | None:
    """v2 datatype for a manifest dtype string (``float``, ``uint8``, ``float32``, ``FP32``); None if unknown."""
    if not isinstance(name, str):
        return None
    if name in _V2_TO_NP:
        return name
    return _NAME_TO_V2.get(name.lower())


def triton_type(datatype: str) -> str:
    """Triton model-config data type (``FP32`` -> ``TYPE_FP32``, ``BYTES`` -> ``TYPE_STRING``)."""
    np_dtype(datatype)  # validates
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def element_size(datatype: str) -> int | None:
    """Bytes per element, None for BYTES."""
    return None if datatype == "BYTES" else np_dtype(datatype).itemsize


def shape_matches(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    """``expected`` may hold None/-1 for dynamic axes."""
    return len(shape) == len(expected) and all(e is None or e < 0 or s == e for s, e in zip(shape, expected))


def fmt_shape(shape: Iterable[int | None]) -> str:
    return "[" + ",".join("-1" if d is None or d < 0 else str(d) for d in shape) + "]"


# ------------------------------------------------------------------------------- tensor bytes
def _little_endian(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


def tensor_buffer(arr: np.ndarray) -> memoryview | bytes:
    """The binary-extension payload of a tensor: a zero-copy view of its bytes when possible."""
    if arr.dtype.kind in "OUS":
        return serialize_bytes(arr)
    arr = _little_endian(arr)
    if arr.size == 0:
        return b""
    return memoryview(arr.reshape(-1).view(np.uint8))


def serialize_bytes(arr: np.ndarray) -> bytes:
    """BYTES tensor -> concatenation of (uint32 LE length, bytes) per element, row-major."""
    parts = []
    for item in np.asarray(arr, dtype=object).reshape(-1):
        b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(buf: bytes | memoryview, shape: Sequence[int], name: str) -> np.ndarray:
    count = math.prod(shape)
    out = np.empty(count, dtype=object)
    mv = memoryview(buf)
    off = 0
    for i in range(count):
        if off + 4 > len(mv):
            raise ProtocolError(f"input '{name}': BYTES data ends after {i} of {count} elements")
        (n,) = struct.unpack_from("<I", mv, off)
        off += 4
        if off + n > len(mv):
            raise ProtocolError(f"input '{name}': BYTES element {i} is truncated")
        out[i] = bytes(mv[off : off + n])
        off += n
    if off != len(mv):
        raise ProtocolError(f"input '{name}': {len(mv) - off} bytes left over after {count} BYTES elements")
    return out.reshape(shape)


def json_data(arr: np.ndarray) -> list:
    """Row-major flat list for a JSON ``data`` field."""
    flat = arr.reshape(-1)
    if arr.dtype.kind in "OSU":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    if arr.dtype.kind == "f" and arr.dtype.itemsize == 2 and arr.dtype != np.float16:  # bfloat16
        flat = flat.astype(np.float32)
    return flat.tolist()


def array_from_json(data: Any, datatype: str, shape: Sequence[int], name: str) -> np.ndarray:
    """A tensor from a JSON ``data`` field (flat or nested), checked against shape."""
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = np.array(_flatten(data), dtype=object)
        if flat.size != count:
            raise ProtocolError(f"input '{name}': {flat.size} data elements for shape {fmt_shape(shape)} ({count} expected)")
        return np.array([s.encode("utf-8") if isinstance(s, str) else s for s in flat], dtype=object).reshape(shape)
    dt = np_dtype(datatype)
    if not isinstance(data, list):
        data = [data]
    try:
        arr = np.asarray(data, dtype=dt if dt.kind != "b" else None)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"input '{name}': data is not a list of {datatype} numbers ({exc})") from None
    if arr.dtype.kind == "O":
        raise ProtocolError(f"input '{name}': data is a ragged or non-numeric list")
    if dt.kind == "b":
        if arr.size and arr.dtype.kind != "b":
            raise ProtocolError(f"input '{name}': BOOL data must be true/false values")
        arr = arr.astype(np.bool_)
    if arr.size != count:
        raise ProtocolError(f"input '{name}': {arr.size} data elements for shape {fmt_shape(shape)} ({count} expected)")
    return arr.reshape(shape)


def _flatten(x: Any) -> list:
    if not isinstance(x, list):
        return [x]
    out: list = []
    for item in x:
        out.extend(_flatten(item))
    return out


# ------------------------------------------------------------------------------- requests
@dataclass
class TensorHeader:
    """One ``inputs``/``outputs`` entry of a JSON header."""

    name: str
    datatype: str
    shape: list[int]
    binary_size: int | None = None  # bytes in the binary part, None when the data is in JSON
    data: Any = None
    parameters: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int | None:
        size = element_size(self.datatype)
        return None if size is None else size * math.prod(self.shape)


@dataclass
class RequestHeader:
    """A parsed inference request header (the JSON part)."""

    id: str | None
    inputs: list[TensorHeader]
    outputs: list[dict]  # requested outputs: {"name", "parameters"?}
    parameters: dict
    binary_total: int  # sum of binary_data_size over the inputs

    def wants_binary(self, output_name: str) -> bool:
        for o in self.outputs:
            if o.get("name") == output_name:
                p = o.get("parameters") or {}
                if "binary_data" in p:
                    return bool(p["binary_data"])
        return bool(self.parameters.get("binary_data_output", False))


def _load_json(raw: bytes | bytearray | memoryview, what: str) -> dict:
    try:
        doc = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed JSON {what}: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"malformed JSON {what}: expected an object, got {type(doc).__name__}")
    return doc


def parse_request_header(raw: bytes | bytearray | memoryview) -> RequestHeader:
    """Parse and check the structure of a request's JSON header (not yet against a model)."""
    doc = _load_json(raw, "request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("request has no 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("request 'parameters' must be an object")
    outs = doc.get("outputs") or []
    if not isinstance(outs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs):
        raise ProtocolError("request 'outputs' must be a list of {\"name\": ...} objects")
    headers = []
    seen = set()
    total = 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise ProtocolError(f"request input #{i} has no 'name'")
        name = t["name"]
        if name in seen:
            raise ProtocolError(f"input '{name}' is given twice")
        seen.add(name)
        datatype = t.get("datatype")
        if not isinstance(datatype, str):
            raise ProtocolError(f"input '{name}' has no 'datatype'")
        if datatype not in _V2_TO_NP:
            _bad_datatype(name, datatype)
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ProtocolError(f"input '{name}': 'shape' must be a list of non-negative integers, got {shape!r}")
        tp = t.get("parameters") or {}
        if not isinstance(tp, dict):
            raise ProtocolError(f"input '{name}': 'parameters' must be an object")
        size = tp.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input '{name}': binary_data_size must be a non-negative integer, got {size!r}")
            total += size
        elif "data" not in t:
            raise ProtocolError(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
        headers.append(TensorHeader(name, datatype, list(shape), size, t.get("data"), tp))
    rid = doc.get("id")
    return RequestHeader(str(rid) if rid is not None else None, headers, outs, params, total)


def _bad_datatype(name: str, datatype: str) -> None:
    known = ", ".join(sorted(_V2_TO_NP))
    raise ProtocolError(f"input '{name}': unknown datatype {datatype!r} (known: {known})")


def read_exact(readinto: Callable[[memoryview], int | None], view: memoryview) -> int:
    """Fill ``view`` from a ``readinto``-style function; returns how many bytes were read (short at EOF)."""
    got = 0
    n = len(view)
    while got < n:
        r = readinto(view[got:])
        if not r:
            break
        got += r
    return got


def read_binary_tensor(
    t: TensorHeader, readinto: Callable[[memoryview], int | None], *, what: str = "input"
) -> np.ndarray:
    """Read one binary tensor's bytes (``t.binary_size``) straight into a new array."""
    assert t.binary_size is not None
    if t.datatype == "BYTES":
        buf = bytearray(t.binary_size)
        got = read_exact(readinto, memoryview(buf))
        if got < t.binary_size:
            raise ProtocolError(f"truncated body: {what} '{t.name}' has {got} of its {t.binary_size} bytes")
        return deserialize_bytes(buf, t.shape, t.name)
    arr = np.empty(t.shape, dtype=np_dtype(t.datatype).newbyteorder("<"))
    if t.binary_size != arr.nbytes:
        raise ProtocolError(
            f"{what} '{t.name}': binary_data_size is {t.binary_size} but {t.datatype}{fmt_shape(t.shape)} "
            f"takes {arr.nbytes} bytes"
        )
    if t.binary_size:
        got = read_exact(readinto, memoryview(arr.reshape(-1).view(np.uint8)))
        if got < t.binary_size:
            raise ProtocolError(f"truncated body: {what} '{t.name}' has {got} of its {t.binary_size} bytes")
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


@dataclass
class Encoded:
    """An encoded message: JSON header + payload buffers (sent back to back)."""

    header: bytes
    buffers: list[memoryview | bytes]
    binary: bool  # True: the binary extension is used (send HEADER_LENGTH)

    @property
    def content_length(self) -> int:
        return len(self.header) + sum(len(b) if isinstance(b, bytes) else b.nbytes for b in self.buffers)

    def http_headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/octet-stream" if self.binary else "application/json"}
        if self.binary:
            h[HEADER_LENGTH] = str(len(self.header))
        h["Content-Length"] = str(self.content_length)
        return h

    def body(self) -> bytes:
        """Everything as one bytes object (copies; for small messages and tests)."""
        return b"".join([self.header, *(bytes(b) for b in self.buffers)])


def _tensor_entries(tensors: Mapping[str, np.ndarray], binary: Callable[[str], bool]) -> tuple[list[dict], list]:
    entries, buffers = [], []
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(arr), "shape": list(arr.shape)}
        if binary(name):
            buf = tensor_buffer(arr)
            entry["parameters"] = {"binary_data_size": len(buf) if isinstance(buf, bytes) else buf.nbytes}
            buffers.append(buf)
        else:
            entry["data"] = json_data(arr)
        entries.append(entry)
    return entries, buffers


def _dumps(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()


def encode_request(
    inputs: Mapping[str, np.ndarray],
    *,
    binary: bool = True,
    binary_output: bool = True,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Encoded:
    """An inference request. ``binary``: send tensors with the binary extension (else JSON data)."""
    entries, buffers = _tensor_entries(inputs, lambda _: binary)
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    params = dict(parameters or {})
    if binary_output:
        params["binary_data_output"] = True
    if params:
        doc["parameters"] = params
    doc["inputs"] = entries
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary_output}} for n in outputs]
    return Encoded(_dumps(doc), buffers, binary=bool(buffers))


def encode_response(
    model_name: str,
    outputs: Mapping[str, np.ndarray],
    *,
    binary: Callable[[str], bool] | bool,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    model_version: str = "1",
    time_key: str | None = None,
) -> Encoded:
    """An inference response; ``binary`` says per output whether to use the binary extension.

    ``time_key``: add the time spent encoding the tensors (ms) to ``parameters`` under this name.
    """
    t0 = time.perf_counter()
    pick = binary if callable(binary) else (lambda _: bool(binary))
    entries, buffers = _tensor_entries(outputs, pick)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    params = dict(parameters or {})
    if time_key is not None:  # the encoding time itself, measured up to here (the JSON dump is tiny)
        params[time_key] = round((time.perf_counter() - t0) * 1e3, 4)
    if params:
        doc["parameters"] = params
    doc["outputs"] = entries
    return Encoded(_dumps(doc), buffers, binary=bool(buffers))


@dataclass
class Response:
    """A decoded inference response."""

    outputs: dict[str, np.ndarray]
    parameters: dict
    id: str | None
    model_name: str | None


def decode_response_header(raw: bytes | bytearray | memoryview) -> tuple[dict, list[TensorHeader]]:
    doc = _load_json(raw, "response")
    if "error" in doc and "outputs" not in doc:
        raise ProtocolError(f"server error: {doc['error']}", status=500)
    outs = doc.get("outputs")
    if not isinstance(outs, list):
        raise ProtocolError("response has no 'outputs' list", status=502)
    headers = []
    for o in outs:
        try:
            p = o.get("parameters") or {}
            headers.append(
                TensorHeader(o["name"], o["datatype"], [int(d) for d in o["shape"]], p.get("binary_data_size"), o.get("data"), p)
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProtocolError(f"malformed response output entry: {str(o)[:200]}", status=502) from None
    return doc, headers


def decode_body(body: bytes | bytearray | memoryview, header_length: int | None, *, response: bool) -> Any:
    """Decode a complete request or response body held in memory (tests, small messages).

    Returns ``(RequestHeader, {name: array})`` for a request, a :class:`Response` for a response.
    """
    mv = memoryview(body)
    hl = len(mv) if header_length is None else header_length
    if hl > len(mv):
        raise ProtocolError(f"{HEADER_LENGTH} {hl} is larger than the body ({len(mv)} bytes)")
    pos = [hl]

    def readinto(view: memoryview) -> int:
        n = min(len(view), len(mv) - pos[0])
        view[:n] = mv[pos[0] : pos[0] + n]
        pos[0] += n
        return n

    if response:
        doc, tensors = decode_response_header(mv[:hl])
        what = "output"
    else:
        req = parse_request_header(mv[:hl])
        tensors = req.inputs
        what = "input"
    arrays = {}
    for t in tensors:
        if t.binary_size is not None:
            arrays[t.name] = read_binary_tensor(t, readinto, what=what)
        else:
            arrays[t.name] = array_from_json(t.data, t.datatype, t.shape, t.name)
    if pos[0] != len(mv):
        raise ProtocolError(f"{len(mv) - pos[0]} unexpected bytes after the last binary tensor")
    if response:
        return Response(arrays, doc.get("parameters") or {}, doc.get("id"), doc.get("model_name"))
    return req, arrays
