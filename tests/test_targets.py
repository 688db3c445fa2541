"""Target data files: every bundled file validates; names, aliases and strict validation errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from onnxsplit.data import data_dir
from onnxsplit.errors import OnnxSplitError
from onnxsplit.targets import (
    PRECISIONS,
    Target,
    TargetError,
    list_targets,
    load_target,
    resolve_target_name,
    target_aliases,
)

REQUIRED = {"jetson-orin-nano", "jetson-agx-orin", "rpi4", "rpi5", "server-gpu-a100", "server-gpu-h100", "host-x86"}
HOST = data_dir("targets") / "host-x86.toml"


def test_bundled_targets_are_all_there() -> None:
    assert REQUIRED <= set(list_targets())
    assert "aliases" not in list_targets()


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_target_file_validates(name: str) -> None:
    t = load_target(name)
    assert isinstance(t, Target) and t.name == name
    for p in PRECISIONS:
        assert t.peak_ops_per_s(p) > 0
    assert t.mem_bandwidth_gbps > 0 and t.mem_capacity_bytes > 0
    assert 0 <= t.power_idle_w <= t.power_active_w
    assert t.default_runtime in t.runtimes
    assert t.ort_execution_providers[-1] == "CPUExecutionProvider"
    tvm = t.tvm_target
    assert tvm["kind"] in ("llvm", "cuda")
    if tvm["kind"] == "cuda":
        assert re.fullmatch(r"sm_\d+", tvm["arch"]) and tvm["host"]["kind"] == "llvm"
    else:
        assert tvm["mtriple"]
    text = Path(t.path).read_text()
    assert "Source" in text or "source" in text, "each target file cites its sources in a comment"
    # immutability
    with pytest.raises(AttributeError):
        t.name = "x"  # type: ignore[misc]
    t.tvm_target["kind"] = "mutated"
    assert load_target(name).tvm_target["kind"] == tvm["kind"]


def test_jetson_and_edge_specifics() -> None:
    j = load_target("jetson-orin-nano")
    assert j.tvm_target["arch"] == "sm_87" and j.tvm_target["host"]["mtriple"].startswith("aarch64")
    assert j.radio_nj_per_byte and j.role == "edge"
    assert load_target("rpi4").tvm_target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                                              "mattr": ["+neon"]}
    assert load_target("server-gpu-h100").radio_nj_per_byte is None
    assert load_target("server-gpu-h100").peak_gflops_fp32 > load_target("server-gpu-a100").peak_gflops_fp32


def test_short_names() -> None:
    assert target_aliases() == {"jetson": "jetson-orin-nano", "arm-cpu": "rpi4", "server-gpu": "server-gpu-a100"}
    assert load_target("jetson").name == "jetson-orin-nano"
    assert load_target("arm-cpu").name == "rpi4"
    assert load_target("server-gpu").name == "server-gpu-a100"
    assert resolve_target_name("rpi5") == "rpi5"


def test_unknown_target_lists_known_names() -> None:
    with pytest.raises(TargetError) as exc:
        load_target("raspberry-pi-9")
    msg = str(exc.value)
    assert isinstance(exc.value, OnnxSplitError)
    for name in REQUIRED | {"jetson", "arm-cpu", "server-gpu"}:
        assert name in msg
    assert "\n" not in msg


def test_load_by_path(tmp_path: Path) -> None:
    p = tmp_path / "host-x86.toml"
    p.write_text(HOST.read_text())
    assert load_target(str(p)).peak_gflops_fp32 == load_target("host-x86").peak_gflops_fp32
    assert load_target(p).path == str(p)


def _write(tmp_path: Path, text: str, name: str = "mytarget") -> Path:
    text = text.replace('name = "host-x86"', f'name = "{name}"')
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        # missing key
        (lambda s: s.replace("mem_bandwidth_gbps = 23.4\n", ""), r"\[memory\] mem_bandwidth_gbps: missing key"),
        # wrong type
        (lambda s: s.replace("peak_gflops_fp32 = 166.4", 'peak_gflops_fp32 = "166.4 GFLOPS"'),
         r"\[compute\] peak_gflops_fp32: expected a number in GFLOP/s"),
        (lambda s: s.replace("cpu_cores = 2", "cpu_cores = 2.5"), r"\[compute\] cpu_cores: expected an integer"),
        # unknown key (with a did-you-mean for a unit typo)
        (lambda s: s.replace("mem_bandwidth_gbps = 23.4", "mem_bandwidth_mbps = 23400"),
         r"\[memory\] mem_bandwidth_mbps: unknown key; did you mean 'mem_bandwidth_gbps'"),
        (lambda s: s + "\nfoo = 1\n", r"foo: unknown key"),
        # wrong unit: bytes/s where GB/s is expected
        (lambda s: s.replace("mem_bandwidth_gbps = 23.4", "mem_bandwidth_gbps = 23400000000.0"),
         r"\[memory\] mem_bandwidth_gbps: .* outside the plausible range .* another unit"),
        (lambda s: s.replace('kind = "llvm", mtriple = "x86_64-linux-gnu"', 'kind = "cuda", mtriple = "x86_64-linux-gnu"'),
         r"\[tvm\] target: a cuda target needs 'arch'"),
        (lambda s: s.replace('default_runtime = "ort-cpu"', 'default_runtime = "ort-cuda"'),
         r"default_runtime: 'ort-cuda' is not in runtimes"),
        (lambda s: s.replace("power_idle_w = 2.0", "power_idle_w = 20.0"), r"power_idle_w: is larger than power_active_w"),
        (lambda s: s.replace("[roofline]", "[roof]"), r"roof: unknown key"),
    ],
)
def test_bad_target_file_names_file_and_key(tmp_path: Path, edit, pattern: str) -> None:  # noqa: ANN001
    p = _write(tmp_path, edit(HOST.read_text()))
    with pytest.raises(TargetError, match=pattern) as exc:
        load_target(p)
    assert str(p) in str(exc.value)


def test_name_must_match_file_and_toml_must_parse(tmp_path: Path) -> None:
    p = tmp_path / "other.toml"
    p.write_text(HOST.read_text())
    with pytest.raises(TargetError, match=r"other.toml: name: 'host-x86' differs from the file name 'other'"):
        load_target(p)
    bad = tmp_path / "broken.toml"
    bad.write_text("name = \n")
    with pytest.raises(TargetError, match="broken.toml: not valid TOML"):
        load_target(bad)
    with pytest.raises(TargetError, match="not found"):
        load_target(tmp_path / "missing.toml")


def test_every_toml_key_is_documented() -> None:
    import onnxsplit.targets as mod

    doc = tomllib.loads((data_dir("targets") / "rpi4.toml").read_text())
    for section, value in doc.items():
        keys = value.keys() if isinstance(value, dict) else [section]
        for k in keys:
            assert f"``{k}``" in (mod.__doc__ or ""), f"onnxsplit.targets does not document '{k}'"
