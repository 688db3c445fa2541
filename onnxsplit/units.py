"""Parsing and formatting of quantities with units (bandwidth, time, byte sizes).

Conventions:

* Bandwidth is in **bits** per second with decimal prefixes, as network links are quoted:
  ``bps``, ``kbps`` (10**3), ``mbps`` (10**6), ``gbps`` (10**9), ``tbps``; also ``kbit/s``,
  ``Mb/s``... Prefixes are case-insensitive. Byte rates are written with a capital ``B`` and
  ``/s``: ``B/s``, ``kB/s``, ``MB/s``, ``GB/s`` (decimal, x8 bits); ``MBps`` is rejected as
  ambiguous. Result in megabits per second.
* Time: ``ns``, ``us`` (or ``µs``), ``ms``, ``s``, ``min``. Result in milliseconds.
* Sizes: ``B``; decimal (SI) ``KB``/``kB`` = 1000, ``MB`` = 10**6, ``GB`` = 10**9, ``TB``;
  binary ``KiB`` = 1024, ``MiB`` = 2**20, ``GiB`` = 2**30, ``TiB``. Case-insensitive; a bare
  integer means bytes. Result in bytes, rounded to the nearest integer.

Every parser raises :class:`~onnxsplit.errors.UsageError` naming the bad value and the accepted
suffixes. Numbers may use exponents (``1e3kbps``) and a space before the unit (``20 mbps``).
"""

from __future__ import annotations

import math
import re

from onnxsplit.errors import UsageError

__all__ = [
    "format_bandwidth",
    "format_ms",
    "format_nbytes",
    "parse_bandwidth_mbps",
    "parse_cpu_limit",
    "parse_nbytes",
    "parse_time_ms",
]

_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([^\s\d].*?)?\s*$")

_PREFIX_MBPS: dict[str, float] = {"": 1e-6, "k": 1e-3, "m": 1.0, "g": 1e3, "t": 1e6}
_BANDWIDTH_UNIT = re.compile(r"^([kmgt]?)(b|bit)(ps|/s)$", re.IGNORECASE)
_BANDWIDTH_HELP = "bps, kbps, Mbps, Gbps, Tbps, kbit/s, Mbit/s, Gbit/s, B/s, kB/s, MB/s, GB/s"

_TIME_MS: dict[str, float] = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0,
                              "s": 1e3, "sec": 1e3, "min": 6e4}
_TIME_HELP = "ns, us, ms, s, min"

_BYTES: dict[str, int] = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_BYTES_HELP = "B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024)"


def _split(text: str, what: str, accepted: str, example: str) -> tuple[float, str]:
    """``(number, unit as written)`` of ``text``; the unit is ``""`` when absent."""
    if not isinstance(text, str):
        text = str(text)
    m = _NUMBER.match(text)
    if not m:
        raise UsageError(f"bad {what} {text!r}: expected a number followed by one of "
                         f"{accepted} (e.g. {example})")
    value = float(m.group(1))
    if not math.isfinite(value):
        raise UsageError(f"bad {what} {text!r}: not a finite number")
    return value, (m.group(2) or "").strip()


def parse_bandwidth_mbps(text: str) -> float:
    """Bandwidth in megabits per second from ``"20mbps"``, ``"100kbps"``, ``"1.5gbps"``,
    ``"12.5MB/s"``...; must be > 0. A unit is required."""
    value, unit = _split(text, "bandwidth", _BANDWIDTH_HELP, "20Mbps")
    m = _BANDWIDTH_UNIT.match(unit)
    if not m:
        raise UsageError(f"bad bandwidth {text!r}: unit must be one of {_BANDWIDTH_HELP} "
                         f"(e.g. 20Mbps)")
    prefix, base, tail = m.group(1).lower(), m.group(2), m.group(3)
    is_bytes = base == "B"
    if is_bytes and tail.lower() == "ps":
        raise UsageError(f"bad bandwidth {text!r}: ambiguous unit {unit!r}; write "
                         f"{prefix.upper() or ''}bps for bits or {prefix.upper()}B/s for bytes")
    if value <= 0:
        raise UsageError(f"bad bandwidth {text!r}: must be greater than 0")
    return value * _PREFIX_MBPS[prefix] * (8.0 if is_bytes else 1.0)


