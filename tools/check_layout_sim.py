#!/usr/bin/env python3
"""How often does onnxsplit's layout simulation give onnxruntime's layout work exactly?

For each model it compares what the cost model's ``layout_reorder`` kernels assume with what
onnxruntime's CPU provider puts in its optimized graph (all graph optimizations, the default):

* fp32: NCHWc reorders (``onnxsplit.cost.layout.nchwc_reorders`` against the ``ReorderInput`` /
  ``ReorderOutput`` nodes; the NCHWc block of 16 floats is AVX-512's, see that module);
* int8: NHWC layout Transposes of the model quantized as ``onnxsplit.profile.quantize_qdq`` does
  (``onnxsplit.cost.layout.nhwc_transposes`` against the Transposes onnxruntime adds).

Model sets: ``nets`` (netgen v1 and v2, seeds 0..N-1, the kind of net the host-x86 cost models
train on) and ``held-out`` (the models ``tools/eval_cost_model.py`` evaluates; needs
``tests/requirements-models.txt``). Prints one row per set and precision, and with ``--list`` the
models that differ.

    python tools/check_layout_sim.py [--precision fp32,int8] [--nets 10] [--no-held-out] [--list]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _mine(graph, precision: str) -> int:  # noqa: ANN001 - onnxsplit.Graph
    from onnxsplit.cost.kernels import group_kernels_for

    return sum(1 for k in group_kernels_for(graph, "ort-cpu", precision) if not k.members)


def _theirs(graph, precision: str) -> int:  # noqa: ANN001
    import bench_kernel_chains as B

    if precision == "int8":
        return B.int8_transposes(graph.model)
    return sum(B.reorders(graph.model).values())


def model_sets(n_nets: int, held_out: bool) -> dict[str, list]:
    """``{set name: [(model name, loader returning an onnxsplit.Graph, quantizable)]}``."""
    import onnxsplit
    from onnxsplit.netgen import net_model

    sets: dict[str, list] = {}
    if n_nets:
        sets["nets"] = [(f"net v{v} seed {s}", lambda v=v, s=s: onnxsplit.load_graph(net_model(
            {"gen": "net", "seed": s, "v": v})), True) for v in (1, 2) for s in range(n_nets)]
    if held_out:
        import eval_cost_model as E

        held, missing = E.host_models("all")
        for m in missing:
            print(f"  (not installed, skipped: {m})")

        def load(h):  # noqa: ANN001, ANN202
            p = h.load()
            return p if isinstance(p, onnxsplit.Graph) else onnxsplit.load_graph(p)

        sets["held-out"] = [(h.name, lambda h=h: load(h), h.int8) for h in held]
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", default="fp32,int8", help="fp32 and/or int8")
    ap.add_argument("--nets", type=int, default=10, help="netgen seeds per vocabulary (0: none)")
    ap.add_argument("--no-held-out", action="store_true", help="skip the eval's held-out models")
    ap.add_argument("--list", action="store_true", help="list the models whose counts differ")
    args = ap.parse_args(argv)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "int8")]
    if bad or not precisions:
        ap.error(f"--precision takes fp32 and/or int8, got {args.precision!r}")
    if args.nets < 0:
        ap.error("--nets must be >= 0")
    sets = model_sets(args.nets, not args.no_held_out)
    if not sets:
        ap.error("nothing to check: --nets 0 with --no-held-out")
    rows, differ = [], []
    for precision in precisions:
        for name, models in sets.items():
            count = Counter()
            for label, load, quantizable in models:
                if precision == "int8" and not quantizable:
                    continue
                try:
                    g = load()
                    a, b = _mine(g, precision), _theirs(g, precision)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"  {precision} {label}: skipped: {str(exc).splitlines()[0][:120]}")
                    continue
                count["models"] += 1
                count["exact"] += a == b
                count["mine"] += a
                count["theirs"] += b
                if a != b:
                    differ.append((precision, label, a, b))
            rows.append([precision, name, str(count["models"]), f"{count['exact']}",
                         str(count["mine"]), str(count["theirs"])])
    hdr = ["precision", "models", "n", "exact", "layout ops predicted", "onnxruntime's"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    print("  ".join(h.ljust(w) for h, w in zip(hdr, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    if args.list:
        for precision, label, a, b in differ:
            print(f"  differs: {precision} {label}: predicted {a}, onnxruntime {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
