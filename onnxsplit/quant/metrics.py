"""Accuracy of a quantized split against the fp32 model, and the accuracy budget.

Per output, over a set of samples (``ref`` = fp32 model, ``got`` = split under test):

- ``top1_agreement``: fraction of rows whose argmax over the last axis agrees (classifier outputs
  only: rank-2 ``[B, C]`` float outputs with ``C >= 2``; ``None`` otherwise);
- ``cosine`` / ``cosine_min``: mean / worst per-sample cosine similarity of the flattened outputs
  (1.0 when both are all-zero);
- ``sqnr_db``: signal-to-quantization-noise ratio over all samples,
  ``10 log10(sum(ref^2) / sum((ref - got)^2))`` (``inf`` when identical);
- ``max_abs`` / ``max_rel``: from :func:`onnxsplit.verify.compare_outputs` on the stacked samples;
- ``accuracy_ref`` / ``accuracy``: top-1 accuracy against labels, when labels are given.

:class:`Budget` (``--max-accuracy-drop``): classifier outputs may lose at most ``top1_drop`` of
top-1 agreement (default 1%); other float outputs must keep ``cosine >= 1 - top1_drop`` (0.99);
an explicit ``cosine:`` or ``sqnr:`` threshold applies to every output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UsageError
from ..verify import compare_outputs

__all__ = ["Budget", "OutputMetrics", "compare_runs", "is_classifier_output", "sqnr_db", "cosine"]


def is_classifier_output(shape: Sequence[int]) -> bool:
    """A ``[B, C]`` output with ``C >= 2`` is treated as class scores (top-1 agreement applies)."""
    return len(shape) == 2 and shape[-1] >= 2


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    err = ref - np.asarray(got, dtype=np.float64)
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _num(x: float | None) -> float | None | str:
    if x is None:
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True)
class OutputMetrics:
    name: str
    shape: tuple[int, ...]
    classifier: bool
    samples: int
    top1_agreement: float | None
    cosine: float
    cosine_min: float
    sqnr_db: float
    max_abs: float
    max_rel: float
    accuracy_ref: float | None = None
    accuracy: float | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        for k in ("sqnr_db", "max_abs", "max_rel", "cosine", "cosine_min"):
            d[k] = _num(d[k])
        return d


def compare_runs(
    ref: Sequence[Mapping[str, np.ndarray]],
    got: Sequence[Mapping[str, np.ndarray]],
    labels: np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> list[OutputMetrics]:
    """Metrics per output over paired per-sample results (see the module docstring)."""
    if len(ref) != len(got) or not ref:
        raise ValueError(f"need the same non-zero number of reference and test results, got {len(ref)} and {len(got)}")
    names = list(names) if names is not None else list(ref[0])
    out = []
    for name in names:
        a = np.stack([np.asarray(r[name]) for r in ref])
        b = np.stack([np.asarray(g[name]) for g in got])
        shape = tuple(a.shape[1:])
        if a.dtype.kind not in "fc":  # integer/bool outputs: exact comparison only
            same = a.shape == b.shape and bool(np.array_equal(a, b))
            out.append(OutputMetrics(name, shape, False, len(ref), None, 1.0 if same else 0.0, 1.0 if same else 0.0,
                                     math.inf if same else -math.inf, 0.0 if same else math.inf, 0.0 if same else math.inf))
            continue
        diff = compare_outputs({name: a}, {name: b.astype(a.dtype, copy=False)})[0]
        cos = [cosine(x, y) for x, y in zip(a, b)]
        clf = is_classifier_output(shape)
        agree = acc_ref = acc = None
        if clf:
            pa, pb = a.argmax(-1).reshape(-1), b.argmax(-1).reshape(-1)
            agree = float(np.mean(pa == pb))
            if labels is not None and len(labels) == len(ref):
                lab = np.repeat(np.asarray(labels).reshape(-1), shape[0])
                acc_ref, acc = float(np.mean(pa == lab)), float(np.mean(pb == lab))
        out.append(
            OutputMetrics(name, shape, clf, len(ref), agree, float(np.mean(cos)), float(np.min(cos)),
                          sqnr_db(a, b), diff.max_abs, diff.max_rel, acc_ref, acc)
        )
    return out


@dataclass(frozen=True)
class Budget:
    """The accuracy budget of a quantized split (see the module docstring).

    ``top1_drop`` applies to classifier outputs. ``min_cosine`` / ``min_sqnr_db``, when given
    explicitly, apply to every float output (classifier outputs included); without an explicit
    ``min_cosine``, non-classifier outputs must keep ``cosine >= 1 - top1_drop``.
    """

    top1_drop: float = 0.01
    min_cosine: float | None = None
    min_sqnr_db: float | None = None

    @staticmethod
    def parse(text: str | None) -> Budget:
        """``1%`` / ``0.01`` (top-1 drop; a bare number below 1 is a fraction, from 1 up a
        percentage), ``top1:0.5%``, ``cosine:0.995``, ``sqnr:25`` (dB); comma-separated."""
        if text is None or not str(text).strip():
            return Budget()
        top1, cos, sq = 0.01, None, None
        for part in str(text).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if ":" in part:
                key, val = part.split(":", 1)
            elif "=" in part:
                key, val = part.split("=", 1)
            else:
                key, val = "", part
            key = key.strip()
            try:
                if key in ("", "top1", "top-1"):
                    top1 = _fraction(val)
                elif key in ("cos", "cosine"):
                    cos = float(val)
                elif key == "sqnr":
                    sq = float(val.strip().removesuffix("db"))
                else:
                    raise ValueError(key)
            except ValueError:
                raise UsageError(
                    f"cannot parse --max-accuracy-drop {text!r}: use e.g. 1% (top-1 agreement), top1:0.5%, "
                    "cosine:0.995, sqnr:25 (dB), comma-separated"
                ) from None
        if not 0 <= top1 <= 1 or (cos is not None and not -1 <= cos <= 1):
            raise UsageError(f"--max-accuracy-drop {text!r} out of range (top-1 drop 0..100%, cosine -1..1)")
        return Budget(top1, cos, sq)

    def cosine_floor(self, classifier: bool) -> float | None:
        if self.min_cosine is not None:
            return self.min_cosine
        return None if classifier else 1.0 - self.top1_drop

    def check(self, metrics: Sequence[OutputMetrics]) -> tuple[bool, list[str]]:
        """(within budget, reasons it is not)."""
        why = []
        for m in metrics:
            clf = m.classifier and m.top1_agreement is not None
            if clf and 1.0 - m.top1_agreement > self.top1_drop + 1e-12:  # type: ignore[operator]
                why.append(f"'{m.name}' top-1 agreement {m.top1_agreement:.2%} (drop > {self.top1_drop:.2%})")
            floor = self.cosine_floor(clf)
            if floor is not None and m.cosine < floor:
                why.append(f"'{m.name}' cosine {m.cosine:.4f} < {floor:.4f}")
            if self.min_sqnr_db is not None and m.sqnr_db < self.min_sqnr_db:
                why.append(f"'{m.name}' SQNR {m.sqnr_db:.1f} dB < {self.min_sqnr_db:g} dB")
        return not why, why

    def score(self, metrics: Sequence[OutputMetrics]) -> float:
        """One "lower is worse" number to rank configurations: the smallest margin to any
        threshold (top-1 and cosine margins as fractions, SQNR margin in dB / 100)."""
        vals = []
        for m in metrics:
            clf = m.classifier and m.top1_agreement is not None
            if clf:
                vals.append(m.top1_agreement - (1.0 - self.top1_drop))  # type: ignore[operator]
            floor = self.cosine_floor(clf)
            if floor is not None:
                vals.append(m.cosine - floor)
            if self.min_sqnr_db is not None:
                vals.append((min(m.sqnr_db, 1e3) - self.min_sqnr_db) / 100.0)
        return min(vals) if vals else 0.0

    def describe(self) -> str:
        parts = [f"top-1 agreement drop <= {self.top1_drop:.2%} (classifier outputs)"]
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        else:
            parts.append(f"cosine >= {1 - self.top1_drop:g} (other outputs)")
        if self.min_sqnr_db is not None:
            parts.append(f"SQNR >= {self.min_sqnr_db:g} dB")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {
            "description": self.describe(),
            "top1_drop": self.top1_drop,
            "min_cosine": self.min_cosine,
            "min_sqnr_db": self.min_sqnr_db,
        }


def _fraction(val: str) -> float:
    val = val.strip()
    if val.endswith("%"):
        return float(val[:-1]) / 100.0
    x = float(val)
    return x / 100.0 if x >= 1 else x  # bare numbers: a fraction below 1, a percentage from 1 up
