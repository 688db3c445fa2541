"""The partitioning problem as plain data (no ONNX import).

A :class:`PartitionProblem` is a DAG of ``n`` nodes numbered ``0..n-1`` in a topological order,
connected by tensors (:class:`TensorSpec`): a tensor has at most one producer node and any number of
consumer nodes. A tensor whose ``producer`` is ``None`` is a *graph input*: the raw input, captured
on the edge device. A *plan* is the set ``E`` of nodes that run on the edge; it must be closed under
predecessors (every producer of an input of an ``E`` node is in ``E``). The remaining nodes ``C``
run in the cloud. The cost model of a plan is documented in :mod:`onnxsplit.search.cost`.

Units are part of every name: ``*_ms`` milliseconds, ``*_mbps`` megabits per second (10**6 bit/s),
``*_bytes`` / ``nbytes`` bytes, ``*_w`` watts, ``*_nj_per_byte`` nanojoules per byte, ``*_mj``
millijoules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from onnxsplit.errors import PlanError, UsageError

Side = Literal["edge", "cloud"]
ObjectiveKind = Literal["latency", "throughput", "energy", "weighted"]
OBJECTIVE_KINDS: tuple[str, ...] = ("latency", "throughput", "energy", "weighted")

__all__ = [
    "OBJECTIVE_KINDS",
    "BatchModel",
    "Constraints",
    "Link",
    "Objective",
    "PartitionProblem",
    "TensorSpec",
    "scale_batch",
]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the graph.

    ``producer`` is the index of the node that computes it, or ``None`` for a graph input (which
    starts on the edge). ``consumers`` are the indices of the nodes that read it (duplicates are
    ignored). ``nbytes`` is its size for batch size 1. ``is_graph_output`` marks a model output:
    the result must end up on the edge, so an output produced in the cloud is sent back (downlink).
    """

    name: str
    producer: int | None
    consumers: tuple[int, ...]
    nbytes: int
    is_graph_output: bool = False


