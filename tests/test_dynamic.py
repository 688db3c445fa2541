"""Dynamic split: bandwidth estimator, plan choice, multi-plan bundles, loopback and netns runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxsplit
from onnxsplit.dynamic import BandwidthEstimator, DynamicRunner
from onnxsplit.dynamic_bundle import (
    DynamicBundle,
    PolicyEntry,
    build_policy,
    load_dynamic_bundle,
    write_dynamic_bundle,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny_cnn.onnx"


# ----------------------------------------------------------------------------- estimator
def test_estimator_formula_and_ewma():
    assert BandwidthEstimator().method == "median"  # the documented default
    est = BandwidthEstimator(method="ewma", initial_mbps=7.0, alpha=0.5, rtt_ms=2.0, min_bytes=1000, drop_factor=20.0)
    assert est.mbps == 7.0
    # 1.25 MB in 10 ms of transfer (12 ms network - 2 ms rtt) = 1000 Mbit/s
    assert est.sample(1_250_000, 12.0) == pytest.approx(1000.0)
    assert est.update(1_250_000, 12.0) == pytest.approx(1000.0)  # first sample sets it
    assert est.update(125_000, 12.0) == pytest.approx(0.5 * 100.0 + 0.5 * 1000.0)
    assert est.samples == 2
    # small transfers do not move the bandwidth estimate
    assert est.update(10, 50.0) == pytest.approx(550.0)


def test_estimator_learns_rtt_from_small_transfers_and_clamps():
    est = BandwidthEstimator(min_bytes=1000, floor_mbps=0.1, ceil_mbps=500.0)
    est.update(100, 5.0)
    est.update(100, 3.0)
    assert est.rtt_ms == 3.0
    assert est.update(1_000_000, 3.0) == 500.0  # t clamps to min_ms, sample clamps to the ceiling
    est2 = BandwidthEstimator(min_bytes=10)
    assert est2.update(100, float("nan")) == est2.initial_mbps


def test_estimator_believes_a_collapse_at_once():
    est = BandwidthEstimator(method="ewma", alpha=0.5, rtt_ms=0.0, min_bytes=1, drop_factor=4.0)
    est.add_sample(1000.0)
    assert est.add_sample(300.0) == pytest.approx(650.0)  # not a collapse: averaged
    assert est.add_sample(10.0) == 10.0  # below 650 / 4: replaces the estimate
    assert est.add_sample(1000.0) == pytest.approx(505.0)  # recoveries are averaged ...
    est.add_sample(10.0)
    assert est.add_sample(1000.0, trusted=True) == 1000.0  # ... unless a trusted probe sees them (> 4x)
    assert est.add_sample(2000.0, trusted=True) == pytest.approx(1500.0)  # within 4x: averaged
    with pytest.raises(onnxsplit.errors.UsageError):
        BandwidthEstimator(drop_factor=1.0)


@pytest.mark.parametrize("method", BandwidthEstimator.METHODS)
def test_every_estimator_follows_a_step_and_believes_trusted_jumps(method):
    """Shared contract of the estimator methods: the first sample sets the estimate, a sustained new
    rate is reached within a window of samples, and a trusted sample (a probe's median, a hedge's
    bound) more than drop_factor away replaces the estimate at once, in either direction."""
    est = BandwidthEstimator(alpha=0.5, drop_factor=4.0, method=method, window=5)
    assert est.add_sample(100.0) == 100.0
    for _ in range(5):
        est.add_sample(300.0)
    assert est.mbps == pytest.approx(300.0, rel=0.05)
    assert est.add_sample(2.0, trusted=True) == 2.0
    assert est.add_sample(500.0, trusted=True) == 500.0
    # within drop_factor a trusted sample replaces the median's window, the EWMA averages it
    assert est.add_sample(250.0, trusted=True) == (250.0 if method == "median" else pytest.approx(375.0))
    assert [h[1] for h in est.history] == [100.0, *[300.0] * 5, 2.0, 500.0, 250.0]
    assert est.history[-1][2] is True and est.history[-1][3] == est.mbps
    est.reset(40.0)
    assert est.mbps == 40.0
    est.reset()
    assert est.mbps == est.initial_mbps
    with pytest.raises(onnxsplit.errors.UsageError, match="known: ewma, median"):
        BandwidthEstimator(method="kalman")


def test_median_estimator_ignores_isolated_outliers_that_ewma_follows():
    """The testbed's failure mode: at 1000 Mbit/s a request whose sender stalled mid-body reads 40
    Mbit/s, one whose body fitted in the token bucket's burst reads 6000. The EWMA's collapse rule
    believes the low one at once; the median of the last 5 samples moves by neither."""
    stream = [1000.0, 1000.0, 40.0, 1000.0, 6000.0, 1000.0, 1000.0, 40.0, 1000.0]
    ewma = BandwidthEstimator(alpha=0.5, method="ewma")
    med = BandwidthEstimator(method="median", window=5)
    e_ests = [ewma.add_sample(s) for s in stream]
    m_ests = [med.add_sample(s) for s in stream]
    assert min(e_ests) == 40.0  # collapsed
    assert all(e == 1000.0 for e in m_ests)
    # a real drop (untrusted samples only) moves the median once it holds the window's majority
    med.reset(1000.0)
    drops = [med.add_sample(100.0) for _ in range(3)]
    assert drops == [pytest.approx(550.0), 100.0, 100.0]  # windows [1000, 100], [1000, 100, 100], ...


def test_estimator_direct_samples():
    est = BandwidthEstimator(method="ewma", alpha=0.5)
    assert est.add_sample(100.0) == 100.0 and est.add_sample(50.0) == 75.0 and est.samples == 2
    assert est.add_sample(float("nan")) == 75.0 and est.add_sample(-1.0) == 75.0 and est.samples == 2


class _LinkRunner:
    """probe_network() of a simulated link: fixed per-request cost + bytes / bandwidth."""

    def __init__(self, mbps: float, fixed_ms: float, stalls_ms=()):
        self.mbps, self.fixed_ms = mbps, fixed_ms
        self.stalls = list(stalls_ms)  # extra delay of successive calls (a throttled CPU)

    def probe_network(self, nbytes: int, details: bool = False):  # noqa: ANN201
        stall = self.stalls.pop(0) if self.stalls else 0.0
        ms = self.fixed_ms + stall + 8.0 * nbytes / (1000.0 * self.mbps)
        return (ms, {"received_bytes": nbytes}) if details else ms  # a server without arrival times


class _StarvedRunner(_LinkRunner):
    """A client whose every big send stalls (CPU quota) but whose server reports arrival times."""

    def probe_network(self, nbytes: int, details: bool = False):  # noqa: ANN201
        wire_ms = 8.0 * nbytes / (1000.0 * self.mbps)
        ms = self.fixed_ms + wire_ms + (20.0 if nbytes else 0.0)
        tail = int(nbytes * 0.75)  # what ArrivalClock measures: the body after its first quarter
        tail_ms = 0.75 * wire_ms
        answer = {"received_bytes": nbytes}
        if nbytes:
            answer.update(receive_bytes=tail if tail_ms >= 0.05 else 0, receive_ms=tail_ms if tail_ms >= 0.05 else 0.0)
        return (ms, answer) if details else ms


@pytest.mark.parametrize("mbps", [1.0, 20.0, 1000.0])
def test_differential_probe_cancels_the_fixed_cost(mbps):
    dr = DynamicRunner.__new__(DynamicRunner)
    dr.estimator = BandwidthEstimator(initial_mbps=mbps)
    dr.probe_target_ms, dr.probe_max_bytes, dr.probe_headroom, dr.probe_repeats = 8.0, 1 << 20, 4.0, 3
    # 5 ms of per-request cost would make a one-shot 16 KB probe read 1000 Mbit/s as ~25 Mbit/s
    assert dr.probe_sample(_LinkRunner(mbps, fixed_ms=5.0)) == pytest.approx(mbps)
    # 9 ms stalls on some calls (empty, big, empty, big, ...): the minima still see the link
    assert dr.probe_sample(_LinkRunner(mbps, fixed_ms=5.0, stalls_ms=[0, 9, 9, 0, 0, 9, 9])) == pytest.approx(mbps)


@pytest.mark.parametrize("mbps", [5.0, 100.0])
def test_receiver_side_probe_ignores_sender_stalls(mbps):
    dr = DynamicRunner.__new__(DynamicRunner)
    dr.estimator = BandwidthEstimator(initial_mbps=mbps / 4)
    dr.probe_target_ms, dr.probe_max_bytes, dr.probe_headroom, dr.probe_repeats = 8.0, 1 << 20, 4.0, 3
    dr.receiver_ramp, dr.probe_escalation = 2.0, 8
    # the client's own clock: every big send stalls 20 ms, so the differential reads far too low ...
    n = dr.probe_bytes()
    differential = 8.0 * n / (1000.0 * (20.0 + 8.0 * n / (1000.0 * mbps)))
    assert differential < 0.6 * mbps
    # ... the server's arrival times see the link
    assert dr.probe_sample(_StarvedRunner(mbps, fixed_ms=5.0)) == pytest.approx(mbps)
    # a link too fast to resolve with this probe size: bigger probes (x8, up to 1 MiB) find it
    fast_mbps = 8.0 * n / (1000.0 * 0.03)  # n bytes on the wire in 0.03 ms: below the server's resolution
    fast = _StarvedRunner(fast_mbps, fixed_ms=5.0)
    sent = []
    probe = fast.probe_network
    fast.probe_network = lambda nbytes, details=False: (sent.append(nbytes), probe(nbytes, details))[1]
    assert dr.probe_sample(fast) == pytest.approx(fast_mbps)
    assert max(sent) == 8 * n
    # ... and one that even the largest probe cannot resolve ramps the estimate by receiver_ramp
    dr.unresolved_ms = 0.1
    assert dr.probe_sample(_StarvedRunner(1e9, fixed_ms=5.0)) == pytest.approx(dr.estimator.mbps * 2.0)


def test_an_unresolvable_body_raises_the_estimate_at_most_to_its_resolution():
    """A body that arrived in one read says the link is at least as fast as that body over
    unresolved_ms (0.1 ms), not how much faster: 25 KB bodies ramp the estimate by 2x per sample
    up to 2048 Mbit/s and no further (before: up to ceil_mbps, 100 Gbit/s, in the testbed run)."""
    dr = DynamicRunner.__new__(DynamicRunner)
    dr.receiver_ramp, dr.unresolved_ms = 2.0, 0.1
    for method in BandwidthEstimator.METHODS:
        dr.estimator = BandwidthEstimator(initial_mbps=100.0, method=method, alpha=0.5)
        dr.estimator.add_sample(100.0)
        assert dr.unresolved_rate(25_600) == pytest.approx(200.0)
        for _ in range(40):
            dr.estimator.add_sample(dr.unresolved_rate(25_600))
        assert dr.estimator.mbps == pytest.approx(8 * 25_600 / (1000 * 0.1), rel=0.02)
        dr.estimator.reset(5000.0)  # an estimate above the bound: the body says nothing new
        assert dr.unresolved_rate(25_600) == 5000.0


def test_a_receiver_side_probe_raises_the_estimate_at_once():
    """The link comes back from 1 to 5 Mbit/s while the runner is all-edge: one probe (receiver
    side) sets the estimate; a ramp sample (unresolvable probe) or a client-clock one is averaged."""
    dr = DynamicRunner.__new__(DynamicRunner)
    dr.estimator = BandwidthEstimator(method="ewma", initial_mbps=1.0, alpha=0.5)
    dr.estimator.add_sample(1.0)
    dr.probe_target_ms, dr.probe_max_bytes, dr.probe_headroom, dr.probe_repeats = 8.0, 1 << 20, 4.0, 3
    dr.receiver_ramp, dr.probe_escalation = 2.0, 8
    dr._probe_endpoint = True
    link = _StarvedRunner(5.0, fixed_ms=5.0)
    link.server_url, link.bundle = "http://fake", type("B", (), {"cloud_path": "x", "boundary": []})()
    dr.runners = {0: link}
    dr._probe_plan = lambda: 0
    assert dr.probe() == pytest.approx(5.0)
    dr.estimator = BandwidthEstimator(method="ewma", initial_mbps=1.0, alpha=0.5, rtt_ms=0.0)
    dr.estimator.add_sample(1.0)
    dr.runners = {0: _LinkRunner(5.0, fixed_ms=0.0)}  # no arrival times: the client's clock
    dr.runners[0].server_url, dr.runners[0].bundle = link.server_url, link.bundle
    assert dr.probe() == pytest.approx(3.0)  # averaged: 0.5 * 5 + 0.5 * 1


def test_arrival_clock_rate_over_the_tail():
    from onnxsplit.dynamic import receiver_rate
    from onnxsplit.runtime.server import ArrivalClock

    clock = ArrivalClock()
    clock.points = [(0.0, 40_000), (0.004, 50_000), (0.008, 60_000), (0.012, 70_000), (0.016, 80_000)]
    clock.total = 80_000
    # the first read (a burst) ends before the quarter mark is passed: 60 kB over 16 ms = 30 Mbit/s
    assert clock.rate_sample() == (40_000, pytest.approx(16.0))  # bytes after the read that crossed 25 %
    assert clock.parameters() == {"server_receive_bytes": 40_000, "server_receive_ms": 16.0}
    assert receiver_rate(40_000, 16.0) == pytest.approx(20.0)
    assert receiver_rate(1000, 16.0) is None and receiver_rate(40_000, 0.0) is None and receiver_rate(None, 1) is None
    one = ArrivalClock()
    one.add(65536)
    assert one.rate_sample() == (0, 0.0)
    assert ArrivalClock().parameters() == {}


def test_estimator_thread_safe():
    est = BandwidthEstimator(min_bytes=1, alpha=0.1)

    def work():
        for _ in range(500):
            est.update(125_000, 10.0)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert est.samples == 2000
    assert est.mbps == pytest.approx(100.0)


# ----------------------------------------------------------------------------- plan choice
def _fake_bundle() -> DynamicBundle:
    plans = [{"id": 0, "kind": "all-edge"}, {"id": 1, "kind": "split"}, {"id": 2, "kind": "all-cloud"}]
    rows = [PolicyEntry(1, 0.0, 5.0, 0), PolicyEntry(1, 5.0, 50.0, 1), PolicyEntry(1, 50.0, float("inf"), 2),
            PolicyEntry(4, 0.0, 20.0, 0), PolicyEntry(4, 20.0, float("inf"), 2)]
    return DynamicBundle(Path("."), {"all_edge_plan": 0}, plans, rows)


def test_lookup_by_bandwidth_and_batch():
    b = _fake_bundle()
    assert [b.lookup(x) for x in (0.1, 4.99, 5.0, 49, 50, 1e6)] == [0, 0, 1, 1, 2, 2]
    assert b.lookup(10, 4) == 0 and b.lookup(30, 4) == 2
    assert b.lookup(30, 8) == 2  # largest table batch size not above 8
    assert b.lookup(30, 2) == 1  # batch 2 uses the batch-1 rows


class _FakeResult:
    def __init__(self, outputs, network_ms, attempts=1, fallback=False):
        self.outputs = outputs
        self.timings_ms = {"edge": 1.0, "network": network_ms, "cloud": 1.0, "total": network_ms + 2}
        self.attempts = attempts
        self.fallback = fallback
        self.error = "down" if fallback else None
        self.server_timings_ms = {}  # a server without arrival times: the client-side estimator path


class _FakeRunner:
    """Stands in for EdgeRunner: fixed boundary bytes, network time from a simulated link."""

    def __init__(self, nbytes, link, fail=False):
        class _B:
            pass

        self.bundle = _B()
        self.bundle.boundary = [type("BS", (), {"bytes_on_wire": nbytes})()] if nbytes else []
        self.bundle.outputs = [("y", "cloud" if nbytes else "edge")]
        self.bundle.cloud_path = "x" if nbytes else None
        self.server_url = "http://fake" if nbytes else None
        self.nbytes, self.link, self.fail = nbytes, link, fail
        self.calls = 0

    def infer(self, feeds, cloud_deadline_s=None):
        self.calls += 1
        if self.fail:
            raise RuntimeError("boom")
        y = feeds["x"] * 2
        net = 8 * self.nbytes / (1000 * self.link["mbps"]) if self.nbytes else 0.0
        return _FakeResult({"y": y}, net, attempts=1 if self.nbytes else 0)

    def close(self):
        pass


def _fake_dynamic(link, fail_plan=None):
    dr = DynamicRunner.__new__(DynamicRunner)
    dr.bundle = _fake_bundle()
    dr.estimator = BandwidthEstimator(method="ewma", initial_mbps=100.0, alpha=1.0, rtt_ms=0.0, min_bytes=1)
    dr.runners = {k: _FakeRunner(n, link, fail=(k == fail_plan)) for k, n in ((0, 0), (1, 10_000), (2, 100_000))}
    dr.cooldown_s, dr.probe_interval_s, dr.force_plan = 5.0, 0.0, None
    dr._down_until = 0.0
    dr._probe_lock = threading.Lock()
    dr._probing = False
    dr.counts = {k: 0 for k in dr.runners}
    dr._count_lock = threading.Lock()
    dr._base_batch = {"x": 1}
    dr.downlink_min_ms, dr._down_ratio = 50.0, 1.0
    dr.feedback = None
    dr._hedge_model, dr.hedge_plan, dr._pool = None, 0, None  # no latency model: no hedging
    dr.hedge_factor, dr.hedge_slack_ms = 2.0, 50.0
    return dr


def test_dynamic_follows_bandwidth_changes():
    link = {"mbps": 200.0}
    dr = _fake_dynamic(link)
    x = np.ones((1, 3), np.float32)
    r = dr.infer({"x": x})
    assert r.plan == 2 and dr.estimator.mbps == pytest.approx(200.0, rel=1e-2)
    link["mbps"] = 10.0  # the link degrades: the next full-offload request measures it
    assert dr.infer({"x": x}).plan == 2
    assert dr.estimator.mbps == pytest.approx(10.0, rel=1e-2)
    r = dr.infer({"x": x})
    assert r.plan == 1 and r.estimate_mbps == pytest.approx(10.0, rel=1e-2)
    link["mbps"] = 1.0
    dr.infer({"x": x})
    assert dr.infer({"x": x}).plan == 0
    np.testing.assert_array_equal(r.outputs["y"], x * 2)


def test_default_estimator_rides_out_one_stalled_request_and_follows_a_real_drop():
    """The runner with the default (median) estimator: one request whose transfer read 20x too
    slow (a sender stalled mid-body) neither moves the estimate nor the plan; a drop that lasts
    moves both within a window's majority (3 requests); a hedge's bound (trusted) at once."""
    link = {"mbps": 200.0}
    dr = _fake_dynamic(link)
    dr.estimator = BandwidthEstimator(initial_mbps=200.0, rtt_ms=0.0, min_bytes=1)
    assert dr.estimator.method == "median"
    x = np.ones((1, 3), np.float32)
    for _ in range(3):
        assert dr.infer({"x": x}).plan == 2
    runner = dr.runners[2]
    stalled = _FakeResult({"y": x * 2}, 8 * runner.nbytes / (1000 * 10.0))  # read as 10 Mbit/s
    real_infer = runner.infer
    runner.infer = lambda feeds: stalled
    dr.infer({"x": x})
    runner.infer = real_infer
    assert dr.estimator.mbps == pytest.approx(200.0, rel=1e-2) and dr.infer({"x": x}).plan == 2
    link["mbps"] = 10.0
    plans = [dr.infer({"x": x}).plan for _ in range(4)]
    assert plans[:2] == [2, 2] and plans[-1] == 1 and dr.estimator.mbps == pytest.approx(10.0, rel=1e-2)
    dr.estimator.add_sample(0.5, trusted=True)  # e.g. a hedged request's bound
    assert dr.estimator.mbps == 0.5 and dr.infer({"x": x}).plan == 0


def test_slow_response_collapses_the_estimate_at_once():
    """The link drops while a request is in flight: its upload was fast, its response crawls back.
    The response's receive time (receiver side, long enough to time) is a sample of its own."""
    dr = _fake_dynamic({"mbps": 200.0})
    x = np.ones((1, 3), np.float32)
    runner = dr.runners[2]
    slow = _FakeResult({"y": x * 2}, 400.0)
    slow.server_timings_ms = {"client_receive_bytes": 100_000.0, "client_receive_ms": 800.0}  # 1 Mbit/s down
    runner.infer = lambda feeds: slow
    r = dr.infer({"x": x})
    assert r.plan == 2 and dr.estimator.mbps == pytest.approx(1.0)
    assert dr.infer({"x": x}).plan == 0  # the next request stays on the edge
    dr.estimator._est = 200.0
    fast = _FakeResult({"y": x * 2}, 4.0)  # a short read (< downlink_min_ms) is not timed: no sample from it
    fast.server_timings_ms = {"client_receive_bytes": 100_000.0, "client_receive_ms": 10.0}
    runner.infer = lambda feeds: fast
    dr.infer({"x": x})
    assert dr.estimator.mbps == pytest.approx(200.0, rel=1e-3)


