"""The edge CPU quota model (onnxsplit.cpu_quota): closed form against a time-step simulation,
its limits, and what it changes in plan evaluation (search.Link.edge_quota)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxsplit import cpu_quota
from onnxsplit.cpu_quota import EdgeCpuQuota, fit_request_wait_ms
from onnxsplit.errors import UsageError
from onnxsplit.search import Link, PartitionProblem, TensorSpec, evaluate_plan
from onnxsplit.search.cost import components


def _stepped(q: float, p: float, cpu: float, wait: float, dt: float) -> float:
    """The same protocol as EdgeCpuQuota.request_latency_ms, advanced in steps of ``dt`` ms
    (quota and period multiples of dt): throttled when the period's quota is spent."""
    n_q, n_p = round(q / dt), round(p / dt)
    n_cpu, n_wait = round(cpu / dt), round(wait / dt)
    if not n_cpu:
        return wait
    if not n_wait:
        return cpu * p / q
    total, n = 0, 0
    for j in range(cpu_quota._PHASES):
        step0 = step = round(j * n_p / cpu_quota._PHASES)
        used, period, i, kept = 0, step // n_p, -1, 0
        while True:
            i += 1
            start, rem = step, n_cpu
            while rem > 0:
                if step // n_p != period:
                    period, used = step // n_p, 0
                if used < n_q:
                    used += 1
                    rem -= 1
                step += 1
            step += n_wait
            if i >= cpu_quota._WARMUP and start >= step0 + cpu_quota._WARMUP * n_p:
                total += step - start
                n += 1
                kept += 1
                if ((kept >= cpu_quota._REQUESTS and start >= step0 + (cpu_quota._WARMUP + cpu_quota._WINDOW) * n_p)
                        or kept >= cpu_quota._MAX_REQUESTS):
                    break
    return total * dt / n


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 3), share=st.floats(0.05, 1.0), n_cpu=st.integers(0, 80), n_wait=st.integers(0, 60))
def test_closed_form_matches_a_time_step_simulation(m: int, share: float, n_cpu: int, n_wait: int) -> None:
    dt = 0.25  # ms; quota, period, start phases, CPU and wait are multiples of it: the stepped run is exact
    n_p = m * cpu_quota._PHASES
    n_q = max(1, min(n_p, round(share * n_p)))
    q, p = n_q * dt, n_p * dt
    model = EdgeCpuQuota(q, p).request_latency_ms(n_cpu * dt, n_wait * dt)
    assert model == pytest.approx(_stepped(q, p, n_cpu * dt, n_wait * dt, dt), abs=1e-6)


def test_limits_short_job_runs_at_full_speed_and_a_long_one_at_the_quota_rate() -> None:
    q = EdgeCpuQuota.from_cpus(0.1, period_ms=10.0)
    assert (q.quota_ms, q.period_ms, q.cpus) == (1.0, 10.0, 0.1)
    # fits in one period's quota, and the wait covers a period boundary: the quota is fresh every time
    assert q.request_latency_ms(0.4, 12.0) == pytest.approx(12.4)
    # back to back with no wait: CPU-bound, 1 ms of work per 10 ms
    assert q.request_latency_ms(7.0, 0.0) == pytest.approx(70.0)
    # no limit at all: quota = period
    assert EdgeCpuQuota(5.0, 5.0).request_latency_ms(23.0, 3.0) == pytest.approx(26.0)
    # plan level: the edge cost is on the long-run scale (x quota/period = CPU), plus the client's CPU
    qc = EdgeCpuQuota(1.0, 10.0, request_cpu_ms=0.2)
    assert qc.plan_latency_ms(70.0, None) == pytest.approx(70.0)  # all-edge: the long-run scale itself
    assert qc.plan_latency_ms(3.0, 12.0) == pytest.approx(0.3 + 0.2 + 12.0)  # 0.5 ms CPU, unthrottled
    assert qc.plan_latency_ms(3.0, 12.0) < 3.0 + 12.0  # what the linear (whole-model factor) model says
    assert q.request_latency_ms(0.0, 4.0) == 4.0
    assert math.isinf(q.request_latency_ms(math.inf, 1.0))


