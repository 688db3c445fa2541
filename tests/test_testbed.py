"""The testbed's userspace delay relay (tools/testbed/delayproxy.py), on loopback: no root needed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def relay(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    listen = _free_port()
    delay = tmp_path / "delay.ms"
    delay.write_text("40\n")
    p = subprocess.Popen([sys.executable, "-m", "tools.testbed.delayproxy", "--host", "127.0.0.1",
                          "--map", f"{listen}:{srv.server_address[1]}", "--delay-file", str(delay)],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(p.stdout.readline())["ready"] is True
        yield listen, delay
    finally:
        p.stdin.close()  # the relay exits when stdin closes
        p.wait(timeout=10)
        srv.shutdown()


def _round_trip_ms(port: int, body: bytes) -> tuple[float, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.perf_counter()
    conn.request("POST", "/", body=body)
    got = conn.getresponse().read()
    ms = (time.perf_counter() - t0) * 1e3
    conn.close()
    return ms, got


def test_relay_adds_the_round_trip_and_follows_the_delay_file(relay):
    port, delay = relay
    body = bytes(range(256)) * 1024  # 256 KB: several chunks each way, order must be kept
    ms, got = _round_trip_ms(port, body)
    assert got == body
    assert 80.0 <= ms < 2000.0, ms  # 40 ms each way
    delay.write_text("0\n")
    time.sleep(0.2)  # re-read at most every 50 ms
    ms0, got = _round_trip_ms(port, b"x" * 10)
    assert got == b"x" * 10 and ms0 < 60.0, ms0


def test_relay_map_parsing():
    sys.path.insert(0, str(ROOT))
    try:
        from tools.testbed.delayproxy import parse_map
    finally:
        sys.path.remove(str(ROOT))
    assert parse_map("10000:9000, 10001:9001") == {10000: 9000, 10001: 9001}
    with pytest.raises(ValueError):
        parse_map(" ")


def test_bench_e2e_phase_medians():
    """Each phase of a bandwidth trace counts once, by the requests that started in it."""
    sys.path.insert(0, str(ROOT))
    try:
        from tools.bench_e2e import phase_medians, parse_trace
    finally:
        sys.path.remove(str(ROOT))
    schedule = parse_trace("1000:1,1:2,1gbps:1")
    assert schedule == [(1000.0, 1.0), (1.0, 2.0), (1000.0, 1.0)]
    # t = completion time (s from the trace start), lat = ms; the 2.9 s request spans phase 2
    fast_then_stuck = {"t": [0.1, 0.2, 0.3, 3.2, 3.3], "lat": [100, 100, 100, 2900, 100]}
    stuck_all_phase = {"t": [0.5, 3.6], "lat": [500, 3100]}  # the second started at 0.5 s, ran through phase 2
    got = phase_medians({"a": fast_then_stuck, "b": stuck_all_phase}, schedule)
    assert got["a"] == [100.0, 2900.0, 100.0]
    assert got["b"][:2] == [1800.0, 3100.0] and got["b"][2] != got["b"][2]  # nothing in flight in phase 3: nan
    with pytest.raises(ValueError):
        parse_trace("1000")