def test_dynamic_batch_size_picks_batch_row_and_slices():
    dr = _fake_dynamic({"mbps": 10.0})
    dr.estimator.update(100_000, 80.0)  # 10 Mbit/s
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    r = dr.infer({"x": x})
    assert r.batch_size == 4 and r.plan == 0  # batch-4 row at 10 Mbit/s is all-edge
    np.testing.assert_array_equal(r.outputs["y"], x * 2)


def test_dynamic_never_drops_on_plan_error():
    dr = _fake_dynamic({"mbps": 200.0}, fail_plan=2)
    x = np.ones((1, 3), np.float32)
    r = dr.infer({"x": x})
    assert r.plan == 0 and r.fallback and "boom" in r.error
    np.testing.assert_array_equal(r.outputs["y"], x * 2)
    assert dr.choose(1) == 0  # cooldown: the cloud is avoided for a while
    assert dr.runners[2].calls == 1


def test_dynamic_thread_safe_counts():
    dr = _fake_dynamic({"mbps": 200.0})
    x = np.ones((1, 3), np.float32)
    errors = []

    def work():
        try:
            for _ in range(50):
                np.testing.assert_array_equal(dr.infer({"x": x}).outputs["y"], x * 2)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and sum(dr.counts.values()) == 200


# ----------------------------------------------------------------------------- bundles
@pytest.fixture(scope="module")
def tiny_dynamic(tmp_path_factory):
    graph = onnxsplit.load_graph(str(TINY))
    table, res = build_policy(graph, edge_factor=200.0, rtt_ms=1.0, batch_sizes=(1, 4))
    out = tmp_path_factory.mktemp("dyn") / "bundle"
    manifest = write_dynamic_bundle(graph, table, out, source=TINY,
                                    predicted=(res.problem, res.link, res.objective))
    return out, manifest, table