def test_cpu_spread_turns_the_step_at_the_quota_into_a_ramp() -> None:
    """Exact model: a request whose CPU crosses one period's quota waits a whole period more; averaged
    over a +-25 % spread of its CPU time the latency rises gradually, and far from the quota the two agree."""
    exact, spread = EdgeCpuQuota(1.0, 10.0, cpu_spread=0.0), EdgeCpuQuota(1.0, 10.0)
    assert spread.cpu_spread == 0.25
    step = exact.plan_latency_ms(10.5, 15.0) - exact.plan_latency_ms(9.5, 15.0)  # 0.95 vs 1.05 ms of CPU
    assert step > 3.5  # 15.95 -> 20.0 ms: it waits for the next period
    ramp = [spread.plan_latency_ms(e, 15.0) for e in (6.0, 8.0, 9.5, 10.5, 12.0, 14.0)]
    assert all(b >= a for a, b in zip(ramp, ramp[1:]))
    assert max(b - a for a, b in zip(ramp, ramp[1:])) < step / 2
    assert spread.plan_latency_ms(3.0, 15.0) == pytest.approx(exact.plan_latency_ms(3.0, 15.0))  # 0.3 ms: far below
    assert spread.plan_latency_ms(70.0, None) == pytest.approx(70.0)  # all-edge: the long-run rate either way
    with pytest.raises(UsageError, match="cpu_spread"):
        EdgeCpuQuota(1.0, 10.0, cpu_spread=1.0)


def test_fit_request_wait_recovers_the_off_cpu_time() -> None:
    q = EdgeCpuQuota(1.0, 10.0)
    assert fit_request_wait_ms(q, q.request_latency_ms(0.3, 11.37), 0.3) == pytest.approx(11.37, abs=0.011)
    assert fit_request_wait_ms(q, 2.0, 0.3) == 0.0  # faster than back-to-back 0.3-ms jobs at 0.1 CPU (3 ms)


@pytest.mark.parametrize("kw, what", [
    ({"quota_ms": 2.0, "period_ms": 1.0}, "quota_ms <= period_ms"),
    ({"quota_ms": 0.0, "period_ms": 1.0}, "quota_ms <= period_ms"),
    ({"quota_ms": 1.0, "period_ms": 10.0, "request_cpu_ms": -1.0}, "request_cpu_ms"),
    ({"quota_ms": float("nan"), "period_ms": 10.0}, "quota_ms"),
])
def test_invalid_quota_is_refused_with_the_field(kw: dict, what: str) -> None:
    with pytest.raises(UsageError, match=what):
        EdgeCpuQuota(**kw)


def test_link_refuses_something_else_as_quota() -> None:
    with pytest.raises(UsageError, match="edge_quota must be an EdgeCpuQuota"):
        Link(10.0, edge_quota=0.1)


def _chain() -> PartitionProblem:
    """input -> n0 -> n1 -> n2 -> output: a small first node with a big output, a big second node
    with a small output (the split after n1 sends less but runs much more on the edge)."""
    edge = np.array([1.0, 10.0, 40.0])  # long-run edge ms (10x a full-speed CPU)
    cloud = np.array([0.1, 3.0, 4.0])
    tensors = (TensorSpec("x", None, (0,), 40_000), TensorSpec("a", 0, (1,), 40_000),
               TensorSpec("b", 1, (2,), 1_000), TensorSpec("y", 2, (), 1_000, is_graph_output=True))
    return PartitionProblem(("n0", "n1", "n2"), edge, cloud, tensors)


