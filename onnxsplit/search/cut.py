r"""Exact minimum s-t cut for objectives that are linear in the plan, and a Lagrangian driver
for the objectives and constraints that are not.

Linear objectives
-----------------
Every objective of :mod:`onnxsplit.search.cost` except ``throughput`` has the form

    f(E) = K + sum_{i in E} alpha_i + sum_{i in C} beta_i + sum_t w_t [t sent] + F [C non-empty]

(``alpha``: weighted edge latency/energy, plus ``lambda * resident bytes`` under a memory
multiplier; ``beta``: cloud latency plus the downlink time of the graph outputs the node
produces; ``w_t``: uplink time/energy of tensor ``t``; ``F``: rtt + per-request cost).
Without the ``F`` term, minimizing ``f`` over predecessor-closed plans is a minimum s-t cut; the
source side ``S`` is the edge:

* node ``i``: arc ``s -> i`` with capacity ``max(beta_i - alpha_i, 0)`` (cut iff ``i`` in the
  cloud) and ``i -> t`` with ``max(alpha_i - beta_i, 0)`` (cut iff on the edge); the constant
  ``min(alpha_i, beta_i)`` goes to ``K``. Forced nodes get an infinite arc instead.
* tensor ``t`` with one consumer ``c``: arc ``p -> c`` of capacity ``w_t`` (``p`` = producer,
  or ``s`` for a graph input, which is therefore on the edge side). With several consumers an
  auxiliary vertex ``x_t``: ``p -> x_t`` of capacity ``w_t`` and ``x_t -> c`` infinite for each
  consumer: whatever the number of cloud consumers, the cut pays ``w_t`` exactly once.
* precedence: an infinite arc ``c -> p`` for every producer/consumer pair, so a consumer on the
  edge with its producer in the cloud would cut an infinite arc.

``F`` is handled exactly: if the cut's optimum ``E*`` leaves some node in the cloud it is also
optimal among plans with ``C`` non-empty, so the answer is the better of ``E*`` and the
all-edge plan (when allowed).

Integer capacities
------------------
``scipy.sparse.csgraph.maximum_flow`` (Dinic, C) needs int32 capacities. Costs are multiplied by
``scale = min(1e6, 2**29 / V)`` (1e6 per unit: 1 ns for latency objectives) where ``V`` is the
cut value of a known valid plan (the best valid prefix, else the least or largest valid edge
set), and rounded; "infinite" is ``2**30 - 1 > V * scale`` (scipy adds an arc's capacity to its
reverse's in int32, so larger values overflow), so no minimum cut ever contains an infinite
arc; a finite capacity above that is clipped (it cannot be in a minimum cut either). Rounding is certified a posteriori: the integer maximum flow divided by
``scale`` is a flow of the true network except on arcs where it exceeds the true capacity (only
possible where rounding went up, by less than ``0.5 / scale``); the true minimum cut is at least
its value minus those excesses, which plus ``K`` is the ``lower_bound`` reported with the plan.
A priori the plan is optimal within ``sum_a |delta_a| / scale <= (#arcs) / (2 scale)`` for the
rounding errors ``delta_a`` (a few ns per node for latency); the certificate is usually far
tighter. Among integer-optimal cuts the one with the *smallest* edge set is returned (the
source side of the residual graph).

Lagrangian driver
-----------------
``throughput`` is ``max_j l_j(E)`` of three linear functions (edge, network, cloud) and the memory
limit is a linear constraint ``m(E) <= M``. Minimizing a maximum of modular functions over closed
sets contains PARTITION (no edges, ``a = b``), and a knapsack constraint on a closure is
NP-hard too, so :func:`lagrangian_search` is a bounded method, not an exact one: it maximizes the
Lagrangian dual ``g(w, lam) = min_E sum_j w_j l_j(E) + lam (m(E) - M)`` over ``w`` in the simplex
and ``lam >= 0`` by Kelley's cutting planes (each step: one min cut, then a small LP over the
planes found so far). Every ``g`` value is a certified lower bound on the optimum; the best valid
plan seen (plus any extra candidates the caller adds, e.g. the best prefix) is returned. The first
query uses uniform weights, so without a memory limit the throughput plan is within a factor 3
of optimal (it is never worse than the latency-optimal plan, whose latency is at most 3 times the
optimum bottleneck).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from onnxsplit.search.cost import Placement, sent_matrix
from onnxsplit.search.problem import Link, Objective, PartitionProblem

# scipy's Dinic keeps capacities and residuals in int32: an arc and its reverse may add up, so
# "infinite" is 2**30 - 1 and every finite cut we rely on is scaled below 2**29.
INF_CAP = np.int64(2**30 - 1)
MAX_SCALE = 1e6
_TARGET = float(2**29)

__all__ = ["LinearCost", "CutResult", "linear_cost", "linear_values", "solve_linear",
           "lagrangian_search", "MAX_SCALE"]


@dataclass(frozen=True)
class LinearCost:
    """``f(E) = const + sum_E alpha + sum_C beta + w . sent(E) + fixed * [C non-empty]``.

    ``alpha``/``beta`` are finite (entries of forbidden placements are zeroed: the placement forces
    those nodes, so they never count)."""

    alpha: np.ndarray
    beta: np.ndarray
    w: np.ndarray
    fixed: float
    const: float = 0.0


def linear_cost(
    problem: PartitionProblem,
    link: Link,
    *,
    edge: float = 0.0,
    network: float = 0.0,
    cloud: float = 0.0,
    energy: float = 0.0,
    edge_power_w: float = 0.0,
    mem_lambda: float = 0.0,
) -> LinearCost:
    """The linear function ``edge * edge_ms + network * network_ms + cloud * cloud_ms +
    energy * energy_mj + mem_lambda * edge_mem_bytes`` of a plan, as a :class:`LinearCost`."""
    a = np.where(np.isfinite(problem.edge_ms), problem.edge_ms, 0.0)
    b = np.where(np.isfinite(problem.cloud_ms), problem.cloud_ms, 0.0)
    alpha = (edge + energy * edge_power_w) * a + mem_lambda * problem.node_resident_bytes
    prod = problem.producer_of
    outs = problem.is_output & (prod >= 0)
    down = np.zeros(problem.n_nodes)
    np.add.at(down, prod[outs], problem.nbytes[outs].astype(np.float64))
    beta = cloud * b + network * link.ms_per_downlink_byte * down
    per_byte = network * link.ms_per_uplink_byte + energy * link.radio_nj_per_byte * 1e-6
    w = per_byte * problem.nbytes.astype(np.float64)
    return LinearCost(alpha, beta, w, network * link.fixed_ms,
                      mem_lambda * problem.input_resident_bytes)


def objective_linear_cost(problem: PartitionProblem, link: Link, objective: Objective,
                          mem_lambda: float = 0.0) -> LinearCost:
    """The :class:`LinearCost` of a linear objective (``throughput`` is not linear)."""
    if objective.kind == "latency":
        return linear_cost(problem, link, edge=1, network=1, cloud=1, mem_lambda=mem_lambda)
    if objective.kind == "energy":
        return linear_cost(problem, link, energy=1, edge_power_w=objective.edge_power_w,
                           mem_lambda=mem_lambda)
    if objective.kind == "weighted":
        lw = objective.latency_weight
        return linear_cost(problem, link, edge=lw, network=lw, cloud=lw,
                           energy=objective.energy_weight, edge_power_w=objective.edge_power_w,
                           mem_lambda=mem_lambda)
    raise ValueError(f"objective {objective.kind!r} is not linear")


def _cut_part(problem: PartitionProblem, lc: LinearCost, placement: Placement,
              masks: np.ndarray) -> np.ndarray:
    """Value of the finite cut arcs of each plan (``f`` minus ``const``, constants of forced and
    ``min(alpha, beta)`` of free nodes, and ``fixed``)."""
    m = np.atleast_2d(masks)
    d = np.where(placement.free, lc.alpha - lc.beta, 0.0)
    nodes = np.where(m, np.maximum(d, 0.0), np.maximum(-d, 0.0)).sum(axis=1)
    return nodes + sent_matrix(problem, m).astype(np.float64) @ lc.w


def _constant(lc: LinearCost, placement: Placement) -> float:
    free = placement.free
    return float(lc.const + lc.alpha[placement.force_edge].sum()
                 + lc.beta[placement.force_cloud].sum()
                 + np.minimum(lc.alpha, lc.beta)[free].sum())


def linear_values(problem: PartitionProblem, lc: LinearCost, placement: Placement,
                  masks: np.ndarray) -> np.ndarray:
    """``f(E)`` for each plan (valid plans only: forced nodes are charged on their forced side)."""
    m = np.atleast_2d(masks)
    return (_constant(lc, placement) + _cut_part(problem, lc, placement, m)
            + lc.fixed * (~m.all(axis=1)))


@dataclass(frozen=True)
class CutResult:
    """A minimizer of a :class:`LinearCost`: its mask, exact value and a certified lower bound
    on the minimum over all valid plans (ignoring the memory limit)."""

    mask: np.ndarray
    value: float
    lower_bound: float
    resolution: float


def _arcs(problem: PartitionProblem, lc: LinearCost, placement: Placement
          ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Vertex count and arc arrays ``(rows, cols, capacity)``; capacity ``inf`` = infinite."""
    n = problem.n_nodes
    s, t = n, n + 1
    fe, fc, free = placement.force_edge, placement.force_cloud, placement.free
    d = lc.alpha - lc.beta
    nodes = np.arange(n)
    src = free & (d < 0)
    snk = free & (d > 0)
    rows = [np.full(int(src.sum()), s), nodes[snk], np.full(int(fe.sum()), s), nodes[fc]]
    cols = [nodes[src], np.full(int(snk.sum()), t), nodes[fe], np.full(int(fc.sum()), t)]
    caps = [-d[src], d[snk], np.full(int(fe.sum()), np.inf), np.full(int(fc.sum()), np.inf)]
    # tensors: only those that can actually be sent matter
    ptr, idx = problem.consumer_csr
    ncons = problem.n_consumers
    prod = problem.producer_of
    prod_may_edge = (prod < 0) | ~fc[np.maximum(prod, 0)]
    active = (lc.w > 0) & (ncons > 0) & prod_may_edge
    tail = np.where(prod < 0, s, prod)
    single = active & (ncons == 1)
    rows.append(tail[single])
    cols.append(idx[ptr[:-1][single]])
    caps.append(lc.w[single])
    multi = active & (ncons > 1)
    n_aux = int(multi.sum())
    aux = n + 2 + np.arange(n_aux)
    rows.append(tail[multi])
    cols.append(aux)
    caps.append(lc.w[multi])
    entry_multi = np.repeat(multi, ncons)
    rows.append(np.repeat(aux, ncons[multi]))
    cols.append(idx[entry_multi])
    caps.append(np.full(int(entry_multi.sum()), np.inf))
    # precedence
    p, c = problem.dependency_pairs
    rows.append(c)
    cols.append(p)
    caps.append(np.full(p.size, np.inf))
    return (n + 2 + n_aux, np.concatenate(rows).astype(np.int64),
            np.concatenate(cols).astype(np.int64), np.concatenate(caps))


