"""``onnxsplit tune OUT/``: MetaSchedule tuning of each half of a split folder for its own target.

Flow per side (``--side edge|cloud|both``):

1. the half ``OUT/<side>/model.onnx`` is imported exactly as :func:`~onnxsplit.compile.tvm_backend.
   compile_half` imports it (:func:`~onnxsplit.compile.tvm_backend.import_half`), fused with the
   passes MetaSchedule's ``compile_relax`` uses (:func:`~onnxsplit.compile.tvm_backend.ms_fuse_passes`),
   and its TIR tasks are extracted (``tvm.s_tir.meta_schedule.relax_integration.extract_tasks``);
2. ``tune_tasks`` measures candidates: an in-process builder (no worker processes: on a 2-core machine
   TVM's ``LocalBuilder`` spends most of its time starting workers and times out) and either the
   ``LocalRunner`` (targets this machine can run) or an ``RPCRunner`` through a TVM RPC tracker
   (``--rpc HOST:PORT --device-key KEY``) for boards;
3. records are appended to the ``JSONDatabase`` in ``OUT/tuning/<side>/``
   (``database_workload.json`` + ``database_tuning_record.json``) after every measured batch, so an
   interrupted run keeps what it measured; ``--trials N`` is the *total* budget of a side: a second
   ``tune`` measures only ``N - records already there`` more (and the search starts from the best
   records there);
4. the half is rebuilt with the tuned schedules (``compile_bundle(..., tuning_db=OUT/tuning)``,
   ``MetaScheduleApplyDatabase`` inside the target context) and ``OUT/manifest.json`` is rewritten
   with ``compiled.<side>.tuning`` (``--no-compile`` skips this).

The target of a side: the manifest's ``targets.<side>`` (``onnxsplit compile`` folders) or
``--target`` (required for ``onnxsplit split`` folders, which record no targets). MetaSchedule needs
the number of cores of the target (``num-cores``): the target file's ``cpu_cores`` is used, or
``--num-cores``.

Tuning records as cost-model data: :func:`kernel_rows_from_tuning_db` turns the best record of every
workload into a per-kernel row for :func:`onnxsplit.cost.fit.fit_from_kernels` (``onnxsplit
cost-model fit --from-tuning-db DIR --target T``). The mapping is an approximation (documented
there): the family comes from the names of the TIR blocks, ``mflops`` from
``tvm.s_tir.analysis.estimate_tir_flops``, bytes from the PrimFunc's buffer parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import OnnxSplitError, UsageError

__all__ = ["RPCError", "TuneError", "cmd_tune", "kernel_rows_from_tuning_db", "register", "time_library", "tune_half",
           "tune_bundle"]

SIDES = ("edge", "cloud")


class TuneError(OnnxSplitError):
    """Tuning could not run (bad folder, target, database...)."""


class RPCError(TuneError):
    """The RPC tracker is unreachable or has no server for the device key."""


# ------------------------------------------------------------------------------------ RPC
def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--rpc '{value}': use HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def check_rpc(host: str, port: int, key: str, *, timeout: float = 10.0) -> None:
    """Fail fast (:class:`RPCError`, one line) unless a tracker answers at HOST:PORT with a server for ``key``."""
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            pass
    except OSError as exc:
        raise RPCError(f"cannot reach the RPC tracker at {host}:{port} ({exc.strerror or exc}); start one with "
                       f"`python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port}`") from None
    result: dict[str, Any] = {}

    def query() -> None:
        try:
            from tvm import rpc

            result["summary"] = rpc.connect_tracker(host, port).summary()
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    th = threading.Thread(target=query, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise RPCError(f"{host}:{port} accepted a connection but did not answer as a TVM RPC tracker within {timeout:g} s")
    if "error" in result:
        raise RPCError(f"{host}:{port} is not a usable TVM RPC tracker: {str(result['error']).strip().splitlines()[-1][:200]}")
    summary = result["summary"]
    queue = summary.get("queue_info") or {}  # key -> {"free": n, "pending": m}
    servers = [str(srv.get("key", "")).split(":", 1)[-1] for srv in summary.get("server_info") or []]
    if key not in queue and key not in servers:
        have = ", ".join(sorted(set(queue) | {k for k in servers if k})) or "none"
        raise RPCError(f"no RPC server with device key '{key}' is registered at the tracker {host}:{port} "
                       f"(keys there: {have}); start one with `python -m tvm.exec.rpc_server --tracker {host}:{port} "
                       f"--key {key}`")


# ------------------------------------------------------------------------------- builder, progress
def _in_process_builder():  # noqa: ANN202
    """A MetaSchedule builder that compiles candidates in this process (``default_build`` +
    ``default_export``: a .tar of objects, linked by the runner's machine)."""
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
    from tvm.ir.utils import derived_object

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):  # noqa: ANN001, ANN202
            results = []
            for bi in build_inputs:
                try:
                    with warnings.catch_warnings():  # default_build calls the deprecated tvm.build
                        warnings.simplefilter("ignore")
                        built = default_build(bi.mod, bi.target, None)
                    results.append(BuilderResult(default_export(built), None))
                except Exception as exc:  # noqa: BLE001 - an invalid candidate, not a tuning failure
                    results.append(BuilderResult(None, f"{type(exc).__name__}: {str(exc)[-500:]}"))
            return results

    return InProcessBuilder()


