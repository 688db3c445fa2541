r"""The cost model: the single place where the cost of a plan is defined.

Notation: ``E`` is the set of edge nodes (a plan), ``C`` the cloud nodes, ``a_i = edge_ms[i]``,
``b_i = cloud_ms[i]``, ``B_t = nbytes[t]``, ``u = 8 / (uplink_mbps * 1e3)`` and
``d = 8 / (downlink_mbps * 1e3)`` ms per byte.

* ``edge_ms(E)  = sum_{i in E} a_i``;  ``cloud_ms(E) = sum_{i in C} b_i``.
* ``uplink_bytes(E) = sum_t B_t`` over tensors ``t`` whose producer is in ``E`` or is ``None``
  (graph input, raw on the edge) and that have *at least one* consumer in ``C``. A tensor read
  by several cloud nodes is sent once.
* ``downlink_bytes(E) = sum_t B_t`` over graph outputs produced in ``C`` (they come back to the
  edge). Outputs produced on the edge (or graph inputs that are also outputs) cost nothing.
* ``transfer_ms = u * uplink_bytes + d * downlink_bytes``;
  ``fixed_ms = rtt_ms + per_request_ms`` if ``C`` is non-empty, else 0;
  ``network_ms = transfer_ms + fixed_ms``.
* objectives: ``latency = edge_ms + network_ms + cloud_ms`` (with ``link.edge_quota``: the CPU
  quota model of :mod:`onnxsplit.cpu_quota`, nonlinear in ``edge_ms``; the cut search still
  minimizes the plain sum, so its plans are candidates and evaluated plans are exact);
  ``throughput = max(edge_ms, network_ms, cloud_ms)``;
  ``energy_mj = edge_power_w * edge_ms + radio_nj_per_byte * uplink_bytes * 1e-6``
  (W x ms = mJ; only the edge pays, downlink reception is not charged);
  ``weighted = latency_weight * latency + energy_weight * energy_mj``.
* edge memory (for ``max_edge_mem_bytes``):
  ``edge_mem_bytes(E) = sum_{i in E} weights_i + sum_{graph inputs t} B_t +
  sum_{t produced in E} B_t``: every tensor that ever lives on the edge is counted as if it stayed
  resident (no buffer reuse), a conservative *upper bound* of the peak activation memory of the
  edge half. It is modular (a sum over ``E``), which is what lets the cut search handle it by
  Lagrangian relaxation.

A plan is *valid* when ``E`` is closed under predecessors, respects the forced placements of
:func:`forced_placement` and the memory limit. Nodes with ``a_i = inf`` can only be in ``C`` and
nodes with ``b_i = inf`` only in ``E``; such placements are hard, never "relaxed".

Everything here is vectorized over a batch of plans given as a boolean ``(k, n)`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order

from onnxsplit.errors import PlanError
from onnxsplit.search.plan import BoundaryTensor, SplitPlan
from onnxsplit.search.problem import Constraints, Link, Objective, PartitionProblem

__all__ = [
    "Components",
    "Placement",
    "components",
    "prefix_components",
    "forced_placement",
    "feasible",
    "objective_values",
    "make_plan",
    "sent_matrix",
]


@dataclass(frozen=True)
class Components:
    """Objective-independent quantities of ``k`` plans (arrays of length ``k``)."""

    edge_ms: np.ndarray
    cloud_ms: np.ndarray
    uplink_bytes: np.ndarray
    downlink_bytes: np.ndarray
    cloud_nonempty: np.ndarray
    edge_mem_bytes: np.ndarray

    def transfer_ms(self, link: Link) -> np.ndarray:
        """Uplink plus downlink transfer time, ms."""
        return (self.uplink_bytes * link.ms_per_uplink_byte
                + self.downlink_bytes * link.ms_per_downlink_byte)

    def fixed_ms(self, link: Link) -> np.ndarray:
        """Per-request network constant (0 when the cloud half is empty), ms."""
        return np.where(self.cloud_nonempty, link.fixed_ms, 0.0)

    def network_ms(self, link: Link) -> np.ndarray:
        """``transfer_ms + fixed_ms``."""
        return self.transfer_ms(link) + self.fixed_ms(link)

    def latency_ms(self, link: Link) -> np.ndarray:
        """Single-request latency ``edge + network + cloud``, ms (with ``link.edge_quota``: the
        edge CPU quota model of :mod:`onnxsplit.cpu_quota` instead of the plain sum)."""
        if link.edge_quota is None:
            return self.edge_ms + self.network_ms(link) + self.cloud_ms
        off = self.network_ms(link) + self.cloud_ms
        q = link.edge_quota
        return np.array([q.plan_latency_ms(float(e), float(o) if c else None)
                         for e, o, c in zip(self.edge_ms, off, self.cloud_nonempty)], dtype=np.float64)

    def bottleneck_ms(self, link: Link) -> np.ndarray:
        """Pipelined stage time ``max(edge, network, cloud)``, ms."""
        return np.maximum(np.maximum(self.edge_ms, self.network_ms(link)), self.cloud_ms)

    def energy_mj(self, link: Link, edge_power_w: float) -> np.ndarray:
        """Edge energy per request, mJ."""
        with np.errstate(invalid="ignore"):  # 0 W x inf ms: such a plan is infeasible anyway
            compute = np.where(self.edge_ms > 0, edge_power_w * self.edge_ms, 0.0)
        return compute + link.radio_nj_per_byte * 1e-6 * self.uplink_bytes

    def take(self, idx: np.ndarray | slice) -> Components:
        """The sub-batch ``idx``."""
        return Components(*(getattr(self, f)[idx] for f in _FIELDS))

    @staticmethod
    def concat(parts: list[Components]) -> Components:
        """Concatenate batches."""
        return Components(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def __len__(self) -> int:
        return int(self.edge_ms.shape[0])


_FIELDS = ("edge_ms", "cloud_ms", "uplink_bytes", "downlink_bytes", "cloud_nonempty",
           "edge_mem_bytes")


def objective_values(comp: Components, link: Link, objective: Objective) -> np.ndarray:
    """Objective value of every plan in ``comp`` (see the module docstring)."""
    kind = objective.kind
    if kind == "latency":
        return comp.latency_ms(link)
    if kind == "throughput":
        return comp.bottleneck_ms(link)
    energy = comp.energy_mj(link, objective.edge_power_w)
    if kind == "energy":
        return energy
    return objective.latency_weight * comp.latency_ms(link) + objective.energy_weight * energy


def _as_masks(problem: PartitionProblem, masks: np.ndarray) -> np.ndarray:
    m = np.asarray(masks, dtype=bool)
    if m.ndim == 1:
        m = m[None, :]
    if m.shape[1] != problem.n_nodes:
        raise ValueError(f"plan masks have {m.shape[1]} columns, "
                         f"problem has {problem.n_nodes} nodes")
    return m


def sent_matrix(problem: PartitionProblem, masks: np.ndarray) -> np.ndarray:
    """``(k, T)`` bool: tensor ``t`` is sent uplink under plan ``k`` (producer on the edge or a
    graph input, and at least one consumer in the cloud)."""
    m = _as_masks(problem, masks)
    ptr, idx = problem.consumer_csr
    ncons = problem.n_consumers
    k, T = m.shape[0], len(problem.tensors)
    out = np.zeros((k, T), dtype=bool)
    has = np.flatnonzero(ncons > 0)
    if has.size == 0:
        return out
    cloud_reads = (~m[:, idx]).view(np.uint8)
    any_cloud = np.add.reduceat(cloud_reads, ptr[has], axis=1, dtype=np.int64) > 0
    prod = problem.producer_of[has]
    prod_edge = np.where(prod[None, :] < 0, True, m[:, np.maximum(prod, 0)])
    out[:, has] = any_cloud & prod_edge
    return out


def components(problem: PartitionProblem, masks: np.ndarray) -> Components:
    """Cost components of each plan given as a boolean ``(k, n)`` (or ``(n,)``) edge mask.
    Validity is *not* checked here (see :func:`feasible`)."""
    m = _as_masks(problem, masks)
    edge_ms = np.where(m, problem.edge_ms[None, :], 0.0).sum(axis=1)
    cloud_ms = np.where(m, 0.0, problem.cloud_ms[None, :]).sum(axis=1)
    sent = sent_matrix(problem, m)
    up = sent.astype(np.int64) @ problem.nbytes
    prod = problem.producer_of
    outs = np.flatnonzero(problem.is_output & (prod >= 0))
    down = (~m[:, prod[outs]]).astype(np.int64) @ problem.nbytes[outs]
    mem = m.astype(np.int64) @ problem.node_resident_bytes + problem.input_resident_bytes
    return Components(edge_ms, cloud_ms, up, down, ~m.all(axis=1), mem)


def prefix_components(problem: PartitionProblem) -> Components:
    """Components of the ``n + 1`` prefix plans ``E_k = {0, ..., k-1}``, ``k = 0..n``, in
    ``O(n + T)`` (difference arrays); equal to ``components`` of the same masks."""
    n = problem.n_nodes
    zero = np.zeros(1)
    with np.errstate(invalid="ignore"):
        edge_ms = np.concatenate([zero, np.cumsum(problem.edge_ms)])
        cloud_ms = np.concatenate([np.cumsum(problem.cloud_ms[::-1])[::-1], zero])
    prod, last, nb = problem.producer_of, problem.last_consumer, problem.nbytes
    # tensor t is sent under prefix k iff prod < k <= last consumer
    has = last >= 0
    diff = np.zeros(n + 2, dtype=np.int64)
    np.add.at(diff, prod[has] + 1, nb[has])
    np.add.at(diff, last[has] + 1, -nb[has])
    up = np.cumsum(diff)[: n + 1]
    # graph output produced by p >= 0 comes back iff k <= p
    outs = problem.is_output & (prod >= 0)
    d2 = np.zeros(n + 2, dtype=np.int64)
    d2[0] = nb[outs].sum()
    np.add.at(d2, prod[outs] + 1, -nb[outs])
    down = np.cumsum(d2)[: n + 1]
    mem = problem.input_resident_bytes + np.concatenate(
        [[0], np.cumsum(problem.node_resident_bytes)])
    nonempty = np.arange(n + 1) < n
    return Components(edge_ms, cloud_ms, up, down, nonempty, mem.astype(np.int64))


def prefix_masks(n: int, ks: np.ndarray) -> np.ndarray:
    """Boolean masks of prefix plans ``{0..k-1}`` for each ``k`` in ``ks``."""
    return np.arange(n)[None, :] < np.asarray(ks)[:, None]


# ------------------------------------------------------------------------------ placements
@dataclass(frozen=True)
class Placement:
    """Forced placements implied by a problem and its constraints.

    ``force_edge`` is closed under predecessors and ``force_cloud`` under successors, so a plan is
    valid iff it is predecessor-closed, contains ``force_edge``, avoids ``force_cloud`` and fits
    ``mem_limit``. ``force_edge`` itself is the valid plan with the least edge memory.
    """

    force_edge: np.ndarray
    force_cloud: np.ndarray
    mem_limit: int | None

    @property
    def free(self) -> np.ndarray:
        """Nodes whose side the search chooses."""
        return ~(self.force_edge | self.force_cloud)


def _reach(n: int, src: np.ndarray, dst: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Nodes reachable from the ``seeds`` mask along arcs ``src -> dst`` (seeds included)."""
    s = np.flatnonzero(seeds)
    if s.size == 0:
        return np.zeros(n, dtype=bool)
    rows = np.concatenate([src, np.full(s.size, n)])
    cols = np.concatenate([dst, s])
    g = sp.csr_array((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n + 1, n + 1))
    order = breadth_first_order(g, n, directed=True, return_predecessors=False)
    out = np.zeros(n + 1, dtype=bool)
    out[order] = True
    return out[:n]


