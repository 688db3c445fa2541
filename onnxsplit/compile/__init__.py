"""Compiling split halves to native code.

``onnxsplit.compile.tvm_backend`` compiles an ONNX half with Apache TVM (Relax) for a target's
``[tvm] target`` and validates the library (ELF machine, numerics against onnxruntime). Importing
this package never imports TVM: TVM is loaded on first use, and a missing install raises
:class:`TVMNotAvailableError` with ``pip install 'onnxsplit[tvm]'``.
"""

from __future__ import annotations

from .tvm_backend import (
    ArtifactValidationError,
    CompiledArtifact,
    TVMCompileError,
    TVMNotAvailableError,
    ToolchainError,
    UnsupportedOpError,
    compile_bundle,
    compile_half,
    tvm_available,
    validate_artifact,
)

__all__ = [
    "ArtifactValidationError",
    "CompiledArtifact",
    "TVMCompileError",
    "TVMNotAvailableError",
    "ToolchainError",
    "UnsupportedOpError",
    "compile_bundle",
    "compile_half",
    "tvm_available",
    "validate_artifact",
]
