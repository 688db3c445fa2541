r"""Policy tables: the best plan over a grid of bandwidths and batch sizes.

For each batch size ``b`` the problem is rescaled by a batch model (default
:func:`~onnxsplit.search.problem.scale_batch`: latencies and tensor bytes times ``b``), and for
each bandwidth the link's uplink is set to that value with the downlink scaled by the same factor
(``Link.with_bandwidth``: the up/down asymmetry is kept).

Every objective but ``throughput`` is ``A(E) + B(E) x`` with ``x = 1 / bandwidth``, where
``B(E)`` is proportional to the *weighted boundary bytes* ``uplink + downlink * up/down`` and
``A(E)`` is everything else (compute and the per-request constant). Two consequences, both used:

* if one plan is optimal at two bandwidths it is optimal at every bandwidth in between (a linear
  function minimal at both ends of an interval is minimal on it), so the grid is solved by
  bisection: only intervals whose end plans differ are split (exact for exact strategies; for
  bounded ones the filled points inherit the end points' guarantee);
* the per-point choice is *polished*: every grid point takes the best (exactly re-evaluated)
  plan among all plans found for that batch size, ties broken by fewer weighted boundary bytes
  then fewer edge nodes. Choosing an exact minimum among one fixed set of lines at every point
  makes ``B`` non-decreasing and ``A`` non-increasing as bandwidth grows: for ``x1 > x2`` the two
  optimality inequalities add up to ``(B1 - B2)(x1 - x2) <= 0``, and then
  ``A2 <= A1 - (B2 - B1) x2 <= A1``.

Rows of the table merge consecutive grid points with the same plan. Between two rows the switch
bandwidth is where the two plans cost the same (exact for linear objectives; the geometric mean
of the neighbouring grid points for ``throughput``). A row's plan is evaluated at the lowest grid
bandwidth it covers (its worst case inside the row).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxsplit.errors import UsageError
from onnxsplit.search.cost import components, make_plan, objective_values
from onnxsplit.search.plan import SplitPlan
from onnxsplit.search.problem import (
    BatchModel,
    Constraints,
    Link,
    Objective,
    PartitionProblem,
    scale_batch,
)
from onnxsplit.search.strategies import get_strategy

__all__ = ["PolicyRow", "PolicyTable", "sweep", "DEFAULT_BANDWIDTHS_MBPS", "DEFAULT_BATCH_SIZES"]

DEFAULT_BANDWIDTHS_MBPS: tuple[float, ...] = tuple(float(x) for x in np.logspace(-1, 4, 51))
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class PolicyRow:
    """Use ``plan`` for batch size ``batch_size`` when ``from_mbps <= bandwidth < to_mbps``."""

    batch_size: int
    from_mbps: float
    to_mbps: float
    plan: SplitPlan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (an unbounded ``to_mbps`` becomes ``None``)."""
        return {"batch_size": self.batch_size, "from_mbps": self.from_mbps,
                "to_mbps": self.to_mbps if math.isfinite(self.to_mbps) else None,
                "plan": self.plan.to_dict()}


@dataclass(frozen=True)
class PolicyTable:
    """Result of :func:`sweep`. ``grid_rows[b][i]`` is the index in ``rows`` of the plan chosen
    for batch size ``b`` at ``bandwidths_mbps[i]``."""

    objective: str
    algorithm: str
    bandwidths_mbps: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    rows: tuple[PolicyRow, ...]
    grid_rows: dict[int, tuple[int, ...]]

    def rows_for(self, batch_size: int) -> tuple[PolicyRow, ...]:
        """Rows of one batch size, by increasing bandwidth."""
        if batch_size not in self.grid_rows:
            raise UsageError(f"batch size {batch_size} is not in the table "
                             f"({', '.join(map(str, self.batch_sizes))})")
        return tuple(r for r in self.rows if r.batch_size == batch_size)

    def plan_at_grid(self, batch_size: int, i: int) -> SplitPlan:
        """Plan chosen at grid point ``bandwidths_mbps[i]``."""
        self.rows_for(batch_size)
        return self.rows[self.grid_rows[batch_size][i]].plan

    def lookup(self, mbps: float, batch_size: int = 1) -> SplitPlan:
        """Plan for a measured bandwidth (rows are contiguous from 0 to infinity)."""
        for row in self.rows_for(batch_size):
            if row.from_mbps <= mbps < row.to_mbps:
                return row.plan
        return self.rows_for(batch_size)[-1].plan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"objective": self.objective, "algorithm": self.algorithm,
                "bandwidths_mbps": list(self.bandwidths_mbps),
                "batch_sizes": list(self.batch_sizes),
                "rows": [r.to_dict() for r in self.rows],
                "grid_rows": {str(b): list(v) for b, v in self.grid_rows.items()}}


def _weighted_bytes(comp: Any, link: Link) -> np.ndarray:
    ratio = link.uplink_mbps / float(link.downlink_mbps)  # type: ignore[arg-type]
    return comp.uplink_bytes + comp.downlink_bytes * ratio