def test_policy_candidates_bottlenecks():
    graph = onnxsplit.load_graph(str(TINY))
    from onnxsplit.candidates import cut_candidates

    table, _ = build_policy(graph, edge_factor=200.0, candidates="bottlenecks")
    allowed = {c.index for c in cut_candidates(graph) if c.natural_bottleneck or c.compressive_bottleneck}
    allowed |= {0, len(graph.compute_nodes)}
    for row in table.rows:
        assert len(row.plan.edge_nodes) in allowed
        assert tuple(row.plan.edge_nodes) == tuple(range(len(row.plan.edge_nodes)))
    with pytest.raises(onnxsplit.errors.UsageError):
        build_policy(graph, candidates="nope")


def test_write_dynamic_bundle(tiny_dynamic):
    out, manifest, table = tiny_dynamic
    assert manifest["schema"] == "onnxsplit.dynamic/1"
    kinds = [p["kind"] for p in manifest["plans"]]
    assert kinds[0] == "all-edge" and kinds[-1] == "all-cloud" and len(kinds) >= 3
    # the weights are on disk once: every half references weights.bin, a hard link to OUT/weights.bin
    assert manifest["plans_size_bytes"] == sum(p["size_bytes"] for p in manifest["plans"])
    w = manifest["weights"]
    assert w["hard_linked"] is True and w["tensors"] > 0 and w["references"] == sum(
        (p["kind"] != "all-cloud") + (p["kind"] != "all-edge") for p in manifest["plans"])
    master = (out / "weights.bin").stat()
    assert master.st_size == w["nbytes"] and master.st_nlink == 1 + w["references"]
    for half in out.glob("plans/*/*/model.onnx"):
        linked = (half.parent / "weights.bin").stat()
        assert (linked.st_dev, linked.st_ino) == (master.st_dev, master.st_ino)
        m = onnx.load(str(half), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    assert manifest["total_size_bytes"] < manifest["plans_size_bytes"] - (len(manifest["plans"]) - 2) * w["nbytes"]
    assert "hard link" in manifest["weights_note"]
    b = load_dynamic_bundle(out)
    names = {frozenset(p["edge_node_names"]): p["id"] for p in b.plans}
    for row in table.rows:  # every row's plan is a bundle, and the policy points at it
        k = names[frozenset(row.plan.edge_node_names)]
        assert b.lookup(row.from_mbps * 1.0001 if row.from_mbps else 1e-3, row.batch_size) == k
    from onnxsplit.runtime import load_bundle

    for p in b.plans:
        load_bundle(b.plan_dir(p["id"]))


def _has_server() -> bool:
    return importlib.util.find_spec("onnxsplit.runtime.server") is not None


@pytest.mark.skipif(not _has_server(), reason="onnxsplit.runtime.server not importable")
def test_loopback_dynamic_runner_exact(tiny_dynamic):
    import onnxruntime as ort

    from onnxsplit.dynamic import serve_plans

    out, manifest, _ = tiny_dynamic
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref_sess = ort.InferenceSession(str(TINY), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = ref_sess.run(None, {"image": x})[0]
    split_plans = [p["id"] for p in manifest["plans"] if p["kind"] != "all-edge"]
    # feedback off: this forces estimates to make the table switch plans (feedback would correct the
    # test bundle's predictions, made for a 200x slower edge, with the loopback's real latencies)
    with serve_plans(out, optimize=False) as sp, DynamicRunner(out, sp.urls, optimize=False, feedback=False) as dr:
        seen = set()
        for mbps in (0.01, 3.0, 1e4, 0.01):  # switch plans between requests
            dr.estimator._est = mbps
            r = dr.infer({"image": x})
            seen.add(r.plan)
            assert not r.fallback
            np.testing.assert_array_equal(r.outputs[next(iter(r.outputs))], ref)
            if r.results[0].attempts:  # the client timed its own receipt of the binary outputs (downlink samples)
                srv = r.results[0].server_timings_ms
                assert srv["client_receive_bytes"] == ref.nbytes and srv["client_receive_ms"] >= 0
        assert len(seen) >= 2
        assert dr.estimator.samples + (1 if dr.estimator._rtt_min is not None else 0) >= 1
        # the cloud of one plan dies: requests still succeed, bit-identical
        k = split_plans[-1]
        sp.servers[k].stop()
        dr.estimator._est = 1e4
        r = dr.infer({"image": x})
        # the retries outlast the hedging deadline (2 x predicted + 50 ms): answered by the local plan
        # either way (hedged, or the plan's own fallback when the retries ended first)
        assert r.fallback or r.hedged_from == k
        np.testing.assert_array_equal(r.outputs[next(iter(r.outputs))], ref)


@pytest.mark.skipif(not _has_server(), reason="onnxsplit.runtime.server not importable")
def test_one_server_serves_every_plan(tiny_dynamic):
    """`onnxsplit serve DYNAMIC_OUT`: one process, one port, each plan's cloud half under its own name."""
    import urllib.error
    import urllib.request

    from onnxsplit.runtime import EdgeRunner, load_bundle
    from onnxsplit.runtime.server import CloudServer

    out, manifest, _ = tiny_dynamic
    served = [p["id"] for p in manifest["plans"] if p["kind"] != "all-edge"]
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with CloudServer(out, port=0, optimize=False) as srv:
        names = {load_bundle(out / "plans" / str(k)).model_name for k in served}
        assert set(srv.models) == names and len(names) == len(served)
        req = urllib.request.Request(f"{srv.url}/v2/repository/index", data=b"", method="POST")
        index = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert {m["name"] for m in index} == names and {m["state"] for m in index} == {"READY"}
        for k in served:  # every plan answers through the same URL, bit-identical to running it locally
            with EdgeRunner(out / "plans" / str(k), srv.url, optimize=False) as r:
                res = r.infer({"image": x})
                assert not res.fallback
                local = load_bundle(out / "plans" / str(k))
            with EdgeRunner(local, None, optimize=False) as r:
                ref = r.infer({"image": x})
            for name in ref.outputs:
                np.testing.assert_array_equal(res.outputs[name], ref.outputs[name])
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"{srv.url}/v2/models/nope", timeout=10)
        body = json.loads(exc.value.read())["error"]
        assert exc.value.code == 404 and all(n in body for n in names)


def test_serve_cli_lists_every_plan_and_refuses_an_edge_only_bundle(tiny_dynamic):
    out, manifest, _ = tiny_dynamic
    p = subprocess.Popen([sys.executable, "-m", "onnxsplit", "serve", str(out), "--port", "0", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        doc = json.loads(p.stdout.readline())
        assert doc["event"] == "listening"
        assert len(doc["models"]) == sum(pl["kind"] != "all-edge" for pl in manifest["plans"])
    finally:
        p.terminate()
        p.wait(10)
    r = subprocess.run([sys.executable, "-m", "onnxsplit", "serve", str(out / "plans" / "0"), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "has no cloud model" in r.stderr


# ----------------------------------------------------------------------------- int8 plans + probe endpoint
def test_policy_from_predictions_picks_lowest_and_merges_rows():
    from onnxsplit.dynamic_bundle import policy_from_predictions

    grid = [1.0, 10.0, 100.0, 1000.0]
    entries = [
        {"id": 0, "uplink_bytes": 0, "predicted_ms": {"1": 5.0, "10": 5.0, "100": 5.0, "1000": 5.0}},
        {"id": 1, "uplink_bytes": 1000, "predicted_ms": {"1": 90.0, "10": 9.0, "100": 3.0, "1000": 2.0}},
        {"id": 2, "uplink_bytes": 0, "predicted_ms": {"1": 4.0, "10": 4.0, "100": 4.0, "1000": 4.0}},
        {"id": 3, "uplink_bytes": 500, "predicted_ms": {"1": 50.0, "10": 5.0, "100": 3.0, "1000": 2.0}},
    ]
    rows = policy_from_predictions(entries, grid)
    assert [(r["from_mbps"], r["to_mbps"], r["plan"]) for r in rows] == [(0.0, 100.0, 2), (100.0, None, 3)]
    assert rows[1]["predicted_ms"] == 3.0  # tie with plan 1 at 100: fewer uplink bytes wins
    with pytest.raises(onnxsplit.errors.UsageError, match="no plan has a prediction"):
        policy_from_predictions([{"id": 0, "uplink_bytes": 0, "predicted_ms": {}}], grid)


def test_quantized_plan_in_dynamic_policy(tmp_path):
    from onnxsplit.quant.calib import synthetic_calibration
    from onnxsplit.quant.quantize import quantize_split
    from onnxsplit.split import split_model

    graph = onnxsplit.load_graph(str(TINY))
    table, res = build_policy(graph, edge_factor=200.0, rtt_ms=1.0)
    qs = quantize_split(split_model(graph, [n.name for n in graph.compute_nodes]), synthetic_calibration(graph, samples=8))
    assert qs.edge_precision == "int8" and qs.cloud is None
    grid = [f"{g:g}" for g in table.bandwidths_mbps]
    fast = {g: 1e-3 for g in grid}  # predicted faster than every fp32 plan everywhere
    with pytest.raises(onnxsplit.errors.UsageError, match="predicted latencies"):
        write_dynamic_bundle(graph, table, tmp_path / "bad", source=TINY, quantized_plans=[("int8", qs, {}, fast)],
                             quantized_policy=True)
    pred = (res.problem, res.link, res.objective)
    m = write_dynamic_bundle(graph, table, tmp_path / "nob", source=TINY, predicted=pred,
                             quantized_plans=[("posthoc", qs, {"edge_precision": "int8"}, fast)], quantized_policy=True)
    assert m["plans"][-1]["id"] not in {r.plan for r in load_dynamic_bundle(tmp_path / "nob").policy}  # not within budget
    m = write_dynamic_bundle(graph, table, tmp_path / "q", source=TINY, predicted=pred, quantized_policy=True,
                             quantized_plans=[("all-edge-int8", qs, {"edge_precision": "int8", "within_budget": True}, fast)])
    q = m["plans"][-1]
    assert q["precision"] == "int8" and q["label"] == "all-edge-int8" and q["kind"] == "all-edge"
    assert m["plans"][m["all_cloud_plan"]]["kind"] == "all-cloud" and m["plans"][0]["precision"] == "fp32"
    b = load_dynamic_bundle(tmp_path / "q")
    assert {b.lookup(x) for x in (0.01, 1.0, 1e4)} == {q["id"]}
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(str(TINY), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with DynamicRunner(tmp_path / "q", None, probe_on_start=False) as dr:
        r = dr.infer({"image": x})
    assert r.plan == q["id"] and not r.fallback
    got = r.outputs[next(iter(r.outputs))]
    cos = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert cos > 0.98, cos


@pytest.mark.skipif(not _has_server(), reason="onnxsplit.runtime.server not importable")
def test_probe_endpoint_and_runner_probe(tiny_dynamic):
    from onnxsplit.runtime import CloudServer, EdgeRunner, RemoteError

    out, manifest, _ = tiny_dynamic
    cloud = next(p["id"] for p in manifest["plans"] if p["kind"] == "all-cloud")
    b = load_dynamic_bundle(out)
    srv = CloudServer(b.plan_dir(cloud), port=0, max_request_bytes=4_000_000).start()
    try:
        with EdgeRunner(b.plan_dir(cloud), srv.url) as er:
            assert er.probe_network(150_000) > 0
            assert er.probe_network(150_000) > 0  # the keep-alive connection stays usable
            with pytest.raises(RemoteError) as ei:
                er.probe_network(4_000_001)
            assert ei.value.status == 413
        with DynamicRunner(out, {cloud: srv.url}, plans=[cloud], probe_on_start=False, probe_max_bytes=3_000_000) as dr:
            assert dr.probe_bytes() == 4 * 10 * 125 * 8  # 4 x the 10 Mbit/s initial estimate, 8 ms
            dr.estimator._est = 0.1
            assert dr.probe_bytes() == dr.estimator.min_bytes
            dr.estimator._est = 1e4
            assert dr.probe_bytes() == 3_000_000  # capped (3 MB: milliseconds even on loopback)
            before = dr.estimator.samples
            est = dr.probe()
            assert dr.estimator.samples == before + 1 and est > 0 and dr._probe_endpoint
    finally:
        srv.stop()


def test_server_reports_when_a_paced_body_arrived(tiny_dynamic):
    """A sender that trickles 8 kB every 5 ms: the probe answer and an inference response report the
    arrival rate of the body's tail (not the sender's clock)."""
    import socket

    from onnxsplit.dynamic import receiver_rate
    from onnxsplit.runtime import CloudServer

    out, manifest, _ = tiny_dynamic
    cloud = next(p["id"] for p in manifest["plans"] if p["kind"] == "all-cloud")
    with CloudServer(load_dynamic_bundle(out).plan_dir(cloud), port=0) as srv:
        chunk, n_chunks, gap_s = 8192, 8, 0.005
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(f"POST /v2/onnxsplit/probe HTTP/1.1\r\nHost: x\r\nContent-Length: {chunk * n_chunks}\r\n\r\n"
                         .encode())
            for _ in range(n_chunks):
                time.sleep(gap_s)
                sock.sendall(bytes(chunk))
            reply = b""
            while b"}" not in reply:
                reply += sock.recv(4096)
        answer = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert answer["received_bytes"] == chunk * n_chunks
        # after the read that crossed the first quarter (2 chunks; 3 if the server thread started late)
        assert answer["receive_bytes"] in (5 * chunk, 6 * chunk)
        mbps = receiver_rate(answer["receive_bytes"], answer["receive_ms"])
        assert mbps == pytest.approx(8 * chunk / (1000 * gap_s * 1e3), rel=0.35)
        # a real inference request reports its arrival too
        from onnxsplit.runtime import EdgeRunner

        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        with EdgeRunner(load_dynamic_bundle(out).plan_dir(cloud), srv.url) as er:
            res = er.infer({"image": x})
        assert "server_receive_bytes" in res.server_timings_ms and "server_receive_ms" in res.server_timings_ms


# ----------------------------------------------------------------------------- netns smoke test
def _netns_skip_reason() -> str | None:
    sys.path.insert(0, str(ROOT))
    try:
        from tools.testbed.netns import available
    finally:
        sys.path.remove(str(ROOT))
    reason = available()
    if reason:
        return reason
    if not _has_server():
        return "onnxsplit.runtime.server not importable"
    return None


def test_netns_testbed_smoke(tmp_path):
    reason = _netns_skip_reason()
    if reason:
        pytest.skip(reason)
    sys.path.insert(0, str(ROOT))
    try:
        from tools.testbed.netns import Testbed
    finally:
        sys.path.remove(str(ROOT))
    with Testbed(tag="t") as tb:
        try:
            tb.set_link(rate_mbps=50.0, rtt_ms=2.0)
        except RuntimeError as exc:  # a kernel with neither sch_netem nor sch_tbf
            pytest.skip(f"no link shaping here: {exc}")
        r = tb.exec_edge([sys.executable, "-c", "import socket; print('ok')"], capture=True)
        assert r.stdout.strip() == "ok"
        srv = tb.spawn_cloud([sys.executable, "-m", "http.server", "8123", "--bind", tb.cloud_ip],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert tb.wait_port(tb.cloud_ip, 8123, timeout_s=10)
        r = tb.exec_edge([sys.executable, "-c",
                          f"import urllib.request;print(urllib.request.urlopen('http://{tb.cloud_ip}:8123/', timeout=5).status)"],
                         capture=True)
        assert r.stdout.strip() == "200"
        if not tb.link_mode.startswith("netem"):  # no sch_netem here: the userspace relay adds the delay
            tb.start_delay_proxy({8124: 8123}, rtt_ms=200.0)
            assert "relay delay 100.0ms" in tb.set_link(rate_mbps=50.0, rtt_ms=200.0)
            code = ("import time,urllib.request;t=time.perf_counter();"
                    f"urllib.request.urlopen('http://{tb.cloud_ip}:8124/', timeout=10).read();"
                    "print((time.perf_counter()-t)*1e3)")
            ms = float(tb.exec_edge([sys.executable, "-c", code], capture=True).stdout)
            assert 200.0 <= ms < 5000.0, ms  # at least one round trip of 2 x 100 ms
        srv.terminate()
    assert not tb.alive()


@pytest.mark.slow
def test_bench_e2e_tiny_run(tmp_path):
    """tools/bench_e2e.py end to end on a tiny model: every method measured, the trace, the files."""
    reason = _netns_skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "e2e"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_e2e.py"), str(TINY), "--bandwidths", "2,200mbps",
                        "--requests", "3", "--budget-s", "1", "--trace", "200:1,2:1", "--rtt", "4", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    for method in ("all-edge", "all-cloud", "chain", "mincut", "mincut+int8", "onnxsplit", "onnxsplit measured",
                   "dynamic", "oracle"):
        assert set(res["summary"][method]) == {"2", "200"}, method
    assert set(res["trace"]) == {str(p["id"]) for p in res["plans"]} | {"dynamic"}
    assert all(len(t["lat"]) >= 1 for t in res["trace"].values())
    assert any(p["precision"] == "int8" for p in res["plans"])
    cal = res["calibration"]
    assert cal["edge_factor"] > 0 and cal["per_request_cpu_ms"] > 0 and cal["edge_fp32_cpu_ms"] > 0
    if res["cpu_mode"].startswith("cgroup"):  # the default --edge-model quota: the CFS quota model, per-request cost split
        assert cal["edge_quota"]["quota_ms"] == pytest.approx(0.1 * cal["edge_quota"]["period_ms"])
        assert cal["edge_quota"]["request_cpu_ms"] == cal["per_request_cpu_ms"] and 0 <= cal["per_request_ms"] < cal["per_request_mean_ms"]
        assert res["plans"] and json.loads((out / "bundle" / "manifest.json").read_text())["link"]["edge_quota"] == cal["edge_quota"]
    else:
        assert cal["per_request_ms"] > 0
    assert "onnxsplit / oracle" in (out / "table.md").read_text() and "dynamic / oracle" in (out / "table.md").read_text()
    assert set(res["dynamic_over_oracle"]) == {"2", "200"}
    ts = res["trace_summary"]
    assert len(ts["dynamic_over_phase_best"]) == len(res["trace_schedule"]) and all(r > 0 for r in ts["dynamic_over_phase_best"])
    assert "dynamic / best plan of each phase" in (out / "table.md").read_text()
    # the plans' halves were timed in their namespaces and the bundle's policy recomputed from them
    half = res["plan_timings"]["half_ms"]
    assert set(half) == {str(p["id"]) for p in res["plans"]}
    assert all(v["edge_ms"] > 0 for k, v in half.items() if res["plans"][int(k)]["kind"] != "all-cloud")
    assert json.loads((out / "bundle" / "policy.json").read_text())["measured"]["edge"]["file"] == "timings_edge.json"
    assert set(res["measured_over_oracle"]) == {"2", "200"}


# ----------------------------------------------------------------------------- feedback
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from onnxsplit.dynamic import PlanFeedback  # noqa: E402


def _run_feedback(fb: PlanFeedback, true_ms: dict[int, float], mbps: float, n: int, table: int,
                  sticky: bool = False) -> list[int]:
    """n requests at a fixed bandwidth; each plan really takes true_ms[k]. Returns the plans run.
    ``sticky``: the last plan is the incumbent (hysteresis), as DynamicRunner passes it."""
    used: list[int] = []
    for i in range(n):
        k = fb.choose(mbps, table, now=float(i), incumbent=used[-1] if sticky and used else None)
        fb.observe(k, mbps, true_ms[k], now=float(i))
        used.append(k)
    return used


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 50.0), st.floats(0.0, 200.0), st.floats(0.0, 40.0)), min_size=1, max_size=7),
       st.sampled_from([1.0, 10.0, 100.0, 1000.0]), st.sampled_from([0.0, 0.05]))
def test_feedback_with_optimistic_predictions_finds_the_fastest_plan(plans, mbps, hysteresis):
    """Predictions a + b/bw that are never above the truth (real latency = prediction + extra):
    after at most min_count (2) tries of each plan, the runner settles on the truly fastest plan
    (with hysteresis h and the last plan as the incumbent: on one at most 1 / (1 - h) times slower)."""
    terms = {k: (a, b) for k, (a, b, _) in enumerate(plans)}
    fb = PlanFeedback(terms, margin=0.0, hysteresis=hysteresis, retry_after=1000, retry_max=1000)  # no re-tries here
    true_ms = {k: fb.predict(k, mbps) + extra for k, (_, _, extra) in enumerate(plans)}
    table = min(terms, key=lambda k: (fb.predict(k, mbps), k))  # what the table would pick
    used = _run_feedback(fb, true_ms, mbps, n=2 * len(plans) + 3, table=table, sticky=hysteresis > 0)
    best = min(true_ms.values())
    assert true_ms[used[-1]] <= best / (1 - hysteresis) + 1e-9
    if not hysteresis:
        assert true_ms[used[-1]] == pytest.approx(best)
    assert len(set(used)) <= len(plans) and used[-3:] == [used[-1]] * 3  # settled, no flapping


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 50.0), st.floats(0.0, 200.0), st.floats(-20.0, 40.0)), min_size=1, max_size=7),
       st.sampled_from([1.0, 10.0, 100.0, 1000.0]), st.sampled_from([0.0, 0.03, 0.1]), st.sampled_from([0.0, 0.05]))
