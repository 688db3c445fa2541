#!/usr/bin/env python3
"""Benchmark the cut-search strategies on random CNN-like layered DAGs.

Prints one row per (graph, strategy): wall time (best of ``--repeat`` runs, each on a fresh
problem object so no cached index is reused), objective value, and whether the objective equals
the reference optimum: networkx ``preflow_push`` on the same cut network with capacities rounded
to 1 ns as exact Python ints, run where it is affordable (``--reference-max-nodes``, default
5,000; it takes about a minute at 20,000 nodes). Where no reference runs, ``mincut`` itself
(certified by its lower bound) is the reference for the other strategies.

Usage: python tools/bench_search.py [--sizes 100 1000 5000 20000] [--objective latency]
                                   [--families layered branchy] [--seed 1]
"""

from __future__ import annotations

import argparse
import time

import networkx as nx
import numpy as np
from networkx.algorithms.flow import preflow_push

from onnxsplit.search import Constraints, Link, Objective, PartitionProblem, search
from onnxsplit.search.cost import components, forced_placement, objective_values
from onnxsplit.search.cut import _arcs, linear_values, objective_linear_cost
from onnxsplit.search.synthetic import random_layered_problem

STRATEGIES = ("mincut", "chain", "all-edge", "all-cloud")
# graph families: keyword arguments of random_layered_problem
FAMILIES: dict[str, dict[str, float]] = {
    "layered": {"branch_window": 4, "skip_prob": 0.15},
    "branchy": {"branch_window": 32, "skip_prob": 0.5},
}


def networkx_reference(problem: PartitionProblem, link: Link, objective: Objective
                       ) -> tuple[float, float, float]:
    """Optimal objective via networkx preflow_push on the same cut network as ``mincut``, with
    capacities rounded to 1e-6 objective units (1 ns) as unbounded Python ints (networkx is not
    reliable with float capacities: round-off residuals corrupt the returned partition), and
    its wall time. Rounding error: at most 0.5e-6 per arc."""
    placement = forced_placement(problem, Constraints())
    lc = objective_linear_cost(problem, link, objective)
    t0 = time.perf_counter()
    n_vert, rows, cols, caps = _arcs(problem, lc, placement)
    g = nx.DiGraph()
    g.add_nodes_from(range(n_vert))
    agg: dict[tuple[int, int], float] = {}
    for u, v, c in zip(rows.tolist(), cols.tolist(), caps.tolist()):
        agg[(u, v)] = agg.get((u, v), 0.0) + c
    for (u, v), c in agg.items():
        if np.isinf(c):
            g.add_edge(u, v)  # no 'capacity' attribute: infinite in networkx
        else:
            g.add_edge(u, v, capacity=int(round(c * 1e6)))
    n = problem.n_nodes
    _, (source_side, _) = nx.minimum_cut(g, n, n + 1, flow_func=preflow_push)
    mask = np.zeros(n, dtype=bool)
    mask[[v for v in source_side if v < n]] = True
    masks = np.stack([mask, np.ones(n, dtype=bool)])  # the rtt term: compare with all-edge
    best = masks[int(np.argmin(linear_values(problem, lc, placement, masks)))]
    value = float(objective_values(components(problem, best), link, objective)[0])
    return value, time.perf_counter() - t0, 0.5e-6 * len(agg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 20000])
    ap.add_argument("--objective", default="latency", choices=["latency", "energy", "weighted"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reference-max-nodes", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = ap.parse_args()
    link = Link(uplink_mbps=20, downlink_mbps=50, rtt_ms=20, per_request_ms=1,
                radio_nj_per_byte=100)
    objective = Objective(args.objective)
    header = (f"{'graph':<14} {'nodes':>6} {'strategy':<16} {'seconds':>9} {'objective':>14} "
              "equal-to-reference")
    print(f"link: {link}\nobjective: {objective.kind} ({objective.unit})")
    print(header)
    print("-" * len(header))
    for family, size in ((f, s) for f in args.families for s in args.sizes):
        graph = f"{family}-s{args.seed}"
        kw = FAMILIES[family]
        ref_value: float | None = None
        ref_tol = 0.0
        results = {}
        for strategy in STRATEGIES:
            best_t = np.inf
            for _ in range(args.repeat):
                problem = random_layered_problem(size, args.seed, **kw)  # type: ignore[arg-type]
                t0 = time.perf_counter()
                plan = search(problem, link, objective, strategy)
                best_t = min(best_t, time.perf_counter() - t0)
            results[strategy] = (best_t, plan)
        problem = random_layered_problem(size, seed=args.seed, **kw)  # type: ignore[arg-type]
        cut = results["mincut"][1]
        ref_name = "mincut"
        if size <= args.reference_max_nodes:
            ref_value, ref_t, ref_tol = networkx_reference(problem, link, objective)
            ref_name = "preflow_push"
            results["nx.preflow_push"] = (ref_t, None)
        else:
            ref_value = cut.objective_value
        tol = (cut.gap or 0.0) + ref_tol + 1e-9 * max(1.0, abs(ref_value))
        for strategy, (secs, plan) in results.items():
            if plan is None:
                value, equal = ref_value, "(reference)"
            else:
                value = plan.objective_value
                equal = "yes" if abs(value - ref_value) <= tol else "no"
                if strategy == "mincut" and ref_name == "mincut":
                    equal = f"(reference; certified gap {cut.gap:.2g})"
            print(f"{graph:<14} {size:>6} {strategy:<16} {secs:>9.4f} {value:>14.4f} {equal}")


if __name__ == "__main__":
    main()
