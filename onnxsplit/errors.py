"""Errors raised by onnxsplit.

Every error is one line that names the culprit (file, node, tensor, input) and says what would
work instead. The CLI prints ``error: <message>`` and exits with status 2.
"""

from __future__ import annotations


class OnnxSplitError(Exception):
    """Base class: a user-facing, one-line error."""

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)


class ModelLoadError(OnnxSplitError):
    """The model file is missing, corrupt, truncated, or uses an unsupported opset/IR version."""


class ShapeError(OnnxSplitError):
    """A tensor has no static shape (dynamic axis without --input-shape, or inference failed)."""


class PlanError(OnnxSplitError):
    """A split plan is invalid (not closed under predecessors, unknown node/tensor, ...)."""


class UsageError(OnnxSplitError):
    """A command-line value is malformed (bad unit, bad shape spec, ...)."""