def test_feedback_never_settles_worse_than_the_table_plan(plans, mbps, margin, hysteresis):
    """Any predictions (some plans faster than predicted): the plan it settles on is at most
    `margin` slower than the table's plan really is (with hysteresis and the last plan as the
    incumbent: at most (1 + margin) / (1 - hysteresis) times)."""
    terms = {k: (a, b) for k, (a, b, _) in enumerate(plans)}
    fb = PlanFeedback(terms, margin=margin, hysteresis=hysteresis, retry_after=1000, retry_max=1000)  # no re-tries here
    true_ms = {k: max(0.1, fb.predict(k, mbps) + extra) for k, (_, _, extra) in enumerate(plans)}
    table = min(terms, key=lambda k: (fb.predict(k, mbps), k))
    used = _run_feedback(fb, true_ms, mbps, n=3 * len(plans) + 3, table=table, sticky=hysteresis > 0)
    assert true_ms[used[-1]] <= true_ms[table] * (1 + margin) / (1 - hysteresis) + 1e-9
    assert used[-1] == used[-2]


def test_hysteresis_keeps_the_last_plan_while_the_estimate_jitters():
    """Two plans predicted within 2 % of each other around 1000 Mbit/s: an estimate jittering
    between 500 and 4000 flips the choice without an incumbent, never with one; a plan better by
    more than the hysteresis (the link dropped) still wins at once."""
    fb = PlanFeedback({1: (15.0, 800.0), 3: (15.6, 200.0), 4: (40.0, 0.0)}, hysteresis=0.05)
    jitter = [500.0, 4000.0] * 4
    free = [fb.choose(m, 3 if fb.predict(3, m) < fb.predict(1, m) else 1) for m in jitter]
    assert len(set(free)) == 2
    last, sticky = 1, []
    for m in jitter:
        last = fb.choose(m, 3 if fb.predict(3, m) < fb.predict(1, m) else 1, incumbent=last)
        sticky.append(last)
    assert sticky == [1] * len(jitter)
    assert fb.choose(1.0, 4, incumbent=1) == 4  # at 1 Mbit/s plan 1 is predicted 815 ms: leave it
    with pytest.raises(onnxsplit.errors.UsageError):
        PlanFeedback({1: (1.0, 1.0)}, hysteresis=1.0)