def _readonly_float(values: Iterable[float] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.array(values, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise PlanError(f"{what} has {arr.size} entries but the problem has {n} nodes")
    if np.isnan(arr).any() or (arr < 0).any():
        bad = int(np.flatnonzero(np.isnan(arr) | (arr < 0))[0])
        raise PlanError(f"{what}[{bad}] = {arr[bad]} is not a non-negative number (inf is allowed)")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class PartitionProblem:
    """A DAG to split between an edge device and the cloud.

    Contract (checked in ``__post_init__``, violations raise :class:`PlanError`):

    * ``node_names[i]`` names node ``i``; nodes are in topological order: for every tensor, every
      consumer index is greater than the producer index.
    * ``edge_ms[i]`` / ``cloud_ms[i]`` are the latencies of node ``i`` on each side, ``>= 0``;
      ``inf`` means the node cannot run there.
    * ``tensors``: see :class:`TensorSpec`; names are unique.
    * ``edge_mem_bytes[i]``: bytes node ``i`` needs resident on the edge besides activations
      (weights); ``None`` means zero.
    * ``pinned``: ``{node index: "edge" | "cloud"}``.

    Arrays are stored read-only; the derived index structures (``producer_of``, consumer CSR, ...)
    are computed lazily and cached.
    """

    node_names: tuple[str, ...]
    edge_ms: np.ndarray
    cloud_ms: np.ndarray
    tensors: tuple[TensorSpec, ...]
    edge_mem_bytes: np.ndarray | None = None
    pinned: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = tuple(str(s) for s in self.node_names)
        n = len(names)
        if n == 0:
            raise PlanError("the problem has no nodes; there is nothing to split")
        object.__setattr__(self, "node_names", names)
        object.__setattr__(self, "edge_ms", _readonly_float(self.edge_ms, n, "edge_ms"))
        object.__setattr__(self, "cloud_ms", _readonly_float(self.cloud_ms, n, "cloud_ms"))
        if self.edge_mem_bytes is None:
            mem = np.zeros(n, dtype=np.int64)
        else:
            mem = np.array(self.edge_mem_bytes, dtype=np.int64).reshape(-1)
            if mem.shape != (n,) or (mem < 0).any():
                raise PlanError(f"edge_mem_bytes must hold {n} non-negative integers")
        mem.setflags(write=False)
        object.__setattr__(self, "edge_mem_bytes", mem)
        tensors = tuple(self.tensors)
        seen: set[str] = set()
        for t in tensors:
            if t.name in seen:
                raise PlanError(f"tensor {t.name!r} is listed twice")
            seen.add(t.name)
            if t.nbytes < 0:
                raise PlanError(f"tensor {t.name!r} has negative nbytes {t.nbytes}")
            if t.producer is not None and not 0 <= t.producer < n:
                raise PlanError(f"tensor {t.name!r} has unknown producer node {t.producer}")
            for c in t.consumers:
                if not 0 <= c < n:
                    raise PlanError(f"tensor {t.name!r} has unknown consumer node {c}")
                if t.producer is not None and c <= t.producer:
                    raise PlanError(
                        f"nodes are not in topological order: tensor {t.name!r} is produced by "
                        f"{names[t.producer]!r} (#{t.producer}) but read by {names[c]!r} (#{c})"
                    )
        object.__setattr__(self, "tensors", tensors)
        pins = dict(self.pinned)
        for i, side in pins.items():
            if not 0 <= int(i) < n:
                raise PlanError(f"pinned node index {i} is out of range 0..{n - 1}")
            if side not in ("edge", "cloud"):
                raise PlanError(f"node {names[int(i)]!r} is pinned to {side!r}; "
                                "use 'edge' or 'cloud'")
        object.__setattr__(self, "pinned", {int(i): s for i, s in pins.items()})

    # ----------------------------------------------------------------------------------- sizes
    @property
    def n_nodes(self) -> int:
        """Number of nodes ``n``."""
        return len(self.node_names)

    def index_of(self, name: str) -> int:
        """Index of the node called ``name``; :class:`PlanError` if there is none."""
        try:
            return self._name_index[name]
        except KeyError:
            raise PlanError(f"unknown node {name!r}") from None

    @cached_property
    def _name_index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.node_names)}

    # ------------------------------------------------------------------ derived index arrays
    @cached_property
    def producer_of(self) -> np.ndarray:
        """``(T,)`` int array: producer node of each tensor, ``-1`` for graph inputs."""
        return _ro(np.array([-1 if t.producer is None else t.producer for t in self.tensors],
                            dtype=np.int64))

    @cached_property
    def nbytes(self) -> np.ndarray:
        """``(T,)`` int64 array of tensor sizes."""
        return _ro(np.array([t.nbytes for t in self.tensors], dtype=np.int64))

    @cached_property
    def is_output(self) -> np.ndarray:
        """``(T,)`` bool array: tensor is a graph output."""
        return _ro(np.array([t.is_graph_output for t in self.tensors], dtype=bool))

    @cached_property
    def consumer_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ptr, idx)``: the distinct consumers of tensor ``t`` are ``idx[ptr[t]:ptr[t+1]]``,
        sorted."""
        lens = np.fromiter((len(t.consumers) for t in self.tensors), dtype=np.int64,
                           count=len(self.tensors))
        flat = np.fromiter((c for t in self.tensors for c in t.consumers), dtype=np.int64,
                           count=int(lens.sum()))
        owner = np.repeat(np.arange(len(self.tensors), dtype=np.int64), lens)
        key = np.unique(owner * self.n_nodes + flat)  # sorts by tensor, then consumer; dedups
        owner, idx = np.divmod(key, self.n_nodes)
        ptr = np.zeros(len(self.tensors) + 1, dtype=np.int64)
        np.add.at(ptr, owner + 1, 1)
        return _ro(np.cumsum(ptr)), _ro(idx)

    @cached_property
    def n_consumers(self) -> np.ndarray:
        """``(T,)`` number of distinct consumers of each tensor."""
        ptr, _ = self.consumer_csr
        return _ro(np.diff(ptr))

    @cached_property
    def last_consumer(self) -> np.ndarray:
        """``(T,)`` largest consumer index of each tensor, ``-1`` when it has none."""
        ptr, idx = self.consumer_csr
        out = np.full(len(self.tensors), -1, dtype=np.int64)
        has = np.diff(ptr) > 0
        if idx.size:
            out[has] = np.maximum.reduceat(idx, ptr[:-1][has])
        return _ro(out)

    @cached_property
    def dependency_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct node pairs ``(producer, consumer)`` over all non-input tensors, as 2 arrays
        sorted by producer then consumer."""
        ptr, idx = self.consumer_csr
        prod = np.repeat(self.producer_of, np.diff(ptr))
        keep = prod >= 0
        key = np.unique(prod[keep] * self.n_nodes + idx[keep])
        p, c = np.divmod(key, self.n_nodes)
        return _ro(p), _ro(c)

    @cached_property
    def node_resident_bytes(self) -> np.ndarray:
        """``(n,)`` edge memory charged to node ``i`` when it runs on the edge: its
        ``edge_mem_bytes`` plus the bytes of every tensor it produces (see the cost module)."""
        out = self.edge_mem_bytes.astype(np.int64).copy()
        prod = self.producer_of
        np.add.at(out, prod[prod >= 0], self.nbytes[prod >= 0])
        return _ro(out)

    @cached_property
    def input_resident_bytes(self) -> int:
        """Bytes of all graph-input tensors: always resident on the edge."""
        return int(self.nbytes[self.producer_of < 0].sum())

    @cached_property
    def input_consumers(self) -> np.ndarray:
        """Sorted distinct nodes that read at least one graph input."""
        ptr, idx = self.consumer_csr
        sel = np.repeat(self.producer_of < 0, np.diff(ptr))
        return _ro(np.unique(idx[sel]))

    def with_costs(
        self,
        edge_ms: np.ndarray | None = None,
        cloud_ms: np.ndarray | None = None,
        tensor_scale: float = 1.0,
    ) -> PartitionProblem:
        """A copy with new node latencies and every tensor's ``nbytes`` multiplied by
        ``tensor_scale`` (rounded to an integer). Weights (``edge_mem_bytes``) are unchanged."""
        tensors = self.tensors
        if tensor_scale != 1.0:
            tensors = tuple(
                dataclasses.replace(t, nbytes=int(round(t.nbytes * tensor_scale))) for t in tensors
            )
        return PartitionProblem(
            node_names=self.node_names,
            edge_ms=self.edge_ms if edge_ms is None else edge_ms,
            cloud_ms=self.cloud_ms if cloud_ms is None else cloud_ms,
            tensors=tensors,
            edge_mem_bytes=self.edge_mem_bytes,
            pinned=self.pinned,
        )


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Link:
    """The network between edge and cloud.

    ``transfer_ms = nbytes * 8 / (mbps * 1e3)`` in each direction (``inf`` bandwidth: free).
    ``rtt_ms + per_request_ms`` is paid once per request whenever some node runs in the cloud.
    ``radio_nj_per_byte`` is the edge radio energy per uplink byte (used by the energy objective).
    ``edge_quota`` (an :class:`onnxsplit.cpu_quota.EdgeCpuQuota`): the edge CPU runs under a CFS
    quota; plan latencies are then evaluated with that model (the cut search's linear costs are
    unchanged; see :mod:`onnxsplit.cpu_quota`).
    """

    uplink_mbps: float
    downlink_mbps: float | None = None
    rtt_ms: float = 0.0
    per_request_ms: float = 0.0
    radio_nj_per_byte: float = 0.0
    edge_quota: Any = None

    def __post_init__(self) -> None:
        if self.downlink_mbps is None:
            object.__setattr__(self, "downlink_mbps", float(self.uplink_mbps))
        for name in ("uplink_mbps", "downlink_mbps"):
            v = float(getattr(self, name))
            if not v > 0:  # also rejects NaN
                raise UsageError(f"{name} must be > 0, got {v}")
            object.__setattr__(self, name, v)
        for name in ("rtt_ms", "per_request_ms", "radio_nj_per_byte"):
            v = float(getattr(self, name))
            if not (v >= 0 and math.isfinite(v)):
                raise UsageError(f"{name} must be a finite number >= 0, got {v}")
            object.__setattr__(self, name, v)
        if self.edge_quota is not None:
            from onnxsplit.cpu_quota import EdgeCpuQuota

            if not isinstance(self.edge_quota, EdgeCpuQuota):
                raise UsageError(f"edge_quota must be an EdgeCpuQuota or None, got {type(self.edge_quota).__name__}")

    @property
    def ms_per_uplink_byte(self) -> float:
        """Uplink transfer time of one byte, ms."""
        return 8.0 / (self.uplink_mbps * 1e3)

    @property
    def ms_per_downlink_byte(self) -> float:
        """Downlink transfer time of one byte, ms."""
        return 8.0 / (float(self.downlink_mbps) * 1e3)  # type: ignore[arg-type]

    @property
    def fixed_ms(self) -> float:
        """Per-request constant cost, paid iff the cloud half is non-empty."""
        return self.rtt_ms + self.per_request_ms

    def with_bandwidth(self, uplink_mbps: float) -> Link:
        """Same link with ``uplink_mbps`` replaced; downlink scaled by the same factor (the
        up/down asymmetry is preserved)."""
        ratio = float(self.downlink_mbps) / self.uplink_mbps  # type: ignore[arg-type]
        return dataclasses.replace(self, uplink_mbps=uplink_mbps, downlink_mbps=uplink_mbps * ratio)


