r"""Exact search as a mixed-integer linear program (HiGHS via :func:`scipy.optimize.milp`).

Variables: ``x_i in {0, 1}`` (node ``i`` on the edge), ``y_t in {0, 1}`` (tensor ``t`` sent
uplink), ``z in {0, 1}`` (the cloud half is non-empty) and, for ``throughput``, the stage bound
``T``. Constraints: ``x_c <= x_p`` for every producer/consumer pair (predecessor closure);
``y_t >= x_p - x_c`` for every consumer ``c`` of ``t`` (``x_p := 1`` for a graph input), so
``y_t >= 1`` exactly when the tensor crosses; ``z >= 1 - x_i``; forced placements as bounds;
``sum_i resident_i x_i <= max_edge_mem_bytes - input bytes``. Linear objectives minimize
``sum_i (alpha_i - beta_i) x_i + sum_t w_t y_t + F z`` (+ constant); ``throughput`` minimizes
``T`` with ``T >= edge_ms(x)``, ``T >= network_ms(x, y, z)``, ``T >= cloud_ms(x)`` (rows scaled
to unit max coefficient). ``y`` and ``z`` only appear with non-negative weights, so an optimum
may take them at their lower bounds, the exact indicator values; either way the plan is read
from ``x`` and re-evaluated with the shared cost model. Exact (relative MIP gap ``1e-9``) when
HiGHS finishes within :data:`MILP_TIME_LIMIT_S` (seconds, module-level); otherwise the best of
HiGHS's incumbent and the ``mincut`` plan is returned, with the better of HiGHS's dual bound and
mincut's bound as ``lower_bound`` and ``optimal = False``. HiGHS may print to stdout.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from onnxsplit.search.cost import (
    components,
    feasible,
    forced_placement,
    make_plan,
    objective_values,
)
from onnxsplit.search.cut import linear_cost, objective_linear_cost
from onnxsplit.search.plan import SplitPlan
from onnxsplit.search.problem import Constraints, Link, Objective, PartitionProblem

MILP_TIME_LIMIT_S = 60.0

__all__ = ["MILP_TIME_LIMIT_S", "milp_strategy"]


class _Rows:
    """Accumulates sparse constraint rows ``lo <= A v <= hi``."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.n = 0

    def add(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, lo: np.ndarray,
            hi: np.ndarray) -> None:
        """Add ``len(lo)`` rows; ``rows`` are local indices ``0..len(lo)-1``."""
        self.r.append(np.asarray(rows, dtype=np.int64) + self.n)
        self.c.append(np.asarray(cols, dtype=np.int64))
        self.v.append(np.asarray(vals, dtype=np.float64))
        self.lo.append(np.asarray(lo, dtype=np.float64))
        self.hi.append(np.asarray(hi, dtype=np.float64))
        self.n += len(lo)

    def constraint(self, n_vars: int) -> LinearConstraint:
        a = sp.csr_array((np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
                         shape=(self.n, n_vars))
        return LinearConstraint(a, np.concatenate(self.lo), np.concatenate(self.hi))


def milp_strategy(problem: PartitionProblem, link: Link, objective: Objective,
                  constraints: Constraints) -> SplitPlan:
    """Exact plan by mixed-integer programming (see the module docstring)."""
    from onnxsplit.search.strategies import mincut  # fallback; avoids an import cycle

    placement = forced_placement(problem, constraints)
    n = problem.n_nodes
    throughput = objective.kind == "throughput"
    if throughput:
        pieces = [linear_cost(problem, link, edge=1), linear_cost(problem, link, network=1),
                  linear_cost(problem, link, cloud=1)]
        w = pieces[1].w
        fixed = pieces[1].fixed
    else:
        lc = objective_linear_cost(problem, link, objective)
        w, fixed = lc.w, lc.fixed
    ptr, idx = problem.consumer_csr
    ncons = problem.n_consumers
    prod = problem.producer_of
    act = np.flatnonzero((w > 0) & (ncons > 0))
    n_y = act.size
    yz = n + n_y  # index of z
    n_vars = yz + 1 + (1 if throughput else 0)
    tv = yz + 1
    rows = _Rows()
    # closure x_c - x_p <= 0
    p, c = problem.dependency_pairs
    k = np.arange(p.size)
    rows.add(np.concatenate([k, k]), np.concatenate([c, p]),
             np.concatenate([np.ones(p.size), -np.ones(p.size)]),
             np.full(p.size, -np.inf), np.zeros(p.size))
    # y_t >= x_p - x_c   <=>   x_p - x_c - y_t <= 0   (graph input: -x_c - y_t <= -1)
    cnt = ncons[act]
    t_rep = np.repeat(act, cnt)
    y_rep = np.repeat(n + np.arange(n_y), cnt)
    offset = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)  # position in segment
    cons_rep = idx[np.repeat(ptr[act], cnt) + offset]
    m = t_rep.size
    k = np.arange(m)
    is_in = prod[t_rep] < 0
    kk = k[~is_in]
    rows.add(np.concatenate([k, k, kk]),
             np.concatenate([cons_rep, y_rep, prod[t_rep][~is_in]]),
             np.concatenate([-np.ones(m), -np.ones(m), np.ones(kk.size)]),
             np.full(m, -np.inf), np.where(is_in, -1.0, 0.0))
    # z >= 1 - x_i   <=>  -x_i - z <= -1
    if fixed > 0:
        k = np.arange(n)
        rows.add(np.concatenate([k, k]), np.concatenate([np.arange(n), np.full(n, yz)]),
                 -np.ones(2 * n), np.full(n, -np.inf), -np.ones(n))
    if placement.mem_limit is not None:
        cap = placement.mem_limit - problem.input_resident_bytes
        coef = problem.node_resident_bytes.astype(np.float64)
        s = max(1.0, float(coef.max()))  # row scaling keeps HiGHS's tolerances meaningful
        rows.add(np.zeros(n), np.arange(n), coef / s, [-np.inf], [cap / s])
    cost = np.zeros(n_vars)
    const = 0.0
    if throughput:
        cost[tv] = 1.0
        for j, pc in enumerate(pieces):
            coef = np.zeros(n_vars)
            coef[:n] = pc.alpha - pc.beta
            coef[n:yz] = pc.w[act]
            coef[yz] = pc.fixed
            coef[tv] = -1.0
            nz = np.flatnonzero(coef)
            s = float(np.abs(coef).max())  # row scaling (HiGHS fails on the raw rows)
            rows.add(np.zeros(nz.size), nz, coef[nz] / s, [-np.inf], [-float(pc.beta.sum()) / s])
    else:
        cost[:n] = lc.alpha - lc.beta
        cost[n:yz] = w[act]
        cost[yz] = fixed
        const = float(lc.beta.sum() + lc.const)
    lo = np.zeros(n_vars)
    hi = np.ones(n_vars)
    lo[:n][placement.force_edge] = 1.0
    hi[:n][placement.force_cloud] = 0.0
    if throughput:
        lo[tv], hi[tv] = 0.0, np.inf
    integrality = np.ones(n_vars)  # y and z are integral at the optimum anyway; declaring
    if throughput:  # them integral avoids numerical failures seen in HiGHS
        integrality[tv] = 0
    res = milp(cost, integrality=integrality, bounds=Bounds(lo, hi),
               constraints=[rows.constraint(n_vars)],
               options={"time_limit": MILP_TIME_LIMIT_S, "mip_rel_gap": 1e-9})
    dual = getattr(res, "mip_dual_bound", None)
    lower = None if dual is None or not np.isfinite(dual) else float(dual) + const
    candidates = []
    if res.x is not None:
        candidates.append(res.x[:n] > 0.5)
    exact = res.status == 0 and candidates and bool(
        feasible(problem, placement, candidates[0][None, :])[0])
    if not exact:
        fallback = mincut(problem, link, objective, constraints)
        fb = np.zeros(n, dtype=bool)
        fb[list(fallback.edge_nodes)] = True
        candidates.append(fb)
        if fallback.lower_bound is not None:
            lower = max(lower if lower is not None else -np.inf, fallback.lower_bound)
    masks = np.stack(candidates)
    comp = components(problem, masks)
    vals = np.where(feasible(problem, placement, masks, comp),
                    objective_values(comp, link, objective), np.inf)
    best = int(np.argmin(vals))
    if exact:
        lower = float(vals[best]) if lower is None else min(lower, float(vals[best]))
    return make_plan(problem, link, objective, masks[best], "milp", lower_bound=lower,
                     optimal=bool(exact))