def solve_linear(problem: PartitionProblem, lc: LinearCost, placement: Placement) -> CutResult:
    """Minimize ``lc`` over predecessor-closed plans respecting ``placement``'s forced sets (its
    memory limit is ignored) by one integer maximum flow. See the module docstring for exactness.
    """
    n = problem.n_nodes
    fe, fc = placement.force_edge, placement.force_cloud
    bounds = [fe, ~fc]  # both valid: fe is pred-closed, ~fc too
    k = _best_prefix(problem, lc, placement)
    if k is not None:
        bounds.append(np.arange(n) < k)
    v = float(_cut_part(problem, lc, placement, np.stack(bounds)).min())
    scale = MAX_SCALE if v * MAX_SCALE <= _TARGET else _TARGET / v
    n_vert, rows, cols, caps = _arcs(problem, lc, placement)
    finite = np.isfinite(caps)
    scaled = caps[finite] * scale
    rounded = np.rint(scaled)
    resolution = float(np.abs(rounded - scaled).sum()) / scale
    icap = np.full(caps.size, INF_CAP, dtype=np.int64)
    icap[finite] = np.minimum(rounded.astype(np.int64), INF_CAP)
    keep = icap > 0
    s, t = n, n + 1
    graph = sp.csr_array((icap[keep], (rows[keep], cols[keep])), shape=(n_vert, n_vert))
    graph.sum_duplicates()
    graph.data = np.minimum(graph.data, INF_CAP).astype(np.int32)
    res = maximum_flow(graph, s, t, method="dinic")
    flow = res.flow
    resid = graph.astype(np.int64) - sp.csr_array(flow).astype(np.int64)
    resid = sp.csr_array(resid)
    resid.data = (resid.data > 0).astype(np.int8)
    resid.eliminate_zeros()
    order = breadth_first_order(resid, s, directed=True, return_predecessors=False)
    side = np.zeros(n_vert, dtype=bool)
    side[order] = True
    if side[t]:  # cannot happen for a maximum flow; guards against integer overflow
        raise RuntimeError("internal error: maximum_flow returned a non-maximum flow")
    mask = side[:n] | fe
    const = _constant(lc, placement)
    # certificate: the integer flow scaled back is a flow that exceeds the true capacities only
    # where rounding went up; max-flow (= min-cut) >= its value minus those excesses
    true = sp.csr_array((caps[keep], (rows[keep], cols[keep])), shape=(n_vert, n_vert))
    over = sp.csr_array(sp.csr_array(flow).astype(np.float64) * (1.0 / scale) - true)
    excess = float(np.maximum(over.data, 0.0).sum())
    cut_lb = const + float(res.flow_value) / scale - excess
    candidates = [mask]
    if not fc.any() and not mask.all():
        candidates.append(np.ones(n, dtype=bool))
    vals = linear_values(problem, lc, placement, np.stack(candidates))
    best = int(np.argmin(vals))  # ties keep the smaller edge set (index 0)
    lb = cut_lb + lc.fixed
    if not fc.any():
        lb = min(lb, float(linear_values(problem, lc, placement, np.ones(n, dtype=bool))[0]))
    return CutResult(candidates[best], float(vals[best]), lb, resolution)


