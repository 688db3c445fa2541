"""Synthetic CNN-like partition problems for benchmarks and tests (no ONNX needed)."""

from __future__ import annotations

import numpy as np

from onnxsplit.search.problem import PartitionProblem, TensorSpec

__all__ = ["random_layered_problem"]


def random_layered_problem(
    n_nodes: int,
    seed: int = 0,
    *,
    skip_prob: float = 0.15,
    branch_window: int = 4,
    late_input_prob: float = 0.3,
    cloud_only_frac: float = 0.0,
) -> PartitionProblem:
    """A random DAG that looks like a CNN: a main chain where node ``i`` reads a recent node
    (``i-1`` most of the time, else one of the previous ``branch_window``) and, with
    ``skip_prob``, a skip connection from up to 20 nodes back (so outputs fan out). One graph
    input (602,112 bytes, a 224x224x3 float image) read by node 0 and, with ``late_input_prob``,
    by a node half-way down. Costs: cloud latency log-normal around 0.1 ms, edge 5-20x slower;
    activation sizes shrink from ~3 MB to ~4 KB with depth; weights grow with depth. The last
    node's output (4,000 bytes) and, sometimes, a middle node's output are graph outputs.
    ``cloud_only_frac`` of the nodes get ``edge_ms = inf``.
    """
    rng = np.random.default_rng(seed)
    n = int(n_nodes)
    depth = np.arange(n) / max(n - 1, 1)
    cloud_ms = rng.lognormal(np.log(0.1), 0.6, n)
    edge_ms = cloud_ms * rng.uniform(5.0, 20.0, n)
    if cloud_only_frac > 0:
        edge_ms[rng.random(n) < cloud_only_frac] = np.inf
    out_bytes = np.maximum(4096, 3.0e6 * 2.0 ** (-10.0 * depth) * rng.lognormal(0, 0.3, n))
    out_bytes = (out_bytes // 4 * 4).astype(np.int64)
    out_bytes[-1] = 4000
    weights = (1e4 * 100.0 ** depth * rng.lognormal(0, 0.5, n)).astype(np.int64)

    consumers: list[list[int]] = [[] for _ in range(n)]
    for i in range(1, n):
        if rng.random() < 0.75:
            src = i - 1
        else:
            src = int(rng.integers(max(0, i - branch_window), i))
        consumers[src].append(i)
        if i >= 2 and rng.random() < skip_prob:
            s2 = int(rng.integers(max(0, i - 20), i - 1))
            if i not in consumers[s2]:
                consumers[s2].append(i)
    input_readers = [0]
    if n > 2 and rng.random() < late_input_prob:
        input_readers.append(n // 2)
    tensors = [TensorSpec("input", None, tuple(input_readers), 602_112, False)]
    mid_out = n // 3 if n > 3 and rng.random() < 0.5 else -1
    for i in range(n):
        is_out = i == n - 1 or i == mid_out or not consumers[i]
        tensors.append(TensorSpec(f"t{i}", i, tuple(consumers[i]), int(out_bytes[i]), is_out))
    return PartitionProblem(
        node_names=tuple(f"n{i}" for i in range(n)),
        edge_ms=edge_ms,
        cloud_ms=cloud_ms,
        tensors=tuple(tensors),
        edge_mem_bytes=weights,
    )