def _progress_callback(side: str, names: list[str], total: int, say: Callable[[str], None]):  # noqa: ANN202
    import numpy as np

    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    state = {"done": 0, "best": {}, "t0": time.perf_counter()}

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):  # noqa: ANN001
            state["done"] += len(runner_results)
            ok = [float(np.mean([float(x) for x in r.run_secs])) for r in runner_results
                  if r.error_msg is None and r.run_secs]
            errors = len(runner_results) - len(ok)
            if ok:
                best = min(ok)
                state["best"][task_id] = min(best, state["best"].get(task_id, best))
            b = state["best"].get(task_id)
            say(f"[{side}] {state['done']}/{total} trials  task {task_id + 1}/{len(names)} {names[task_id]}: "
                f"{len(ok)} measured" + (f", {errors} failed" if errors else "")
                + (f", best {b * 1e3:.4f} ms" if b is not None else "")
                + f"  ({time.perf_counter() - state['t0']:.0f} s)")

    return Progress()


# ------------------------------------------------------------------------------------ targets
def _num_cores(target: Any, tvm_dict: Mapping[str, Any], num_cores: int | None, local: bool) -> int:
    if num_cores:
        return int(num_cores)
    host = tvm_dict if tvm_dict.get("kind") == "llvm" else tvm_dict.get("host") or {}
    if host.get("num-cores"):
        return int(host["num-cores"])
    if local:
        try:
            import psutil

            return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
        except ImportError:
            return int(os.cpu_count() or 1)
    cores = getattr(target, "cpu_cores", None) or (target.get("cpu_cores") if isinstance(target, Mapping) else None)
    return int(cores or 1)


def _tuning_target(tvm_dict: Mapping[str, Any], cores: int) -> dict[str, Any]:
    t = json.loads(json.dumps(dict(tvm_dict)))
    if t.get("kind") == "llvm":
        t.setdefault("num-cores", cores)
    elif isinstance(t.get("host"), dict):
        t["host"].setdefault("num-cores", cores)
    return t


def _side_target(root: Path, manifest: Mapping[str, Any], side: str, override: str | None):  # noqa: ANN202
    from ..targets import Target, load_target

    if override:
        return load_target(override)
    entry = (manifest.get("targets") or {}).get(side)
    if isinstance(entry, Mapping) and entry.get("name"):
        try:
            return load_target(entry["name"])
        except OnnxSplitError:
            if entry.get("tvm_target"):
                return dict(entry["tvm_target"])
    if isinstance(entry, (str, Target)):
        return load_target(entry)
    raise UsageError(f"{root}/manifest.json records no target for the {side} half (a `split` folder): pass --target")