@dataclass(frozen=True)
class Objective:
    """What to minimize (see :mod:`onnxsplit.search.cost` for the formulas).

    * ``latency``: ``edge_ms + network_ms + cloud_ms`` (ms).
    * ``throughput``: ``max(edge_ms, network_ms, cloud_ms)`` (ms): the bottleneck stage of a
      pipelined stream of requests; its inverse is the sustainable request rate.
    * ``energy``: ``edge_power_w * edge_ms + radio_nj_per_byte * uplink_bytes * 1e-6`` (mJ).
    * ``weighted``: ``latency_weight * latency_ms + energy_weight * energy_mj``.

    ``edge_power_w`` (default 5 W, a Jetson-class board under load) is the edge device's power
    draw while computing.
    """

    kind: ObjectiveKind = "latency"
    edge_power_w: float = 5.0
    latency_weight: float = 1.0
    energy_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVE_KINDS:
            raise UsageError(f"unknown objective {self.kind!r}; "
                             f"use one of {', '.join(OBJECTIVE_KINDS)}")
        for name in ("edge_power_w", "latency_weight", "energy_weight"):
            v = float(getattr(self, name))
            if not (v >= 0 and math.isfinite(v)):
                raise UsageError(f"objective {name} must be a finite number >= 0, got {v}")
            object.__setattr__(self, name, v)

    @staticmethod
    def coerce(value: Objective | str) -> Objective:
        """``Objective`` from an objective or its kind name."""
        if isinstance(value, Objective):
            return value
        return Objective(kind=value)  # type: ignore[arg-type]

    @property
    def is_linear(self) -> bool:
        """True when the objective is a sum over nodes and cut tensors (a min-cut objective)."""
        return self.kind != "throughput"

    @property
    def unit(self) -> str:
        """Unit of the objective value."""
        return {"latency": "ms", "throughput": "ms", "energy": "mJ", "weighted": "ms+mJ"}[self.kind]