def parse_time_ms(text: str) -> float:
    """Duration in milliseconds from ``"10ms"``, ``"0.5s"``, ``"250us"``...; must be >= 0. A unit
    is required."""
    value, unit = _split(text, "time", _TIME_HELP, "10ms")
    unit = unit.lower()
    if unit not in _TIME_MS:
        raise UsageError(f"bad time {text!r}: unit must be one of {_TIME_HELP} (e.g. 10ms)")
    if value < 0:
        raise UsageError(f"bad time {text!r}: must not be negative")
    return value * _TIME_MS[unit]


def parse_cpu_limit(text: str) -> tuple[float, float]:
    """A CPU limit as ``(cpus, period_ms)`` from ``"0.5"`` (CPUs), ``"500m"`` (millicores, as in a
    Kubernetes limit), optionally with the CFS period after a slash: ``"0.1/10ms"``; the period
    defaults to Linux's 100 ms. ``0 < cpus <= 1`` (one core: onnxsplit's edge runs one thread of
    work at a time) and the quota (cpus x period) at least 1 ms, the kernel's minimum."""
    how = "e.g. 0.5, 500m or 0.1/10ms (CPUs, or millicores with m; optional /CFS period, default 100ms)"
    raw = str(text).strip()
    share, _, period = raw.partition("/")
    share = share.strip()
    try:
        cpus = float(share[:-1]) / 1000.0 if share.lower().endswith("m") else float(share)
    except ValueError:
        raise UsageError(f"bad CPU limit {text!r}: {how}") from None
    period_ms = parse_time_ms(period) if period.strip() else 100.0
    if not (math.isfinite(cpus) and 0 < cpus <= 1):
        raise UsageError(f"bad CPU limit {text!r}: must be more than 0 and at most 1 CPU ({how})")
    if cpus * period_ms < 1.0 - 1e-9:
        raise UsageError(f"bad CPU limit {text!r}: the quota ({cpus:g} x {period_ms:g} ms) is under the kernel's 1 ms "
                         f"minimum; use a longer period, e.g. {cpus:g}/{math.ceil(1.0 / cpus):g}ms")
    return cpus, period_ms


def parse_nbytes(text: str | int) -> int:
    """Byte count from ``"512MB"`` (decimal), ``"2GiB"`` (binary), ``"64KB"``, ``"4096"``...;
    must be >= 0."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"bad size {text!r}: must not be negative")
        return text
    value, unit = _split(text, "size", _BYTES_HELP, "512MB")
    unit = unit.lower()
    if unit == "":
        unit = "b"
    if unit not in _BYTES:
        raise UsageError(f"bad size {text!r}: unit must be one of {_BYTES_HELP} (e.g. 512MB)")
    if value < 0:
        raise UsageError(f"bad size {text!r}: must not be negative")
    return int(round(value * _BYTES[unit]))


def format_nbytes(nbytes: float) -> str:
    """Human-readable decimal size: ``1.5 MB``, ``512 B``."""
    n = float(nbytes)
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{int(n)} B"


def format_ms(ms: float) -> str:
    """Human-readable duration: ``850 us``, ``12.3 ms``, ``1.5 s``."""
    if not math.isfinite(ms):
        return "inf"
    if abs(ms) >= 1000:
        return f"{ms / 1000:.3g} s"
    if abs(ms) >= 1 or ms == 0:
        return f"{ms:.3g} ms"
    return f"{ms * 1000:.3g} us"


def format_bandwidth(mbps: float) -> str:
    """Human-readable bandwidth: ``100 kbps``, ``20 Mbps``, ``1.5 Gbps``."""
    if not math.isfinite(mbps):
        return "inf"
    if mbps >= 1000:
        return f"{mbps / 1000:.3g} Gbps"
    if mbps >= 1:
        return f"{mbps:.3g} Mbps"
    return f"{mbps * 1000:.3g} kbps"
