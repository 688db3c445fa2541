"""Search strategies behind one entry point, :func:`search` (the algorithm is a parameter, as in
networkx's flow functions).

Every strategy has the signature ``(problem, link, objective, constraints) -> SplitPlan`` and is
registered in :data:`STRATEGIES`:

``mincut`` (default)
    Latency / energy / weighted without a memory limit: exact minimum s-t cut (integer max-flow,
    optimal within the rounding resolution reported by ``lower_bound``; see
    :mod:`onnxsplit.search.cut`). Throughput, or any objective with ``max_edge_mem_bytes``: the
    Lagrangian cutting-plane method of :func:`~onnxsplit.search.cut.lagrangian_search` over
    min-cut oracles, seeded with the best valid prefix; *bounded*, not exact: the plan carries a
    certified ``lower_bound`` and ``optimal`` is set only when the gap closes.
``milp``
    Exact for every objective and constraint (HiGHS branch and bound through
    :func:`scipy.optimize.milp`), within a time limit; see :mod:`onnxsplit.search.milp`.
``exhaustive``
    The oracle: enumerates every assignment of the free (not forced) nodes, keeps the valid
    plans, exact for everything; refuses more than :data:`EXHAUSTIVE_MAX_FREE` free nodes.
``chain``
    Neurosurgeon: the best *prefix* of the topological order (every prefix is a valid cut of a
    DAG); exact over prefixes, O(n + T).
``all-edge`` / ``all-cloud``
    The two trivial plans (checked against the constraints).

Ties: among optimal plans ``mincut`` (at its integer resolution), ``chain`` and ``exhaustive``
return the one with the fewest edge nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from onnxsplit.errors import PlanError, UsageError
from onnxsplit.search.cost import (
    Components,
    Placement,
    closure_violation,
    components,
    feasible,
    forced_placement,
    make_plan,
    objective_values,
    prefix_components,
    prefix_masks,
)
from onnxsplit.search.cut import (
    LinearCost,
    lagrangian_search,
    linear_cost,
    objective_linear_cost,
    solve_linear,
)
from onnxsplit.search.milp import milp_strategy
from onnxsplit.search.plan import SplitPlan
from onnxsplit.search.problem import Constraints, Link, Objective, PartitionProblem

__all__ = [
    "EXHAUSTIVE_MAX_FREE",
    "STRATEGIES",
    "Strategy",
    "evaluate_plan",
    "pareto",
    "search",
]

Strategy = Callable[[PartitionProblem, Link, Objective, Constraints], SplitPlan]
EXHAUSTIVE_MAX_FREE = 20


# ----------------------------------------------------------------------------- helpers
def _validity_error(problem: PartitionProblem, placement: Placement,
                    mask: np.ndarray) -> str | None:
    """``None`` if ``mask`` is a valid plan, else why not (one line)."""
    names = problem.node_names
    why = closure_violation(problem, mask)
    if why:
        return why
    bad = np.flatnonzero(mask & placement.force_cloud)
    if bad.size:
        return f"node {names[int(bad[0])]!r} must run in the cloud"
    bad = np.flatnonzero(~mask & placement.force_edge)
    if bad.size:
        return f"node {names[int(bad[0])]!r} must run on the edge"
    if placement.mem_limit is not None:
        mem = int(components(problem, mask).edge_mem_bytes[0])
        if mem > placement.mem_limit:
            return (f"it needs {mem} bytes of edge memory, over "
                    f"max_edge_mem_bytes={placement.mem_limit}")
    return None


def _prefix_feasible(problem: PartitionProblem, placement: Placement,
                     comp: Components) -> np.ndarray:
    """``(n+1,)`` bool: prefix ``k`` is a valid plan."""
    n = problem.n_nodes
    ks = np.arange(n + 1)
    fe, fc = np.flatnonzero(placement.force_edge), np.flatnonzero(placement.force_cloud)
    ok = ks >= (fe.max() + 1 if fe.size else 0)
    ok &= ks <= (fc.min() if fc.size else n)
    if placement.mem_limit is not None:
        ok &= comp.edge_mem_bytes <= placement.mem_limit
    return ok


def _best_prefix(problem: PartitionProblem, link: Link, objective: Objective,
                 placement: Placement) -> int | None:
    """Length ``k`` of the best valid prefix plan (smallest on ties), ``None`` if none is valid."""
    comp = prefix_components(problem)
    vals = np.where(_prefix_feasible(problem, placement, comp),
                    objective_values(comp, link, objective), np.inf)
    k = int(np.argmin(vals))
    return None if not np.isfinite(vals[k]) else k


def _gap_tol(value: float, resolution: float = 0.0) -> float:
    return resolution + 1e-9 * max(1.0, abs(value))


# ----------------------------------------------------------------------------- strategies
def _fixed(name: str, edge: bool) -> Strategy:
    def strategy(problem: PartitionProblem, link: Link, objective: Objective,
                 constraints: Constraints) -> SplitPlan:
        placement = forced_placement(problem, constraints)
        mask = np.full(problem.n_nodes, edge, dtype=bool)
        why = _validity_error(problem, placement, mask)
        if why:
            raise PlanError(f"the {name} plan is not valid: {why}")
        return make_plan(problem, link, objective, mask, name)

    strategy.__name__ = f"{name.replace('-', '_')}_strategy"
    strategy.__doc__ = f"The {name} plan (PlanError if it breaks a constraint)."
    return strategy


all_edge = _fixed("all-edge", True)
all_cloud = _fixed("all-cloud", False)


def chain(problem: PartitionProblem, link: Link, objective: Objective,
          constraints: Constraints) -> SplitPlan:
    """Best valid prefix ``{0..k-1}`` of the topological order (Neurosurgeon-style); exact over
    prefixes for every objective and constraint, not over general DAG cuts."""
    placement = forced_placement(problem, constraints)
    k = _best_prefix(problem, link, objective, placement)
    if k is None:
        raise PlanError("no prefix of the topological order is a valid split under these "
                        "constraints; use algorithm 'mincut'")
    return make_plan(problem, link, objective, prefix_masks(problem.n_nodes, [k])[0], "chain")


def mincut(problem: PartitionProblem, link: Link, objective: Objective,
           constraints: Constraints) -> SplitPlan:
    """Minimum-cut search (see the module docstring for exactness)."""
    placement = forced_placement(problem, constraints)
    if objective.is_linear and placement.mem_limit is None:
        res = solve_linear(problem, objective_linear_cost(problem, link, objective), placement)
        return make_plan(problem, link, objective, res.mask, "mincut",
                         lower_bound=res.lower_bound, optimal=True)
    n_pieces, combine, evaluate = _pieces(problem, link, objective)
    k = _best_prefix(problem, link, objective, placement)
    extra = None if k is None else prefix_masks(problem.n_nodes, [k])
    res = lagrangian_search(problem, placement, combine, evaluate, n_pieces, extra)
    return make_plan(problem, link, objective, res.mask, "mincut", lower_bound=res.lower_bound,
                     optimal=res.value - res.lower_bound <= _gap_tol(res.value, res.resolution))


def _pieces(problem: PartitionProblem, link: Link, objective: Objective
            ) -> tuple[int, Callable[[np.ndarray], LinearCost],
                       Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """The objective as ``max_j l_j`` of linear pieces, for the Lagrangian driver."""
    if objective.kind == "throughput":
        def combine(w: np.ndarray) -> LinearCost:
            return linear_cost(problem, link, edge=w[0], network=w[1], cloud=w[2],
                               mem_lambda=w[3])

        def evaluate(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c = components(problem, masks)
            return np.stack([c.edge_ms, c.network_ms(link), c.cloud_ms], axis=1), c.edge_mem_bytes

        return 3, combine, evaluate

    def combine1(w: np.ndarray) -> LinearCost:
        lc = objective_linear_cost(problem, link, objective, mem_lambda=w[1])
        return lc  # w[0] is always 1 for a single piece

    def evaluate1(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = components(problem, masks)
        return objective_values(c, link, objective)[:, None], c.edge_mem_bytes

    return 1, combine1, evaluate1


def _enumerate(problem: PartitionProblem, placement: Placement, chunk: int = 1 << 15):
    """Yield ``(masks, components)`` of every valid plan, in chunks (free nodes enumerated)."""
    free = np.flatnonzero(placement.free)
    k = free.size
    if k > EXHAUSTIVE_MAX_FREE:
        raise UsageError(
            f"exhaustive search enumerates 2^k plans and this problem has k={k} free nodes "
            f"(of {problem.n_nodes}); the limit is {EXHAUSTIVE_MAX_FREE}: use algorithm "
            f"'mincut' or 'milp'"
        )
    base = placement.force_edge
    bits = np.arange(k, dtype=np.int64)
    for start in range(0, 1 << k, chunk):
        codes = np.arange(start, min(1 << k, start + chunk), dtype=np.int64)
        masks = np.repeat(base[None, :], codes.size, axis=0)
        masks[:, free] = ((codes[:, None] >> bits[None, :]) & 1).astype(bool)
        comp = components(problem, masks)
        ok = feasible(problem, placement, masks, comp)
        if ok.any():
            idx = np.flatnonzero(ok)
            yield masks[idx], comp.take(idx)


def exhaustive(problem: PartitionProblem, link: Link, objective: Objective,
               constraints: Constraints) -> SplitPlan:
    """Oracle: the exact optimum over all valid plans (ties: fewer edge nodes)."""
    placement = forced_placement(problem, constraints)
    best: tuple[float, int] | None = None
    best_mask: np.ndarray | None = None
    for masks, comp in _enumerate(problem, placement):
        vals = objective_values(comp, link, objective)
        sizes = masks.sum(axis=1)
        i = int(np.lexsort((sizes, vals))[0])
        key = (float(vals[i]), int(sizes[i]))
        if best is None or key < best:
            best, best_mask = key, masks[i].copy()
    if best_mask is None or not np.isfinite(best[0]):
        raise PlanError("no valid split exists under these constraints")
    return make_plan(problem, link, objective, best_mask, "exhaustive", lower_bound=best[0],
                     optimal=True)


STRATEGIES: dict[str, Strategy] = {
    "mincut": mincut,
    "milp": milp_strategy,
    "exhaustive": exhaustive,
    "chain": chain,
    "all-edge": all_edge,
    "all-cloud": all_cloud,
}


def get_strategy(algorithm: str) -> Strategy:
    """The registered strategy called ``algorithm``; :class:`UsageError` if unknown."""
    try:
        return STRATEGIES[algorithm]
    except KeyError:
        raise UsageError(f"unknown search algorithm {algorithm!r}; use one of "
                         f"{', '.join(STRATEGIES)}") from None


# ----------------------------------------------------------------------------- public API
def _describe(group: str, constraints: Constraints, problem: PartitionProblem) -> str:
    """One-line description of a constraint group, naming nodes."""
    names = problem.node_names
    if group == "max_edge_mem_bytes":
        return f"max_edge_mem_bytes={constraints.max_edge_mem_bytes}"
    if group == "min_edge_nodes":
        return f"min_edge_nodes={constraints.min_edge_nodes}"
    if group == "pinned":
        return "pinned: " + ", ".join(f"{names[i]}={side}"
                                      for i, side in sorted(constraints.pinned.items()))
    if group == "cloud_only":
        return "cloud_only: " + ", ".join(names[i] for i in sorted(constraints.cloud_only))
    return group


def search(
    problem: PartitionProblem,
    link: Link,
    objective: Objective | str = "latency",
    algorithm: str = "mincut",
    constraints: Constraints | None = None,
    *,
    explain: bool = True,
) -> SplitPlan:
    """Best plan for ``objective`` found by ``algorithm`` under ``constraints``.

    Raises :class:`PlanError` when no valid plan exists and :class:`UsageError` for an unknown
    algorithm/objective or a problem too large for ``exhaustive``. With ``explain`` (default),
    ``binding_constraints`` lists each constraint group (``Constraints.groups``; pins of
    ``problem.pinned`` are part of the problem, not relaxed) whose removal lets the same
    algorithm find a strictly better plan than the returned one (beyond rounding resolution);
    this costs one extra search per active group.
    """
    obj = Objective.coerce(objective)
    cons = constraints if constraints is not None else Constraints()
    strategy = get_strategy(algorithm)
    plan = strategy(problem, link, obj, cons)
    if not explain or not cons.groups:
        return plan
    binding = []
    for group in cons.groups:
        try:
            relaxed = strategy(problem, link, obj, cons.without(group))
        except UsageError:  # e.g. too many free nodes for exhaustive once relaxed
            continue
        # rounding resolution of exact results; a bounded plan's duality gap is not slack
        tol = (_gap_tol(plan.objective_value) + (plan.gap or 0.0) * plan.optimal
               + (relaxed.gap or 0.0) * relaxed.optimal)
        if relaxed.objective_value < plan.objective_value - tol:
            binding.append(_describe(group, cons, problem))
    return dataclasses.replace(plan, binding_constraints=tuple(binding))


def evaluate_plan(
    problem: PartitionProblem,
    link: Link,
    edge_nodes: Sequence[int | str],
    objective: Objective | str = "latency",
    constraints: Constraints | None = None,
    algorithm: str = "manual",
) -> SplitPlan:
    """Cost of a given plan (edge nodes by index or name); :class:`PlanError` if it is not valid
    (not predecessor-closed, breaks a pin or constraint, or names an unknown node)."""
    obj = Objective.coerce(objective)
    placement = forced_placement(problem, constraints or Constraints())
    mask = np.zeros(problem.n_nodes, dtype=bool)
    for v in edge_nodes:
        i = problem.index_of(v) if isinstance(v, str) else int(v)
        if not 0 <= i < problem.n_nodes:
            raise PlanError(f"node index {i} is out of range 0..{problem.n_nodes - 1}")
        mask[i] = True
    why = _validity_error(problem, placement, mask)
    if why:
        raise PlanError(f"invalid split plan: {why}")
    return make_plan(problem, link, obj, mask, algorithm)


def pareto(
    problem: PartitionProblem,
    link: Link,
    objective: Objective | str = "latency",
    algorithm: str = "mincut",
    constraints: Constraints | None = None,
    k: int = 5,
) -> tuple[SplitPlan, ...]:
    """Up to ``k`` distinct plans that are Pareto-optimal among the candidates generated, over
    (objective value, edge memory, boundary bytes), sorted by objective value; the first is
    :func:`search`'s answer.

    Candidates: the optimum; ``k`` successively tighter memory limits (each below the previous
    plan's memory); the optimum for bandwidths scaled by 1/16..16 (plans moving more or fewer
    bytes); every valid prefix of the topological order; with ``exhaustive``, every valid plan.
    Only the first entry is guaranteed optimal; the others are the best the strategy finds.
    """
    if k < 1:
        raise UsageError(f"k must be >= 1, got {k}")
    obj = Objective.coerce(objective)
    cons = constraints if constraints is not None else Constraints()
    strategy = get_strategy(algorithm)
    placement = forced_placement(problem, cons)
    first = search(problem, link, obj, algorithm, cons)
    masks: list[np.ndarray] = [_mask_of(problem, first)]
    limit = first.edge_mem_bytes
    for _ in range(k):
        tight = dataclasses.replace(cons, max_edge_mem_bytes=limit - 1)
        try:
            p = strategy(problem, link, obj, tight)
        except PlanError:
            break
        masks.append(_mask_of(problem, p))
        limit = p.edge_mem_bytes
    for factor in (1 / 16, 1 / 4, 4.0, 16.0):
        scaled = link.with_bandwidth(link.uplink_mbps * factor)
        try:
            masks.append(_mask_of(problem, strategy(problem, scaled, obj, cons)))
        except PlanError:
            pass
    cand = np.stack(masks)
    comp = components(problem, cand)
    pre = prefix_components(problem)
    ok_pre = np.flatnonzero(_prefix_feasible(problem, placement, pre))
    valid = feasible(problem, placement, cand, comp)
    # candidate pool: (objective, memory, bytes) + a way to rebuild its mask
    pools: list[tuple[Components, Callable[[int], np.ndarray]]] = [
        (comp.take(np.flatnonzero(valid)), lambda j, c=cand[valid]: c[j]),
        (pre.take(ok_pre), lambda j: prefix_masks(problem.n_nodes, [ok_pre[j]])[0]),
    ]
    if algorithm == "exhaustive":
        for m, c in _enumerate(problem, placement):
            pools.append((c, lambda j, m=m: m[j]))
    allc = Components.concat([c for c, _ in pools])
    owner = np.concatenate([np.full(len(c), i) for i, (c, _) in enumerate(pools)])
    local = np.concatenate([np.arange(len(c)) for c, _ in pools])
    vals = objective_values(allc, link, obj)
    mem = allc.edge_mem_bytes
    byt = allc.uplink_bytes + allc.downlink_bytes
    order = np.lexsort((byt, mem, vals))
    vals, mem, byt = vals[order], mem[order], byt[order]
    alive = np.isfinite(vals)

    def kill_dominated(v: float, m: int, b: int) -> None:
        # plans dominated by (or equal in all criteria to) a kept plan are dropped
        alive[(vals >= v - _gap_tol(v)) & (mem >= m) & (byt >= b)] = False

    kill_dominated(first.objective_value, first.edge_mem_bytes, first.boundary_bytes)
    picked: list[np.ndarray] = []
    while len(picked) < k - 1 and alive.any():
        j = int(np.argmax(alive))
        kill_dominated(float(vals[j]), int(mem[j]), int(byt[j]))
        o = int(order[j])
        picked.append(pools[int(owner[o])][1](int(local[o])))
    return (first, *(make_plan(problem, link, obj, m, algorithm) for m in picked))


def _mask_of(problem: PartitionProblem, plan: SplitPlan) -> np.ndarray:
    m = np.zeros(problem.n_nodes, dtype=bool)
    m[list(plan.edge_nodes)] = True
    return m
