#!/usr/bin/env python3
"""Which op types are worth quantizing on onnxruntime CPU? fp32 vs int8 QDQ vs int8 with some op types left fp32.

onnxsplit's edge quantization quantizes every op type onnxruntime's QDQ quantizer knows. For some
of them onnxruntime's int8 kernel is slower than the fp32 one (``QLinearAveragePool``: about 10x
on this machine), so an int8 edge half can be slower than its fp32 original; onnxsplit therefore
quantizes every AveragePool as a depthwise Conv (:mod:`onnxsplit.quant.pools`). This times one
model four ways -- fp32; int8 as onnxsplit quantizes it; int8 with every op type quantized as is
(``QLinearAveragePool``, the scheme before cost models v4); int8 with ``--keep-fp32`` op types left
in fp32 -- with the profile's quantization (:func:`onnxsplit.profile.quantize_qdq`: uint8
activations, int8 per-channel weights, random calibration), in alternating rounds (fresh session
per round, so background load hits all variants alike), and prints a table.

    python tools/bench_int8_ops.py                       # NAS-Bench-201 net with avg-pool edges
    python tools/bench_int8_ops.py --model m.onnx --keep-fp32 AveragePool,GlobalAveragePool

The default model is a NAS-Bench-201 network rebuilt by ``tools/help_latency.py`` from its cell
string (no HELP data is read).

Limit: leaving an op type fp32 only removes the quantizer's own QDQ pair around it. Where the next
op is quantized, onnxruntime still fuses ``DequantizeLinear -> AveragePool -> QuantizeLinear`` into
``QLinearAveragePool`` (``tests/test_bench_tools.py`` checks both cases). In the default net, whose
average pools feed each other, the switch removes every QLinearAveragePool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

DEFAULT_NB201 = "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"


def _round_ms(model, threads: int | None, reps: int) -> float:  # noqa: ANN001
    from onnxsplit.profile import measure_model

    return measure_model(model, threads=threads, warmup=3, reps=reps).median_ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_int8_ops", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="ONNX file (static input shapes)")
    src.add_argument("--nb201", default=DEFAULT_NB201, help="NAS-Bench-201 cell string of the default model")
    ap.add_argument("--keep-fp32", default="AveragePool", help="comma-separated op types left in fp32")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds (fresh session each)")
    ap.add_argument("--reps", type=int, default=20, help="timed runs per round")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's)")
    args = ap.parse_args(argv)
    keep = [op.strip() for op in args.keep_fp32.split(",") if op.strip()]
    if not keep or args.rounds < 1 or args.reps < 3:
        print("error: need --keep-fp32 with at least one op type, --rounds >= 1, --reps >= 3", file=sys.stderr)
        return 2
    import onnx

    from onnxsplit.cli import table
    from onnxsplit.profile import quantize_qdq

    if args.model:
        path = Path(args.model)
        if not path.is_file():
            print(f"error: --model {path}: no such file", file=sys.stderr)
            return 2
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001
            print(f"error: --model {path}: not an ONNX model ({str(exc).splitlines()[0][:120]})", file=sys.stderr)
            return 2
        name = path.name
    else:
        import help_latency as H

        model, name = H.nasbench201_onnx(args.nb201, none_mode="prune"), f"nb201 {args.nb201}"
    variants = {"fp32": model,
                "int8, onnxsplit (AveragePool as depthwise Conv)": quantize_qdq(model),
                "int8, every op type (QLinearAveragePool)": quantize_qdq(model, avgpool_as_conv=False),
                f"int8, {','.join(keep)} fp32": quantize_qdq(model, keep_fp32_ops=keep, avgpool_as_conv=False)}
    ms: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, m in variants.items():
            ms[k].append(_round_ms(m, args.threads, args.reps))
    print(f"{name}: median / min over {args.rounds} rounds of per-round medians ({args.reps} runs each)")
    print(table(["variant", "median ms", "min ms", "vs fp32"],
                [(k, f"{np.median(v):.3f}", f"{min(v):.3f}", f"{np.median(v) / np.median(ms['fp32']):.2f}x")
                 for k, v in ms.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