def test_quota_changes_which_plan_is_fastest_and_only_the_latency() -> None:
    pb = _chain()
    lin = Link(100.0, rtt_ms=20.0)
    quota = Link(100.0, rtt_ms=20.0, edge_quota=EdgeCpuQuota(10.0, 100.0))
    after_n0, after_n1 = (0,), (0, 1)
    # linear (edge + uplink + downlink of y + rtt + cloud): the early cut wins
    assert evaluate_plan(pb, lin, after_n0).total_ms == pytest.approx(1 + 3.2 + 0.08 + 20 + 7)
    assert evaluate_plan(pb, lin, after_n1).total_ms == pytest.approx(11 + 0.08 + 0.08 + 20 + 4)
    # quota (10 ms per 100 ms): after n1 the edge needs 1.1 ms of CPU per ~25 ms request, never more
    # than the 10 ms a period allows: unthrottled, and it wins
    assert evaluate_plan(pb, quota, after_n1).total_ms == pytest.approx(1.1 + 0.16 + 20 + 4)
    assert evaluate_plan(pb, quota, after_n0).total_ms == pytest.approx(0.1 + 3.28 + 20 + 7)
    # all-edge: back to back at the long-run rate, the same as the linear model
    assert evaluate_plan(pb, quota, (0, 1, 2)).total_ms == pytest.approx(51.0)
    # requests back to back cannot use more than the quota: 0.1 CPU bounds any plan by its long-run edge ms
    tight = Link(100.0, rtt_ms=1.0, edge_quota=EdgeCpuQuota(10.0, 100.0))
    assert evaluate_plan(pb, tight, after_n1).total_ms == pytest.approx(11.0, rel=0.03)
    # components: the same transfer/edge/cloud parts, only the latency differs
    mask = np.zeros((2, 3), dtype=bool)
    mask[0, :1] = True
    mask[1, :2] = True
    comp = components(pb, mask)
    np.testing.assert_allclose(comp.bottleneck_ms(quota), comp.bottleneck_ms(lin))
    assert (comp.latency_ms(quota) < comp.latency_ms(lin)).all()


def test_policy_and_bundle_with_an_edge_quota(tmp_path) -> None:
    """build_policy(edge_quota=...) evaluates plans with the quota model, the bundle records it,
    and the measured policy charges the client's CPU per offloaded request."""
    from pathlib import Path

    import onnxsplit
    from onnxsplit.dynamic_bundle import build_policy, plan_latencies, write_dynamic_bundle
    from onnxsplit.plan_timing import measured_terms

    graph = onnxsplit.load_graph(str(Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"))
    q = EdgeCpuQuota(1.0, 10.0, request_cpu_ms=0.25, cpu_spread=0.0)
    table, res = build_policy(graph, edge_factor=200.0, rtt_ms=1.0, per_request_ms=0.5, edge_quota=q)
    _, lin = build_policy(graph, edge_factor=200.0, rtt_ms=1.0, per_request_ms=0.5)
    assert res.link.edge_quota == q and lin.link.edge_quota is None
    names = res.problem.node_names
    grid = [1.0, 100.0]
    first = names[:1]
    with_q = plan_latencies(res.problem, res.link, first, grid)
    without = plan_latencies(lin.problem, lin.link, first, grid)
    edge_ms = float(res.problem.edge_ms[0])
    assert edge_ms * q.cpus + q.request_cpu_ms <= q.quota_ms  # fits one period's quota ...
    assert with_q["100"] == pytest.approx(without["100"] - edge_ms + edge_ms * q.cpus + q.request_cpu_ms, rel=1e-6)
    # ... and all-edge runs back to back at the long-run rate either way
    assert plan_latencies(res.problem, res.link, names, grid) == pytest.approx(plan_latencies(lin.problem, lin.link, names, grid))
    man = write_dynamic_bundle(graph, table, tmp_path / "b", source="tiny", predicted=(res.problem, res.link, res.objective))
    assert man["link"]["edge_quota"] == {"quota_ms": 1.0, "period_ms": 10.0, "request_cpu_ms": 0.25, "cpu_spread": 0.0}
    split = next(p for p in man["plans"] if p["kind"] == "split")
    timing = {"plans": {str(p["id"]): {"median_ms": 2.0} for p in man["plans"]}}
    a_q, _ = measured_terms(man, timing, timing)[split["id"]]
    a_lin, _ = measured_terms(man, timing, timing, link={k: v for k, v in man["link"].items() if k != "edge_quota"})[split["id"]]
    assert a_q == pytest.approx(a_lin + 0.25)