def forced_placement(problem: PartitionProblem, constraints: Constraints) -> Placement:
    """Forced placements (see :class:`Placement`); :class:`PlanError` when no valid plan exists.

    Seeds: ``cloud_ms = inf``, pins to ``"edge"``, nodes ``0..min_edge_nodes-1`` and (with
    ``raw_input_stays_on_edge``) every consumer of a graph input are forced to the edge, then
    closed under predecessors; ``edge_ms = inf``, pins to ``"cloud"`` and ``cloud_only`` nodes
    are forced to the cloud, then closed under successors.
    """
    n = problem.n_nodes
    names = problem.node_names
    reasons_e: dict[int, str] = {}
    reasons_c: dict[int, str] = {}
    for i in np.flatnonzero(np.isinf(problem.cloud_ms)):
        reasons_e.setdefault(int(i), "it cannot run in the cloud")
    for i in np.flatnonzero(np.isinf(problem.edge_ms)):
        reasons_c.setdefault(int(i), "it cannot run on the edge")
    for i, side in constraints.pinned.items():
        if problem.pinned.get(i, side) != side:
            raise PlanError(f"node #{i} is pinned to the {problem.pinned[i]} by the problem and "
                            f"to the {side} by the constraints")
    pins = {**problem.pinned, **constraints.pinned}
    for i, side in sorted(pins.items()):
        if not 0 <= i < n:
            raise PlanError(f"pinned node index {i} is out of range 0..{n - 1}")
        (reasons_e if side == "edge" else reasons_c).setdefault(i, f"it is pinned to the {side}")
    for i in sorted(constraints.cloud_only):
        if not 0 <= i < n:
            raise PlanError(f"cloud_only node index {i} is out of range 0..{n - 1}")
        reasons_c.setdefault(i, "it is cloud_only")
    if constraints.min_edge_nodes > n:
        raise PlanError(f"min_edge_nodes={constraints.min_edge_nodes} exceeds the number of "
                        f"nodes ({n})")
    for i in range(constraints.min_edge_nodes):
        reasons_e.setdefault(i, f"min_edge_nodes={constraints.min_edge_nodes}")
    if constraints.raw_input_stays_on_edge:
        for i in problem.input_consumers:
            reasons_e.setdefault(int(i),
                                 "it reads a graph input and raw_input_stays_on_edge is set")
    seed_e = np.zeros(n, dtype=bool)
    seed_e[list(reasons_e)] = True
    seed_c = np.zeros(n, dtype=bool)
    seed_c[list(reasons_c)] = True
    p, c = problem.dependency_pairs
    fe = _reach(n, c, p, seed_e)
    fc = _reach(n, p, c, seed_c)
    clash = np.flatnonzero(fe & fc)
    if clash.size:
        v = int(clash[0])
        one = np.zeros(n, dtype=bool)
        one[v] = True
        e_src = next(int(j) for j in np.flatnonzero(_reach(n, p, c, one) & seed_e))
        c_src = next(int(j) for j in np.flatnonzero(_reach(n, c, p, one) & seed_c))
        why_e = (reasons_e[e_src] if e_src == v
                 else f"{names[e_src]!r} needs it and {reasons_e[e_src]}")
        why_c = (reasons_c[c_src] if c_src == v
                 else f"it needs {names[c_src]!r} and {reasons_c[c_src]}")
        raise PlanError(
            f"no valid split: node {names[v]!r} must run on the edge ({why_e}) and in the cloud "
            f"({why_c})"
        )
    limit = constraints.max_edge_mem_bytes
    if limit is not None:
        need = int(problem.node_resident_bytes[fe].sum()) + problem.input_resident_bytes
        if need > limit:
            raise PlanError(
                f"no valid split fits max_edge_mem_bytes={limit}: the graph inputs and the nodes "
                f"that must run on the edge already need {need} bytes"
            )
    fe.setflags(write=False)
    fc.setflags(write=False)
    return Placement(fe, fc, limit)


