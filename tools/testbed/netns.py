"""Two network namespaces joined by a veth pair: a shaped link between an "edge" and a "cloud".

Root only; not part of the default CI suite. Only the addresses assigned here are used
(``10.231.0.1`` cloud, ``10.231.0.2`` edge, a /30 on the veth pair); no traffic leaves the two
namespaces. Everything is torn down on ``__exit__``, at interpreter exit (atexit) and on failure
inside ``__enter__``: processes started here are terminated (then killed), the namespaces are
deleted (which deletes the veth pair), the CPU cgroup is removed.

Link shaping (:meth:`Testbed.set_link`, callable during a run): ``tc qdisc replace ... netem rate R
delay rtt/2 loss L`` on both veth ends. Where the kernel has no ``sch_netem`` (as on the machine
these results were measured on: "Specified qdisc kind is unknown") it falls back to ``tbf rate R``
on both ends: rate only, no loss, and the delay comes from a userspace TCP relay when one was
started with :meth:`Testbed.start_delay_proxy` (``tools/testbed/delayproxy.py``: each chunk is held
``rtt/2`` ms in each direction; :meth:`set_link` updates it during a run); :attr:`Testbed.link_mode`
says which is in force.

Edge CPU limit: ``taskset -c <edge_cpus>`` plus a CFS quota of ``edge_quota`` CPUs (cgroup v2
``cpu.max`` when the unified hierarchy has the cpu controller, else cgroup v1
``/sys/fs/cgroup/cpu/<name>/cpu.cfs_quota_us``) over a CFS period of ``edge_period_ms`` (default:
the shortest the kernel allows for that quota, ``1 ms / quota``, e.g. 10 ms for 0.1 CPU, so the quota
is 1 ms per period; with the kernel's 100 ms default a process that used its quota stalls for up to
``100 * (1 - quota)`` ms, which turns millisecond inferences into bimodal latencies); a process is
put in the group before it execs, so all its threads are limited. :attr:`Testbed.cpu_mode`
records what applied.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import time
from pathlib import Path

CLOUD_IP = "10.231.0.1"
EDGE_IP = "10.231.0.2"


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {r.stderr.strip()}")
    return r


def available() -> str | None:
    """None when a testbed can be built here, else the reason it cannot."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found"
    probe = f"osplitprobe{os.getpid()}"  # root is not enough in every container: try one
    r = _run(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    _run(["ip", "netns", "del", probe], check=False)
    return None


class Testbed:
    """``with Testbed() as tb: tb.set_link(20, rtt_ms=10); tb.spawn_cloud([...]); tb.exec_edge([...])``"""

    def __init__(self, tag: str = "", *, edge_cpus: str | None = "0", cloud_cpus: str | None = None,
                 edge_quota: float | None = None, edge_period_ms: float | None = None):
        pid = os.getpid() % 100000
        self.cloud_ns = f"osplit{tag}{pid}c"
        self.edge_ns = f"osplit{tag}{pid}e"
        self.cloud_dev = f"osc{tag}{pid}"[:15]
        self.edge_dev = f"ose{tag}{pid}"[:15]
        self.cloud_ip, self.edge_ip = CLOUD_IP, EDGE_IP
        self.edge_cpus, self.cloud_cpus, self.edge_quota = edge_cpus, cloud_cpus, edge_quota
        if edge_period_ms is None:
            edge_period_ms = min(1000.0, max(1.0, 1.0 / edge_quota)) if edge_quota else 10.0
        if not 1.0 <= edge_period_ms <= 1000.0:
            raise ValueError(f"edge_period_ms must be in [1, 1000], got {edge_period_ms}")
        self.edge_period_us = int(edge_period_ms * 1000)
        self.procs: list[subprocess.Popen] = []
        self.link_mode = "none"
        self.cpu_mode = "none"
        self.cgroup: Path | None = None
        self.delay_file: Path | None = None  # set by start_delay_proxy
        self._up = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Testbed:
        reason = available()
        if reason:
            raise RuntimeError(f"cannot build the testbed: {reason}")
        atexit.register(self.close)
        try:
            self._up = True
            _run(["ip", "netns", "add", self.cloud_ns])
            _run(["ip", "netns", "add", self.edge_ns])
            _run(["ip", "link", "add", self.cloud_dev, "type", "veth", "peer", "name", self.edge_dev])
            _run(["ip", "link", "set", self.cloud_dev, "netns", self.cloud_ns])
            _run(["ip", "link", "set", self.edge_dev, "netns", self.edge_ns])
            for ns, dev, ip in ((self.cloud_ns, self.cloud_dev, CLOUD_IP), (self.edge_ns, self.edge_dev, EDGE_IP)):
                _run(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev])
                _run(["ip", "-n", ns, "link", "set", dev, "up"])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            self._setup_cpu()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        names = _run(["ip", "netns", "list"], check=False).stdout
        return self.cloud_ns in names or self.edge_ns in names

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        if self.delay_file is not None:
            self.delay_file.unlink(missing_ok=True)
            self.delay_file = None
        if self._up:
            for ns in (self.cloud_ns, self.edge_ns):
                _run(["ip", "netns", "del", ns], check=False)
            self._up = False
        if self.cgroup is not None:
            for _ in range(50):  # processes leave the group when they exit; bounded wait
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
            self.cgroup = None
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ CPU limit
    def _setup_cpu(self) -> None:
        if not self.edge_quota:
            self.cpu_mode = f"taskset -c {self.edge_cpus}" if self.edge_cpus else "none"
            return
        name = self.edge_ns
        v2 = Path("/sys/fs/cgroup")
        v1 = Path("/sys/fs/cgroup/cpu")
        try:
            if (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text().split():
                cg = v2 / name
                cg.mkdir()
                period = self.edge_period_us
                (cg / "cpu.max").write_text(f"{int(self.edge_quota * period)} {period}")
                self.cpu_mode = f"cgroup v2 cpu.max {self.edge_quota:g} CPU per {period / 1000:g} ms"
            elif (v1 / "cpu.cfs_quota_us").exists():
                cg = v1 / name
                cg.mkdir()
                period = self.edge_period_us
                (cg / "cpu.cfs_period_us").write_text(str(period))
                (cg / "cpu.cfs_quota_us").write_text(str(int(self.edge_quota * period)))
                self.cpu_mode = f"cgroup v1 cfs quota {self.edge_quota:g} CPU per {period / 1000:g} ms"
            else:
                self.cpu_mode = "no cpu cgroup available: quota not applied"
                return
            self.cgroup = cg
        except OSError as exc:
            self.cpu_mode = f"cpu quota not applied ({exc})"
        if self.edge_cpus:
            self.cpu_mode += f" + taskset -c {self.edge_cpus}"

    def _prefix(self, ns: str, cpus: str | None, cgroup: Path | None) -> list[str]:
        cmd = []
        if cgroup is not None:  # before `ip netns exec`, which remounts /sys inside the namespace
            cmd += ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh"]
        cmd += ["ip", "netns", "exec", ns]
        if cpus and shutil.which("taskset"):
            cmd += ["taskset", "-c", cpus]
        return cmd

    # ------------------------------------------------------------------ processes
    def edge_cmd(self, cmd: list[str]) -> list[str]:
        return self._prefix(self.edge_ns, self.edge_cpus, self.cgroup) + list(cmd)

    def cloud_cmd(self, cmd: list[str]) -> list[str]:
        return self._prefix(self.cloud_ns, self.cloud_cpus, None) + list(cmd)

    def spawn_cloud(self, cmd: list[str], **kw) -> subprocess.Popen:  # noqa: ANN003
        p = subprocess.Popen(self.cloud_cmd(cmd), **kw)
        self.procs.append(p)
        return p

    def spawn_edge(self, cmd: list[str], **kw) -> subprocess.Popen:  # noqa: ANN003
        p = subprocess.Popen(self.edge_cmd(cmd), **kw)
        self.procs.append(p)
        return p

    def exec_edge(self, cmd: list[str], *, capture: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.edge_cmd(cmd), capture_output=capture, text=True, timeout=timeout, check=True)

    def exec_cloud(self, cmd: list[str], *, capture: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.cloud_cmd(cmd), capture_output=capture, text=True, timeout=timeout, check=True)

    def wait_port(self, ip: str, port: int, timeout_s: float = 30.0) -> bool:
        """Poll a TCP port from the edge namespace (bounded by ``timeout_s``)."""
        code = ("import socket,time,sys\n"
                f"end=time.monotonic()+{timeout_s}\n"
                "while time.monotonic()<end:\n"
                " try:\n"
                f"  socket.create_connection(('{ip}',{port}),timeout=1).close(); sys.exit(0)\n"
                " except OSError: time.sleep(0.1)\n"
                "sys.exit(1)\n")
        import sys

        r = subprocess.run(["ip", "netns", "exec", self.edge_ns, sys.executable, "-c", code], timeout=timeout_s + 10)
        return r.returncode == 0

    # ------------------------------------------------------------------ link
    def set_link(self, rate_mbps: float, rtt_ms: float = 0.0, loss_pct: float = 0.0) -> str:
        """Shape both directions to ``rate_mbps`` (+ rtt/2 delay each way and loss with netem)."""
        mode = "netem"
        for ns, dev in ((self.cloud_ns, self.cloud_dev), (self.edge_ns, self.edge_dev)):
            args = ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                    "rate", f"{rate_mbps}mbit", "delay", f"{rtt_ms / 2}ms"]
            if loss_pct:
                args += ["loss", f"{loss_pct}%"]
            if mode == "netem" and _run(args, check=False).returncode == 0:
                continue
            mode = "tbf"
            # 1 ms worth of bytes (at least 4 KB, a few MTUs): a larger bucket lets short transfers
            # through faster than the rate (a 16 KB bucket made 25 KB go ~2.5x faster at 20 Mbit/s)
            burst = max(4096, int(rate_mbps * 1e6 / 8 / 1000))
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                  "rate", f"{rate_mbps}mbit", "burst", str(burst), "latency", "2000ms"])
        if mode == "netem":
            self.link_mode = f"netem rate {rate_mbps}mbit delay {rtt_ms / 2}ms loss {loss_pct}%"
        elif self.delay_file is not None:
            self.delay_file.write_text(f"{rtt_ms / 2}\n")
            self.link_mode = (f"tbf rate {rate_mbps}mbit + userspace relay delay {rtt_ms / 2}ms each way "
                              f"(sch_netem unavailable: no loss)")
        else:
            self.link_mode = f"tbf rate {rate_mbps}mbit (sch_netem unavailable: no added delay/loss)"
        return self.link_mode

    def start_delay_proxy(self, routes: dict[int, int], rtt_ms: float = 0.0) -> dict[int, int]:
        """Relay ``cloud_ip:LISTEN -> cloud_ip:UPSTREAM`` inside the cloud namespace, holding data
        ``rtt/2`` in each direction (for kernels without sch_netem; later :meth:`set_link` calls
        change the delay). Returns ``{upstream: listen}``. Bounded: waits at most 30 s for it."""
        import json
        import select
        import sys
        import tempfile

        fd, name = tempfile.mkstemp(prefix="onnxsplit-delay-", suffix=".ms")
        os.close(fd)
        self.delay_file = Path(name)
        self.delay_file.write_text(f"{rtt_ms / 2}\n")
        root = Path(__file__).resolve().parents[2]
        cmd = ["env", f"PYTHONPATH={root}", sys.executable, "-m", "tools.testbed.delayproxy", "--host", self.cloud_ip,
               "--map", ",".join(f"{a}:{b}" for a, b in routes.items()), "--delay-file", str(self.delay_file)]
        p = self.spawn_cloud(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([p.stdout], [], [], 30)
        line = p.stdout.readline() if ready else ""
        if not line.startswith("{") or not json.loads(line).get("ready"):
            raise RuntimeError(f"the delay relay did not start (exit code {p.poll()})")
        return {b: a for a, b in routes.items()}