def test_an_abandoned_plan_is_retried_after_a_slow_spell_and_backs_off_while_it_stays_slow():
    """Plan 5 (the table's, 20 ms) reads 35 ms during a spell of 6 requests and the runner moves to
    plan 7 (26 ms): after ``retry_after`` requests there plan 5 is tried again and, the spell over,
    kept. A plan really slower than predicted is re-tried after 20, 40, 80, ... requests elsewhere,
    min_count (2) requests each time, so it costs a few percent of the requests, not its residuals'
    whole lifetime of ``max_age_s``."""
    terms = {5: (20.0, 0.0), 7: (26.0, 0.0)}
    fb = PlanFeedback(terms, retry_after=20, hysteresis=0.05)
    used: list[int] = []
    for i in range(200):
        k = fb.choose(100.0, 5, now=float(i), incumbent=used[-1] if used else None)
        spell = 10 <= i < 16
        fb.observe(k, 100.0, {5: 35.0 if spell else 20.0, 7: 26.0}[k], now=float(i))
        used.append(k)
    assert used[:10] == [5] * 10 and 7 in used[10:20]  # the spell sends it to plan 7 ...
    left = used.index(7)
    back = used.index(5, left)
    assert back - left == 21  # ... and it comes back after 20 recorded requests elsewhere
    assert used[back:] == [5] * (200 - back)
    # without the re-try (the old behaviour) it stays on plan 7 for max_age_s
    fb_old = PlanFeedback(terms, retry_after=10_000, retry_max=10_000, hysteresis=0.05)
    used_old: list[int] = []
    for i in range(50):
        k = fb_old.choose(100.0, 5, now=float(i), incumbent=used_old[-1] if used_old else None)
        fb_old.observe(k, 100.0, {5: 35.0 if 10 <= i < 16 else 20.0, 7: 26.0}[k], now=float(i))
        used_old.append(k)
    assert used_old[-30:] == [7] * 30
    # plan 5 always 35 ms (predicted 20): re-tries back off exponentially
    fb2 = PlanFeedback(terms, retry_after=20, retry_max=640, hysteresis=0.05)
    used2: list[int] = []
    for i in range(1000):
        k = fb2.choose(100.0, 5, now=i * 0.01, incumbent=used2[-1] if used2 else None)
        fb2.observe(k, 100.0, {5: 35.0, 7: 26.0}[k], now=i * 0.01)
        used2.append(k)
    starts = [i for i in range(1, 1000) if used2[i] == 5 and used2[i - 1] == 7]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 5 and all(g2 > 1.8 * g1 for g1, g2 in zip(gaps, gaps[1:])), (starts, gaps)
    assert used2.count(5) <= 2 + 2 * len(starts)  # min_count requests per try
    with pytest.raises(onnxsplit.errors.UsageError):
        PlanFeedback(terms, retry_after=0)
    with pytest.raises(onnxsplit.errors.UsageError):
        PlanFeedback(terms, retry_after=50, retry_max=20)


