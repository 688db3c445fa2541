"""``onnxsplit serve`` and ``onnxsplit run``: the cloud server and the edge runtime from the shell.

``register(subparsers)`` adds both to the main CLI (errors: one ``error: ...`` line, exit 2).
``run`` on a dynamic bundle (``compile --dynamic``) runs :class:`onnxsplit.dynamic.DynamicRunner`:
each request picks its plan from the bandwidth estimate; ``serve`` on it serves every plan.
``python -m onnxsplit.runtime.cli serve|run ...`` works on its own too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import OnnxSplitError, UsageError

#: onnxsplit.dynamic.BandwidthEstimator.METHODS, without importing it to build the parser
BANDWIDTH_ESTIMATORS = ("ewma", "median")


def _table(headers, rows) -> str:  # noqa: ANN001
    from ..cli import table

    return table(headers, rows)


def _fmt_bytes(n: float) -> str:
    from ..cli import fmt_bytes

    return fmt_bytes(n)


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("ONNXSPLIT_TOKEN") or None


# ------------------------------------------------------------------------ serve
def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .server import CloudServer

    max_bytes = None
    if args.max_request_bytes is not None:
        from ..units import parse_nbytes

        max_bytes = parse_nbytes(args.max_request_bytes)
        if max_bytes <= 0:
            raise UsageError("--max-request-bytes must be positive")
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.log else None
    srv = CloudServer(
        args.bundle,
        host=args.host,
        port=args.port,
        token=_token(args),
        max_request_bytes=max_bytes,
        optimize=not args.no_optimize,
        threads=args.threads,
        log=log,
    )
    model = srv.model
    info = {
        "url": srv.url,
        "model_name": model.name,
        "infer": f"{srv.url}/v2/models/{model.name}/infer",
        "inputs": [t.to_json() for t in model.inputs.values()],
        "outputs": [t.to_json() for t in model.outputs.values()],
        "models": [{"name": m.name, "infer": f"{srv.url}/v2/models/{m.name}/infer", "bundle": str(m.bundle.root)}
                   for m in srv.models.values()],
        "max_request_bytes": srv.max_request_bytes,
        "token": srv.token is not None,
        "optimize": not args.no_optimize,
    }
    if args.json:
        print(json.dumps({"event": "listening", **info}), flush=True)
    else:
        if len(srv.models) == 1:
            print(f"serving {model.name} on {srv.url}  (KServe v2 HTTP, binary tensors; Triton-compatible)")
        else:
            print(f"serving {len(srv.models)} models (every plan of the dynamic bundle) on {srv.url}  "
                  "(KServe v2 HTTP, binary tensors; Triton-compatible)")
        print(
            _table(
                ["model", "", "tensor", "datatype", "shape"],
                [(m.name, "in", t.name, t.datatype, t.to_json()["shape"]) for m in srv.models.values()
                 for t in m.inputs.values()]
                + [(m.name, "out", t.name, t.datatype, t.to_json()["shape"]) for m in srv.models.values()
                   for t in m.outputs.values()],
            )
        )
        print(
            f"infer: POST {srv.url}/v2/models/<model>/infer   limit {_fmt_bytes(srv.max_request_bytes)} per request"
            f"   token: {'required' if srv.token else 'none'}   stop with Ctrl-C",
            flush=True,
        )
    stop = threading.Event()
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not the main thread (embedded use): rely on the caller
            pass
    srv.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        srv.stop()
        for sig, h in old.items():
            signal.signal(sig, h)
    stats = srv.stats.to_json()
    if args.json:
        print(json.dumps({"event": "stopped", **stats}), flush=True)
        return 0

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    print()
    print(
        _table(
            ["requests", "inferences", "4xx", "5xx", "in", "out", "cloud p50 ms", "cloud p99 ms", "request p50 ms"],
            [
                (
                    stats["requests"],
                    stats["inferences"],
                    stats["client_errors"],
                    stats["server_errors"],
                    _fmt_bytes(stats["bytes_in"]),
                    _fmt_bytes(stats["bytes_out"]),
                    ms(stats["cloud_ms_p50"]),
                    ms(stats["cloud_ms_p99"]),
                    ms(stats["request_ms_p50"]),
                )
            ],
        )
    )
    print(f"stopped {model.name} on {srv.url}")
    return 0


# ------------------------------------------------------------------------ run
def load_inputs(path: str, names: list[str]) -> dict:
    """Feeds from an .npy (one input) or .npz (arrays named after the inputs)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"input file not found: {path}")
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a .npy/.npz file ({exc})") from None
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise UsageError(
                f"{path} holds one array but the model takes {len(names)} inputs ({', '.join(names)}); "
                "pass an .npz with one array per input name"
            )
        return {names[0]: data}
    with data:
        feeds = {k: data[k] for k in data.files}
    if len(names) == 1 and list(feeds) == ["arr_0"]:
        return {names[0]: feeds["arr_0"]}
    missing = [n for n in names if n not in feeds]
    if missing:
        raise UsageError(f"{path} has no array '{missing[0]}' (the model takes: {', '.join(names)}; found: {', '.join(feeds)})")
    extra = [k for k in feeds if k not in names]
    if extra:
        raise UsageError(f"{path} has an array '{extra[0]}' that is not a model input (the model takes: {', '.join(names)})")
    return feeds