@dataclass(frozen=True)
class Constraints:
    """Hard constraints on a plan. All default to "off".

    * ``max_edge_mem_bytes``: ``edge_mem_bytes(E) <= limit`` with the memory model of
      :mod:`onnxsplit.search.cost` (weights of ``E`` + all graph inputs + every tensor produced in
      ``E``: a no-reuse upper bound of the peak activation memory).
    * ``raw_input_stays_on_edge``: no graph-input tensor crosses the network, i.e. every consumer
      of every graph input runs on the edge.
    * ``min_edge_nodes = k``: nodes ``0..k-1`` of the problem's topological order run on the edge.
    * ``pinned``: extra ``{node: "edge" | "cloud"}`` pins, merged with ``problem.pinned``.
    * ``cloud_only``: nodes that cannot run on the edge (same as pinning them to the cloud).
    """

    max_edge_mem_bytes: int | None = None
    raw_input_stays_on_edge: bool = False
    min_edge_nodes: int = 0
    pinned: Mapping[int, str] = field(default_factory=dict)
    cloud_only: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.max_edge_mem_bytes is not None and self.max_edge_mem_bytes < 0:
            raise UsageError(f"max_edge_mem_bytes must be >= 0, got {self.max_edge_mem_bytes}")
        if self.min_edge_nodes < 0:
            raise UsageError(f"min_edge_nodes must be >= 0, got {self.min_edge_nodes}")
        object.__setattr__(self, "pinned", {int(k): v for k, v in dict(self.pinned).items()})
        object.__setattr__(self, "cloud_only", frozenset(int(i) for i in self.cloud_only))
        for i, side in self.pinned.items():
            if side not in ("edge", "cloud"):
                raise UsageError(f"node #{i} is pinned to {side!r}; use 'edge' or 'cloud'")

    @property
    def groups(self) -> tuple[str, ...]:
        """Names of the constraint groups that are switched on (``pinned`` counts only the pins
        given here, not ``PartitionProblem.pinned``); see :meth:`without`."""
        out = []
        if self.max_edge_mem_bytes is not None:
            out.append("max_edge_mem_bytes")
        if self.raw_input_stays_on_edge:
            out.append("raw_input_stays_on_edge")
        if self.min_edge_nodes > 0:
            out.append("min_edge_nodes")
        if self.pinned:
            out.append("pinned")
        if self.cloud_only:
            out.append("cloud_only")
        return tuple(out)

    def without(self, group: str) -> Constraints:
        """These constraints with one group switched off."""
        off = {
            "max_edge_mem_bytes": {"max_edge_mem_bytes": None},
            "raw_input_stays_on_edge": {"raw_input_stays_on_edge": False},
            "min_edge_nodes": {"min_edge_nodes": 0},
            "pinned": {"pinned": {}},
            "cloud_only": {"cloud_only": frozenset()},
        }[group]
        return dataclasses.replace(self, **off)  # type: ignore[arg-type]


BatchModel = Callable[[PartitionProblem, int], PartitionProblem]


def scale_batch(problem: PartitionProblem, batch_size: int) -> PartitionProblem:
    """Default batch model: a batch of ``b`` requests processed together costs ``b`` times the
    single-request latency on each side (no batching speed-up: conservative) and every tensor is
    ``b`` times larger (activations and transfers); weights and the per-request network cost are
    unchanged. Returns ``problem`` itself for ``b == 1``."""
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    if batch_size == 1:
        return problem
    return problem.with_costs(problem.edge_ms * batch_size, problem.cloud_ms * batch_size,
                              tensor_scale=float(batch_size))
