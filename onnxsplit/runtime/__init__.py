"""Serving and running split bundles: the KServe v2 hand-off between the edge and the cloud half.

- :class:`EdgeRunner` (``client``): run the edge half here, send the boundary tensors to a KServe v2
  server (the embedded one or Triton), get the original outputs back, with timings, retries,
  timeouts and local fallback.
- :class:`CloudServer` (``server``): the embedded cloud server (standard library HTTP + onnxruntime).
- :func:`write_triton_repository` (``triton``): a Triton model repository for the cloud half.
- :func:`load_bundle` (``bundle``): read and validate ``OUT/`` (manifest schema, checksums, models).
- ``protocol``: the v2 JSON / binary-tensor encoding and the datatype mapping used by both sides.

Submodules are imported lazily so that ``import onnxsplit.runtime`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "EdgeRunner": "client",
    "Result": "client",
    "RemoteError": "client",
    "CloudUnavailable": "client",
    "DeadlineExceeded": "client",
    "CloudServer": "server",
    "load_bundle": "bundle",
    "Bundle": "bundle",
    "BundleError": "bundle",
    "write_triton_repository": "triton",
    "write_triton_model": "triton",
    "triton_config": "triton",
    "ProtocolError": "protocol",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'onnxsplit.runtime' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value