def _is_dynamic(path: str) -> bool:
    from ..dynamic_bundle import SCHEMA

    try:
        return json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8")).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False  # load_bundle says what is wrong with it


def cmd_run_dynamic(args: argparse.Namespace) -> int:
    """``onnxsplit run`` on a dynamic bundle: every request picks its plan (onnxsplit.dynamic)."""
    import numpy as np

    from ..dynamic import BandwidthEstimator, DynamicRunner
    from ..dynamic_bundle import load_dynamic_bundle

    bundle = load_dynamic_bundle(args.bundle)
    if args.plan is not None and not 0 <= args.plan < len(bundle.plans):
        raise UsageError(f"--plan {args.plan}: the bundle has plans 0..{len(bundle.plans) - 1} (`onnxsplit policy {args.bundle}`)")
    if args.initial_mbps is not None and not args.initial_mbps > 0:
        raise UsageError("--initial-mbps must be positive")
    est = None
    if args.initial_mbps or args.estimator:
        est = BandwidthEstimator(**({"initial_mbps": args.initial_mbps} if args.initial_mbps else {}),
                                 **({"method": args.estimator} if args.estimator else {}))
    with DynamicRunner(bundle, args.server, estimator=est, force_plan=args.plan,
                       plans=None if args.plan is None else [args.plan], hedge=not args.no_hedge,
                       token=_token(args), timeout=args.timeout, retries=args.retries,
                       fallback=not args.no_fallback, optimize=not args.no_optimize) as runner:
        first = runner.runners[bundle.all_edge].bundle
        feeds = load_inputs(args.input, first.input_names)
        results = [runner.infer(feeds) for _ in range(args.repeat)]
        counts = dict(runner.counts)
    res = results[-1]
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **res.outputs)
    per_req = [{"plan": r.plan, "estimate_mbps": round(r.estimate_mbps, 3), "total_ms": round(r.timings_ms["total"], 3),
                "hedged_from": r.hedged_from, "fallback": r.fallback, **({"error": r.error} if r.error else {})}
               for r in results]
    total = [r.timings_ms["total"] for r in results]
    if args.json:
        print(json.dumps({
            "bundle": str(bundle.root), "dynamic": True, "server": args.server, "repeat": args.repeat,
            "plans": [{"id": int(p["id"]), "kind": p.get("kind"), "requests": counts.get(int(p["id"]), 0)}
                      for p in bundle.plans],
            "requests": per_req, "median_total_ms": round(float(np.median(total)), 4),
            "fallbacks": sum(r.fallback for r in results), "hedged": sum(r.hedged_from is not None for r in results),
            "final_estimate_mbps": round(runner.estimator.mbps, 3),
            "estimator": runner.estimator.method,
            "outputs": {n: {"dtype": str(a.dtype), "shape": list(a.shape)} for n, a in res.outputs.items()},
            **({"output_file": str(args.output)} if args.output else {}),
        }, indent=2))
        return 0
    show = per_req if len(per_req) <= 20 else per_req[:10] + per_req[-10:]
    print(_table(["request", "plan", "estimate Mbit/s", "total ms", "note"],
                 [(i + 1 if len(per_req) <= 20 or i < 10 else len(per_req) - 20 + i + 1, r["plan"], f"{r['estimate_mbps']:g}",
                   f"{r['total_ms']:.3f}", ("hedged from plan %d" % r["hedged_from"]) if r["hedged_from"] is not None
                   else ("fallback: " + (r.get("error") or ""))[:60] if r["fallback"] else "")
                  for i, r in enumerate(show)]))
    print()
    print(_table(["plan", "kind", "requests"], [(int(p["id"]), p.get("kind"), counts.get(int(p["id"]), 0))
                                                 for p in bundle.plans if counts.get(int(p["id"]), 0)]))
    print()
    print(_table(["output", "dtype", "shape"], [(n, str(a.dtype), list(a.shape)) for n, a in res.outputs.items()]))
    print(f"\n{args.repeat} request(s), median {float(np.median(total)):.3f} ms; "
          f"{sum(r.hedged_from is not None for r in results)} hedged, {sum(r.fallback for r in results)} fallback(s); "
          f"bandwidth estimate now {runner.estimator.mbps:g} Mbit/s")
    if args.output:
        print(f"wrote {args.output}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .bundle import load_bundle
    from .client import EdgeRunner

    if args.repeat < 1:
        raise UsageError("--repeat must be >= 1")
    if _is_dynamic(args.bundle):
        return cmd_run_dynamic(args)
    if args.plan is not None or args.initial_mbps is not None or args.no_hedge or args.estimator:
        raise UsageError(f"--plan/--initial-mbps/--estimator/--no-hedge are for dynamic bundles (`onnxsplit compile --dynamic`); "
                         f"{args.bundle} is a single split")
    bundle = load_bundle(args.bundle)
    feeds = load_inputs(args.input, bundle.input_names)
    with EdgeRunner(
        bundle,
        args.server,
        token=_token(args),
        timeout=args.timeout,
        retries=args.retries,
        fallback=not args.no_fallback,
        optimize=not args.no_optimize,
    ) as runner:
        results = [runner.infer(feeds) for _ in range(args.repeat)]
    res = results[-1]
    keys = ("edge", "serialize", "network", "cloud", "deserialize", "total")
    med = {k: float(np.median([r.timings_ms.get(k, 0.0) for r in results])) for k in keys}
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **res.outputs)
    sources = dict(bundle.outputs)
    if args.json:
        doc = res.to_json()
        doc["bundle"] = str(bundle.root)
        doc["model_name"] = runner.model_name
        doc["repeat"] = args.repeat
        doc["fallbacks"] = sum(r.fallback for r in results)
        doc["timings_ms"] = {k: round(v, 4) for k, v in med.items()}
        for name, d in doc["outputs"].items():
            d["source"] = sources[name]
        if args.output:
            doc["output_file"] = str(args.output)
        print(json.dumps(doc, indent=2))
        return 0
    print(
        _table(
            ["output", "from", "dtype", "shape", "min", "max"],
            [
                (
                    n,
                    sources[n] if not (res.fallback and sources[n] == "cloud") else "cloud (local fallback)",
                    str(a.dtype),
                    list(a.shape),
                    f"{a.min():.6g}" if a.size and a.dtype.kind in "fiub" else "-",
                    f"{a.max():.6g}" if a.size and a.dtype.kind in "fiub" else "-",
                )
                for n, a in res.outputs.items()
            ],
        )
    )
    print()
    label = f"median of {args.repeat}" if args.repeat > 1 else "ms"
    print(_table(["timing", label], [(k, f"{med[k]:.3f}") for k in keys]))
    print()
    if res.fallback:
        n = sum(r.fallback for r in results)
        print(f"fallback: the cloud half ran locally on this machine ({n} of {args.repeat} runs): {res.error}")
    else:
        print(
            f"cloud: {runner.model_name} at {res.server} ({res.attempts} attempt{'s' if res.attempts != 1 else ''}), "
            f"boundary {_fmt_bytes(bundle.boundary_nbytes)}"
        )
    if args.output:
        print(f"wrote {args.output}")
    return 0


