"""Transferred cost models (onnxsplit.cost.transfer): law recovery, physical bounds, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import onnxsplit
from onnxsplit import zoo
from onnxsplit.cli import main as cli_main
from onnxsplit.cost import CostModel, CostModelError, predict
from onnxsplit.cost.fit import FitError
from onnxsplit.cost.model import cost_model_path
from onnxsplit.cost.transfer import (
    DeviceSpec,
    TransferSample,
    fit_transfer,
    leave_one_device_out,
    transferred_cost_model,
)
from onnxsplit.data import data_dir
from onnxsplit.targets import load_target

SPECS = {"a": DeviceSpec("a", 10000.0, 400.0), "b": DeviceSpec("b", 15000.0, 700.0),
         "c": DeviceSpec("c", 12000.0, 500.0)}
TRUE_K = {"conv": {"compute": 2.5, "activation_bytes": 1.5, "param_bytes": 0.0},
          "elementwise": {"compute": 0.0, "activation_bytes": 1.2, "param_bytes": 0.0}}
TRUE_FIXED = {"conv": 0.040, "elementwise": 0.010}


def _features(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    n_conv, n_elt = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    return {"conv": {"mflops": float(rng.uniform(5, 500)), "in_mb": float(rng.uniform(0.1, 3)),
                     "out_mb": float(rng.uniform(0.1, 3)), "param_mb": float(rng.uniform(0.1, 2)), "one": n_conv},
            "elementwise": {"mflops": float(rng.uniform(0.01, 2)), "in_mb": float(rng.uniform(0.1, 4)),
                            "out_mb": float(rng.uniform(0.1, 4)), "param_mb": 0.0, "one": n_elt}}


def _truth(ff: dict, spec: DeviceSpec, batch: int, overhead: float = 0.2) -> float:
    t = overhead
    for fam, v in ff.items():
        k = TRUE_K[fam]
        t += k["compute"] * v["mflops"] * batch / spec.peak_gflops
        t += k["activation_bytes"] * (v["in_mb"] + v["out_mb"]) * batch / spec.bandwidth_gbps
        t += TRUE_FIXED[fam] * v["one"]
    return t


def _samples(n: int = 60, seed: int = 0) -> list[TransferSample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ff = _features(rng)
        for d, spec in SPECS.items():
            for b in (1, 32, 256):
                out.append(TransferSample(f"m{i}", d, b, ff, _truth(ff, spec, b)))
    return out


def test_fit_recovers_a_known_law_and_transfers_to_an_unmeasured_device() -> None:
    samples = _samples()
    law = fit_transfer(samples, SPECS)
    for fam, terms in TRUE_K.items():
        for term, want in terms.items():
            if want:
                assert law.efficiency_inverse[fam][term] == pytest.approx(want, rel=1e-3), (fam, term)
    for d in SPECS:
        for fam, want in TRUE_FIXED.items():
            assert law.fixed_ms[d][fam] == pytest.approx(want, rel=1e-3)
    assert law.info["train"]["mape_pct"] < 0.1
    # a device nobody measured, known only by its data sheet: exact when the law holds
    spec = DeviceSpec("new", 30000.0, 1500.0)
    ff = _features(np.random.default_rng(7))
    assert law.predict(ff, spec, 64) == pytest.approx(_truth(ff, spec, 64), rel=1e-3)
    logo = leave_one_device_out(samples, SPECS)
    assert set(logo) == set(SPECS)
    for m in logo.values():
        assert m["within_10_pct"] == 100.0 and set(m["by_batch"]) == {"1", "32", "256"}


def test_compute_bound_families_never_beat_the_peak() -> None:
    # latencies that a conv running at 4x the peak would explain: the fit must not go below k_c = 1
    rng = np.random.default_rng(1)
    samples = []
    for i in range(40):
        ff = {"conv": {"mflops": float(rng.uniform(100, 1000)), "in_mb": 0.0, "out_mb": 0.0, "param_mb": 0.0,
                       "one": 1.0}}
        for d, spec in SPECS.items():
            samples.append(TransferSample(f"m{i}", d, 1, ff, 0.25 * ff["conv"]["mflops"] / spec.peak_gflops + 0.01))
    law = fit_transfer(samples, SPECS)
    assert law.efficiency_inverse["conv"]["compute"] >= 1.0


@pytest.mark.parametrize(
    ("sample", "spec", "pattern"),
    [
        (TransferSample("x", "zz", 1, {"conv": {"mflops": 1, "in_mb": 1, "out_mb": 1, "param_mb": 0, "one": 1}}, 1.0),
         None, r"no data-sheet numbers for device\(s\) \['zz'\]"),
        (TransferSample("x", "a", 1, {"warp": {"mflops": 1, "in_mb": 1, "out_mb": 1, "param_mb": 0, "one": 1}}, 1.0),
         None, r"unknown op family \['warp'\]"),
        (TransferSample("x", "a", 1, {"conv": {"mflops": 1, "in_mb": 1, "out_mb": 1, "param_mb": 0, "one": 1}}, -1.0),
         None, r"measurement 'x' on a: latency must be > 0 ms"),
        (TransferSample("x", "a", 1, {"conv": {"mflops": 1, "in_mb": 1, "one": 1}}, 1.0),
         None, r"family 'conv' lacks feature\(s\) \['out_mb', 'param_mb'\]"),
    ],
)
def test_bad_transfer_input_is_named(sample: TransferSample, spec: object, pattern: str) -> None:
    with pytest.raises(FitError, match=pattern):
        fit_transfer([sample], SPECS)


def test_device_spec_must_be_positive() -> None:
    with pytest.raises(FitError, match="device 'x': bandwidth_gbps must be a positive number"):
        DeviceSpec("x", 100.0, 0.0)


def test_transferred_artifact_scales_by_the_data_sheet_and_is_uncalibrated(tmp_path: Path) -> None:
    law = fit_transfer(_samples(30), SPECS)
    jetson = load_target("jetson-orin-nano")
    prov = {"source": "synthetic", "license": "CC0", "citation": "test"}
    acc = {"holdout": {"n": 1, "mape_pct": 1.0, "median_ape_pct": 1.0, "spearman": None}}
    cuda = transferred_cost_model(law, jetson, "ort-cuda", "fp32", provenance=prov, accuracy=acc)
    assert cuda.calibrated is False
    k = law.efficiency_inverse["conv"]
    assert cuda.families["conv"]["mflops"] == pytest.approx(k["compute"] / jetson.peak_gflops_fp32)
    assert cuda.families["conv"]["in_mb"] == pytest.approx(k["activation_bytes"] / jetson.mem_bandwidth_gbps)
    assert cuda.families["conv"]["one"] == pytest.approx(np.mean([law.fixed_ms[d]["conv"] for d in SPECS]))
    # TensorRT's fixed costs are the target file's, not desktop PyTorch launch costs
    trt = transferred_cost_model(law, jetson, "ort-trt", "fp32", provenance=prov, accuracy=acc)
    assert trt.families["conv"]["one"] == pytest.approx(jetson.kernel_overhead_us / 1e3)
    assert trt.overhead_ms == pytest.approx(jetson.inference_overhead_us / 1e3)
    # int8: Conv is in the target's int8_ops (int8 peak, quarter bytes); a family it lacks stays fp32
    q = transferred_cost_model(law, jetson, "ort-trt", "int8", provenance=prov, accuracy=acc)
    assert q.families["conv"]["mflops"] == pytest.approx(k["compute"] / jetson.peak_gops_int8)
    assert q.families["conv"]["in_mb"] == pytest.approx(0.25 * cuda.families["conv"]["in_mb"])
    assert q.provenance["transfer"]["family_precision"]["conv"] == "int8"
    path = q.save(tmp_path / "jetson-orin-nano" / "ort-trt-int8.json")
    doc = json.loads(path.read_text())
    assert doc["calibrated"] is False
    back = CostModel.load(path)
    assert back.calibrated is False and back.to_json() == q.to_json()
    # predictions made with it say calibrated: false, like the roofline
    g = onnxsplit.load_graph(zoo.resnet_like())
    table = predict(g, jetson, "int8", "ort-trt", cost_model=back)
    assert table.calibrated is False and table.total_ms > 0 and table.model_version == "1"
    assert json.loads(json.dumps(table.to_json()))["calibrated"] is False
    with pytest.raises(FitError, match="has no runtime 'pytorch-cuda'"):
        transferred_cost_model(law, jetson, "pytorch-cuda", "fp32", provenance=prov, accuracy=acc)


def test_calibrated_key_is_validated(tmp_path: Path) -> None:
    doc = json.loads(cost_model_path("host-x86", "ort-cpu", "fp32").read_text())
    doc["calibrated"] = "no"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(CostModelError, match=r"bad.json: calibrated: expected true or false, got 'no'"):
        CostModel.load(p)


def test_bundled_estimates_are_flagged_everywhere(capsys: pytest.CaptureFixture) -> None:
    """Every bundled artifact validates; Jetson/A100/H100 ones are estimates (calibrated: false), the
    measured targets' are not, and inspect/targets report it."""
    estimated = set()
    for path in sorted(data_dir("cost_models").glob("*/*.json")):
        m = CostModel.load(path)
        assert path.parent.name == m.target and path.stem == f"{m.runtime}-{m.precision}"
        if not m.calibrated:
            estimated.add(m.target)
            assert m.provenance["transfer"]["measured_devices"], path
            assert m.accuracy["holdout"]["n"] > 0
    assert estimated == {"jetson-orin-nano", "jetson-agx-orin", "server-gpu-a100", "server-gpu-h100"}
    for t in ("host-x86", "rpi4", "titan-rtx"):
        assert CostModel.load(next(data_dir("cost_models").joinpath(t).glob("*.json"))).calibrated
    assert cli_main(["inspect", str(Path(__file__).parent.parent / "examples" / "resnet_like.onnx"),
                     "--target", "jetson", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["prediction"]["calibrated"] is False and doc["prediction"]["source"].endswith("ort-trt-fp32.json")
    assert cli_main(["targets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "ort-trt-fp32" in rows["jetson-orin-nano"]["estimated_cost_models"]
    assert rows["jetson-orin-nano"]["cost_models"] == [] and rows["host-x86"]["estimated_cost_models"] == []
