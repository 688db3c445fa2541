"""The learned cost model artifact: a JSON file (schema ``onnxsplit.costmodel/2``), no pickle.

Stored as ``cost_models/<target>/<runtime>-<precision>.json``. Fields::

    {
      "schema": "onnxsplit.costmodel/2",
      "target": "host-x86", "runtime": "ort-cpu", "precision": "fp32",
      "version": "1",                       # artifact revision (string)
      "features": ["mflops", "in_mb", "out_mb", "param_mb", "one"],
      "feature_units": {"mflops": "MFLOP", ...},
      "coefficient_units": {"mflops": "ms/MFLOP", ...},
      "families": {"conv": {"mflops": 0.004, "in_mb": 0.1, ..., "one": 0.003}, ...},
      "overhead_ms": 0.012,                 # per inference (session.run), ms
      "kernel_configs": {                   # /2 only: fitted cost of kernel configurations seen in training
        "conv|Conv+BatchNormalization+Relu|1x16x32x32->1x16x32x32|16,...|kernel_shape=3,3;...":
            {"family": "conv", "ms": 0.41, "law_ms": 0.37, "n_train": 812},
        ...},
      "provenance": {"source": ..., "license": ..., "citation": ..., "n_samples": 412,
                     "date": "YYYY-MM-DD", ...},
      "accuracy": {"holdout": {"n": 9, "mape_pct": 8.1, "median_ape_pct": 5.0, "spearman": 0.98},
                   ...}
    }

Prediction for a kernel: when its configuration (:attr:`onnxsplit.cost.kernels.Kernel.signature`)
is in ``kernel_configs``, that entry's ``ms`` (the configuration's own fitted cost, nn-Meter
style; ``law_ms`` is what the family law alone gives, ``n_train`` how many training measurements
contained it); otherwise the family law ``sum_i families[f][feature_i] * feature_i`` (ms). A family
missing from ``families`` has no model (the caller falls back to the roofline and reports the node
as uncalibrated); a configuration entry never stands in for a missing family. Coefficients and
costs are non-negative. Extra keys are allowed inside ``provenance`` and ``accuracy`` (more
metrics); everywhere else unknown keys are rejected. Files of schema ``onnxsplit.costmodel/1``
(no ``kernel_configs``) still load; saving writes ``/2``.

Optional in ``/2``: ``"calibrated": false`` marks an estimate that no measurement of the target
backs (a law transferred from measured devices by :mod:`onnxsplit.cost.transfer`); every
prediction made with it reports ``calibrated: false``, like the roofline. Absent means true.

Optional in ``/2``: ``"memory_floor": {"dram_gbps": 23.4, "cache_mb": 32, "bytes_scale": 1.0,
"source": "..."}``: a kernel whose bytes (times ``bytes_scale``) exceed the last-level cache is
predicted at least ``bytes / dram_gbps`` (measured memory bandwidth), the physical bound the
training data (cache-resident kernels) cannot teach the linear laws (not applied to the
``data_movement`` and ``reshape`` families, which may read only part of their bytes).

Optional in ``/2``: ``"serial_kernels": {"below_ms": 0.005, "threads": 1, "families": {...},
"source": "..."}``: per-family laws (same features and units as ``families``) fitted on
measurements taken with ``threads`` intra-op threads. A kernel that this law prices below
``below_ms`` is predicted by it instead of by ``families``/``kernel_configs``: the runtime does not
split such small kernels over its threads (on host-x86, one-kernel graphs under ~5 us run as fast
with one thread as with two), so the multi-thread laws, which learn the speed-up of larger
kernels, under-price them. A family missing there keeps the main law.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OnnxSplitError
from ..targets import PRECISIONS, RUNTIMES
from .features import COEFFICIENT_UNITS, FEATURE_UNITS, FEATURES
from .kernels import FAMILIES, FAMILY_PARENT, Kernel, resolve_family

__all__ = ["SCHEMA", "CostModel", "CostModelError", "cost_model_path", "find_cost_model"]

SCHEMA = "onnxsplit.costmodel/2"
SCHEMA_V1 = "onnxsplit.costmodel/1"
_TOP_KEYS_V1 = {"schema", "target", "runtime", "precision", "version", "features", "feature_units",
                "coefficient_units", "families", "overhead_ms", "provenance", "accuracy"}
_TOP_KEYS = _TOP_KEYS_V1 | {"kernel_configs"}
_OPTIONAL_KEYS = {"memory_floor", "calibrated", "serial_kernels"}  # /2: may be absent
_CONFIG_KEYS = {"family", "ms", "law_ms", "n_train"}
_FLOOR_KEYS = {"dram_gbps", "cache_mb", "bytes_scale", "source"}
_SERIAL_KEYS = {"below_ms", "threads", "families", "source"}
#: families whose kernels may touch only part of their bytes (a Gather reads a few embedding rows)
_FLOOR_EXEMPT = frozenset({"data_movement", "reshape"})
_PROVENANCE_REQUIRED = ("source", "license", "citation", "n_samples", "date")
_HOLDOUT_REQUIRED = ("n", "mape_pct", "median_ape_pct", "spearman")


class CostModelError(OnnxSplitError):
    """A cost-model file is missing, malformed, or does not match the request."""


@dataclass
class CostModel:
    """A fitted latency model for one (target, runtime, precision)."""

    target: str
    runtime: str
    precision: str
    version: str
    features: tuple[str, ...]
    families: dict[str, dict[str, float]]
    overhead_ms: float
    provenance: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    #: signature -> {"family", "ms", "law_ms", "n_train"} (see the module docstring)
    kernel_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: None, or {"dram_gbps", "cache_mb", "bytes_scale", "source"} (see :meth:`memory_floor_ms`)
    memory_floor: dict[str, Any] | None = None
    #: False for an estimate that no measurement of this target backs (e.g. transferred from other
    #: devices by :mod:`onnxsplit.cost.transfer`): predictions made with it say ``calibrated: false``
    calibrated: bool = True
    #: None, or {"below_ms", "threads", "families", "source"} (see :meth:`serial_ms`)
    serial_kernels: dict[str, Any] | None = None

    def serial_ms(self, kernel: Kernel) -> float | None:
        """The serial law's latency of a kernel (ms) when the model has one and it prices the kernel
        below ``serial_kernels.below_ms``; None otherwise (the kernel takes the main law)."""
        s = self.serial_kernels
        if not s:
            return None
        ms = self._law_ms(s["families"], kernel.family, kernel.features)
        return ms if ms is not None and ms < s["below_ms"] else None

    def memory_floor_ms(self, kernel: Kernel) -> float:
        """DRAM lower bound of a kernel: a kernel whose bytes (inputs + outputs + parameters, times
        ``bytes_scale``: 0.25 for int8 weights/activations of an fp32 graph) exceed the last-level
        cache (``cache_mb``) streams them from memory and takes at least bytes / ``dram_gbps``
        (measured bandwidth). 0 without a floor, for cache-resident kernels and for the families
        that may read only part of their inputs (``data_movement``: Gather/Slice...; ``reshape``)."""
        f = self.memory_floor
        if not f or kernel.family in _FLOOR_EXEMPT:
            return 0.0
        nbytes = kernel.nbytes * f["bytes_scale"]
        if nbytes <= f["cache_mb"] * 1e6:
            return 0.0
        return nbytes / (f["dram_gbps"] * 1e9) * 1e3

    # ------------------------------------------------------------------ prediction
    def has_family(self, family: str) -> bool:
        return resolve_family(self.families, family) is not None

    def predict_features(self, family: str, features: Mapping[str, float]) -> float | None:
        """Latency in ms of a kernel with these features, or None when the family has no model."""
        return self._law_ms(self.families, family, features)

    def _law_ms(self, families: Mapping[str, Mapping[str, float]], family: str,
                features: Mapping[str, float]) -> float | None:
        """``families``' law (the main laws or the serial ones) for a kernel, None without that family."""
        fam = resolve_family(families, family)
        if fam is None:
            return None
        coefs = families[fam]
        return float(sum(coefs[f] * float(features[f]) for f in self.features))

    def predict_kernel(self, kernel: Kernel) -> float | None:
        """Latency of a kernel in ms (0 for constant-folded kernels; None: family not modelled).

        A kernel the serial law prices below its threshold (:meth:`serial_ms`) gets that price; else
        a configuration seen in training (``kernel_configs``) gets its own fitted cost, any other
        kernel the family law; each is raised to the DRAM floor (:meth:`memory_floor_ms`) when the
        model has one.
        """
        if kernel.family == "constant":
            return 0.0
        if resolve_family(self.families, kernel.family) is None:
            return None
        serial = self.serial_ms(kernel)
        if serial is not None:
            return max(serial, self.memory_floor_ms(kernel))
        cfg = self.kernel_configs.get(kernel.signature) if kernel.signature else None
        if cfg is not None:
            ms = float(cfg["ms"])
        else:
            ms = float(self.predict_features(kernel.family, kernel.features))
        return max(ms, self.memory_floor_ms(kernel))

    # ------------------------------------------------------------------ (de)serialization
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "target": self.target,
            "runtime": self.runtime,
            "precision": self.precision,
            "version": self.version,
            "features": list(self.features),
            "feature_units": {f: FEATURE_UNITS[f] for f in self.features},
            "coefficient_units": {f: COEFFICIENT_UNITS[f] for f in self.features},
            "families": {fam: {f: float(c[f]) for f in self.features} for fam, c in sorted(self.families.items())},
            "overhead_ms": float(self.overhead_ms),
            "kernel_configs": {sig: {"family": c["family"], "ms": float(c["ms"]), "law_ms": float(c["law_ms"]),
                                     "n_train": int(c["n_train"])}
                               for sig, c in sorted(self.kernel_configs.items())},
            **({"memory_floor": dict(self.memory_floor)} if self.memory_floor else {}),
            **({} if self.calibrated else {"calibrated": False}),
            **({"serial_kernels": {
                "below_ms": float(self.serial_kernels["below_ms"]), "threads": int(self.serial_kernels["threads"]),
                "families": {fam: {f: float(c[f]) for f in self.features}
                             for fam, c in sorted(self.serial_kernels["families"].items())},
                "source": self.serial_kernels["source"]}} if self.serial_kernels else {}),
            "provenance": dict(self.provenance),
            "accuracy": dict(self.accuracy),
        }

    @classmethod
    def from_json(cls, doc: Any, source: str = "<cost model>") -> CostModel:
        """Validate a parsed document; :class:`CostModelError` names the file and the key."""
        def fail(key: str, msg: str) -> CostModelError:
            return CostModelError(f"{source}: {key}: {msg}")

        if not isinstance(doc, dict):
            raise CostModelError(f"{source}: expected a JSON object, got {type(doc).__name__}")
        schema = doc.get("schema")
        if schema not in (SCHEMA, SCHEMA_V1):
            raise fail("schema", f"expected '{SCHEMA}' (or the older '{SCHEMA_V1}'), got {schema!r}")
        keys = _TOP_KEYS if schema == SCHEMA else _TOP_KEYS_V1
        unknown = set(doc) - keys - (_OPTIONAL_KEYS if schema == SCHEMA else set())
        if unknown:
            raise fail(sorted(unknown)[0], f"unknown key (allowed in {schema}: {', '.join(sorted(keys))})")
        missing = [k for k in sorted(keys) if k not in doc]
        if missing:
            raise fail(missing[0], "missing key")
        for key in ("target", "runtime", "precision", "version"):
            if not isinstance(doc[key], str) or not doc[key]:
                raise fail(key, f"expected a non-empty string, got {doc[key]!r}")
        if doc["runtime"] not in RUNTIMES:
            raise fail("runtime", f"unknown runtime {doc['runtime']!r}; use one of {', '.join(RUNTIMES)}")
        if doc["precision"] not in PRECISIONS:
            raise fail("precision", f"unknown precision {doc['precision']!r}; use one of {', '.join(PRECISIONS)}")
        feats = doc["features"]
        if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
            raise fail("features", "expected a non-empty list of feature names")
        bad = [f for f in feats if f not in FEATURES]
        if bad or len(set(feats)) != len(feats):
            raise fail("features", f"unknown or repeated feature {bad or feats}; known: {list(FEATURES)}")
        for key, table in (("feature_units", FEATURE_UNITS), ("coefficient_units", COEFFICIENT_UNITS)):
            units = doc[key]
            if not isinstance(units, dict) or set(units) != set(feats):
                raise fail(key, f"must give a unit for exactly the features {feats}")
            for f, u in units.items():
                if u != table[f]:
                    raise fail(f"{key}.{f}", f"unit {u!r} differs from {table[f]!r}: the features changed meaning")
        def parse_families(fams: Any, key: str) -> dict[str, dict[str, float]]:
            if not isinstance(fams, dict) or not fams:
                raise fail(key, "expected a non-empty object {family: {feature: coefficient}}")
            families: dict[str, dict[str, float]] = {}
            for fam, coefs in fams.items():
                if fam not in FAMILIES or fam == "constant":
                    raise fail(f"{key}.{fam}", f"unknown op family; known: {', '.join(f for f in FAMILIES if f != 'constant')}")
                if not isinstance(coefs, dict) or set(coefs) != set(feats):
                    raise fail(f"{key}.{fam}", f"must give a coefficient for exactly the features {feats}")
                out = {}
                for f, c in coefs.items():
                    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
                        raise fail(f"{key}.{fam}.{f}", f"coefficient must be a finite number >= 0, got {c!r}")
                    out[f] = float(c)
                families[fam] = out
            return families

        families = parse_families(doc["families"], "families")
        oh = doc["overhead_ms"]
        if isinstance(oh, bool) or not isinstance(oh, (int, float)) or not math.isfinite(oh) or oh < 0:
            raise fail("overhead_ms", f"must be a finite number >= 0 (ms), got {oh!r}")
        configs: dict[str, dict[str, Any]] = {}
        raw_cfg = doc.get("kernel_configs", {})
        if not isinstance(raw_cfg, dict):
            raise fail("kernel_configs", "expected an object {signature: {family, ms, law_ms, n_train}}")
        for sig, c in raw_cfg.items():
            key = f"kernel_configs.{sig[:60]}"
            if not isinstance(c, dict) or set(c) != _CONFIG_KEYS:
                raise fail(key, f"expected exactly the keys {sorted(_CONFIG_KEYS)}")
            if c["family"] not in families:
                raise fail(f"{key}.family", f"family {c['family']!r} has no law in 'families'")
            named = FAMILY_PARENT.get(c["family"], c["family"])  # subfamilies' signatures name the parent
            if not sig.startswith(f"{named}|"):
                raise fail(key, f"signature does not start with its family '{named}|'")
            for k in ("ms", "law_ms"):
                v = c[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise fail(f"{key}.{k}", f"must be a finite number >= 0 (ms), got {v!r}")
            n = c["n_train"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise fail(f"{key}.n_train", f"expected a positive integer, got {n!r}")
            configs[sig] = {"family": c["family"], "ms": float(c["ms"]), "law_ms": float(c["law_ms"]),
                            "n_train": n}
        floor = doc.get("memory_floor")
        if floor is not None:
            if not isinstance(floor, dict) or set(floor) != _FLOOR_KEYS:
                raise fail("memory_floor", f"expected null or an object with exactly the keys {sorted(_FLOOR_KEYS)}")
            for k in ("dram_gbps", "cache_mb", "bytes_scale"):
                v = floor[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise fail(f"memory_floor.{k}", f"must be a finite number > 0, got {v!r}")
            if not isinstance(floor["source"], str):
                raise fail("memory_floor.source", "expected a string")
            floor = {k: (floor[k] if k == "source" else float(floor[k])) for k in _FLOOR_KEYS}
        serial = doc.get("serial_kernels")
        if serial is not None:
            if not isinstance(serial, dict) or set(serial) != _SERIAL_KEYS:
                raise fail("serial_kernels", f"expected null or an object with exactly the keys {sorted(_SERIAL_KEYS)}")
            below = serial["below_ms"]
            if isinstance(below, bool) or not isinstance(below, (int, float)) or not math.isfinite(below) or below <= 0:
                raise fail("serial_kernels.below_ms", f"must be a finite number > 0 (ms), got {below!r}")
            threads = serial["threads"]
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise fail("serial_kernels.threads", f"expected a positive integer, got {threads!r}")
            if not isinstance(serial["source"], str):
                raise fail("serial_kernels.source", "expected a string")
            serial = {"below_ms": float(below), "threads": threads,
                      "families": parse_families(serial["families"], "serial_kernels.families"),
                      "source": serial["source"]}
        calibrated = doc.get("calibrated", True)
        if not isinstance(calibrated, bool):
            raise fail("calibrated", f"expected true or false, got {calibrated!r}")
        prov = doc["provenance"]
        if not isinstance(prov, dict):
            raise fail("provenance", "expected an object")
        for k in _PROVENANCE_REQUIRED:
            if k not in prov:
                raise fail(f"provenance.{k}", "missing key")
        if isinstance(prov["n_samples"], bool) or not isinstance(prov["n_samples"], int) or prov["n_samples"] < 1:
            raise fail("provenance.n_samples", f"expected a positive integer, got {prov['n_samples']!r}")
        for k in ("source", "license", "citation", "date"):
            if not isinstance(prov[k], str):
                raise fail(f"provenance.{k}", f"expected a string, got {prov[k]!r}")
        acc = doc["accuracy"]
        if not isinstance(acc, dict) or "holdout" not in acc:
            raise fail("accuracy", "expected an object with a 'holdout' entry")
        for name, block in acc.items():
            if not isinstance(block, dict):
                continue
            if name == "holdout" or set(_HOLDOUT_REQUIRED) <= set(block):
                for k in _HOLDOUT_REQUIRED:
                    if k not in block:
                        raise fail(f"accuracy.{name}.{k}", "missing key")
                    v = block[k]
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        raise fail(f"accuracy.{name}.{k}", f"expected a number or null, got {v!r}")
        return cls(
            target=doc["target"],
            runtime=doc["runtime"],
            precision=doc["precision"],
            version=doc["version"],
            features=tuple(feats),
            families=families,
            overhead_ms=float(oh),
            provenance=dict(prov),
            accuracy=dict(acc),
            path=source,
            kernel_configs=configs,
            memory_floor=floor,
            calibrated=calibrated,
            serial_kernels=serial,
        )

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CostModelError(f"{p}: cost model file not found") from None
        except OSError as exc:
            raise CostModelError(f"{p}: cannot read: {exc}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CostModelError(f"{p}: not valid JSON: {exc}") from None
        return cls.from_json(doc, str(p))

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file + rename); validates the document first."""
        doc = self.to_json()
        CostModel.from_json(json.loads(json.dumps(doc)), str(path))
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".costmodel-", suffix=".json", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p


def cost_model_path(target: str, runtime: str, precision: str, root: str | Path | None = None) -> Path:
    """``<root>/<target>/<runtime>-<precision>.json`` (root: the bundled ``cost_models/``)."""
    if root is None:
        from ..data import data_dir

        root = data_dir("cost_models")
    return Path(root) / target / f"{runtime}-{precision}.json"


def find_cost_model(target: str, runtime: str, precision: str, root: str | Path | None = None) -> CostModel | None:
    """The registered model for (target, runtime, precision), or None when there is none."""
    try:
        path = cost_model_path(target, runtime, precision, root)
    except FileNotFoundError:
        return None
    if not path.is_file():
        return None
    model = _load_cached(str(path), path.stat().st_mtime_ns)
    for key, want in (("target", target), ("runtime", runtime), ("precision", precision)):
        if getattr(model, key) != want:
            raise CostModelError(f"{path}: {key}: says {getattr(model, key)!r} but the file is registered for {want!r}")
    return model


_CACHE: dict[tuple[str, int], CostModel] = {}


def _load_cached(path: str, mtime_ns: int) -> CostModel:
    key = (path, mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = CostModel.load(path)
    return _CACHE[key]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