def feasible(problem: PartitionProblem, placement: Placement, masks: np.ndarray,
             comp: Components | None = None) -> np.ndarray:
    """``(k,)`` bool: plan is predecessor-closed, respects forced placements and memory."""
    m = _as_masks(problem, masks)
    p, c = problem.dependency_pairs
    ok = ~(m[:, c] & ~m[:, p]).any(axis=1)
    ok &= ~(m & placement.force_cloud[None, :]).any(axis=1)
    ok &= ~(~m & placement.force_edge[None, :]).any(axis=1)
    if placement.mem_limit is not None:
        mem = (comp if comp is not None else components(problem, m)).edge_mem_bytes
        ok &= mem <= placement.mem_limit
    return ok


def closure_violation(problem: PartitionProblem, mask: np.ndarray) -> str | None:
    """``None`` if ``mask`` is predecessor-closed, else a one-line description of a violation."""
    m = np.asarray(mask, dtype=bool)
    p, c = problem.dependency_pairs
    bad = np.flatnonzero(m[c] & ~m[p])
    if bad.size == 0:
        return None
    j = int(bad[0])
    names = problem.node_names
    return (f"node {names[int(c[j])]!r} is on the edge but its predecessor "
            f"{names[int(p[j])]!r} is in the cloud")


# ------------------------------------------------------------------------------ plans
def make_plan(
    problem: PartitionProblem,
    link: Link,
    objective: Objective,
    mask: np.ndarray,
    algorithm: str,
    *,
    binding: tuple[str, ...] = (),
    lower_bound: float | None = None,
    optimal: bool = False,
) -> SplitPlan:
    """Build the :class:`SplitPlan` of one edge mask (no validity check)."""
    m = np.asarray(mask, dtype=bool).reshape(-1)
    comp = components(problem, m)
    value = float(objective_values(comp, link, objective)[0])
    edge = np.flatnonzero(m)
    sent = sent_matrix(problem, m)[0]
    prod = problem.producer_of
    back = problem.is_output & (prod >= 0) & ~m[np.maximum(prod, 0)]
    tensors = problem.tensors
    boundary = tuple(
        BoundaryTensor(tensors[j].name, int(tensors[j].nbytes), "uplink" if sent[j] else "downlink")
        for j in np.flatnonzero(sent | back)
    )
    if lower_bound is not None:
        lower_bound = float(min(lower_bound, value))
    return SplitPlan(
        algorithm=algorithm,
        objective=objective.kind,
        objective_value=value,
        edge_nodes=tuple(int(i) for i in edge),
        edge_node_names=tuple(problem.node_names[i] for i in edge),
        boundary_tensors=boundary,
        uplink_bytes=int(comp.uplink_bytes[0]),
        downlink_bytes=int(comp.downlink_bytes[0]),
        edge_ms=float(comp.edge_ms[0]),
        transfer_ms=float(comp.transfer_ms(link)[0]),
        fixed_ms=float(comp.fixed_ms(link)[0]),
        cloud_ms=float(comp.cloud_ms[0]),
        total_ms=float(comp.latency_ms(link)[0]),
        bottleneck_ms=float(comp.bottleneck_ms(link)[0]),
        energy_mj=float(comp.energy_mj(link, objective.edge_power_w)[0]),
        edge_mem_bytes=int(comp.edge_mem_bytes[0]),
        binding_constraints=tuple(binding),
        lower_bound=lower_bound,
        optimal=optimal,
    )