# ------------------------------------------------------------------------------------ tuning
def tune_half(
    model: Any,
    target: Any,
    db_dir: str | os.PathLike[str],
    *,
    trials: int,
    rpc: tuple[str, int] | None = None,
    device_key: str | None = None,
    session_timeout: int = 30,
    num_cores: int | None = None,
    trials_per_iter: int = 8,
    cost_model: str = "xgb",
    strategy: str = "evolutionary",
    seed: int | None = 0,
    side: str = "half",
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tune the TIR tasks of one ONNX half for ``target`` into the JSONDatabase ``db_dir`` (appending).

    ``trials`` is the total budget: records already in the database count against it. Returns
    ``{"database", "tasks", "records_before", "records", "trials_run", "wall_s", "target"}``.
    """
    from . import tvm_backend as tb

    say = say or (lambda s: None)
    tvm = tb._import_tvm()
    try:
        from tvm.s_tir import meta_schedule as ms
    except Exception as exc:  # noqa: BLE001
        raise TuneError(f"MetaSchedule could not be imported ({exc}); pip install cloudpickle psutil xgboost-cpu") from exc
    tvm_dict, target_name = tb._target_dict_and_name(target)
    local = rpc is None
    if local and tvm_dict.get("kind") != "llvm":
        raise TuneError(f"{side}: tuning a {tvm_dict.get('kind')} target needs the device: pass --rpc HOST:PORT --device-key KEY")
    if local and tb._triple_arch(tb._host_triple(tvm_dict)) != tb._this_arch():
        raise TuneError(f"{side}: target {target_name or tvm_dict} runs on {tb._triple_arch(tb._host_triple(tvm_dict))}, "
                        f"not on this {tb._this_arch()} machine: tune on the board through --rpc HOST:PORT --device-key KEY")
    if local and tb.missing_cpu_features(tvm_dict):
        raise TuneError(f"{side}: this CPU lacks {', '.join(tb.missing_cpu_features(tvm_dict)[:4])} used by target "
                        f"{target_name}: tune on the target machine (--rpc)")
    if rpc is not None:
        if not device_key:
            raise UsageError("--rpc needs --device-key KEY (the key the board's RPC server registered with)")
        check_rpc(rpc[0], rpc[1], device_key)
    if cost_model == "xgb":
        try:
            import xgboost  # noqa: F401
        except ImportError:
            raise TuneError("the xgb cost model needs xgboost: pip install xgboost-cpu (or pass --cost-model random)") from None

    model = tb._prepare_model(model)
    label = f"{side} ({target_name or tvm_dict.get('kind')})"
    inputs = tb._static_inputs(model, label)
    mod = tb.import_half(model, inputs, label)
    cores = _num_cores(target, tvm_dict, num_cores, local)
    tdict = _tuning_target(tvm_dict, cores)
    tgt = tvm.target.Target(tdict)
    with tgt:
        fused = tvm.transform.Sequential(tb.ms_fuse_passes(tgt))(mod)
    tasks = ms.relax_integration.extract_tasks(fused, tgt)
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(db_dir))
    before = len(database)
    result = {"database": str(db_dir), "target": target_name, "tvm_target": tdict, "tasks": [t.task_name for t in tasks],
              "records_before": before, "trials_requested": trials}
    todo = trials - before
    t0 = time.perf_counter()
    if not tasks:
        say(f"[{side}] no tunable TIR tasks")
        todo = 0
    elif todo <= 0:
        say(f"[{side}] {before} records already in {db_dir} (budget {trials}): nothing to tune")
    else:
        say(f"[{side}] tuning {len(tasks)} task(s) for {target_name or tdict.get('kind')} ({cores} cores): {todo} trials"
            + (f" (continuing: {before} records there)" if before else "") + (f" via RPC {rpc[0]}:{rpc[1]} key {device_key}"
                                                                            if rpc else ""))
        # MetaSchedule's console handler takes the level of its logger: keep its tables off stdout
        # (they go to OUT/tuning/<side>/logs/); our progress lines go to stderr
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        with _unnamed_handlers_detached("tvm.s_tir.meta_schedule"):
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=tasks, work_dir=str(db_dir), strategy=_strategy(ms, strategy), seed=seed,
                num_threads=1)
        if rpc is not None:
            runner = ms.runner.RPCRunner(
                rpc_config=ms.runner.RPCConfig(tracker_host=rpc[0], tracker_port=rpc[1], tracker_key=device_key,
                                               session_timeout_sec=session_timeout),
                evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20),
                max_workers=1)
        else:
            runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=ms.runner.EvaluatorConfig(
                number=3, repeat=1, min_repeat_ms=20))
        callbacks = [*ms.measure_callback.MeasureCallback.create("default"),
                     _progress_callback(side, [t.task_name for t in tasks], todo, say)]
        # every task gets a share of the budget (the gradient scheduler starts with one batch per task)
        per_iter = max(1, min(trials_per_iter, todo // len(tasks) or 1))
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(db_dir), max_trials_global=todo,
                      max_trials_per_task=None, num_trials_per_iter=per_iter, builder=_in_process_builder(),
                      runner=runner, database=database, cost_model=cost_model, measure_callbacks=callbacks,
                      task_scheduler="round-robin" if todo < 2 * per_iter * len(tasks) else "gradient")
    database = ms.database.JSONDatabase(work_dir=str(db_dir))  # re-read what was committed
    result.update(records=len(database), trials_run=len(database) - before, wall_s=round(time.perf_counter() - t0, 1))
    return result


@contextlib.contextmanager
def _unnamed_handlers_detached(logger_name: str) -> Iterator[None]:
    """Detach the unnamed handlers of a logger for the duration of the block.

    MetaSchedule (TVM 0.27, ``meta_schedule.logging.create_loggers``) re-creates its loggers with
    ``logging.config.dictConfig`` and lists the handlers already on its logger *by name*; an unnamed
    one (pytest >= 9.2's log capture attaches one; so may an application) makes it fail with
    "'NoneType' object has no attribute 'format'". They are re-attached afterwards."""
    lg = logging.getLogger(logger_name)
    unnamed = [h for h in lg.handlers if h.get_name() is None]
    for h in unnamed:
        lg.removeHandler(h)
    try:
        yield
    finally:
        for h in unnamed:
            lg.addHandler(h)


def _strategy(ms: Any, name: str) -> Any:
    if name == "evolutionary":
        # a smaller population than TVM's default (512) keeps the search itself short on small budgets
        return ms.search_strategy.EvolutionarySearch(population_size=64, init_measured_ratio=0.1,
                                                     init_min_unmeasured=16, genetic_num_iters=2)
    if name in ("replay-trace", "replay-func"):
        return name
    raise UsageError(f"unknown search strategy '{name}' (evolutionary, replay-trace, replay-func)")


def tune_bundle(
    out_dir: str | os.PathLike[str],
    *,
    sides: tuple[str, ...] = SIDES,
    trials: int,
    target: str | None = None,
    rpc: tuple[str, int] | None = None,
    device_key: str | None = None,
    compile_after: bool = True,
    say: Callable[[str], None] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Tune the halves of a split folder into ``OUT/tuning/<side>/`` and (``compile_after``) rebuild
    ``OUT/<side>/tvm/`` with the tuned schedules, recording ``compiled.<side>.tuning`` in the manifest."""
    root = Path(out_dir)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise TuneError(f"{root} is not a split folder (no manifest.json); create one with `onnxsplit split` or `onnxsplit compile`")
    manifest = json.loads(mpath.read_text())
    import onnx

    report: dict[str, Any] = {"sides": {}}
    targets: dict[str, Any] = {}
    for side in SIDES:
        if (root / side / "model.onnx").is_file():
            try:
                targets[side] = _side_target(root, manifest, side, target)
            except UsageError:
                if side in sides:
                    raise
    todo = [s for s in sides if (root / s / "model.onnx").is_file()]
    if not todo:
        raise TuneError(f"{root}: no {'/'.join(sides)} half (model.onnx) to tune")
    for side in todo:
        report["sides"][side] = tune_half(onnx.load(str(root / side / "model.onnx")), targets[side],
                                          root / "tuning" / side, trials=trials, rpc=rpc, device_key=device_key,
                                          side=side, say=say, **kw)
    if compile_after:
        from .tvm_backend import compile_bundle

        dbs = {s: root / "tuning" / s for s in todo if (root / "tuning" / s / "database_workload.json").is_file()}
        edge_t = targets.get("edge")
        cloud_t = targets.get("cloud")
        if say:
            say(f"rebuilding {', '.join(dbs)} with the tuned schedules")
        compiled = compile_bundle(root, edge_t if "edge" in dbs else None, cloud_t if "cloud" in dbs else None,
                                  tuning_db=dbs, errors="record")
        old = manifest.get("compiled") if isinstance(manifest.get("compiled"), dict) else {}
        merged = {**(old or {}), **{s: v for s, v in compiled.items() if s in dbs}}
        for s in dbs:
            if isinstance(merged.get(s), dict) and merged[s].get("tuning"):
                merged[s]["tuning"]["database"] = f"tuning/{s}"
        manifest["compiled"] = merged
        manifest.pop("schema", None)
        manifest.pop("versions", None)
        manifest.pop("files", None)
        from ..bundle import write_manifest

        write_manifest(root, manifest)
        report["compiled"] = {s: merged[s] for s in dbs}
    return report


# ------------------------------------------------------------------------------------ timing
def time_library(so_path: str | os.PathLike[str], feeds: Mapping[str, Any], *, number: int = 10,
                 repeat: int = 5) -> float:
    """Median latency (ms) of a compiled half's ``main`` on this CPU (``time_evaluator``).

    Call it in a process that has not tuned: after ``tune_tasks`` the xgboost/OpenMP threads left in
    the process compete with TVM's thread pool (tiny_cnn edge, tuned: 0.93 ms there vs 0.16 ms in a
    fresh process); ``tools/bench_tune.py`` times in a subprocess."""
    import numpy as np

    from . import tvm_backend as tb

    tvm = tb._import_tvm()
    from tvm import relax

    meta = json.loads(Path(so_path).with_suffix(".json").read_text())
    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(so_path)), dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[i["name"]]), device=dev) for i in meta["inputs"]]
    vm["main"](*args)
    res = vm.time_evaluator("main", dev, number=number, repeat=repeat)(*args)
    return float(np.median(res.results) * 1e3)


