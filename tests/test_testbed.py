"""The testbed: its userspace delay relay (tools/testbed/delayproxy.py, on loopback: no root needed)
and its packet loss (iptables statistic drop in the namespaces: root and the iptables package)."""

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


# ----------------------------------------------------------------------------- packet loss
def _netns():  # noqa: ANN202 - the tools.testbed.netns module
    sys.path.insert(0, str(ROOT))
    try:
        from tools.testbed import netns
    finally:
        sys.path.remove(str(ROOT))
    return netns


def test_bad_loss_values_are_one_line_errors():
    """Pure validation: no root, no namespace, no iptables."""
    netns = _netns()
    assert [netns.parse_loss_pct(v) for v in (0, 1, "1", "1%", " 2.5% ", 99.9)] == [0.0, 1.0, 1.0, 1.0, 2.5, 99.9]
    tb = netns.Testbed(tag="v")  # never entered: set_link must reject the value before running anything
    for bad in (-1, 100, 150, "abc", "5%%", float("nan"), ""):
        with pytest.raises(ValueError, match=r"loss must be a percentage in \[0, 100\)") as e:
            tb.set_link(10.0, loss_pct=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="loss_dir must be one of up, down, both"):
        tb.set_link(10.0, loss_pct=1, loss_dir="sideways")
    assert tb.link_mode == "none" and tb.loss_pct == 0.0


def test_bench_e2e_loss_option_and_trace_loss(capsys):
    sys.path.insert(0, str(ROOT))
    try:
        from tools.bench_e2e import main, parse_trace, trace_losses
    finally:
        sys.path.remove(str(ROOT))
    assert parse_trace("1000:6:0,1:6:5%,20:2") == [(1000.0, 6.0), (1.0, 6.0), (20.0, 2.0)]
    assert trace_losses("1000:6:0,1:6:5%,20:2", default=1.0) == [0.0, 5.0, 1.0]
    for argv, what in ((["m.onnx", "--loss", "abc"], "--loss: loss must be a percentage"),
                       (["m.onnx", "--loss", "100"], "--loss: loss must be a percentage"),
                       (["m.onnx", "--trace", "1000:1:120%"], "--bandwidths/--trace: loss must be a percentage")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].split(": error: ", 1)[-1].startswith(what), err


def test_bench_e2e_replot_redraws_the_png_from_results(tmp_path, capsys):
    """--replot DIR draws DIR/latency_vs_bandwidth.png from DIR/results.json (a PNG file); a folder
    without results.json is a usage error naming it."""
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(ROOT))
    try:
        from tools.bench_e2e import main
    finally:
        sys.path.remove(str(ROOT))
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "command": "python tools/bench_e2e.py models/m.onnx --bandwidths 1,1000mbps",
        "summary": {"all-edge": {"1": [80.0, 90.0, [0]], "1000": [79.0, 85.0, [0]]},
                    "dynamic": {"1": [41.0, 60.0, [4]], "1000": [15.0, 20.0, [6, 7]]}}}))
    assert main(["--replot", str(run)]) == 0
    png = run / "latency_vs_bandwidth.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    with pytest.raises(SystemExit) as e:
        main(["--replot", str(tmp_path / "nothing")])
    assert e.value.code == 2
    assert "--replot" in capsys.readouterr().err.splitlines()[-1]


def _loss_skip(netns) -> None:  # noqa: ANN001
    reason = netns.loss_available()
    if reason:
        pytest.skip(reason)


_UDP_SINK = """
import json, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): no drop for want of buffer
s.bind((sys.argv[1], int(sys.argv[2])))
counts = {}
print("ready", flush=True)
end = time.monotonic() + 120  # bounded even if nobody closes stdin
while time.monotonic() < end:
    r, _, _ = select.select([s, sys.stdin], [], [], 0.5)
    if s in r:
        tag = s.recv(2048)[:1].decode()
        counts[tag] = counts.get(tag, 0) + 1
    elif sys.stdin in r and not sys.stdin.readline():
        break  # stdin closed: the sender is done
print(json.dumps(counts), flush=True)
"""

_UDP_SOURCE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[4])):
    s.sendto(sys.argv[3].encode() + bytes(99), (sys.argv[1], int(sys.argv[2])))  # EPERM here = dropped at the sender
    if i % 50 == 49:
        time.sleep(0.002)
