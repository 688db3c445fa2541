"""The result of a search: a JSON-serializable :class:`SplitPlan`."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BoundaryTensor", "SplitPlan"]


@dataclass(frozen=True)
class BoundaryTensor:
    """A tensor that crosses the network: ``uplink`` (edge to cloud: produced on the edge or a
    graph input, read in the cloud) or ``downlink`` (a graph output produced in the cloud)."""

    name: str
    nbytes: int
    direction: Literal["uplink", "downlink"]


def _num(x: float) -> float | None:
    """JSON-safe float: ``None`` for inf/NaN."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class SplitPlan:
    """A split of the graph and its predicted cost.

    ``edge_nodes`` (sorted indices) run on the edge, every other node in the cloud. Times in ms,
    energy in mJ, sizes in bytes; ``total_ms = edge_ms + transfer_ms + fixed_ms + cloud_ms`` is the
    single-request latency and ``bottleneck_ms = max(edge_ms, transfer_ms + fixed_ms, cloud_ms)``
    the pipelined stage time. ``objective_value`` is the value of ``objective`` (see
    :class:`~onnxsplit.search.problem.Objective`). ``binding_constraints`` lists the constraint
    groups without which the search finds a strictly better plan. ``lower_bound`` is a certified
    lower bound on the optimum of the same problem (``None`` when the strategy makes no claim),
    and ``optimal`` says the strategy proved the plan optimal (up to its documented resolution).
    """

    algorithm: str
    objective: str
    objective_value: float
    edge_nodes: tuple[int, ...]
    edge_node_names: tuple[str, ...]
    boundary_tensors: tuple[BoundaryTensor, ...]
    uplink_bytes: int
    downlink_bytes: int
    edge_ms: float
    transfer_ms: float
    fixed_ms: float
    cloud_ms: float
    total_ms: float
    bottleneck_ms: float
    energy_mj: float
    edge_mem_bytes: int
    binding_constraints: tuple[str, ...] = ()
    lower_bound: float | None = None
    optimal: bool = False

    @property
    def boundary_bytes(self) -> int:
        """Bytes crossing the network per request, both directions."""
        return self.uplink_bytes + self.downlink_bytes

    @property
    def gap(self) -> float | None:
        """``objective_value - lower_bound`` (``None`` without a bound)."""
        return None if self.lower_bound is None else self.objective_value - self.lower_bound

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (lists, ints, floats, strings; non-finite floats become ``None``)."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = _num(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d

    def to_json(self, **kwargs: Any) -> str:
        """``json.dumps(self.to_dict())``."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitPlan:
        """Inverse of :meth:`to_dict` (``None`` floats come back as ``inf``)."""
        kw = dict(d)
        kw["boundary_tensors"] = tuple(BoundaryTensor(**b) for b in d["boundary_tensors"])
        for k in ("edge_nodes", "edge_node_names", "binding_constraints"):
            kw[k] = tuple(d[k])
        for f in dataclasses.fields(cls):
            if f.type == "float" and kw.get(f.name) is None:
                kw[f.name] = math.inf
        return cls(**kw)