def _best_prefix(problem: PartitionProblem, lc: LinearCost, placement: Placement) -> int | None:
    """Length of the prefix plan minimizing ``lc`` among valid prefixes (memory ignored), in
    O(n + T) with difference arrays; ``None`` if no prefix respects the forced placements."""
    n = problem.n_nodes
    fe, fc = np.flatnonzero(placement.force_edge), np.flatnonzero(placement.force_cloud)
    k_lo = int(fe.max()) + 1 if fe.size else 0
    k_hi = int(fc.min()) if fc.size else n
    if k_lo > k_hi:
        return None
    zero = np.zeros(1)
    vals = np.concatenate([zero, np.cumsum(lc.alpha)])
    vals += np.concatenate([np.cumsum(lc.beta[::-1])[::-1], zero])
    prod, last = problem.producer_of, problem.last_consumer
    has = last >= 0
    diff = np.zeros(n + 2)
    np.add.at(diff, prod[has] + 1, lc.w[has])
    np.add.at(diff, last[has] + 1, -lc.w[has])
    vals += np.cumsum(diff)[: n + 1]
    vals[:n] += lc.fixed
    return k_lo + int(np.argmin(vals[k_lo: k_hi + 1]))


# ------------------------------------------------------------------------ Lagrangian driver
@dataclass
class LagrangianResult:
    """Best valid plan found, its objective value, the best certified lower bound, and every
    plan the search produced (valid for the forced placements, maybe not for memory)."""

    mask: np.ndarray
    value: float
    lower_bound: float
    candidates: np.ndarray
    resolution: float


