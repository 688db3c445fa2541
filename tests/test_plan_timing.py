"""Measured plan timings (onnxsplit.plan_timing): timing files, the measured policy, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import onnxsplit
from onnxsplit.cli import main
from onnxsplit.dynamic import DynamicRunner
from onnxsplit.dynamic_bundle import build_policy, load_dynamic_bundle, write_dynamic_bundle
from onnxsplit.errors import UsageError
from onnxsplit.plan_timing import (
    SCHEMA,
    apply_plan_timings,
    load_plan_timings,
    measured_latencies,
    time_plans,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny_cnn.onnx"


@pytest.fixture(scope="module")
def dyn_master(tmp_path_factory):
    graph = onnxsplit.load_graph(str(TINY))
    table, res = build_policy(graph, edge_factor=200.0, rtt_ms=1.0, per_request_ms=0.5)
    out = tmp_path_factory.mktemp("pt") / "bundle"
    write_dynamic_bundle(graph, table, out, source=TINY, predicted=(res.problem, res.link, res.objective))
    return out


@pytest.fixture
def dyn(dyn_master, tmp_path):
    """A private copy: the tests rewrite policy.json."""
    out = tmp_path / "bundle"
    shutil.copytree(dyn_master, out)
    return out


def _fake_timings(bundle: Path, side: str, ms: dict[int, float]) -> dict:
    """A timing document as measure-plans writes it, with chosen medians."""
    from onnxsplit.plan_timing import manifest_digest

    man = load_dynamic_bundle(bundle).manifest
    plans = {}
    for p in man["plans"]:
        k = int(p["id"])
        absent = (side == "edge" and p["kind"] == "all-cloud") or (side == "cloud" and p["kind"] == "all-edge")
        v = 0.0 if absent else ms[k]
        plans[str(k)] = {"median_ms": v, "mean_ms": v, "p95_ms": v, "n": 0 if absent else 5, **({"absent": True} if absent else {})}
    return {"schema": SCHEMA, "side": side, "bundle_manifest_sha256": manifest_digest(bundle), "plans": plans}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_manifest_records_link_and_plan_bytes(dyn):
    man = load_dynamic_bundle(dyn).manifest
    assert man["link"]["rtt_ms"] == 1.0 and 0.5 <= man["link"]["per_request_ms"] < 1.0  # + the targets' own overhead
    assert man["link"]["downlink_over_uplink"] == pytest.approx(1.0)
    kinds = {p["kind"]: p for p in man["plans"]}
    assert kinds["all-edge"]["downlink_bytes"] == 0
    assert kinds["all-cloud"]["downlink_bytes"] == 10 * 4  # tiny_cnn: logits [1, 10] fp32
    assert all(p["policy_candidate"] is True for p in man["plans"])


def test_time_plans_times_each_present_half(dyn):
    for side in ("edge", "cloud"):
        doc = time_plans(dyn, side, repeats=3, warmup=1, threads=1)
        assert doc["schema"] == SCHEMA and doc["side"] == side and doc["rounds"] == 3
        man = load_dynamic_bundle(dyn).manifest
        assert set(doc["plans"]) == {str(p["id"]) for p in man["plans"]}
        for p in man["plans"]:
            t = doc["plans"][str(p["id"])]
            missing = p["kind"] == ("all-cloud" if side == "edge" else "all-edge")
            assert t.get("absent", False) is missing
            assert (t["n"], t["median_ms"] > 0) == ((0, False) if missing else (3, True))
        path = _write(dyn.parent / f"{side}.json", doc)
        assert load_plan_timings(path, side=side, bundle=dyn)["plans"] == doc["plans"]


def test_measured_policy_picks_the_lowest_measured_latency(dyn):
    b = load_dynamic_bundle(dyn)
    man = b.manifest
    ids = [int(p["id"]) for p in man["plans"]]
    edge_id, cloud_id = b.all_edge, int(man["all_cloud_plan"])
    mid = [k for k in ids if k not in (edge_id, cloud_id)]
    assert mid, "tiny_cnn's policy should have a split plan"
    # the cost model's choice is overturned: the split plan's halves are measured very fast,
    # all-edge slow, so the split plan wins from a low bandwidth on and all-cloud never does
    e = {k: (50.0 if k == edge_id else 0.01) for k in ids}
    c = {k: (5.0 if k == cloud_id else 0.01) for k in ids}
    ef = _write(dyn.parent / "e.json", _fake_timings(dyn, "edge", e))
    cf = _write(dyn.parent / "c.json", _fake_timings(dyn, "cloud", c))
    policy = apply_plan_timings(dyn, ef, cf)
    grid = [float(g) for g in policy["table"]["bandwidths_mbps"]]
    lat = measured_latencies(man, load_plan_timings(ef), load_plan_timings(cf), grid)
    b2 = load_dynamic_bundle(dyn)
    up = {int(p["id"]): p["uplink_bytes"] for p in man["plans"]}
    for g in grid:  # the oracle: brute force over the plans at each grid point
        best = min(lat, key=lambda k: (lat[k][f"{g:g}"], up[k], k))
        assert b2.lookup(g * (1 + 1e-9)) == best, g
    # the formula: edge + cloud + bytes / bandwidth + rtt + per-request cost
    p = next(q for q in man["plans"] if int(q["id"]) == mid[0])
    link = man["link"]
    expect = 0.02 + (p["uplink_bytes"] + p["downlink_bytes"]) * 8 / (10.0 * 1e3) + link["rtt_ms"] + link["per_request_ms"]
    assert lat[mid[0]]["10"] == pytest.approx(expect)
    assert b2.lookup(0.1) == edge_id and b2.lookup(1e4) in mid
    # each switch sits where the two plans' latencies cross (not at the next grid point)
    from onnxsplit.plan_timing import measured_terms

    terms = measured_terms(man, load_plan_timings(ef), load_plan_timings(cf))
    rows = [r for r in b2.policy if r.batch_size == 1]
    assert len(rows) >= 2
    for prev, row in zip(rows, rows[1:]):
        x = row.from_mbps
        assert x not in grid  # tiny_cnn's crossings fall between grid points
        (a0, b0), (a1, b1) = terms[prev.plan], terms[row.plan]
        assert a0 + b0 / x == pytest.approx(a1 + b1 / x)
        assert b2.lookup(x * 0.999) == prev.plan and b2.lookup(x * 1.001) == row.plan
    assert cloud_id not in {r.plan for r in b2.policy}
    assert policy["rows_predicted"] and policy["measured"]["half_ms"][str(edge_id)]["edge"] == 50.0
    # re-applying keeps the original predicted rows
    again = apply_plan_timings(dyn, ef, cf)
    assert again["rows_predicted"] == policy["rows_predicted"]
    # the runner follows the measured policy
    with DynamicRunner(dyn, None, probe_on_start=False) as dr:
        assert dr.choose(mbps=1e4) == b2.lookup(1e4) and dr.choose(mbps=0.1) == edge_id
        # its feedback corrects the measured model, not the predictions
        assert {k: pytest.approx(v) for k, v in terms.items()} == dr.feedback.terms


def test_int8_plan_outside_its_budget_is_never_chosen(tmp_path):
    from onnxsplit.quant.calib import synthetic_calibration
    from onnxsplit.quant.quantize import quantize_split
    from onnxsplit.split import split_model

    graph = onnxsplit.load_graph(str(TINY))
    table, res = build_policy(graph, edge_factor=200.0, rtt_ms=1.0)
    qs = quantize_split(split_model(graph, [n.name for n in graph.compute_nodes]), synthetic_calibration(graph, samples=8))
    fast = {f"{g:g}": 1e-3 for g in table.bandwidths_mbps}
    out = tmp_path / "q"
    write_dynamic_bundle(graph, table, out, source=TINY, predicted=(res.problem, res.link, res.objective),
                         quantized_policy=True,
                         quantized_plans=[("posthoc", qs, {"edge_precision": "int8", "within_budget": False}, fast)])
    man = load_dynamic_bundle(out).manifest
    q = man["plans"][-1]
    assert q["precision"] == "int8" and q["policy_candidate"] is False
    ids = [int(p["id"]) for p in man["plans"]]
    e = {k: (1e-3 if k == q["id"] else 100.0) for k in ids}  # the int8 plan measured fastest by far
    c = dict.fromkeys(ids, 100.0)
    policy = apply_plan_timings(out, _write(tmp_path / "e.json", _fake_timings(out, "edge", e)),
                                _write(tmp_path / "c.json", _fake_timings(out, "cloud", c)))
    assert q["id"] not in {r["plan"] for r in policy["rows"]}


def test_timing_file_errors(dyn, dyn_master, tmp_path):
    e = _fake_timings(dyn, "edge", dict.fromkeys(range(10), 1.0))
    c = _fake_timings(dyn, "cloud", dict.fromkeys(range(10), 1.0))
    ef, cf = _write(tmp_path / "e.json", e), _write(tmp_path / "c.json", c)
    with pytest.raises(UsageError, match="side 'cloud', expected 'edge'"):
        apply_plan_timings(dyn, cf, ef)
    with pytest.raises(UsageError, match="no such timing file"):
        load_plan_timings(tmp_path / "nope.json")
    with pytest.raises(UsageError, match="schema"):
        load_plan_timings(_write(tmp_path / "bad.json", {"schema": "x"}))
    with pytest.raises(UsageError, match="finite median_ms"):
        load_plan_timings(_write(tmp_path / "nan.json", {**e, "plans": {"0": {"median_ms": -1}}}))
    other = _write(tmp_path / "o.json", {**e, "bundle_manifest_sha256": "0" * 64})
    with pytest.raises(UsageError, match="timed another bundle"):
        apply_plan_timings(dyn, other, cf)
    short = _write(tmp_path / "s.json", {**e, "plans": {"0": e["plans"]["0"]}})
    with pytest.raises(UsageError, match="no plan 1"):
        apply_plan_timings(dyn, short, cf)
    before = (dyn / "policy.json").read_text()
    with pytest.raises(UsageError):
        apply_plan_timings(dyn, other, cf)
    assert (dyn / "policy.json").read_text() == before  # nothing half-written
    with pytest.raises(UsageError, match="side must be"):
        time_plans(dyn, "middle")
    with pytest.raises(UsageError, match="plan 99 is not in"):
        time_plans(dyn, "edge", plans=[99])


def test_cli_measure_plans_then_policy(dyn, tmp_path, capsys):
    ef, cf = tmp_path / "edge.json", tmp_path / "cloud.json"
    assert main(["measure-plans", str(dyn), "--side", "edge", "--repeats", "3", "--threads", "1", "-o", str(ef)]) == 0
    assert main(["measure-plans", str(dyn), "--side", "cloud", "--repeats", "3", "--threads", "1", "-o", str(cf)]) == 0
    out = capsys.readouterr().out
    assert "edge median ms" in out and "cloud median ms" in out and f"wrote {cf}" in out
    assert main(["policy", str(dyn), "--timings", str(ef), str(cf)]) == 0
    out = capsys.readouterr().out
    assert "measured half timings + link model" in out
    policy = json.loads((dyn / "policy.json").read_text())
    assert policy["measured"]["edge"]["file"] == "edge.json" and policy["measured"]["link"]["rtt_ms"] == 1.0
    assert main(["policy", str(dyn), "--timings", str(ef), str(cf), "--rtt", "40ms"]) == 0
    assert json.loads((dyn / "policy.json").read_text())["measured"]["link"]["rtt_ms"] == 40.0
    # errors: one line, exit 2
    assert main(["policy", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
    assert main(["measure-plans", str(dyn), "--side", "edge", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_given_inputs_are_used(dyn, tmp_path):
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    doc = time_plans(dyn, "edge", repeats=1, warmup=0, feeds={"image": x})
    assert doc["inputs"] == "given"
    with pytest.raises(UsageError, match="needs input 'image'"):
        time_plans(dyn, "edge", repeats=1, feeds={"other": x})


def test_bundle_folder_gets_umask_permissions_and_failure_leaves_nothing(tmp_path):
    import os
    import stat

    from onnxsplit.bundle import atomic_output_dir

    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "ok") as tmp:
            (tmp / "f").write_text("x")
        assert stat.S_IMODE((tmp_path / "ok").stat().st_mode) == 0o755  # mkdtemp alone gives 0700
        with pytest.raises(RuntimeError), atomic_output_dir(tmp_path / "bad") as tmp:
            (tmp / "f").write_text("x")
            raise RuntimeError("boom")
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_gap_idles_only_before_plans_that_wait_on_the_network(dyn):
    import time

    b = load_dynamic_bundle(dyn)
    waiting = sum(1 for p in b.plans if p["kind"] != "all-edge" and p["kind"] != "all-cloud")  # edge halves that wait
    t0 = time.monotonic()
    doc = time_plans(dyn, "edge", repeats=3, warmup=0, gap_ms=50.0)
    took = time.monotonic() - t0
    assert doc["gap_ms"] == 50.0
    assert took >= 3 * waiting * 0.05 * 0.9, took
    t0 = time.monotonic()
    time_plans(dyn, "edge", repeats=3, warmup=0, gap_ms=50.0, plans=[b.all_edge])  # back to back: no gap
    assert time.monotonic() - t0 < 3 * 0.05, time.monotonic() - t0


def test_blocks_time_back_to_back_runs_of_each_plan(dyn):
    doc = time_plans(dyn, "edge", repeats=2, warmup=1, block=3)
    assert doc["block"] == 3
    timed = [v["n"] for v in doc["plans"].values() if not v.get("absent")]
    assert timed and all(n == 2 * 3 for n in timed)  # the warm-up round and each block's first run are untimed
    with pytest.raises(UsageError, match="block must be"):
        time_plans(dyn, "edge", block=0)


def test_cli_input_file_is_read_like_run_input(dyn, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 32, 32), dtype=np.float32))
    out = tmp_path / "e.json"
    assert main(["measure-plans", str(dyn), "--side", "edge", "--repeats", "1", "--input", str(x), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["inputs"] == "given"
    assert main(["measure-plans", str(dyn), "--side", "edge", "--input", str(tmp_path / "missing.npy")]) == 2
    assert "input file not found" in capsys.readouterr().err
