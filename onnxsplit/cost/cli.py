"""``onnxsplit profile`` and ``onnxsplit cost-model fit``: subcommands added by :func:`register`.

Wiring (in ``onnxsplit/cli.py``'s ``build_parser``)::

    from .cost.cli import register as register_cost
    register_cost(sub)

Each subcommand sets ``func`` (``args -> exit status``), accepts ``--json`` and raises
:class:`~onnxsplit.errors.OnnxSplitError` subclasses for user errors (the main CLI prints
``error: ...`` and exits with status 2).

Typical use::

    onnxsplit profile --target host-x86 -o host.csv --precision fp32,int8
    onnxsplit cost-model fit host.csv --target host-x86 --precision fp32    # writes cost_models/host-x86/ort-cpu-fp32.json

On a board: run the same ``profile`` command there with the board's target, copy the CSV back,
fit here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError

# the same as onnxsplit.cost.fit.ROBUST_MODES / DEFAULT_ROBUST_C (fit imports scipy; the parser is built
# on every CLI start; tests/test_cost.py checks they agree)
_ROBUST_MODES = ("none", "slow", "both")
_ROBUST_C = 0.05

__all__ = ["register", "cmd_profile", "cmd_cost_model_fit", "cmd_cost_model_show"]


def _table(headers, rows) -> str:  # noqa: ANN001
    from ..cli import table  # lazy: onnxsplit.cli imports this module to register its commands

    return table(headers, rows)


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v >= 0.1 else f"{v:.4f}"


def _csv_list(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise UsageError(f"bad {what} '{value}': use a comma-separated list of {', '.join(allowed)}")
    return items


def _parse_model_arg(value: str) -> dict[str, Any]:
    """``PATH`` or ``PATH@NAME:1x3x224x224[@NAME2:...]`` -> a ``file`` spec."""
    from ..load import parse_input_shapes

    path, *shapes = value.split("@")
    if not Path(path).is_file():
        raise UsageError(f"--model '{path}': file not found")
    return {"gen": "file", "path": str(Path(path).resolve()),
            "input_shapes": {k: list(v) for k, v in parse_input_shapes(shapes).items()}}


# ------------------------------------------------------------------------------------ profile
def _n_nets(args: argparse.Namespace) -> int:
    """``--nets``, or its default: 150 random networks for onnxruntime profiles, none for TVM builds
    (each would be a compilation) or with ``--no-models``/``--quick``."""
    if args.nets is not None:
        if args.nets < 0:
            raise UsageError(f"--nets must be >= 0, got {args.nets}")
        return args.nets
    return 0 if (args.runtime == "tvm" or args.rpc or args.no_models or args.quick) else 150


def cmd_profile(args: argparse.Namespace) -> int:
    from ..profile import run_profile
    from ..targets import load_target

    if args.device_key and not args.rpc:
        raise UsageError("--device-key needs --rpc HOST:PORT (the TVM RPC tracker the board's server registered with)")
    target = load_target(args.target)
    precisions = _csv_list(args.precision, ("fp32", "int8"), "--precision")
    extra = [_parse_model_arg(m) for m in args.model or []]
    redo_rows, specs = None, None
    if args.redo_op and not args.redo:
        raise UsageError("--redo-op needs --redo CSV (the profile whose rows are timed again)")
    if args.redo:
        from ..profile import read_profile_csv, redo_specs

        if len(precisions) != 1:
            raise UsageError(f"--redo times the rows of one precision; pass --precision fp32 or int8, not {args.precision}")
        redo_rows = read_profile_csv(args.redo)
        specs = redo_specs(redo_rows, precision=precisions[0], with_op=args.redo_op)
        if not specs:
            raise UsageError(f"--redo {args.redo}: no {precisions[0]} row" + (f" contains {args.redo_op}" if args.redo_op else "")
                             + "; nothing to time")
    say = (lambda s: None) if args.json or args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    res = run_profile(
        target.name if not str(args.target).endswith(".toml") else args.target,
        args.output if redo_rows is None else None,  # --redo: written below, merged with the earlier rows
        runtime=args.runtime,
        precisions=precisions,
        n_kernels=args.kernels,
        include_models=not args.no_models,
        quick_models=args.quick,
        n_nets=_n_nets(args),
        net_version=args.net_version,
        net_start=args.net_start,
        extra_models=extra,
        threads=args.threads,
        warmup=args.warmup,
        reps=args.reps,
        rounds=args.rounds,
        max_seconds=args.max_seconds,
        seed=args.seed,
        allow_arch_mismatch=args.allow_arch_mismatch,
        high_priority=args.high_priority,
        kernel_families=[f.strip() for f in args.families.split(",")] if args.families else None,
        progress=say,
        rpc=args.rpc,
        device_key=args.device_key,
        session_timeout=args.session_timeout,
        specs=specs,
    )
    replaced = None
    if redo_rows is not None:
        from ..profile import merge_profile_rows, write_profile_csv

        merged, replaced = merge_profile_rows(redo_rows, res.rows)
        res.path = write_profile_csv(merged, args.output)
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in res.rows:
        key = (r["precision"], r["kind"], r["family"] or "-")
        groups.setdefault(key, []).append(float(r["median_ms"]))
    summary = {
        "output": str(res.path) if res.path else None,
        "target": target.name,
        "runtime": res.rows[0]["runtime"] if res.rows else args.runtime,
        "rows": len(res.rows),
        "skipped": [{"name": n, "reason": why} for n, why in res.skipped],
        "wall_s": round(res.wall_s, 1),
        "threads": res.rows[0]["threads"] if res.rows else None,
        "loadavg_1m": res.rows[0]["loadavg_1m"] if res.rows else None,
        "groups": [
            {"precision": p, "kind": k, "family": f, "n": len(v), "min_ms": min(v), "max_ms": max(v)}
            for (p, k, f), v in sorted(groups.items())
        ],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    rows = [(p, k, f, len(v), _fmt_ms(min(v)), _fmt_ms(max(v))) for (p, k, f), v in sorted(groups.items())]
    print(_table(["precision", "kind", "family", "n", "fastest ms", "slowest ms"], rows))
    for n, why in res.skipped:
        print(f"skipped {n}: {why}")
    load = summary["loadavg_1m"]
    warn = ""
    high = bool(res.rows) and res.rows[0].get("priority") == "high"
    if isinstance(load, (int, float)) and summary["threads"] and load > 0.5 and not high:
        warn = f"  (load average {load}: background load inflates times; profile an idle machine or use --high-priority)"
    skipped = f", {len(res.skipped)} sample(s) skipped (listed above)" if res.skipped else ""
    if replaced is not None:
        print(f"\nre-timed {len(res.rows)} rows of {args.redo} ({replaced} replaced in place) and wrote them with its other "
              f"rows to {res.path} in {res.wall_s:.0f} s, {summary['threads']} threads{skipped}{warn}")
    else:
        print(f"\nwrote {len(res.rows)} rows to {res.path} in {res.wall_s:.0f} s, {summary['threads']} threads{skipped}{warn}")
    print(f"fit with: onnxsplit cost-model fit {res.path} --target {target.name}")
    return 0


# ------------------------------------------------------------------------------------ cost-model fit
#: default --serial-below-us: on host-x86 (2 vCPUs) one-kernel graphs whose one-thread time was under
#: ~5 us ran no faster with two threads (median two/one-thread ratio 1.05-1.09), 5-10 us 0.95,
#: 10-20 us 0.71 (docs/cost-model-accuracy.md, fifteenth session)
_SERIAL_BELOW_US = 5.0


def _fit_serial(args: argparse.Namespace, target: str, precision: str) -> dict[str, Any]:
    """The ``serial_kernels`` block of ``cost-model fit --serial-data``: a law fitted on one-thread rows."""
    from ..profile import read_profile_csv
    from .fit import fit_profile

    below_us = _SERIAL_BELOW_US if args.serial_below_us is None else args.serial_below_us
    if not below_us > 0:
        raise UsageError(f"--serial-below-us must be > 0, got {below_us:g}")
    rows = []
    for path in args.serial_data:
        for r in read_profile_csv(path):
            if r.get("target") != target or r.get("precision") != precision:
                continue
            if str(r.get("threads", "")) != "1":
                raise UsageError(f"--serial-data {path}: row {r.get('_line', '?')} ({r.get('name')}) was timed with "
                                 f"threads={r.get('threads') or '?'}; the serial law needs one-thread timings "
                                 "(onnxsplit profile --threads 1)")
            rows.append(r)
    if not rows:
        raise UsageError(f"--serial-data: no rows for target '{target}', precision '{precision}' in "
                         + ", ".join(args.serial_data))
    opts: dict[str, Any] = {}
    if args.robust != "none":
        opts.update(robust=args.robust, robust_c=float(args.robust_c))
    serial = fit_profile(rows, target=target, runtime=args.runtime, precision=precision, holdout_fraction=args.holdout,
                         seed=args.seed, stat=args.stat, provenance={}, version=args.version, **opts)
    hold = serial.accuracy.get("holdout", {})
    files = ", ".join(Path(p).name for p in args.serial_data)
    return {"below_ms": below_us / 1000.0, "threads": 1, "families": serial.families,
            "source": f"fitted on one-thread measurements ({files}: {len(rows)} rows"
                      + (f", --robust {args.robust}" if args.robust != "none" else "")
                      + f"; its holdout MAPE {hold.get('mape_pct')} % on {hold.get('n')} {hold.get('level', '')} samples); "
                      f"--serial-below-us {below_us:g}"}


def cmd_cost_model_fit(args: argparse.Namespace) -> int:
    from ..targets import load_target
    from .fit import fit_profile
    from .model import cost_model_path

    target = load_target(args.target)
    precision = args.precision
    prov: dict[str, Any] = {}
    for key in ("source", "license", "citation"):
        v = getattr(args, key)
        if v:
            prov[key] = v
    from ..profile import read_profile_csv

    if not args.data and not args.from_tuning_db:
        raise UsageError("give profile CSV file(s) and/or --from-tuning-db DIR")
    rows = [r for path in args.data for r in read_profile_csv(path)]
    prov.setdefault("data_files", [Path(p).name for p in args.data])
    if args.models_only:  # an experiment knob: fit the laws from in-context (whole-model) times alone
        dropped = sum(1 for r in rows if r.get("kind") in ("kernel", "overhead"))
        rows = [r for r in rows if r.get("kind") not in ("kernel", "overhead")]
        if not any(r.get("kind") == "model" for r in rows):
            raise UsageError("--models-only: the data has no whole-model rows (kind 'model') to fit")
        prov["kernel_rows"] = f"dropped ({dropped} kernel/overhead rows; --models-only)"
    if args.from_tuning_db:
        # MetaSchedule records: the best measured schedule of each TIR workload as a per-kernel row
        # (runtime "tvm"; features approximated from the TIR: see onnxsplit.compile.tune)
        from ..compile.tune import kernel_rows_from_tuning_db

        for d in args.from_tuning_db:
            tuning_rows = kernel_rows_from_tuning_db(d, target=target.name, precision=precision)
            if not tuning_rows:
                raise UsageError(f"--from-tuning-db {d}: no successful tuning records there")
            rows.extend(tuning_rows)
        prov.setdefault("tuning_dbs", [str(d) for d in args.from_tuning_db])
        if args.runtime is None and not args.data:
            args.runtime = "tvm"
    extra: dict[str, Any] = {}
    if args.memory_floor_gbps is not None and args.memory_floor_cache_mb is None:
        raise UsageError("--memory-floor-gbps needs --memory-floor-cache-mb (the cache size above which the floor applies)")
    if args.memory_floor_cache_mb is not None:
        if args.memory_floor_cache_mb <= 0:
            raise UsageError(f"--memory-floor-cache-mb must be > 0, got {args.memory_floor_cache_mb}")
        gbps = args.memory_floor_gbps
        if gbps is None:
            gbps, gbps_source = target.mem_bandwidth_gbps, f"mem_bandwidth_gbps of the target file ({target.name})"
        elif not gbps > 0:
            raise UsageError(f"--memory-floor-gbps must be > 0, got {gbps:g}")
        else:
            gbps_source = f"--memory-floor-gbps {gbps:g} (measured streaming bandwidth, e.g. tools/bench_dram.py)"
        extra["memory_floor"] = {
            "dram_gbps": float(gbps),
            "cache_mb": float(args.memory_floor_cache_mb),
            "bytes_scale": 0.25 if precision == "int8" else 0.5 if precision == "fp16" else 1.0,
            "source": f"dram_gbps: {gbps_source}; cache_mb: --memory-floor-cache-mb {args.memory_floor_cache_mb:g} "
                      "(last-level cache of the measured machine)",
        }
    if args.serial_below_us is not None and not args.serial_data:
        raise UsageError("--serial-below-us needs --serial-data (one-thread measurements to fit the serial law from)")
    if args.serial_data:
        extra["serial_kernels"] = _fit_serial(args, target.name, precision)
    if not args.model_weight > 0:
        raise UsageError(f"--model-weight must be > 0, got {args.model_weight:g}")
    if args.model_weight != 1.0:
        extra["model_weight"] = float(args.model_weight)
        prov["model_weight"] = float(args.model_weight)
    if not args.robust_c > 0:
        raise UsageError(f"--robust-c must be > 0, got {args.robust_c:g}")
    if args.robust != "none":
        extra["robust"] = args.robust
        extra["robust_c"] = float(args.robust_c)
    model = fit_profile(rows, target=target.name, runtime=args.runtime, precision=precision,
                        holdout_fraction=args.holdout, seed=args.seed, stat=args.stat, provenance=prov,
                        version=args.version, **extra)
    if args.output:
        out = Path(args.output)
    else:
        root = Path(args.output_dir) if args.output_dir else None
        out = cost_model_path(target.name, model.runtime, precision, root)
    if out.exists() and not args.force and not args.dry_run:
        raise UsageError(f"{out} exists; pass --force to replace it (or -o another path)")
    if not args.dry_run:
        model.save(out)
    acc = model.accuracy
    if args.json:
        print(json.dumps({"output": None if args.dry_run else str(out), "model": model.to_json()}, indent=2))
        return 0
    from .features import COEFFICIENT_UNITS

    rows = [[fam] + [f"{c[f]:.4g}" for f in model.features] for fam, c in sorted(model.families.items())]
    print(_table(["family"] + [f"{f} ({COEFFICIENT_UNITS[f]})" for f in model.features], rows))
    print(f"\nper-inference overhead: {model.overhead_ms:.4f} ms")
    for name in ("holdout", "cross_validation", "validation", "uncovered"):
        a = acc.get(name)
        if isinstance(a, dict) and a.get("n"):
            print(f"{name} ({a.get('level', '')}): n={a['n']}  MAPE {a['mape_pct']}%  median APE {a['median_ape_pct']}%  "
                  f"Spearman {a['spearman']}")
    for key in ("holdout_models", "validation_models", "uncovered_models"):
        if acc.get(key):
            print()
            print(_table([key.replace("_", " "), "measured ms", "predicted ms", "error %"],
                         [(s["name"], _fmt_ms(s["measured_ms"]), _fmt_ms(s["predicted_ms"]),
                           f"{100 * (s['predicted_ms'] - s['measured_ms']) / s['measured_ms']:+.1f}")
                          for s in acc[key]]))
    where = "(dry run: not written)" if args.dry_run else f"wrote {out}"
    print(f"\n{where}: {model.target} / {model.runtime} / {model.precision}, version {model.version}, "
          f"{model.provenance['n_samples']} samples")
    return 0


def cmd_cost_model_show(args: argparse.Namespace) -> int:
    from ..targets import load_target
    from .model import CostModel, find_cost_model

    if args.file:
        model = CostModel.load(args.file)
    else:
        target = load_target(args.target)
        runtime = args.runtime or target.default_runtime
        model = find_cost_model(target.name, runtime, args.precision)
        if model is None:
            print(json.dumps({"target": target.name, "runtime": runtime, "precision": args.precision,
                              "calibrated": False}) if args.json else
                  f"no cost model for {target.name} / {runtime} / {args.precision}: predictions use the roofline "
                  "of the target file (calibrated: false)")
            return 0
    if args.json:
        print(json.dumps(model.to_json(), indent=2))
        return 0
    h = model.accuracy.get("holdout", {})
    print(f"{model.path}\n{model.target} / {model.runtime} / {model.precision}, version {model.version}"
          f"{'' if model.calibrated else ' (calibrated: false: an estimate transferred from measured devices)'}, "
          f"overhead {model.overhead_ms:.4f} ms, {model.provenance.get('n_samples')} samples, "
          f"holdout MAPE {h.get('mape_pct')}% (n={h.get('n')})")
    rows = [[fam] + [f"{c[f]:.4g}" for f in model.features] for fam, c in sorted(model.families.items())]
    print(_table(["family"] + list(model.features), rows))
    if model.kernel_configs:
        by_fam: dict[str, int] = {}
        for c in model.kernel_configs.values():
            by_fam[c["family"]] = by_fam.get(c["family"], 0) + 1
        print(f"{len(model.kernel_configs)} kernel configurations with their own fitted cost ("
              + ", ".join(f"{f} {n}" for f, n in sorted(by_fam.items())) + "); other kernels use the family law")
    if model.memory_floor:
        fl = model.memory_floor
        print(f"memory floor: a kernel whose bytes exceed {fl['cache_mb']:g} MB takes at least bytes / "
              f"{fl['dram_gbps']:g} GB/s")
    if model.serial_kernels:
        sk = model.serial_kernels
        print(f"serial law ({sk['threads']} thread(s), {len(sk['families'])} families): a kernel it prices below "
              f"{sk['below_ms'] * 1000:g} us takes it instead of the law above; {sk['source']}")
    ev = model.accuracy.get("heldout_eval", {}).get("groups", {}).get("all")
    if ev:
        print(f"held-out evaluation (tools/eval_cost_model.py): n={ev['n']}, within +-10% {ev['within_10_pct']}%, "
              f"MAPE {ev['mape_pct']}%, worst {ev['max_ape_pct']}% ({ev['worst']})")
    return 0


# ------------------------------------------------------------------------------------ registration
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``profile`` and ``cost-model`` (``fit``, ``show``) to the main CLI's subparsers."""
    from ..targets import PRECISIONS, RUNTIMES

    p = subparsers.add_parser(
        "profile",
        help="time sampled kernels and whole models (onnxruntime here, or TVM builds here/over TVM RPC; CSV for `cost-model fit`)",
        description="Measure kernel and whole-model latencies with onnxruntime on THIS machine for TARGET "
        "(on a board, run the same command there and copy the CSV back), or of TVM builds for TARGET "
        "(--runtime tvm): in this process, or on the board through a TVM RPC tracker (--rpc HOST:PORT --device-key KEY).",
    )
    p.add_argument("--target", required=True, help="target name, short name or .toml path (the machine measured)")
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="CSV to write (columns: onnxsplit.profile)")
    p.add_argument("--runtime", choices=[r for r in RUNTIMES], help="runtime to time (default: the target's)")
    p.add_argument("--precision", default="fp32", metavar="P[,P]", help="fp32 and/or int8 (QDQ static), e.g. fp32,int8")
    p.add_argument("--kernels", type=int, default=300, metavar="N", help="number of sampled kernels (default 300)")
    p.add_argument("--families", metavar="F[,F]", help="only sample these kernel families")
    p.add_argument("--no-models", action="store_true", help="skip the built-in whole models (zoo, variants, CNNs)")
    p.add_argument("--nets", type=int, metavar="N",
                   help="also time N random realistic networks (onnxsplit.netgen: residual/inverted/SE/inception/"
                        "dense/FPN/OCR/transformer blocks; default 150 for onnxruntime, 0 for TVM builds or with --no-models/--quick)")
    p.add_argument("--net-version", type=int, choices=[1, 2], default=1,
                   help="netgen vocabulary of --nets: 1 = 96-320 px CNNs, 16-256-token transformers (median 1.8 ms here); "
                        "2 = CIFAR/MNIST scale, 28-64 px, 8-64 tokens (median 0.3 ms here) (default 1)")
    p.add_argument("--net-start", type=int, default=0, metavar="S", help="first netgen seed of --nets (default 0)")
    p.add_argument("--quick", action="store_true", help="only 3 small zoo models")
    p.add_argument("--model", action="append", metavar="PATH[@INPUT:DIMS]",
                   help="also time this .onnx as a validation model (never fitted), e.g. m.onnx@images:1x3x320x320")
    p.add_argument("--threads", type=int, help="intra-op threads (default: physical cores = onnxruntime's default)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per sample (default 3)")
    p.add_argument("--reps", type=int, default=15, help="timed runs per round (default 15)")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds over all samples (default 3)")
    p.add_argument("--max-seconds", type=float, default=0.25, help="time budget per sample per round (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="kernel sampling seed")
    p.add_argument("--high-priority", action="store_true",
                   help="raise the profiler's CPU priority while timing (Linux, root): for shared machines")
    p.add_argument("--allow-arch-mismatch", action="store_true", help="label measurements with a target of another ISA")
    p.add_argument("--rpc", metavar="HOST:PORT",
                   help="TVM RPC tracker of the board: time TVM builds there (implies --runtime tvm)")
    p.add_argument("--device-key", metavar="KEY", help="device key the board's RPC server registered with")
    p.add_argument("--session-timeout", type=float, default=0, metavar="S",
                   help="RPC session time limit in seconds (default 0: none)")
    p.add_argument("--redo", metavar="CSV",
                   help="time the rows of this earlier profile (its --precision rows) again instead of sampling, e.g. "
                        "after a quantizer change; -o gets all of CSV's rows with the re-timed ones replaced")
    p.add_argument("--redo-op", metavar="OP", help="with --redo: only rows whose graph contains this ONNX op type")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=cmd_profile)

    cm = subparsers.add_parser("cost-model", help="fit or show learned latency cost models")
    cms = cm.add_subparsers(dest="cost_model_command", metavar="ACTION")
    cm.set_defaults(func=lambda args: (cm.print_help(), 2)[1])

    f = cms.add_parser("fit", help="fit a cost model from a profile CSV",
                       description="Fit per-op-family non-negative linear latency coefficients (NNLS) from "
                       "`onnxsplit profile` measurements; writes cost_models/<target>/<runtime>-<precision>.json.")
    f.add_argument("data", nargs="*", help="CSV file(s) written by `onnxsplit profile`")
    f.add_argument("--from-tuning-db", action="append", metavar="DIR",
                   help="add the best record of each workload of a MetaSchedule database (`onnxsplit tune`: "
                        "OUT/tuning/<side>) as per-kernel rows, runtime tvm (repeatable)")
    f.add_argument("--target", required=True, help="target the measurements are for")
    f.add_argument("--runtime", choices=[r for r in RUNTIMES], help="runtime (default: the one in the data)")
    f.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    f.add_argument("--holdout", type=float, default=0.2, help="fraction of whole models held out (default 0.2)")
    f.add_argument("--seed", type=int, default=0, help="holdout split seed")
    f.add_argument("--stat", default="median_ms", choices=["median_ms", "min_ms", "mean_ms", "p90_ms"],
                   help="latency statistic to fit (default median_ms)")
    f.add_argument("--version", default="1", help="artifact version string (default 1)")
    f.add_argument("--memory-floor-cache-mb", type=float, default=None, metavar="MB",
                   help="store a DRAM floor: kernels whose bytes exceed this last-level cache size are predicted at "
                        "least bytes / the target's mem_bandwidth_gbps (or --memory-floor-gbps)")
    f.add_argument("--memory-floor-gbps", type=float, default=None, metavar="G",
                   help="with --memory-floor-cache-mb: the floor's bandwidth in GB/s instead of the target file's "
                        "mem_bandwidth_gbps, e.g. what tools/bench_dram.py measured with the profile's thread count")
    f.add_argument("--serial-data", nargs="+", default=None, metavar="CSV",
                   help="profile CSV(s) timed with ONE intra-op thread (`onnxsplit profile --threads 1`, e.g. --redo of "
                        "the main data): fits a serial law, stored in the model; kernels it prices below "
                        "--serial-below-us take it instead of the main law (the runtime does not split small kernels "
                        "over threads)")
    f.add_argument("--serial-below-us", type=float, default=None, metavar="US",
                   help=f"with --serial-data: the threshold in microseconds (default {_SERIAL_BELOW_US:g}: below it "
                        "one-kernel graphs ran no faster with two threads than with one on host-x86)")
    f.add_argument("--model-weight", type=float, default=1.0, metavar="W",
                   help="weight of the whole-model rows against the kernel rows (default 1: both kinds weigh the "
                        "same in total; recorded in the provenance when not 1)")
    f.add_argument("--models-only", action="store_true",
                   help="drop the kernel/overhead rows and fit from whole-model rows alone (recorded in the provenance)")
    f.add_argument("--robust", choices=list(_ROBUST_MODES), default="none",
                   help="robust refit (Huber IRLS on the log ratio measured/predicted): 'slow' damps rows measured "
                        "much slower than the law (one-sided timing noise: interference only slows a run), "
                        "'both' damps both directions; default none (recorded in the provenance)")
    f.add_argument("--robust-c", type=float, default=_ROBUST_C, metavar="C",
                   help=f"--robust threshold on |log(measured / predicted)| (default {_ROBUST_C:g}, about 5 %%)")
    f.add_argument("--source", help="provenance: where the data comes from")
    f.add_argument("--license", help="provenance: license of the data")
    f.add_argument("--citation", help="provenance: how to cite the data")
    g = f.add_mutually_exclusive_group()
    g.add_argument("-o", "--output", help="write the model here instead of the registry")
    g.add_argument("--output-dir", help="registry root to write into (default: the bundled cost_models/)")
    f.add_argument("--force", action="store_true", help="replace an existing model")
    f.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")
    f.add_argument("--json", action="store_true", help="print the fitted model as JSON")
    f.set_defaults(func=cmd_cost_model_fit)

    s = cms.add_parser("show", help="show the registered cost model of a target")
    s.add_argument("--target", default="host-x86")
    s.add_argument("--runtime", choices=[r for r in RUNTIMES])
    s.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    s.add_argument("--file", help="a cost-model JSON file instead of the registry")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_cost_model_show)
