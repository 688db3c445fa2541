"""Tests for the cut-search policy (onnxsplit.search): every strategy against the exhaustive
oracle on random DAGs, hand-made fan-out cases, constraints, throughput, sweeps, pareto."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxsplit.errors import PlanError, UsageError
from onnxsplit.search import (
    STRATEGIES,
    Constraints,
    Link,
    Objective,
    PartitionProblem,
    SplitPlan,
    TensorSpec,
    evaluate_plan,
    pareto,
    scale_batch,
    search,
)
from onnxsplit.search.cost import (
    components,
    forced_placement,
    prefix_components,
    prefix_masks,
)
from onnxsplit.search.sweep import sweep
from onnxsplit.search.synthetic import random_layered_problem

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EXACT = ("mincut", "milp", "exhaustive")


# --------------------------------------------------------------------------- generators
@st.composite
def problems(draw: st.DrawFn, max_nodes: int = 8, allow_inf: bool = True) -> PartitionProblem:
    """Random DAG in topological order: graph inputs read by early *and late* nodes, 0-2 output
    tensors per node with random fan-out, random graph outputs, costs with some inf, pins."""
    n = draw(st.integers(1, max_nodes))
    cost = st.floats(0.0, 10.0, allow_nan=False)
    edge = [draw(cost) for _ in range(n)]
    cloud = [draw(st.floats(0.0, 3.0, allow_nan=False)) for _ in range(n)]
    if allow_inf:
        for i in range(n):
            r = draw(st.integers(0, 11))
            if r == 0:
                edge[i] = math.inf
            elif r == 1:
                cloud[i] = math.inf
    size = st.integers(0, 4000)
    tensors = []
    for j in range(draw(st.integers(1, 2))):
        readers = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=min(n, 3)))
        tensors.append(TensorSpec(f"in{j}", None, tuple(sorted(readers)), draw(size),
                                  draw(st.booleans()) and draw(st.booleans())))
    for i in range(n):
        for j in range(draw(st.integers(0, 2))):
            later = st.sets(st.integers(i + 1, n - 1), max_size=4) if i + 1 < n else st.just(set())
            cons = tuple(sorted(draw(later)))
            tensors.append(TensorSpec(f"t{i}_{j}", i, cons, draw(size),
                                      not cons or draw(st.integers(0, 3)) == 0))
    pins = draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from(["edge", "cloud"]),
                                max_size=1))
    mem = [draw(st.integers(0, 3000)) for _ in range(n)]
    return PartitionProblem(tuple(f"n{i}" for i in range(n)), np.array(edge), np.array(cloud),
                            tuple(tensors), np.array(mem), pins)


links = st.builds(
    Link,
    uplink_mbps=st.floats(0.05, 100.0),
    downlink_mbps=st.floats(0.05, 100.0),
    rtt_ms=st.floats(0.0, 5.0),
    per_request_ms=st.floats(0.0, 2.0),
    radio_nj_per_byte=st.floats(0.0, 200.0),
)
objectives = st.sampled_from([Objective("latency"), Objective("energy", edge_power_w=2.0),
                              Objective("weighted", edge_power_w=3.0, latency_weight=1.0,
                                        energy_weight=0.5)])


@st.composite
def constraint_sets(draw: st.DrawFn, with_memory: bool = True) -> Constraints:
    mem = draw(st.one_of(st.none(), st.integers(0, 30000))) if with_memory else None
    return Constraints(
        max_edge_mem_bytes=mem,
        raw_input_stays_on_edge=draw(st.integers(0, 4)) == 0,
        min_edge_nodes=draw(st.integers(0, 2)),
    )


def oracle(problem: PartitionProblem, link: Link, objective: Objective | str,
           constraints: Constraints | None = None) -> SplitPlan | None:
    try:
        return search(problem, link, objective, "exhaustive", constraints, explain=False)
    except PlanError:
        return None


def tol(plan: SplitPlan) -> float:
    """Certified rounding tolerance of a plan, plus float noise."""
    return (plan.gap or 0.0) + 1e-9 * max(1.0, abs(plan.objective_value))


def mask_of(problem: PartitionProblem, plan: SplitPlan) -> np.ndarray:
    m = np.zeros(problem.n_nodes, dtype=bool)
    m[list(plan.edge_nodes)] = True
    return m


def assert_valid(problem: PartitionProblem, plan: SplitPlan, constraints: Constraints) -> None:
    """Predecessor-closed, pins, forced sides, constraints, consistent numbers."""
    m = mask_of(problem, plan)
    for t in problem.tensors:
        if t.producer is not None:
            for c in t.consumers:
                assert not (m[c] and not m[t.producer]), "not closed under predecessors"
    for i, side in {**problem.pinned, **constraints.pinned}.items():
        assert m[i] == (side == "edge")
    assert not (m & np.isinf(problem.edge_ms)).any()
    assert not (~m & np.isinf(problem.cloud_ms)).any()
    assert m[: constraints.min_edge_nodes].all()
    for i in constraints.cloud_only:
        assert not m[i]
    if constraints.raw_input_stays_on_edge:
        assert all(m[c] for t in problem.tensors if t.producer is None for c in t.consumers)
    if constraints.max_edge_mem_bytes is not None:
        assert plan.edge_mem_bytes <= constraints.max_edge_mem_bytes
    # the plan's numbers are those of the documented cost model, recomputed naively
    up = sum(t.nbytes for t in problem.tensors
             if (t.producer is None or m[t.producer]) and any(not m[c] for c in t.consumers))
    down = sum(t.nbytes for t in problem.tensors
               if t.is_graph_output and t.producer is not None and not m[t.producer])
    assert plan.uplink_bytes == up
    assert plan.downlink_bytes == down
    assert plan.edge_ms == pytest.approx(float(problem.edge_ms[m].sum()))
    assert plan.cloud_ms == pytest.approx(float(problem.cloud_ms[~m].sum()))
    assert plan.total_ms == pytest.approx(plan.edge_ms + plan.transfer_ms + plan.fixed_ms
                                          + plan.cloud_ms)


# --------------------------------------------------------------------------- exactness
@SETTINGS
@given(problems(), links, objectives, constraint_sets(with_memory=False))
def test_mincut_equals_exhaustive(problem: PartitionProblem, link: Link, objective: Objective,
                                  constraints: Constraints) -> None:
    best = oracle(problem, link, objective, constraints)
    if best is None:
        with pytest.raises(PlanError):
            search(problem, link, objective, "mincut", constraints)
        return
    plan = search(problem, link, objective, "mincut", constraints)
    assert plan.optimal
    assert abs(plan.objective_value - best.objective_value) <= tol(plan)
    assert plan.lower_bound is not None and plan.lower_bound <= best.objective_value + 1e-9
    assert_valid(problem, plan, constraints)


@pytest.mark.parametrize("algorithm", sorted(STRATEGIES))
@SETTINGS
@given(problem=problems(), link=links,
       objective=st.one_of(objectives, st.just(Objective("throughput"))),
       constraints=constraint_sets())
def test_every_strategy_valid_and_never_beats_oracle(
    algorithm: str, problem: PartitionProblem, link: Link, objective: Objective,
    constraints: Constraints,
) -> None:
    best = oracle(problem, link, objective, constraints)
    try:
        plan = search(problem, link, objective, algorithm, constraints)
    except PlanError:
        # exact strategies fail only when nothing is valid; heuristics may find nothing
        assert best is None or algorithm in ("chain", "all-edge", "all-cloud")
        return
    assert best is not None, "a strategy returned a plan where the oracle found none"
    assert plan.algorithm == algorithm
    assert_valid(problem, plan, constraints)
    assert plan.objective_value >= best.objective_value - 1e-9 * max(1, best.objective_value)
    if plan.lower_bound is not None:
        assert plan.lower_bound <= best.objective_value + 1e-6 * max(1, best.objective_value)
    if plan.optimal:
        assert plan.objective_value <= best.objective_value + tol(plan) + 1e-6
    if algorithm in ("milp", "exhaustive"):
        assert plan.optimal
    json.loads(plan.to_json())


@SETTINGS
@given(problems(), links, constraint_sets())
def test_throughput_bounded_against_oracle(problem: PartitionProblem, link: Link,
                                           constraints: Constraints) -> None:
    best = oracle(problem, link, "throughput", constraints)
    if best is None:
        return
    plan = search(problem, link, "throughput", "mincut", constraints)
    assert plan.objective_value >= best.objective_value - 1e-9
    assert plan.lower_bound is not None
    assert plan.lower_bound <= best.objective_value + 1e-6 * max(1, best.objective_value)
    if constraints.max_edge_mem_bytes is None:  # factor-3 guarantee (latency-optimal candidate)
        assert plan.objective_value <= 3 * best.objective_value + tol(plan) + 1e-9
    exact = search(problem, link, "throughput", "milp", constraints)
    assert exact.objective_value == pytest.approx(best.objective_value, rel=1e-7, abs=1e-7)


@SETTINGS
@given(problems(), links, objectives, st.integers(0, 20000))
def test_memory_limit_bounded_and_milp_exact(problem: PartitionProblem, link: Link,
                                             objective: Objective, limit: int) -> None:
    cons = Constraints(max_edge_mem_bytes=limit)
    best = oracle(problem, link, objective, cons)
    if best is None:
        with pytest.raises(PlanError, match="max_edge_mem_bytes|no valid split"):
            search(problem, link, objective, "mincut", cons)
        return
    plan = search(problem, link, objective, "mincut", cons)
    assert plan.edge_mem_bytes <= limit
    assert plan.objective_value >= best.objective_value - 1e-9
    assert plan.lower_bound is not None and plan.lower_bound <= best.objective_value + 1e-6
    exact = search(problem, link, objective, "milp", cons)
    assert exact.objective_value == pytest.approx(best.objective_value, rel=1e-7, abs=1e-7)


@SETTINGS
@given(problems(max_nodes=10))
def test_prefix_components_match_generic(problem: PartitionProblem) -> None:
    pre = prefix_components(problem)
    gen = components(problem, prefix_masks(problem.n_nodes, np.arange(problem.n_nodes + 1)))
    for f in ("edge_ms", "cloud_ms", "uplink_bytes", "downlink_bytes", "cloud_nonempty",
              "edge_mem_bytes"):
        np.testing.assert_allclose(getattr(pre, f), getattr(gen, f))


def test_mincut_exact_on_larger_synthetic_graph() -> None:
    """Beyond the oracle's reach: mincut agrees with the MILP within its certified gap."""
    problem = random_layered_problem(300, seed=5)
    link = Link(10, 40, rtt_ms=15)
    cut = search(problem, link)
    exact = search(problem, link, algorithm="milp")
    assert exact.optimal
    assert abs(cut.objective_value - exact.objective_value) <= tol(cut) + 1e-6
    assert cut.lower_bound <= exact.objective_value + 1e-6