def sweep(
    problem: PartitionProblem,
    link: Link,
    objective: Objective | str = "latency",
    algorithm: str = "mincut",
    constraints: Constraints | None = None,
    bandwidths_mbps: Sequence[float] | np.ndarray = DEFAULT_BANDWIDTHS_MBPS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    batch_model: BatchModel = scale_batch,
) -> PolicyTable:
    """Best plan per (batch size, bandwidth) grid point, collapsed into bandwidth ranges.

    ``link`` supplies everything but the bandwidth (rtt, per-request cost, radio energy, up/down
    ratio). ``batch_model(problem, b)`` returns the problem for batch size ``b``. See the module
    docstring for the bisection, the tie-breaking and the monotonicity guarantee.
    """
    obj = Objective.coerce(objective)
    cons = constraints if constraints is not None else Constraints()
    strategy = get_strategy(algorithm)
    grid = np.asarray(bandwidths_mbps, dtype=np.float64).reshape(-1)
    if grid.size == 0 or not (grid > 0).all() or (np.diff(grid) <= 0).any():
        raise UsageError("bandwidths_mbps must be a non-empty increasing list of positive numbers")
    sizes = tuple(int(b) for b in batch_sizes)
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise UsageError("batch_sizes must be distinct integers >= 1")
    links = [link.with_bandwidth(float(bw)) for bw in grid]
    rows: list[PolicyRow] = []
    grid_rows: dict[int, tuple[int, ...]] = {}
    for b in sizes:
        pb = batch_model(problem, b)
        found: dict[int, np.ndarray] = {}

        def solve(i: int, pb: PartitionProblem = pb, found: dict[int, np.ndarray] = found
                  ) -> np.ndarray:
            if i not in found:
                plan = strategy(pb, links[i], obj, cons)
                m = np.zeros(pb.n_nodes, dtype=bool)
                m[list(plan.edge_nodes)] = True
                found[i] = m
            return found[i]

        n_grid = grid.size
        if obj.is_linear:
            stack = [(0, n_grid - 1)]
            while stack:
                lo, hi = stack.pop()
                if np.array_equal(solve(lo), solve(hi)):
                    for i in range(lo + 1, hi):
                        found[i] = found[lo]
                elif hi - lo > 1:
                    mid = (lo + hi) // 2
                    stack += [(lo, mid), (mid, hi)]
        else:
            for i in range(n_grid):
                solve(i)
        cand = np.unique(np.stack([found[i] for i in range(n_grid)]), axis=0)
        comp = components(pb, cand)
        vals = np.stack([objective_values(comp, lk, obj) for lk in links], axis=1)  # (cands, grid)
        wbytes = _weighted_bytes(comp, link)
        n_edge = cand.sum(axis=1)
        choice = np.array([int(np.lexsort((n_edge, wbytes, vals[:, i]))[0])
                           for i in range(n_grid)])
        # collapse runs into rows
        starts = np.flatnonzero(np.r_[True, choice[1:] != choice[:-1]])
        first_row = len(rows)
        per_grid = np.zeros(n_grid, dtype=np.int64)
        bounds = [0.0]
        for r, s in enumerate(starts):
            if r > 0:
                bounds.append(_switch(vals[choice[s - 1]], vals[choice[s]], grid, s, obj))
        bounds.append(math.inf)
        for r, s in enumerate(starts):
            e = starts[r + 1] if r + 1 < len(starts) else n_grid
            per_grid[s:e] = first_row + r
            plan = make_plan(pb, links[s], obj, cand[choice[s]], algorithm)
            rows.append(PolicyRow(b, bounds[r], bounds[r + 1], plan))
        grid_rows[b] = tuple(int(x) for x in per_grid)
    return PolicyTable(obj.kind, algorithm, tuple(float(g) for g in grid), sizes, tuple(rows),
                       grid_rows)


def _switch(prev: np.ndarray, nxt: np.ndarray, grid: np.ndarray, s: int, obj: Objective) -> float:
    """Bandwidth between ``grid[s-1]`` and ``grid[s]`` where plan ``prev`` stops being better
    than ``nxt``: exact root of their (linear in 1/bandwidth) difference, else geometric mean."""
    lo, hi = grid[s - 1], grid[s]
    mean = math.sqrt(lo * hi)
    if not obj.is_linear:
        return mean
    g0, g1 = prev[s - 1] - nxt[s - 1], prev[s] - nxt[s]  # <= 0 at lo, >= 0 at hi
    if not (np.isfinite(g0) and np.isfinite(g1)) or g1 == g0:
        return mean
    x0, x1 = 1.0 / lo, 1.0 / hi
    x = x0 + (x1 - x0) * (-g0) / (g1 - g0)
    return float(min(max(1.0 / x, lo), hi)) if x > 0 else mean