# ------------------------------------------------------------------------------------ cost-model rows
_FAMILY_BY_BLOCK = (
    ("conv2d_transpose", "conv_transpose"), ("conv1d_transpose", "conv_transpose"),
    ("depthwise", "conv_dw"), ("group_conv", "conv_dw"), ("conv", "conv"),
    ("matmul", "gemm"), ("dense", "gemm"), ("batch_matmul", "matmul"),
    ("pool", "pool"), ("adaptive", "pool"), ("softmax", "softmax"),
    ("layer_norm", "norm"), ("group_norm", "norm"), ("rms_norm", "norm"), ("batch_norm", "norm"),
    ("resize", "resize"), ("image_resize", "resize"),
    ("_red", "reduce"), ("argmax", "reduce"), ("argmin", "reduce"), ("cumsum", "reduce"),
    ("transpose", "data_movement"), ("concat", "data_movement"), ("split", "data_movement"),
    ("strided_slice", "data_movement"), ("take", "data_movement"), ("pad", "data_movement"),
    ("reshape", "reshape"), ("squeeze", "reshape"), ("expand_dims", "reshape"),
)


def _family_of(func: Any, weight_shape: tuple[int, ...] | None) -> str:
    names: list[str] = []
    try:
        from tvm import s_tir
        from tvm_ffi.structural import structural_walk

        structural_walk(func, [(s_tir.SBlock, lambda b: names.append(str(b.name_hint)))])
    except Exception:  # noqa: BLE001 - then fall back on the script text
        names = [func.script()]
    text = " ".join(names).lower()
    for key, fam in _FAMILY_BY_BLOCK:
        if key in text:
            if fam == "conv" and weight_shape is not None and len(weight_shape) >= 3 and all(d == 1 for d in weight_shape[2:]):
                return "conv_pw"
            return fam
    return "elementwise"