# --------------------------------------------------------------------------- fan-out
def _fanout_problem(from_input: bool) -> PartitionProblem:
    """Node 0 (cheap on the edge) produces a 25 KB tensor read by nodes 1-3 (8 ms on the edge,
    1 ms in the cloud); or the 25 KB tensor is the graph input itself, read by all four."""
    big = 25_000  # 10 ms at 20 Mbps
    tensors = [TensorSpec("x", None, (0,), 100_000)]  # raw input: too big to send
    if not from_input:
        tensors.append(TensorSpec("a", 0, (1, 2, 3), big))
    else:
        tensors[0] = TensorSpec("x", None, (0, 1, 2, 3), big)
        tensors.append(TensorSpec("a", 0, (), 4, True))
    tensors += [TensorSpec(f"y{i}", i, (), 0, True) for i in (1, 2, 3)]
    return PartitionProblem(("p", "c1", "c2", "c3"), np.array([0.1, 8, 8, 8]),
                            np.array([0.1, 1, 1, 1]), tuple(tensors))


@pytest.mark.parametrize("from_input", [False, True])
@pytest.mark.parametrize("algorithm", EXACT)
def test_fanout_tensor_paid_once(from_input: bool, algorithm: str) -> None:
    problem = _fanout_problem(from_input)
    link = Link(20)  # 25 KB -> 10 ms; sending it three times (30 ms) would lose to all-edge
    plan = search(problem, link, algorithm=algorithm)
    assert set(plan.edge_node_names) <= {"p"} and "c1" not in plan.edge_node_names
    assert plan.uplink_bytes == 25_000
    assert plan.transfer_ms == pytest.approx(10.0)
    assert plan.total_ms == pytest.approx(plan.edge_ms + 10.0 + 3.0)
    assert [b.name for b in plan.boundary_tensors if b.direction == "uplink"].count(
        "x" if from_input else "a") == 1
    all_edge = search(problem, link, algorithm="all-edge")
    assert plan.total_ms < all_edge.total_ms  # a double-counting model would pick all-edge


