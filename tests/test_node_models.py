"""Every onnx backend node-test model that onnxruntime can run is split at its candidate cuts
(every prefix and every single-tensor cut, up to 64 per model) and must recombine exactly.

Models onnxsplit cannot split get a one-line refusal; the summary is printed (pytest -s) and
reproduced by `python tools/split_node_tests.py`.
"""

from __future__ import annotations

import collections
import warnings

from onnxsplit.conformance import run_node_tests


def test_onnx_node_tests_split_exactly_or_are_refused_clearly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_node_tests()
    counts = collections.Counter(r.status for r in results)
    print("\nnode tests:", dict(counts))
    mismatches = [f"{r.name}: {r.reason}" for r in results if r.status == "MISMATCH"]
    assert not mismatches, mismatches[:5]
    assert counts["exact"] >= 1400, counts
    for r in results:
        if r.status == "refused":
            assert r.reason and "\n" not in r.reason
            assert r.reason.split(":", 1)[0] in ("ShapeError", "ModelLoadError", "PlanError", "StaticShapeError"), r
    # Half-precision boundaries are the one documented deviation (see conformance.CutFailure).
    assert counts["fp16-rounding"] <= 10, [r.name for r in results if r.status == "fp16-rounding"]
