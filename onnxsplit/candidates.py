"""Candidate cut points along the topological order, with boundary bytes and bottlenecks.

Candidate ``k`` puts the first ``k`` compute nodes (Constants excluded) on the edge: a prefix of a
topological order is always closed under predecessors, so every candidate is a valid plan.
Its boundary is every tensor produced by the prefix (or a raw graph input) that a later node
reads; its compression ratio is ``c = boundary_nbytes / input_nbytes``.

As in dynamic split computing, a candidate is a *natural bottleneck* when ``c < 1`` and a
*compressive bottleneck* when ``c`` is smaller than at every earlier candidate (``k = 0``, which
sends the raw input, has ``c = 1``).  ``k = 0`` (all cloud) and ``k = n`` (all edge) are listed
for completeness and never marked as bottlenecks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .ir import Graph


@dataclass(frozen=True)
class CutCandidate:
    index: int  # number of compute nodes on the edge
    after_node: str | None  # last edge node (None for k = 0)
    boundary_nbytes: int
    boundary_tensors: int
    compression_ratio: float
    natural_bottleneck: bool
    compressive_bottleneck: bool

    def to_json(self) -> dict:
        return asdict(self)


def cut_candidates(graph: Graph) -> list[CutCandidate]:
    """Every prefix cut ``k = 0..n`` (O(nodes + edges))."""
    nodes = graph.compute_nodes
    n = len(nodes)
    pos = {node.name: i for i, node in enumerate(nodes)}
    nbytes_diff = np.zeros(n + 2, dtype=np.int64)
    count_diff = np.zeros(n + 2, dtype=np.int64)
    for t in graph.tensors.values():
        if t.kind not in ("input", "activation") or not t.consumers:
            continue
        produced = -1 if t.kind == "input" else pos[t.producer]  # type: ignore[index]
        last = max(pos[c] for c in t.consumers if c in pos) if any(c in pos for c in t.consumers) else -1
        if last <= produced:
            continue
        # in the boundary of prefix k for produced < k <= last
        nbytes_diff[produced + 1] += t.nbytes or 0
        nbytes_diff[last + 1] -= t.nbytes or 0
        count_diff[produced + 1] += 1
        count_diff[last + 1] -= 1
    bytes_at = np.cumsum(nbytes_diff)[: n + 1]
    count_at = np.cumsum(count_diff)[: n + 1]
    input_nbytes = graph.input_nbytes or 1
    out: list[CutCandidate] = []
    best = float("inf")
    for k in range(n + 1):
        c = float(bytes_at[k]) / input_nbytes
        inner = 0 < k < n
        out.append(
            CutCandidate(
                index=k,
                after_node=nodes[k - 1].name if k else None,
                boundary_nbytes=int(bytes_at[k]),
                boundary_tensors=int(count_at[k]),
                compression_ratio=c,
                natural_bottleneck=inner and c < 1.0,
                compressive_bottleneck=inner and c < best,
            )
        )
        best = min(best, c)
    return out