def _param_info(p: Any) -> tuple[tuple[int, ...], int] | None:
    import numpy as np

    try:
        shape = tuple(int(d) for d in p.shape)
        return shape, int(np.prod(shape, dtype=np.int64)) * np.dtype(str(p.dtype)).itemsize
    except Exception:  # noqa: BLE001 - symbolic shapes, handles
        return None


def kernel_rows_from_tuning_db(db_dir: str | os.PathLike[str], *, target: str, precision: str = "fp32") -> list[dict[str, Any]]:
    """One per-kernel row (``fit_from_kernels`` format) per workload of a tuning database: its best record.

    Approximations (the TIR workload is a fused PrimFunc, not ONNX nodes):

    * ``family``: from the names of its TIR blocks (``conv2d_nchw`` -> conv, or conv_pw for a 1x1
      weight, ``depthwise``/``group`` -> conv_dw, ``matmul``/``dense`` -> gemm, ``pool``, ``softmax``,
      ``*_red`` reductions, norms, data movement); anything else -> elementwise;
    * ``mflops``: ``tvm.s_tir.analysis.estimate_tir_flops`` (a multiply-add counts 2, as in onnxsplit.flops);
    * bytes: the PrimFunc's buffer parameters; the last one is the output (``out_mb``); for conv/gemm
      the second is the weight (``param_mb``), the others are activations (``in_mb``);
    * ``median_ms``: the mean of the best record's ``run_secs`` (the runner's repeats): kernel time
      only, without a per-inference overhead.
    """
    import numpy as np

    from . import tvm_backend as tb

    tb._import_tvm()
    from tvm import tirx
    from tvm.s_tir import analysis as s_analysis
    from tvm_ffi.structural import structural_hash

    database = tb.open_tuning_db(db_dir)
    best: dict[int, tuple[float, list[float], Any]] = {}
    for rec in database.get_all_tuning_records():
        secs = [float(x) for x in (rec.run_secs or [])]
        if not secs or not all(np.isfinite(secs)) or max(secs) >= 1e9:  # failed runs are stored as 1e10 s
            continue
        key = int(structural_hash(rec.workload.mod))
        mean = float(np.mean(secs))
        if key not in best or mean < best[key][0]:
            best[key] = (mean, secs, rec.workload.mod)
    rows = []
    for i, (mean, secs, mod) in enumerate(best.values()):
        funcs = [f for _, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
        if not funcs:
            continue
        info = [x for x in (_param_info(p) for p in funcs[0].params) if x is not None]
        shapes, sizes = [x[0] for x in info], [x[1] for x in info]
        fam = _family_of(funcs[0], shapes[1] if len(shapes) >= 3 else None)
        try:
            flops = float(s_analysis.estimate_tir_flops(mod))
        except Exception:  # noqa: BLE001
            flops = 0.0
        out_b = sizes[-1] if sizes else 0
        ins = sizes[:-1]
        param_b = ins[1] if fam in ("conv", "conv_pw", "conv_dw", "conv_transpose", "gemm") and len(ins) >= 2 else 0
        rows.append({
            "name": f"tvm-{Path(db_dir).name}-wl{i}-{fam}", "kind": "kernel", "family": fam, "target": target,
            "runtime": "tvm", "precision": precision,
            "mflops": flops / 1e6, "in_mb": (sum(ins) - param_b) / 1e6, "out_mb": out_b / 1e6,
            "param_mb": param_b / 1e6, "one": 1.0, "median_ms": mean * 1e3, "source": "tuning-db",
        })
    return rows


# ------------------------------------------------------------------------------------ CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune", help="MetaSchedule-tune the TVM build of each half for its target (local or through TVM RPC)",
        description="Tune each half's TIR kernels with TVM MetaSchedule into OUT/tuning/<side>/ (append-only JSON "
        "database: a second run continues), then rebuild OUT/<side>/tvm/ with the tuned schedules.")
    p.add_argument("bundle", metavar="OUT", help="a folder written by `onnxsplit split` or `onnxsplit compile`")
    p.add_argument("--side", default="both", choices=["edge", "cloud", "both"])
    p.add_argument("--trials", type=int, required=True, metavar="N",
                   help="total measured candidates per side (records already in the database count)")
    p.add_argument("--target", help="target of the tuned side(s) (default: the manifest's targets.<side>)")
    p.add_argument("--rpc", metavar="HOST:PORT", help="TVM RPC tracker of the board (default: measure on this machine)")
    p.add_argument("--device-key", metavar="KEY", help="device key the board's RPC server registered with")
    p.add_argument("--session-timeout", type=int, default=30, metavar="S", help="RPC session timeout (default 30 s)")
    p.add_argument("--num-cores", type=int, help="cores of the target (default: target file / this machine)")
    p.add_argument("--trials-per-iter", type=int, default=8, metavar="N", help="candidates per measured batch (default 8)")
    p.add_argument("--cost-model", default="xgb", choices=["xgb", "random", "mlp"])
    p.add_argument("--strategy", default="evolutionary", choices=["evolutionary", "replay-trace", "replay-func"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="only tune; do not rebuild the libraries")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    if args.trials < 0:
        raise UsageError("--trials must be >= 0")
    rpc = parse_hostport(args.rpc) if args.rpc else None
    if args.device_key and not rpc:
        raise UsageError("--device-key needs --rpc HOST:PORT")
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    sides = SIDES if args.side == "both" else (args.side,)
    report = tune_bundle(args.bundle, sides=sides, trials=args.trials, target=args.target, rpc=rpc,
                         device_key=args.device_key, compile_after=not args.no_compile, say=say,
                         session_timeout=args.session_timeout, num_cores=args.num_cores,
                         trials_per_iter=args.trials_per_iter, cost_model=args.cost_model, strategy=args.strategy,
                         seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    from ..cli import table

    rows = []
    for side, r in report["sides"].items():
        comp = (report.get("compiled") or {}).get(side) or {}
        tun = comp.get("tuning") or {}
        rows.append((side, r.get("target") or "-", len(r["tasks"]), r["records_before"], r["trials_run"], r["records"],
                     f"{r['wall_s']:.0f}", f"{tun.get('tuned_tasks', '-')}/{tun.get('tasks', '-')}" if tun
                     else ("error: " + comp["error"][:60] if "error" in comp else "-")))
    print(table(["side", "target", "tasks", "records before", "trials run", "records", "wall s", "tuned tasks in build"],
                rows))
    print(f"\ndatabase: {Path(args.bundle) / 'tuning'}/<side>/" +
          ("" if args.no_compile else f"; rebuilt {', '.join(report.get('compiled', {}))} with it"))
    return 0


def _copy_tuning_db(src: str | os.PathLike[str], dest: Path) -> Path:
    """Copy a tuning database folder (one database, or edge/ and cloud/ ones) to ``dest``."""
    src = Path(src)
    dest.mkdir(parents=True, exist_ok=True)
    names = ("database_workload.json", "database_tuning_record.json")
    if (src / names[0]).is_file():
        for n in names:
            shutil.copy2(src / n, dest / n)
        return dest
    for side in SIDES:
        if (src / side / names[0]).is_file():
            (dest / side).mkdir(exist_ok=True)
            for n in names:
                shutil.copy2(src / side / n, dest / side / n)
    return dest