def test_graph_input_read_by_late_cloud_node_is_sent_raw() -> None:
    problem = PartitionProblem(
        ("a", "b"), np.array([1.0, 100.0]), np.array([50.0, 1.0]),
        (TensorSpec("x", None, (0, 1), 1000), TensorSpec("h", 0, (1,), 10),
         TensorSpec("y", 1, (), 8, True)),
    )
    plan = search(problem, Link(8))  # 1 ms per KB
    assert plan.edge_node_names == ("a",)
    assert {b.name for b in plan.boundary_tensors} == {"x", "h", "y"}
    assert plan.uplink_bytes == 1010 and plan.downlink_bytes == 8
    # privacy: the raw input may not leave the device
    private = search(problem, Link(8), constraints=Constraints(raw_input_stays_on_edge=True))
    assert private.edge_node_names == ("a", "b")
    assert private.binding_constraints == ("raw_input_stays_on_edge",)


# --------------------------------------------------------------------------- constraints
def _chain(n: int = 5) -> PartitionProblem:
    tensors = [TensorSpec("in", None, (0,), 1000)]
    tensors += [TensorSpec(f"t{i}", i, (i + 1,) if i + 1 < n else (), 1000 // (i + 2), i == n - 1)
                for i in range(n)]
    return PartitionProblem(tuple(f"n{i}" for i in range(n)), np.full(n, 10.0), np.full(n, 1.0),
                            tuple(tensors), np.full(n, 100))


def test_constraints_pins_min_edge_nodes_cloud_only() -> None:
    p = _chain()
    link = Link(1000)
    assert search(p, link).edge_nodes == ()
    plan = search(p, link, constraints=Constraints(min_edge_nodes=2))
    assert plan.edge_nodes == (0, 1)
    assert plan.binding_constraints == ("min_edge_nodes=2",)
    plan = search(p, link, constraints=Constraints(pinned={3: "edge"}))
    assert plan.edge_nodes == (0, 1, 2, 3)  # predecessors of a pinned node follow it
    assert plan.binding_constraints == ("pinned: n3=edge",)
    with pytest.raises(PlanError, match="'n1'.*edge.*cloud"):
        search(p, link, constraints=Constraints(pinned={3: "edge"}, cloud_only=frozenset({1})))
    with pytest.raises(PlanError, match="all-cloud"):
        search(p, link, algorithm="all-cloud", constraints=Constraints(min_edge_nodes=1))


def test_memory_limit_and_binding() -> None:
    p = _chain()
    slow = Link(0.01, rtt_ms=1)  # network is terrible: run everything on the edge if it fits
    assert search(p, slow).edge_nodes == (0, 1, 2, 3, 4)
    # memory: inputs 1000 B + per node 100 B weights + its output
    cons = Constraints(max_edge_mem_bytes=1000 + 100 + 500 + 100 + 333)
    for algorithm in EXACT:
        plan = search(p, slow, algorithm=algorithm, constraints=cons)
        assert plan.edge_nodes == (0, 1)
        assert plan.edge_mem_bytes == 2033
        assert plan.binding_constraints == ("max_edge_mem_bytes=2033",)
    with pytest.raises(PlanError, match="max_edge_mem_bytes=10"):
        search(p, slow, constraints=Constraints(max_edge_mem_bytes=10))


def test_infeasible_nodes_and_bad_input() -> None:
    p = PartitionProblem(("a",), np.array([np.inf]), np.array([np.inf]),
                         (TensorSpec("x", None, (0,), 1),))
    for algorithm in EXACT:
        with pytest.raises(PlanError, match="'a'"):
            search(p, Link(1), algorithm=algorithm)
    with pytest.raises(PlanError, match="topological"):
        PartitionProblem(("a", "b"), [1, 1], [1, 1], (TensorSpec("x", 1, (0,), 1),))
    with pytest.raises(UsageError, match="unknown search algorithm"):
        search(_chain(), Link(1), algorithm="simulated-annealing")
    with pytest.raises(UsageError, match="objective"):
        search(_chain(), Link(1), objective="happiness")
    with pytest.raises(UsageError):
        Link(0)


def test_exhaustive_refuses_large_problems() -> None:
    with pytest.raises(UsageError, match="exhaustive.*limit is 20"):
        search(random_layered_problem(40), Link(10), algorithm="exhaustive")


def test_evaluate_plan_checks_closure() -> None:
    p = _chain()
    plan = evaluate_plan(p, Link(10), ["n0", "n1"])
    assert plan.uplink_bytes == 1000 // 3 and plan.algorithm == "manual"
    with pytest.raises(PlanError, match="'n1'.*'n0'"):
        evaluate_plan(p, Link(10), [1])
    with pytest.raises(PlanError, match="unknown node 'zz'"):
        evaluate_plan(p, Link(10), ["zz"])


def test_plan_json_roundtrip() -> None:
    p = random_layered_problem(50, seed=2)
    plan = search(p, Link(5, rtt_ms=10), constraints=Constraints(min_edge_nodes=3))
    d = json.loads(plan.to_json())
    assert d["edge_nodes"] == list(plan.edge_nodes)
    assert SplitPlan.from_dict(d) == plan


def test_per_request_cost_handled_exactly() -> None:
    """rtt is paid only when something runs in the cloud: a large rtt flips to all-edge."""
    p = _chain()
    cheap = search(p, Link(1000, rtt_ms=1.0))
    assert cheap.edge_nodes == () and cheap.fixed_ms == 1.0
    dear = search(p, Link(1000, rtt_ms=100.0))
    assert dear.edge_nodes == (0, 1, 2, 3, 4) and dear.fixed_ms == 0.0
    assert dear.objective_value == pytest.approx(50.0)


# --------------------------------------------------------------------------- sweep / pareto
def _check_monotone(table, link: Link) -> None:
    ratio = link.uplink_mbps / link.downlink_mbps
    for b in table.batch_sizes:
        plans = [table.plan_at_grid(b, i) for i in range(len(table.bandwidths_mbps))]
        wbytes = [p.uplink_bytes + p.downlink_bytes * ratio for p in plans]
        fixed_cost = [p.edge_ms + p.cloud_ms + p.fixed_ms for p in plans]
        assert all(x <= y + 1e-9 for x, y in zip(wbytes, wbytes[1:])), wbytes
        assert all(x >= y - 1e-9 * max(1, x) for x, y in zip(fixed_cost, fixed_cost[1:]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_nodes=7), st.floats(0.0, 5.0))
def test_sweep_monotone_on_random_dags(problem: PartitionProblem, rtt: float) -> None:
    link = Link(1.0, rtt_ms=rtt)
    try:
        table = sweep(problem, link, bandwidths_mbps=np.logspace(-2, 3, 16), batch_sizes=(1, 4))
    except PlanError:
        return
    _check_monotone(table, link)
    # every grid point holds the true optimum (oracle) for its bandwidth
    for b in (1, 4):
        pb = scale_batch(problem, b)
        for i in (0, 7, 15):
            lk = link.with_bandwidth(table.bandwidths_mbps[i])
            best = oracle(pb, lk, "latency")
            got = evaluate_plan(pb, lk, table.plan_at_grid(b, i).edge_nodes)
            assert got.objective_value <= best.objective_value + 1e-6


def test_sweep_table_on_synthetic_graph() -> None:
    problem = random_layered_problem(400, seed=7)
    link = Link(10, 30, rtt_ms=20)
    table = sweep(problem, link, bandwidths_mbps=np.logspace(-1, 4, 31), batch_sizes=(1, 8))
    _check_monotone(table, link)
    for b in (1, 8):
        rows = table.rows_for(b)
        assert rows[0].from_mbps == 0.0 and rows[-1].to_mbps == math.inf
        assert all(r.to_mbps == s.from_mbps for r, s in zip(rows, rows[1:]))
        assert len({r.plan.edge_nodes for r in rows}) == len(rows)
    assert table.lookup(0.05).edge_nodes == table.plan_at_grid(1, 0).edge_nodes
    assert table.lookup(1e6, 8).edge_nodes == table.plan_at_grid(8, 30).edge_nodes
    json.dumps(table.to_dict())
    with pytest.raises(UsageError):
        table.rows_for(3)


def test_sweep_throughput_and_custom_batch_model() -> None:
    problem = random_layered_problem(60, seed=3)

    def batched(p: PartitionProblem, b: int) -> PartitionProblem:  # cloud batches for free
        return p.with_costs(p.edge_ms * b, p.cloud_ms, tensor_scale=b)

    table = sweep(problem, Link(10, rtt_ms=5), "throughput", bandwidths_mbps=[1, 10, 100],
                  batch_sizes=(1, 2), batch_model=batched)
    assert table.objective == "throughput" and set(table.grid_rows) == {1, 2}


def test_pareto_list() -> None:
    problem = random_layered_problem(120, seed=11)
    link = Link(8, rtt_ms=10)
    plans = pareto(problem, link, k=5)
    best = search(problem, link)
    assert plans[0].edge_nodes == best.edge_nodes
    assert 1 < len(plans) <= 5
    crit = [(p.objective_value, p.edge_mem_bytes, p.boundary_bytes) for p in plans]
    assert len(set(crit)) == len(crit)
    for i, a in enumerate(crit):
        for j, b in enumerate(crit):
            if i != j:
                assert not (b[0] <= a[0] and b[1] <= a[1] and b[2] <= a[2]), (a, b)
    assert all(p.objective_value >= best.objective_value - tol(best) for p in plans)


def test_pareto_with_exhaustive_on_small_problem() -> None:
    problem = random_layered_problem(12, seed=1)
    plans = pareto(problem, Link(2, rtt_ms=1), algorithm="exhaustive", k=4)
    assert plans[0].optimal and len(plans) >= 2


# --------------------------------------------------------------------------- batch, link
def test_scale_batch_and_link() -> None:
    p = _chain()
    q = scale_batch(p, 4)
    np.testing.assert_allclose(q.edge_ms, p.edge_ms * 4)
    assert [t.nbytes for t in q.tensors] == [t.nbytes * 4 for t in p.tensors]
    np.testing.assert_array_equal(q.edge_mem_bytes, p.edge_mem_bytes)
    assert scale_batch(p, 1) is p
    lk = Link(10, 40).with_bandwidth(5)
    assert (lk.uplink_mbps, lk.downlink_mbps) == (5, 20)
    assert Link(8).ms_per_uplink_byte == pytest.approx(1e-3)  # 8 Mbps: 1 KB per ms


def test_placement_closure() -> None:
    p = _chain()
    pl = forced_placement(p, Constraints(pinned={2: "edge", 4: "cloud"}))
    assert pl.force_edge.tolist() == [True, True, True, False, False]
    assert pl.force_cloud.tolist() == [False, False, False, False, True]


# --------------------------------------------------------------------------- speed
@pytest.mark.slow
def test_mincut_20k_nodes_under_half_a_second() -> None:
    problem = random_layered_problem(20_000, seed=0)
    link = Link(20, 50, rtt_ms=20, per_request_ms=1)
    search(problem, link)  # warm caches and imports
    times = []
    for _ in range(3):
        fresh = random_layered_problem(20_000, seed=0)  # no cached index arrays
        t0 = time.perf_counter()
        plan = search(fresh, link)
        times.append(time.perf_counter() - t0)
    assert plan.optimal
    assert min(times) < 0.5, times