Evaluate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def lagrangian_search(
    problem: PartitionProblem,
    placement: Placement,
    combine: Callable[[np.ndarray], LinearCost],
    evaluate: Evaluate,
    n_pieces: int,
    extra_candidates: np.ndarray | None = None,
    max_iter: int = 40,
    rel_tol: float = 1e-7,
) -> LagrangianResult:
    """Minimize ``max_j l_j(E)`` subject to ``edge_mem_bytes(E) <= placement.mem_limit``
    (bounded method, see the module docstring).

    ``combine(w)`` is the :class:`LinearCost` of ``sum_j w_j l_j + w[-1] * edge_mem_bytes`` for a
    weight vector of length ``n_pieces + 1`` (last entry: memory multiplier, objective units per
    byte). ``evaluate(masks)`` returns the exact ``(k, n_pieces)`` values ``l_j`` and the ``(k,)``
    edge memory. ``extra_candidates`` are valid plans that compete for the upper bound and seed
    the cutting planes.
    """
    limit = placement.mem_limit
    n = problem.n_nodes
    cands: list[np.ndarray] = [placement.force_edge.copy()]
    if extra_candidates is not None and len(extra_candidates):
        cands.extend(np.asarray(extra_candidates, dtype=bool))
    pv, mem = evaluate(np.stack(cands))
    planes_l = [pv]
    planes_m = [mem.astype(np.float64) - (limit if limit is not None else 0.0)]
    ok = np.isfinite(pv).all(axis=1) & ((mem <= limit) if limit is not None else True)
    best_val = float(np.min(np.where(ok, pv.max(axis=1), np.inf)))
    best_lb = -np.inf
    resolution = 0.0
    mem_scale = 1.0
    if limit is not None:
        _, peak = evaluate(np.ones((1, n), dtype=bool))
        mem_scale = 1.0 / max(1.0, float(peak[0]))
    w = np.concatenate([np.full(n_pieces, 1.0 / n_pieces), [0.0]])
    for _ in range(max_iter):
        res = solve_linear(problem, combine(w), placement)
        # res bounds min_E sum_j w_j l_j(E) + lam * m(E); the dual function subtracts lam * M
        g = res.lower_bound - (w[-1] * limit if limit is not None else 0.0)
        best_lb = max(best_lb, g)
        resolution = max(resolution, res.resolution)
        cands.append(res.mask)
        pv, mem = evaluate(res.mask[None, :])
        if np.isfinite(pv).all() and (limit is None or mem[0] <= limit):
            best_val = min(best_val, float(pv.max()))
        planes_l.append(pv)
        planes_m.append(mem.astype(np.float64) - (limit if limit is not None else 0.0))
        tol = resolution + rel_tol * max(1.0, abs(best_val) if np.isfinite(best_val) else 1.0)
        if best_val - best_lb <= tol or (limit is None and n_pieces == 1):
            break
        z, w_new = _master(np.concatenate(planes_l), np.concatenate(planes_m), n_pieces,
                           limit is not None, mem_scale)
        if z is None or z - best_lb <= tol or np.allclose(w_new, w, rtol=0, atol=1e-12):
            break
        w = w_new
    masks = np.stack(cands)
    pv, mem = evaluate(masks)
    vals = np.where(np.isfinite(pv).all(axis=1), pv.max(axis=1), np.inf)
    if limit is not None:
        vals = np.where(mem <= limit, vals, np.inf)
    i = int(np.argmin(vals))
    return LagrangianResult(masks[i], float(vals[i]), float(min(best_lb, vals[i])), masks,
                            resolution)