def test_feedback_is_local_in_bandwidth_and_time_and_robust_to_one_outlier():
    fb = PlanFeedback({0: (40.0, 0.0), 1: (10.0, 1000.0), 2: (12.0, 500.0)}, window=5, min_count=1, max_age_s=60.0)
    # at 1000 Mbit/s plan 1 is predicted 11 ms, plan 2 12.5 ms; plan 1 really stalls (+8 ms)
    assert fb.choose(1000.0, 1, now=0.0) == 1
    fb.observe(1, 1000.0, 19.0, now=0.0)
    assert fb.residual(1, 1000.0, now=0.0) == pytest.approx(8.0)
    assert fb.choose(1000.0, 1, now=1.0) == 2
    assert fb.choose(1200.0, 1, now=1.0) == 2  # within the bandwidth factor: the residual applies
    assert fb.choose(10000.0, 1, now=1.0) == 1  # 10x away: the prediction alone (no residual there)
    assert fb.choose(1000.0, 1, now=100.0) == 1  # the residual is older than max_age_s: plan 1 again
    # a plan that moves few bytes: its latency model hardly changes between 400 and 4000 Mbit/s
    # (a fast link's estimate jitters that much), so a residual seen at one applies at the other
    fb3 = PlanFeedback({1: (15.0, 100.0), 2: (15.0, 20000.0)}, min_count=1)
    assert fb3.near(1, 400.0, 4000.0) and not fb3.near(2, 400.0, 4000.0)
    fb3.observe(1, 400.0, 30.0, now=0.0)
    fb3.observe(2, 400.0, 30.0, now=0.0)
    assert fb3.residual(1, 4000.0, now=0.0) == pytest.approx(30.0 - 15.25)
    assert fb3.residual(2, 4000.0, now=0.0) is None
    # a plan with a few on-prediction requests keeps its place after one slow outlier (median)
    fb2 = PlanFeedback({0: (40.0, 0.0), 1: (10.0, 1000.0), 2: (12.0, 500.0)})
    fb2.observe(1, 1000.0, 60.0, now=0.0)  # one slow request alone is not a residual (min_count 2)
    assert fb2.residual(1, 1000.0, now=0.0) is None and fb2.choose(1000.0, 1, now=0.0) == 1
    for t in range(1, 4):
        fb2.observe(1, 1000.0, 11.0, now=float(t))
    fb2.observe(1, 1000.0, 60.0, now=4.0)
    assert fb2.residual(1, 1000.0, now=5.0) == pytest.approx(0.0)  # median of 49, 0, 0, 0, 49
    assert fb2.choose(1000.0, 1, now=5.0) == 1
    # only given (candidate) and allowed plans are chosen; unknown plans are not recorded
    fb.observe(7, 1000.0, 1.0)
    assert 7 not in fb._obs
    assert fb.choose(1000.0, 1, allowed={0, 1}, now=1.0) == 1
    with pytest.raises(onnxsplit.errors.UsageError):
        PlanFeedback({0: (1.0, 0.0)}, margin=1.0)
    with pytest.raises(onnxsplit.errors.UsageError):
        PlanFeedback({0: (1.0, 0.0)}, min_count=6, window=5)


