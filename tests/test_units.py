"""Tests for onnxsplit.units."""

from __future__ import annotations

import pytest

from onnxsplit.errors import UsageError
from onnxsplit.units import (
    format_bandwidth,
    format_ms,
    format_nbytes,
    parse_bandwidth_mbps,
    parse_nbytes,
    parse_time_ms,
)


@pytest.mark.parametrize(
    ("text", "mbps"),
    [
        ("20mbps", 20.0),
        ("20Mbps", 20.0),
        ("20 Mbps", 20.0),
        ("100kbps", 0.1),
        ("1.5gbps", 1500.0),
        ("1.5Gbps", 1500.0),
        ("500bps", 500e-6),
        ("1e3kbps", 1.0),
        ("10Mbit/s", 10.0),
        ("10Mb/s", 10.0),
        ("12.5MB/s", 100.0),
        ("1kB/s", 0.008),
    ],
)
def test_parse_bandwidth(text: str, mbps: float) -> None:
    assert parse_bandwidth_mbps(text) == pytest.approx(mbps)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("10ms", 10.0), ("0.5s", 500.0), ("250us", 0.25), ("250µs", 0.25), ("3 ns", 3e-6),
     ("1min", 60000.0), ("0ms", 0.0), ("10MS", 10.0)],
)
def test_parse_time(text: str, ms: float) -> None:
    assert parse_time_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("512MB", 512_000_000),
        ("2GB", 2_000_000_000),
        ("64KB", 64_000),
        ("64kB", 64_000),
        ("1KiB", 1024),
        ("512MiB", 512 * 2**20),
        ("2GiB", 2 * 2**30),
        ("1.5KiB", 1536),
        ("4096", 4096),
        ("4096B", 4096),
        ("1TB", 10**12),
    ],
)
def test_parse_nbytes(text: str, nbytes: int) -> None:
    value = parse_nbytes(text)
    assert value == nbytes
    assert isinstance(value, int)


def test_parse_nbytes_accepts_int() -> None:
    assert parse_nbytes(123) == 123


@pytest.mark.parametrize("text", ["20", "fast", "20 furlongs", "-5mbps", "0mbps", "inf mbps",
                                  "nan", "", "20MBps", "mbps"])
def test_bad_bandwidth(text: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_bandwidth_mbps(text)
    msg = str(exc.value)
    assert repr(text) in msg
    assert "\n" not in msg
    if text not in ("-5mbps", "0mbps"):
        assert "Mbps" in msg  # names the accepted suffixes


@pytest.mark.parametrize("text", ["10", "10 parsecs", "-1ms", "ms", "1e999s"])
def test_bad_time(text: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_time_ms(text)
    assert repr(text) in str(exc.value)


@pytest.mark.parametrize("text", ["5 parsecs", "-1KB", "MB", "12 Mbps", "nan", -3])
def test_bad_nbytes(text: str | int) -> None:
    with pytest.raises(UsageError) as exc:
        parse_nbytes(text)
    msg = str(exc.value)
    assert repr(text) in msg
    if isinstance(text, str) and not text.startswith("-"):
        assert "KiB" in msg and "MB" in msg


def test_format_roundtrip_readable() -> None:
    assert format_nbytes(1_500_000) == "1.5 MB"
    assert format_nbytes(512) == "512 B"
    assert format_ms(0.25) == "250 us"
    assert format_ms(12.34) == "12.3 ms"
    assert format_ms(1500) == "1.5 s"
    assert format_bandwidth(0.1) == "100 kbps"
    assert format_bandwidth(20) == "20 Mbps"
    assert format_bandwidth(1500) == "1.5 Gbps"
    assert parse_bandwidth_mbps(format_bandwidth(20).replace(" ", "")) == 20


@pytest.mark.parametrize(("text", "want"), [("0.5", (0.5, 100.0)), ("500m", (0.5, 100.0)), ("100m/10ms", (0.1, 10.0)),
                                            ("0.1 / 0.01s", (0.1, 10.0)), ("1", (1.0, 100.0))])
def test_parse_cpu_limit(text: str, want: tuple[float, float]) -> None:
    from onnxsplit.units import parse_cpu_limit

    assert parse_cpu_limit(text) == pytest.approx(want)


@pytest.mark.parametrize(("text", "needle"), [("", "bad CPU limit"), ("0", "more than 0"), ("1.5", "at most 1"),
                                              ("0.1/5ms", "1 ms minimum"), ("0.5/10 parsecs", "bad time"),
                                              ("nan", "more than 0")])
def test_parse_cpu_limit_errors(text: str, needle: str) -> None:
    from onnxsplit.units import parse_cpu_limit

    with pytest.raises(UsageError, match=needle):
        parse_cpu_limit(text)
