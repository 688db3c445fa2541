"""Numerical comparison of the original model with its recombined split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from .split import SplitModels


@dataclass(frozen=True)
class OutputDiff:
    name: str
    identical: bool  # same dtype, shape and bytes (NaNs in the same places count as equal)
    max_abs: float
    max_rel: float

    def to_json(self) -> dict:
        return asdict(self)


def compare_outputs(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> list[OutputDiff]:
    diffs = []
    for name, a in ref.items():
        if isinstance(a, list) or isinstance(got[name], list):  # sequence outputs: element by element
            b = got[name]
            same = isinstance(b, list) and len(a) == len(b) and all(d.identical for d in compare_outputs(
                {str(i): x for i, x in enumerate(a)}, {str(i): y for i, y in enumerate(b)}))
            diffs.append(OutputDiff(name, same, 0.0 if same else float("inf"), 0.0 if same else float("inf")))
            continue
        a = np.asarray(a)
        b = np.asarray(got[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            diffs.append(OutputDiff(name, False, float("inf"), float("inf")))
            continue
        identical = bool(np.array_equal(a, b)) if a.dtype.kind in "OUS" else a.tobytes() == b.tobytes()
        if a.dtype.kind in "fc" and a.size:
            both_nan = np.isnan(a) & np.isnan(b)
            identical = identical or bool(np.array_equal(a, b, equal_nan=True))
            diff = np.where(both_nan, 0.0, np.abs(a.astype(np.float64) - b.astype(np.float64)))
            max_abs = float(np.nanmax(diff)) if diff.size else 0.0
            denom = np.maximum(np.abs(a.astype(np.float64)), 1e-30)
            max_rel = float(np.nanmax(np.where(both_nan, 0.0, diff / denom)))
        elif a.dtype.kind in "iub" and a.size:
            max_abs = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            max_rel = max_abs
        else:
            max_abs = max_rel = 0.0 if identical else float("inf")
        diffs.append(OutputDiff(name, identical, max_abs, max_rel))
    return diffs


def check_split(
    model: onnx.ModelProto,
    split: SplitModels,
    feeds: Mapping[str, np.ndarray],
    *,
    optimize: bool = False,
) -> list[OutputDiff]:
    """Run the original and the split (edge then cloud) in onnxruntime and compare outputs."""
    from .runtime_ort import run

    ref = run(model, feeds, optimize=optimize)
    got = split.run(feeds, optimize=optimize)
    return compare_outputs({k: ref[k] for k in split.output_names}, got)