# ------------------------------------------------------------------------ parser
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``run`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "serve",
        help="serve a bundle's cloud half over KServe v2 HTTP (Triton-compatible)",
        description="Serve OUT/cloud/model.onnx with onnxruntime behind the KServe v2 / Open Inference Protocol "
        "(HTTP/REST, JSON and binary tensors). Model name: <source stem>-cloud. Given a dynamic bundle "
        "(compile --dynamic), one process serves the cloud half of every plan, each under its own name "
        "(<source stem>-p<k>-cloud).",
    )
    p.add_argument("bundle", metavar="OUT", help="bundle folder written by `onnxsplit split -o OUT` or "
                                                 "`onnxsplit compile --dynamic -o OUT`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--token", help="require 'Authorization: Bearer T' (default: $ONNXSPLIT_TOKEN, else none)")
    p.add_argument("--max-request-bytes", metavar="N", help="largest request body, e.g. 64MB (default: fits the inputs as JSON)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: onnxruntime's)")
    p.add_argument("--no-optimize", action="store_true", help="disable onnxruntime graph optimizations (bit-exact)")
    p.add_argument("--log", action="store_true", help="print an access-log line per request to stderr")
    p.add_argument("--json", action="store_true", help="print JSON lines (listening, stopped) instead of tables")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser(
        "run",
        help="run a bundle: edge half here, cloud half on a server (local fallback)",
        description="Run the edge half locally, send the boundary tensors to a KServe v2 server (onnxsplit serve "
        "or Triton) and print the original outputs; if the server cannot be reached the cloud half runs locally "
        "(fallback).",
    )
    p.add_argument("bundle", metavar="OUT", help="bundle folder written by `onnxsplit split -o OUT`, or a dynamic "
                                                 "bundle (`onnxsplit compile --dynamic -o OUT`): each request then "
                                                 "picks its plan from the bandwidth estimate")
    p.add_argument("--input", required=True, metavar="X.npy|X.npz", help="input array (.npy) or arrays by input name (.npz)")
    p.add_argument("--server", required=True, metavar="URL", help="cloud server, e.g. http://10.0.0.5:8000")
    p.add_argument("--output", metavar="Y.npz", help="write the outputs here")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="connect and read timeout per attempt (default 30)")
    p.add_argument("--retries", type=int, default=2, metavar="N", help="retries after a failed attempt (default 2)")
    p.add_argument("--token", help="bearer token (default: $ONNXSPLIT_TOKEN)")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of running the cloud half locally")
    p.add_argument("--no-optimize", action="store_true", help="disable onnxruntime graph optimizations (bit-exact)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="run N times; timings are medians")
    p.add_argument("--plan", type=int, metavar="K", help="dynamic bundle: always run plan K (default: per request)")
    p.add_argument("--initial-mbps", type=float, metavar="MBPS",
                   help="dynamic bundle: bandwidth estimate before the first measurement (default 10; a probe on start replaces it)")
    p.add_argument("--estimator", choices=BANDWIDTH_ESTIMATORS,
                   help="dynamic bundle: bandwidth estimator method (default: onnxsplit.dynamic's, see its docstring)")
    p.add_argument("--no-hedge", action="store_true",
                   help="dynamic bundle: never answer a request that overruns its deadline with the local plan")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    p.set_defaults(func=cmd_run)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point with the main CLI's error conventions."""
    parser = argparse.ArgumentParser(prog="onnxsplit", description="serve / run split bundles")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (OnnxSplitError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
