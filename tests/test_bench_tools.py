"""Small runs of benchmark scripts in tools/: they run and report what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_timing_noise_small_run():
    cmd = [sys.executable, str(ROOT / "tools" / "bench_timing_noise.py"), "--seeds", "120", "--rounds", "1", "--reps", "3",
           "--cv-rounds", "3", "--phase-seed", "120", "--phase-pairs", "2", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert [p["seed"] for p in doc["pairs"]] == [120]
    assert set(doc["cv"]) == {"1", "2"}
    pairs = doc["phases"]["pairs_ms"]
    assert doc["phases"]["seed"] == 120 and len(pairs) == 2 and all(a > 0 and b > 0 for a, b in pairs)
    bad = subprocess.run([*cmd[:2], "--seeds", "x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--seeds" in bad.stderr


def test_bench_feedback_prints_a_row_per_plan_count():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_feedback.py"), "--plans", "2,3", "--calls", "20"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split() for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    assert [row[0] for row in rows] == ["2", "3"] and all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_feedback.py"), "--plans", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "plan counts" in bad.stderr