"""


@pytest.mark.parametrize("direction", ["up", "down"])
def test_udp_loss_is_applied_and_changes_during_a_run(direction):
    """N datagrams at 20 % loss: about 80 % arrive, exactly the rule's drop count is missing; then the
    loss goes to the other direction (none here) and to 0 % mid-run: all arrive."""
    netns = _netns()
    _loss_skip(netns)
    n, port = 2000, 9555
    with netns.Testbed(tag="u") as tb:
        up = direction == "up"
        dst_ip = tb.cloud_ip if up else tb.edge_ip
        spawn, run = (tb.spawn_cloud, tb.exec_edge) if up else (tb.spawn_edge, tb.exec_cloud)
        mode = tb.set_link(rate_mbps=100.0, loss_pct="20%", loss_dir=direction)
        assert "loss 20% " + ("edge->cloud" if up else "cloud->edge") in mode, mode
        sink = spawn([sys.executable, "-c", _UDP_SINK, dst_ip, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     text=True)
        assert sink.stdout.readline().strip() == "ready"

        def send(tag: str) -> None:
            run([sys.executable, "-c", _UDP_SOURCE, dst_ip, str(port), tag, str(n)], timeout=60)
            time.sleep(0.3)  # let the sink drain its socket

        send("A")
        dropped = tb.loss_drops()
        tb.set_link(100.0, loss_pct=20, loss_dir="down" if up else "up")  # the other direction only
        send("B")
        tb.set_link(100.0, loss_pct=0)
        assert tb.loss_drops() == {"up": 0, "down": 0}
        send("C")
        sink.stdin.close()
        counts = json.loads(sink.stdout.readline())
        sink.wait(timeout=10)
    assert not tb.alive()  # namespaces, veth pair and their loss rules are gone
    got = counts.get("A", 0)
    assert 0.70 * n <= got <= 0.88 * n, counts
    assert abs(got + dropped[direction] - n) <= 5, (counts, dropped)  # the rule, not something else, lost them
    assert dropped["down" if up else "up"] == 0, dropped
    assert counts.get("B", 0) >= 0.995 * n and counts.get("C", 0) >= 0.995 * n, counts


_TCP_SINK = """
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(60)
print("ready", flush=True)
c, _ = srv.accept()
c.settimeout(60)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
c.sendall(f"{n} {h.hexdigest()}".encode())
c.close()
"""

_TCP_SOURCE = """
import socket, sys
data = bytes(range(256)) * 4096  # 1 MiB
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
print(c.recv(200).decode())
"""


def test_tcp_transfer_completes_under_loss():
    """1 MiB edge -> cloud over TCP with 5 % loss each way (data and ACKs): every byte arrives, and
    the rules did drop packets in both directions."""
    import hashlib

    netns = _netns()
    _loss_skip(netns)
    with netns.Testbed(tag="p") as tb:
        tb.set_link(rate_mbps=50.0, loss_pct=5, loss_dir="both")
        sink = tb.spawn_cloud([sys.executable, "-c", _TCP_SINK, tb.cloud_ip, "9556"], stdout=subprocess.PIPE, text=True)
        assert sink.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        r = tb.exec_edge([sys.executable, "-c", _TCP_SOURCE, tb.cloud_ip, "9556"], capture=True, timeout=90)
        secs = time.monotonic() - t0
        drops = tb.loss_drops()
        sink.wait(timeout=10)
    data = bytes(range(256)) * 4096
    assert r.stdout.split() == [str(len(data)), hashlib.sha256(data).hexdigest()]
    assert drops["up"] > 0 and drops["down"] > 0, drops
    assert secs < 60, secs


def test_loss_zero_needs_no_iptables_and_teardown_on_failure(monkeypatch):
    netns = _netns()
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(netns, "IPTABLES", ("osplit-no-such-iptables",))
    assert "apt-get install iptables" in netns.loss_available()
    with pytest.raises(ZeroDivisionError):  # an error inside the block: everything still torn down
        with netns.Testbed(tag="n") as tb:
            assert "loss 0%" in tb.set_link(rate_mbps=50.0, loss_pct=0)
            with pytest.raises(RuntimeError, match="apt-get install iptables") as e:
                tb.set_link(rate_mbps=20.0, loss_pct=1)
            assert "\n" not in str(e.value)
            assert "rate 50.0mbit" in tb.link_mode and tb.loss_pct == 0.0  # the failed call changed nothing
            1 / 0  # noqa: B018
    assert not tb.alive()


def test_bench_e2e_oracle_within_budget_skips_broken_int8_plans():
    """The budget-aware oracle never picks an int8 plan that failed the accuracy budget."""
    sys.path.insert(0, str(ROOT))
    try:
        from tools.bench_e2e import best_measured
    finally:
        sys.path.remove(str(ROOT))
    plans = [{"id": 0, "precision": "fp32"}, {"id": 1, "precision": "int8", "within_budget": False},
             {"id": 2, "precision": "int8", "within_budget": True}, {"id": 3, "precision": "int8"}]
    meas = {(0, 1.0): 260.0, (1, 1.0): 230.0, (2, 1.0): 250.0, (3, 1.0): 255.0,
            (0, 100.0): 300.0, (1, 100.0): 90.0, (2, 100.0): 120.0, (3, 100.0): 110.0}

    def med(i: int, bw: float) -> float:
        return meas[(i, bw)]

    assert best_measured(plans, med, 1.0) == 1  # raw oracle: the broken plan is fastest
    assert best_measured(plans, med, 1.0, within_budget_only=True) == 2
    assert best_measured(plans, med, 100.0, within_budget_only=True) == 3  # unchecked plans stay candidates
    assert best_measured([plans[0], plans[1]], med, 1.0, within_budget_only=True) == 0


def test_sigterm_tears_the_testbed_down():
    """``kill PID`` of a benchmark in the middle of a run leaves no namespace or cgroup behind."""
    netns = _netns()
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    code = ("import json, sys, time\n"
            "from tools.testbed.netns import Testbed\n"
            "with Testbed(tag='k', edge_cpus='0', edge_quota=0.5) as tb:\n"
            "    print(json.dumps({'ns': [tb.cloud_ns, tb.edge_ns], 'cgroup': str(tb.cgroup) if tb.cgroup else None}), flush=True)\n"
            "    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(p.stdout.readline())
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(ns in names for ns in info["ns"])
        p.terminate()
        assert p.wait(timeout=30) == 143
    finally:
        if p.poll() is None:
            p.kill()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in names for ns in info["ns"]), names
    assert info["cgroup"] is None or not Path(info["cgroup"]).exists()
