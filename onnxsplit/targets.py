"""Hardware targets: one TOML data file per device in ``targets/``, validated strictly on load.

A target file describes a device that runs one half of a split model: peak throughput per
precision, memory, power figures for the energy objective, the runtimes it offers (onnxruntime
execution providers, the TVM target for edge and host code), which ops run in int8 and which ops it
cannot run at all. Every numeric field carries its unit in its name:

==========================  ===============================================================
``peak_gflops_fp32``        peak fp32 throughput, GFLOP/s (10**9 floating-point ops per second)
``peak_gflops_fp16``        peak fp16 throughput, GFLOP/s (= fp32 where fp16 runs as fp32)
``peak_gops_int8``          peak int8 throughput, GOP/s (one MAC = 2 ops), dense (no sparsity)
``mem_bandwidth_gbps``      memory bandwidth, **gigabytes** per second (10**9 B/s)
``mem_capacity_mb``         memory capacity, megabytes (10**6 B)
``power_active_w``          power while computing, W
``power_idle_w``            power while idle (waiting for the network), W
``radio_nj_per_byte``       radio energy to send one byte, nJ/B (optional: edge devices)
``clock_ghz``               CPU clock, GHz;  ``cpu_cores``: count
``kernel_overhead_us``      roofline assumption: fixed cost per kernel, microseconds
``inference_overhead_us``   roofline assumption: fixed cost per inference, microseconds
``compute_efficiency``      roofline assumption: fraction of peak reached (0, 1]
``bandwidth_efficiency``    roofline assumption: fraction of bandwidth reached (0, 1]
==========================  ===============================================================

File layout (every key required unless marked optional; no other key is accepted):

* top level: ``schema`` (``"onnxsplit.target/1"``), ``name`` (= file stem), ``description``,
  ``role`` (edge|cloud|any), ``arch`` (``platform.machine()`` of the device: x86_64|aarch64|...),
  ``default_runtime``, ``runtimes`` (subset of ort-cpu, ort-cuda, ort-trt, tvm);
* ``[compute]``: ``processor`` (text), ``cpu_cores``, ``clock_ghz``, ``peak_gflops_fp32``,
  ``peak_gflops_fp16``, ``peak_gops_int8``;
* ``[memory]``: ``mem_bandwidth_gbps``, ``mem_capacity_mb``;
* ``[power]``: ``power_active_w``, ``power_idle_w``, ``radio_nj_per_byte`` (optional);
* ``[ops]``: ``int8_ops`` (op types that run in int8 after quantization), ``unsupported_ops``
  (op types the device cannot run: forced to the cloud);
* ``[ort]``: ``execution_providers`` (onnxruntime providers, in priority order);
* ``[tvm]``: ``target`` in TVM's dict form, e.g. ``{kind = "llvm", mtriple = "aarch64-linux-gnu",
  mattr = ["+neon"]}``; GPUs: ``{kind = "cuda", arch = "sm_87", host = {kind = "llvm", ...}}``;
* ``[roofline]``: ``compute_efficiency``, ``bandwidth_efficiency``, ``kernel_overhead_us``,
  ``inference_overhead_us`` (assumptions of the uncalibrated estimate, not specs).

Each file cites its sources in comments.

Short names (``targets/aliases.toml``): ``jetson`` -> ``jetson-orin-nano``, ``arm-cpu`` ->
``rpi4``, ``server-gpu`` -> ``server-gpu-a100``.

Validation: an unknown key, a missing key, a wrong type or a value outside the plausible range of
its unit raises :class:`TargetError` naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .data import data_dir
from .errors import OnnxSplitError

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "Target",
    "TargetError",
    "list_targets",
    "load_target",
    "target_aliases",
    "resolve_target_name",
]

TARGET_SCHEMA = "onnxsplit.target/1"
ALIASES_SCHEMA = "onnxsplit.target-aliases/1"

#: precisions a target states a peak for (and cost models are fitted for)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
#: runtime names: cost models are stored as ``cost_models/<target>/<runtime>-<precision>.json``
RUNTIMES: dict[str, str] = {
    "ort-cpu": "onnxruntime, CPUExecutionProvider",
    "ort-cuda": "onnxruntime, CUDAExecutionProvider",
    "ort-trt": "onnxruntime, TensorrtExecutionProvider",
    "tvm": "Apache TVM compiled module",
    # Runtimes of the measured HELP / HW-NAS-Bench data (cost models fitted from whole-model latencies)
    "tflite-cpu": "TensorFlow Lite CPU interpreter (HW-NAS-Bench Raspberry Pi 4 measurements)",
    "pytorch-cuda": "PyTorch eager on CUDA (HELP GPU measurements)",
    "pytorch-cpu": "PyTorch eager on CPU (HELP Xeon measurements)",
}
_ROLES = ("edge", "cloud", "any")
_ARCHES = ("x86_64", "aarch64", "armv7l", "riscv64")


class TargetError(OnnxSplitError):
    """A target name is unknown or a target file is malformed."""


@dataclass(frozen=True)
class Target:
    """A validated target file. Units are in the field names (see the module docstring)."""

    name: str
    description: str
    role: str
    arch: str
    default_runtime: str
    runtimes: tuple[str, ...]
    processor: str
    cpu_cores: int
    clock_ghz: float
    peak_gflops_fp32: float
    peak_gflops_fp16: float
    peak_gops_int8: float
    mem_bandwidth_gbps: float
    mem_capacity_mb: float
    power_active_w: float
    power_idle_w: float
    radio_nj_per_byte: float | None
    int8_ops: tuple[str, ...]
    unsupported_ops: tuple[str, ...]
    ort_execution_providers: tuple[str, ...]
    tvm_target_json: str  # TVM target dict, JSON-encoded (keeps the dataclass immutable)
    compute_efficiency: float
    bandwidth_efficiency: float
    kernel_overhead_us: float
    inference_overhead_us: float
    path: str = ""

    @property
    def tvm_target(self) -> dict[str, Any]:
        """TVM target in dict form (a fresh copy): ``tvm.target.Target(target.tvm_target)``."""
        return json.loads(self.tvm_target_json)

    def peak_ops_per_s(self, precision: str) -> float:
        """Peak arithmetic throughput for ``precision`` in operations per second."""
        if precision == "fp32":
            return self.peak_gflops_fp32 * 1e9
        if precision == "fp16":
            return self.peak_gflops_fp16 * 1e9
        if precision == "int8":
            return self.peak_gops_int8 * 1e9
        raise TargetError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")

    @property
    def mem_bandwidth_bytes_per_s(self) -> float:
        return self.mem_bandwidth_gbps * 1e9

    @property
    def mem_capacity_bytes(self) -> int:
        return int(self.mem_capacity_mb * 1e6)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            if k == "tvm_target_json":
                out["tvm_target"] = self.tvm_target
            else:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out


# ------------------------------------------------------------------------------ schema
# key -> (type, unit/description, (lo, hi) plausible range or None, required)
_Num = (int, float)
_SCHEMA: dict[str | None, dict[str, tuple[Any, str, tuple[float, float] | None, bool]]] = {
    None: {
        "schema": (str, f"'{TARGET_SCHEMA}'", None, True),
        "name": (str, "target name (= file stem)", None, True),
        "description": (str, "one line", None, True),
        "role": (str, "|".join(_ROLES), None, True),
        "arch": (str, "platform.machine() of the device: " + "|".join(_ARCHES), None, True),
        "default_runtime": (str, "one of runtimes", None, True),
        "runtimes": (list, "list of " + "|".join(RUNTIMES), None, True),
    },
    "compute": {
        "processor": (str, "processor description", None, True),
        "cpu_cores": (int, "CPU cores (count)", (1, 4096), True),
        "clock_ghz": (_Num, "GHz", (0.05, 10.0), True),
        "peak_gflops_fp32": (_Num, "GFLOP/s", (0.1, 1e7), True),
        "peak_gflops_fp16": (_Num, "GFLOP/s", (0.1, 1e7), True),
        "peak_gops_int8": (_Num, "GOP/s", (0.1, 2e7), True),
    },
    "memory": {
        "mem_bandwidth_gbps": (_Num, "GB/s (gigabytes per second)", (0.1, 1e5), True),
        "mem_capacity_mb": (_Num, "MB (10**6 bytes)", (1.0, 1e9), True),
    },
    "power": {
        "power_active_w": (_Num, "W", (0.01, 1e4), True),
        "power_idle_w": (_Num, "W", (0.0, 1e4), True),
        "radio_nj_per_byte": (_Num, "nJ/byte", (0.001, 1e6), False),
    },
    "ops": {
        "int8_ops": (list, "list of ONNX op types", None, True),
        "unsupported_ops": (list, "list of ONNX op types", None, True),
    },
    "ort": {
        "execution_providers": (list, "list of onnxruntime execution provider names", None, True),
    },
    "tvm": {
        "target": (dict, "TVM target dict, e.g. {kind = \"llvm\", mtriple = \"aarch64-linux-gnu\"}", None, True),
    },
    "roofline": {
        "compute_efficiency": (_Num, "fraction of peak, (0, 1]", (1e-4, 1.0), True),
        "bandwidth_efficiency": (_Num, "fraction of bandwidth, (0, 1]", (1e-4, 1.0), True),
        "kernel_overhead_us": (_Num, "microseconds per kernel", (0.0, 1e5), True),
        "inference_overhead_us": (_Num, "microseconds per inference", (0.0, 1e6), True),
    },
}
_OP_RE = re.compile(r"^([A-Za-z0-9_.]+::)?[A-Za-z][A-Za-z0-9_]*$")
_TVM_KINDS = ("llvm", "cuda", "c", "opencl", "vulkan", "metal", "rocm")
_TVM_KEYS = {"kind", "mtriple", "mcpu", "mattr", "arch", "host", "num-cores", "keys", "libs", "max_num_threads",
             "thread_warp_size", "model", "device"}


def _fail(path: Path | str, where: str, msg: str) -> TargetError:
    return TargetError(f"{path}: {where}: {msg}")


def _key_label(section: str | None, key: str) -> str:
    return key if section is None else f"[{section}] {key}"


def _all_keys() -> dict[str, str | None]:
    return {k: s for s, keys in _SCHEMA.items() for k in keys}


def _suggest(key: str, section: str | None) -> str:
    known = list(_SCHEMA.get(section, {})) if section in _SCHEMA else []
    hint = ""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if close:
        hint = f"; did you mean '{close[0]}' ({_SCHEMA[section][close[0]][1]})?"
    else:
        elsewhere = _all_keys().get(key, "missing")
        if elsewhere != "missing":
            hint = f"; '{key}' belongs in {'the top level' if elsewhere is None else f'[{elsewhere}]'}"
    allowed = ", ".join(known) if known else ""
    return hint + (f" (allowed: {allowed})" if allowed else "")


def _check_value(path: Path | str, section: str | None, key: str, value: Any) -> Any:
    typ, unit, rng, _ = _SCHEMA[section][key]
    where = _key_label(section, key)
    if typ is _Num:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, where, f"expected a number in {unit}, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise _fail(path, where, f"expected a finite number in {unit}, got {value!r}")
        value = float(value)
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, where, f"expected an integer ({unit}), got {type(value).__name__} {value!r}")
    elif not isinstance(value, typ) or (typ is str and not value.strip()):
        raise _fail(path, where, f"expected {typ.__name__} ({unit}), got {type(value).__name__} {value!r}")
    if rng is not None:
        lo, hi = rng
        if not lo <= value <= hi:
            raise _fail(
                path, where, f"{value!r} is outside the plausible range [{lo:g}, {hi:g}] for {unit}; "
                "is it in another unit?",
            )
    return value


def _str_list(path: Path | str, where: str, values: list, *, pattern: re.Pattern[str] | None = None,
              allowed: tuple[str, ...] | None = None, what: str = "string") -> tuple[str, ...]:
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            raise _fail(path, where, f"expected a list of {what}s, found {v!r}")
        if pattern is not None and not pattern.match(v):
            raise _fail(path, where, f"{v!r} is not a valid {what}")
        if allowed is not None and v not in allowed:
            raise _fail(path, where, f"unknown {what} {v!r}; use one of {', '.join(allowed)}")
        out.append(v)
    if len(set(out)) != len(out):
        raise _fail(path, where, "lists a value twice")
    return tuple(out)


def _check_tvm_target(path: Path | str, where: str, t: dict, *, nested: bool = False) -> None:
    unknown = set(t) - _TVM_KEYS
    if unknown:
        raise _fail(path, where, f"unknown TVM target key(s) {sorted(unknown)}; allowed: {sorted(_TVM_KEYS)}")
    kind = t.get("kind")
    if kind not in _TVM_KINDS:
        raise _fail(path, where, f"'kind' must be one of {', '.join(_TVM_KINDS)}, got {kind!r}")
    for k in ("mtriple", "mcpu", "arch"):
        if k in t and (not isinstance(t[k], str) or not t[k]):
            raise _fail(path, where, f"'{k}' must be a non-empty string, got {t[k]!r}")
    if "mattr" in t:
        if not isinstance(t["mattr"], list) or not all(isinstance(a, str) and a[:1] in "+-" for a in t["mattr"]):
            raise _fail(path, where, f"'mattr' must be a list of '+feature'/'-feature' strings, got {t['mattr']!r}")
    if kind == "cuda":
        if not re.fullmatch(r"sm_\d+[a-z]?", str(t.get("arch", ""))):
            raise _fail(path, where, f"a cuda target needs 'arch' like \"sm_87\", got {t.get('arch')!r}")
        host = t.get("host")
        if not isinstance(host, dict):
            raise _fail(path, where, "a cuda target needs a 'host' table for the CPU code (kind = \"llvm\", mtriple = ...)")
        _check_tvm_target(path, where + ".host", host, nested=True)
        if host.get("kind") != "llvm":
            raise _fail(path, where + ".host", f"host kind must be 'llvm', got {host.get('kind')!r}")
    elif "host" in t and not nested:
        if not isinstance(t["host"], dict):
            raise _fail(path, where, "'host' must be a table")
        _check_tvm_target(path, where + ".host", t["host"], nested=True)
    if kind == "llvm" and "mtriple" not in t:
        raise _fail(path, where, "an llvm target needs 'mtriple' (e.g. \"aarch64-linux-gnu\")")


def parse_target(doc: dict[str, Any], path: Path | str, *, expected_name: str | None = None) -> Target:
    """Validate a parsed target document and build the :class:`Target`."""
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _SCHEMA and key is not None:
            if not isinstance(value, dict):
                raise _fail(path, f"[{key}]", f"must be a table, got {type(value).__name__}")
            for sub, subval in value.items():
                if sub not in _SCHEMA[key]:
                    raise _fail(path, _key_label(key, sub), "unknown key" + _suggest(sub, key))
                values[(key, sub)] = _check_value(path, key, sub, subval)
        elif key in _SCHEMA[None]:
            values[(None, key)] = _check_value(path, None, key, value)
        else:
            raise _fail(path, key, "unknown key" + _suggest(key, None) + "; tables: " + ", ".join(
                f"[{s}]" for s in _SCHEMA if s is not None))
    for section, keys in _SCHEMA.items():
        if section is not None and section not in doc:
            raise _fail(path, f"[{section}]", "missing table (keys: " + ", ".join(keys) + ")")
        for key, (_, unit, _, required) in keys.items():
            if required and (section, key) not in values:
                raise _fail(path, _key_label(section, key), f"missing key ({unit})")

    def v(section: str | None, key: str, default: Any = None) -> Any:
        return values.get((section, key), default)

    if v(None, "schema") != TARGET_SCHEMA:
        raise _fail(path, "schema", f"expected '{TARGET_SCHEMA}', got {v(None, 'schema')!r}")
    name = v(None, "name")
    if expected_name is not None and name != expected_name:
        raise _fail(path, "name", f"'{name}' differs from the file name '{expected_name}'")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise _fail(path, "name", f"'{name}' must be lower-case letters, digits, '.', '_' or '-'")
    if v(None, "role") not in _ROLES:
        raise _fail(path, "role", f"must be one of {', '.join(_ROLES)}, got {v(None, 'role')!r}")
    if v(None, "arch") not in _ARCHES:
        raise _fail(path, "arch", f"must be one of {', '.join(_ARCHES)}, got {v(None, 'arch')!r}")
    runtimes = _str_list(path, "runtimes", v(None, "runtimes"), allowed=tuple(RUNTIMES), what="runtime")
    if not runtimes:
        raise _fail(path, "runtimes", "must list at least one runtime")
    if v(None, "default_runtime") not in runtimes:
        raise _fail(path, "default_runtime", f"{v(None, 'default_runtime')!r} is not in runtimes {list(runtimes)}")
    if v("power", "power_idle_w") > v("power", "power_active_w"):
        raise _fail(path, "[power] power_idle_w", "is larger than power_active_w")
    int8_ops = _str_list(path, "[ops] int8_ops", v("ops", "int8_ops"), pattern=_OP_RE, what="ONNX op type")
    unsupported = _str_list(path, "[ops] unsupported_ops", v("ops", "unsupported_ops"), pattern=_OP_RE,
                            what="ONNX op type")
    eps = _str_list(path, "[ort] execution_providers", v("ort", "execution_providers"),
                    pattern=re.compile(r"^[A-Za-z]+ExecutionProvider$"), what="execution provider name")
    if not eps:
        raise _fail(path, "[ort] execution_providers", "must list at least one provider")
    tvm = v("tvm", "target")
    _check_tvm_target(path, "[tvm] target", tvm)
    return Target(
        name=name,
        description=v(None, "description"),
        role=v(None, "role"),
        arch=v(None, "arch"),
        default_runtime=v(None, "default_runtime"),
        runtimes=runtimes,
        processor=v("compute", "processor"),
        cpu_cores=v("compute", "cpu_cores"),
        clock_ghz=v("compute", "clock_ghz"),
        peak_gflops_fp32=v("compute", "peak_gflops_fp32"),
        peak_gflops_fp16=v("compute", "peak_gflops_fp16"),
        peak_gops_int8=v("compute", "peak_gops_int8"),
        mem_bandwidth_gbps=v("memory", "mem_bandwidth_gbps"),
        mem_capacity_mb=v("memory", "mem_capacity_mb"),
        power_active_w=v("power", "power_active_w"),
        power_idle_w=v("power", "power_idle_w"),
        radio_nj_per_byte=v("power", "radio_nj_per_byte"),
        int8_ops=int8_ops,
        unsupported_ops=unsupported,
        ort_execution_providers=eps,
        tvm_target_json=json.dumps(tvm, sort_keys=True),
        compute_efficiency=v("roofline", "compute_efficiency"),
        bandwidth_efficiency=v("roofline", "bandwidth_efficiency"),
        kernel_overhead_us=v("roofline", "kernel_overhead_us"),
        inference_overhead_us=v("roofline", "inference_overhead_us"),
        path=str(path),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise TargetError(f"{path}: target file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise TargetError(f"{path}: cannot read: {exc}") from None


@lru_cache(maxsize=64)
def _load_path(path_str: str, mtime_ns: int) -> Target:
    path = Path(path_str)
    return parse_target(_read_toml(path), path, expected_name=path.stem)


def load_target_file(path: str | Path) -> Target:
    p = Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except FileNotFoundError:
        raise TargetError(f"{p}: target file not found") from None
    return _load_path(str(p), mtime)


def _targets_dir() -> Path:
    return data_dir("targets")


def target_aliases() -> dict[str, str]:
    """Short name -> target name, from ``targets/aliases.toml``."""
    path = _targets_dir() / "aliases.toml"
    if not path.is_file():
        return {}
    doc = _read_toml(path)
    unknown = set(doc) - {"schema", "aliases"}
    if unknown:
        raise _fail(path, sorted(unknown)[0], "unknown key (allowed: schema, aliases)")
    if doc.get("schema") != ALIASES_SCHEMA:
        raise _fail(path, "schema", f"expected '{ALIASES_SCHEMA}', got {doc.get('schema')!r}")
    aliases = doc.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise _fail(path, "[aliases]", "must map short names to target names (strings)")
    known = set(_target_names())
    for short, full in aliases.items():
        if full not in known:
            raise _fail(path, f"[aliases] {short}", f"points to unknown target '{full}'")
        if short in known:
            raise _fail(path, f"[aliases] {short}", "shadows a target of the same name")
    return dict(aliases)


def _target_names() -> list[str]:
    return sorted(p.stem for p in _targets_dir().glob("*.toml") if p.stem != "aliases")


def list_targets() -> list[str]:
    """Names of the bundled targets (aliases not included)."""
    return _target_names()


def _known_message() -> str:
    aliases = target_aliases()
    alias_txt = ", ".join(f"{k} -> {v}" for k, v in sorted(aliases.items()))
    return f"known targets: {', '.join(list_targets())}" + (f"; short names: {alias_txt}" if alias_txt else "")


def resolve_target_name(name: str) -> str:
    """Full target name for a target or short name; :class:`TargetError` if unknown."""
    if name in list_targets():
        return name
    aliases = target_aliases()
    if name in aliases:
        return aliases[name]
    close = difflib.get_close_matches(name, list_targets() + list(aliases), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise TargetError(f"unknown target '{name}'{hint}; {_known_message()}; or give a path to a .toml file")


def load_target(name: str | Path | Target) -> Target:
    """Load a target by name, short name (``jetson``, ``arm-cpu``, ``server-gpu``) or .toml path."""
    if isinstance(name, Target):
        return name
    s = str(name)
    if isinstance(name, Path) or s.endswith(".toml") or "/" in s or "\\" in s:
        return load_target_file(s)
    return load_target_file(_targets_dir() / f"{resolve_target_name(s)}.toml")