class _SleepyRunner(_FakeRunner):
    def __init__(self, nbytes, link, sleep_s):
        super().__init__(nbytes, link)
        self.sleep_s = sleep_s

    def infer(self, feeds, cloud_deadline_s=None):
        if cloud_deadline_s is not None and self.nbytes and self.sleep_s > cloud_deadline_s:
            from onnxsplit.runtime.client import DeadlineExceeded

            time.sleep(cloud_deadline_s)  # the edge runner stops the round trip at its deadline
            self.stopped = getattr(self, "stopped", 0) + 1
            raise DeadlineExceeded("no answer within the deadline", elapsed_ms=cloud_deadline_s * 1e3,
                                   body_nbytes=self.nbytes, sent_nbytes=self.nbytes // 2)
        time.sleep(self.sleep_s)
        return super().infer(feeds)


def test_dynamic_runner_leaves_a_plan_that_is_slower_than_its_model():
    """At 200 Mbit/s the table says full offload (plan 2); its requests really take 60 ms (a stall
    the additive model does not see): after two of them (min_count) the runner moves to the split plan."""
    dr = _fake_dynamic({"mbps": 200.0})
    dr.runners[2] = _SleepyRunner(100_000, {"mbps": 200.0}, 0.06)
    dr.feedback = PlanFeedback({0: (40.0, 0.0), 1: (3.0, 80.0), 2: (2.0, 0.0)})
    dr.estimator.add_sample(200.0)
    x = np.ones((1, 3), np.float32)
    plans = [dr.infer({"x": x}).plan for _ in range(5)]
    assert plans == [2, 2, 1, 1, 1]
    assert dr.feedback.residual(2, 200.0) > 40.0
    r = dr.infer({"x": x})
    np.testing.assert_array_equal(r.outputs["y"], x * 2)
    # a batch of 4 uses the table's batch-4 row, untouched by batch-1 feedback
    assert dr.infer({"x": np.ones((4, 3), np.float32)}).plan == dr.bundle.lookup(200.0, 4)
    dr.feedback = None
    assert dr.infer({"x": x}).plan == 2  # without feedback: the table


def test_the_first_request_after_a_switch_is_not_a_feedback_residual():
    """A switch costs its first request (on the testbed 20-25 ms: a plan's first request after a
    while); recording it banned a plan for the feedback's max_age_s after one unlucky try. Only
    requests whose plan is the previous request's plan, and that do not follow a pause, are
    residuals."""
    link = {"mbps": 200.0}
    dr = _fake_dynamic(link)
    dr.feedback = PlanFeedback({0: (40.0, 0.0), 1: (3.0, 80.0), 2: (2.0, 100.0)}, min_count=1)
    x = np.ones((1, 3), np.float32)
    dr.estimator.add_sample(200.0)
    assert dr.infer({"x": x}).plan == 2  # the first request of the runner: a residual
    link["mbps"] = 5.0
    dr.infer({"x": x})  # plan 2 again (chosen at 200): it reveals the drop, not a residual either
    assert dr.infer({"x": x}).plan == 1  # switched: cold
    assert len(dr.feedback._obs[1]) == 0
    assert dr.infer({"x": x}).plan == 1 and len(dr.feedback._obs[1]) == 1  # warm
    link["mbps"] = 200.0
    dr.estimator.add_sample(200.0, trusted=True)
    n2 = len(dr.feedback._obs[2])
    assert dr.infer({"x": x}).plan == 2 and len(dr.feedback._obs[2]) == n2  # cold again
    assert dr.infer({"x": x}).plan == 2 and len(dr.feedback._obs[2]) == n2 + 1
    dr.cold_after_s = 0.05  # a pause (> cold_after_s and > 4x the previous idle time): cold too
    time.sleep(0.1)
    assert dr.infer({"x": x}).plan == 2 and len(dr.feedback._obs[2]) == n2 + 1
    assert dr.infer({"x": x}).plan == 2 and len(dr.feedback._obs[2]) == n2 + 2
    # ... but a client that always pauses that long: its requests are residuals after the first
    for i in range(3):
        time.sleep(0.1)
        dr.infer({"x": x})
    assert len(dr.feedback._obs[2]) == n2 + 4


def test_runner_feedback_terms_come_from_the_bundle(tiny_dynamic):
    from onnxsplit.plan_timing import bundle_plan_terms

    out, manifest, _ = tiny_dynamic
    b = load_dynamic_bundle(out)
    terms = bundle_plan_terms(b)
    cands = {int(p["id"]) for p in manifest["plans"] if p["policy_candidate"]}
    assert set(terms) == cands
    for p in manifest["plans"]:  # the fit reproduces every predicted grid latency
        a, bb = terms[int(p["id"])]
        for g, ms in p["predicted_ms"].items():
            assert a + bb / float(g) == pytest.approx(ms, rel=1e-4, abs=1e-6)  # keys are rounded to 6 digits
    with DynamicRunner(out, None, probe_on_start=False) as dr:
        assert dr.feedback is not None and set(dr.feedback.terms) == cands
    with DynamicRunner(out, None, probe_on_start=False, feedback=False) as dr:
        assert dr.feedback is None


def test_a_request_that_reveals_a_link_change_is_not_a_residual():
    """The link drops to 1 Mbit/s while plan 2 (full offload) is in flight: that request's latency
    says nothing about plan 2 at the old estimate, so feedback does not record it."""
    dr = _fake_dynamic({"mbps": 200.0})
    dr.feedback = PlanFeedback({0: (40.0, 0.0), 1: (3.0, 80.0), 2: (2.0, 100.0)}, min_count=1)
    dr.estimator.add_sample(200.0)
    x = np.ones((1, 3), np.float32)
    assert dr.infer({"x": x}).plan == 2 and dr.feedback.residual(2, 200.0) is not None
    dr.runners[2].link["mbps"] = 1.0
    n = len(dr.feedback._obs[2])
    assert dr.infer({"x": x}).plan == 2 and dr.estimator.mbps == pytest.approx(1.0, rel=1e-2)
    assert len(dr.feedback._obs[2]) == n


def test_a_collapse_is_checked_by_a_probe_at_once():
    """A request reads the link at a fifth of the estimate (e.g. its sender stalled mid-body): the
    estimate collapses for the next requests and a probe starts at once, not a probe interval later."""
    dr = _fake_dynamic({"mbps": 200.0})
    dr.probe_interval_s = 60.0
    probes = []
    done = threading.Event()
    dr.probe = lambda: (probes.append(dr.estimator.mbps), done.set())
    x = np.ones((1, 3), np.float32)
    dr.infer({"x": x})
    assert dr.estimator.mbps == pytest.approx(200.0, rel=1e-2) and not probes  # fresh estimate: no probe
    dr.runners[2].link["mbps"] = 10.0
    dr.infer({"x": x})
    assert done.wait(5.0) and probes == [pytest.approx(10.0, rel=1e-2)]
    dr.probe_interval_s = 0.0  # probes off: never, not even after a collapse
    dr.estimator.add_sample(200.0, trusted=True)
    dr.infer({"x": x})
    assert len(probes) == 1


def test_a_request_sent_on_a_stale_estimate_is_hedged_locally():
    """The link drops from 200 to 1 Mbit/s between two requests: the next full-offload request would
    take ~800 ms. Its cloud round trip is stopped at its deadline (2 x 2.5 ms predicted + 50 ms) and
    the runner answers with the local plan instead, taking the unanswered body as a bandwidth bound
    (a collapse), so the next request does not send everything again."""
    link = {"mbps": 200.0}
    dr = _fake_dynamic(link)
    dr._hedge_model = PlanFeedback({0: (40.0, 0.0), 1: (3.0, 80.0), 2: (2.0, 100.0)})
    slow = _SleepyRunner(100_000, link, 0.0)
    dr.runners[2] = slow
    dr.estimator.add_sample(200.0)
    x = np.ones((1, 3), np.float32)
    assert dr.deadline_ms(2, 200.0) == pytest.approx(2 * 2.5 + 50.0)
    assert dr.deadline_ms(0, 200.0) is None  # the local plan itself is never hedged
    r = dr.infer({"x": x})
    assert r.plan == 2 and r.hedged_from is None  # in time: not hedged
    link["mbps"], slow.sleep_s = 1.0, 0.8
    t = time.perf_counter()
    r = dr.infer({"x": x})
    took_ms = (time.perf_counter() - t) * 1e3
    assert r.hedged_from == 2 and r.plan == dr.hedge_plan == 0 and not r.fallback and slow.stopped == 1
    assert 50.0 <= took_ms < 500.0
    np.testing.assert_array_equal(r.outputs["y"], x * 2)
    assert dr.estimator.mbps == pytest.approx(8 * 100_000 / (1000 * 55.0), rel=1e-3)  # the bound of the unanswered body
    assert dr.infer({"x": x}).plan == 1  # the next request no longer sends everything
    assert dr.feedback is None or all(not v for v in dr.feedback._obs.values())


class _SlowAnswerRunner(_SleepyRunner):
    """The body gets through, the answer (``resp`` bytes announced) trickles: ``rx`` of them in ``rx_ms``."""

    def __init__(self, nbytes, link, resp, rx, rx_ms):
        super().__init__(nbytes, link, 10.0)
        self.resp, self.rx, self.rx_ms = resp, rx, rx_ms

    def infer(self, feeds, cloud_deadline_s=None):
        from onnxsplit.runtime.client import DeadlineExceeded

        assert cloud_deadline_s is not None
        raise DeadlineExceeded("no answer within the deadline", elapsed_ms=cloud_deadline_s * 1e3,
                               body_nbytes=self.nbytes, sent_nbytes=self.nbytes, recv_nbytes=self.rx,
                               recv_ms=self.rx_ms, resp_nbytes=self.resp)


@pytest.mark.parametrize("rx, rx_ms, want_mbps", [
    (20_000, 100.0, 8 * 20_000 / (1000 * 100.0)),  # enough received, long enough: its own rate
    (1_000, 40.0, 8 * 200_000 / (1000 * 40.0)),  # too little to be a sample: the bound of all announced bytes
])
def test_a_hedge_during_a_slow_answer_bounds_the_downlink_not_the_uplink(rx, rx_ms, want_mbps):
    """Deadline hit while the answer was arriving (the body got through): the sample is the downlink's
    (over the bundle's down/up ratio, 1 here), not the uplink bound of the body (which would read
    8 * 100 KB / 55 ms = 14.5 Mbit/s); the request is answered locally all the same."""
    link = {"mbps": 200.0}
    dr = _fake_dynamic(link)
    dr._hedge_model = PlanFeedback({0: (40.0, 0.0), 1: (3.0, 80.0), 2: (2.0, 100.0)})
    dr.runners[2] = _SlowAnswerRunner(100_000, link, 200_000, rx, rx_ms)
    dr.estimator.add_sample(200.0)
    x = np.ones((1, 3), np.float32)
    r = dr.infer({"x": x})
    assert r.hedged_from == 2 and r.plan == 0 and not r.fallback
    np.testing.assert_array_equal(r.outputs["y"], x * 2)
    assert dr.estimator.mbps == pytest.approx(want_mbps, rel=1e-6)


def test_hedging_off_and_failures_still_never_drop():
    """hedge=False (no latency model for deadlines): the slow request runs to its end; a plan that
    fails inside the hedging worker is redone all-edge, as without hedging."""
    link = {"mbps": 200.0}
    dr = _fake_dynamic(link)
    dr.runners[2] = _SleepyRunner(100_000, link, 0.2)
    dr.estimator.add_sample(200.0)
    x = np.ones((1, 3), np.float32)
    r = dr.infer({"x": x})
    assert r.plan == 2 and r.hedged_from is None and r.timings_ms["total"] >= 200.0
    dr = _fake_dynamic(link, fail_plan=2)
    dr._hedge_model = PlanFeedback({0: (40.0, 0.0), 1: (3.0, 80.0), 2: (2.0, 100.0)})
    dr.estimator.add_sample(200.0)
    r = dr.infer({"x": x})
    assert r.fallback and r.plan == 0 and "boom" in r.error
    np.testing.assert_array_equal(r.outputs["y"], x * 2)
    dr.close()


@pytest.mark.skipif(not _has_server(), reason="onnxsplit.runtime.server not importable")
def test_run_cli_on_a_dynamic_bundle(tiny_dynamic, tmp_path, capsys):
    """`onnxsplit run DYNAMIC_OUT --server URL`: per-request plans through one server, the original
    model's outputs (bit-identical without optimizations), `--plan K` forces a plan; bad flags fail in one line."""
    import onnxruntime as ort

    from onnxsplit.cli import main
    from onnxsplit.runtime.server import CloudServer

    out, manifest, _ = tiny_dynamic
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(TINY), so, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.save(tmp_path / "x.npy", x)
    split = next(p["id"] for p in manifest["plans"] if p["kind"] != "all-edge")
    with CloudServer(out, port=0, optimize=False) as srv:
        assert main(["run", str(out), "--input", str(tmp_path / "x.npy"), "--server", srv.url, "--repeat", "3",
                     "--no-optimize", "--json", "--output", str(tmp_path / "y.npz")]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["dynamic"] and len(doc["requests"]) == 3 and doc["fallbacks"] == 0
        assert sum(p["requests"] for p in doc["plans"]) == 3
        np.testing.assert_array_equal(np.load(tmp_path / "y.npz")[next(iter(doc["outputs"]))], ref)
        assert main(["run", str(out), "--input", str(tmp_path / "x.npy"), "--server", srv.url, "--repeat", "2",
                     "--no-optimize", "--estimator", "median", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["estimator"] == "median" and len(doc["requests"]) == 2
        assert main(["run", str(out), "--input", str(tmp_path / "x.npy"), "--server", srv.url, "--repeat", "2",
                     "--no-optimize", "--plan", str(split)]) == 0
        text = capsys.readouterr().out
        assert "2 request(s)" in text and "0 fallback(s)" in text
        assert [ln.split()[1] for ln in text.splitlines()[2:4]] == [str(split), str(split)]  # both rows: plan K
    assert main(["run", str(out), "--input", str(tmp_path / "x.npy"), "--server", "http://127.0.0.1:1",
                 "--plan", "99"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plan 99" in err
    assert main(["run", str(out / "plans" / str(split)), "--input", str(tmp_path / "x.npy"), "--server",
                 "http://127.0.0.1:1", "--plan", "0"]) == 2
    assert "are for dynamic bundles" in capsys.readouterr().err
    assert main(["run", str(out / "plans" / str(split)), "--input", str(tmp_path / "x.npy"), "--server",
                 "http://127.0.0.1:1", "--estimator", "median"]) == 2
    assert "are for dynamic bundles" in capsys.readouterr().err
    from onnxsplit.runtime.cli import BANDWIDTH_ESTIMATORS

    assert BANDWIDTH_ESTIMATORS == BandwidthEstimator.METHODS