def _master(L: np.ndarray, M: np.ndarray, n_pieces: int, with_mem: bool,
            mem_scale: float) -> tuple[float | None, np.ndarray]:
    """Kelley master LP: ``max z`` s.t. ``z <= w . L_k + lam M_k`` for every plane ``k`` (rows of
    ``L``: piece values, ``M``: memory minus limit), ``w`` in the simplex, ``lam >= 0``.
    Variables ``[w_1..w_J, mu, z]`` with ``lam = mu * mem_scale``. Returns ``(z, [w, lam])``, or
    ``(None, _)`` when the LP fails."""
    keep = np.isfinite(L).all(axis=1)
    L, M = L[keep], M[keep] * mem_scale
    k = L.shape[0]
    if k == 0:
        return None, np.zeros(n_pieces + 1)
    nv = n_pieces + 2
    c = np.zeros(nv)
    c[-1] = -1.0
    a_ub = np.zeros((k, nv))
    a_ub[:, :n_pieces] = -L
    a_ub[:, n_pieces] = -M
    a_ub[:, -1] = 1.0
    a_eq = np.zeros((1, nv))
    a_eq[0, :n_pieces] = 1.0
    ub_mu = 1e6 * max(1.0, float(np.abs(L).max())) if with_mem else 0.0
    bounds = [(0, 1)] * n_pieces + [(0, ub_mu), (None, None)]
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(k), A_eq=a_eq, b_eq=[1.0], bounds=bounds,
                  method="highs")
    if res.status != 0:
        return None, np.zeros(n_pieces + 1)
    x = res.x
    w = np.concatenate([np.clip(x[:n_pieces], 0, None), [max(x[n_pieces], 0.0) * mem_scale]])
    w[:n_pieces] /= max(w[:n_pieces].sum(), 1e-300)
    return float(-res.fun), w
