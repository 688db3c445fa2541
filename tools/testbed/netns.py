"""Two network namespaces joined by a veth pair: a shaped link between an "edge" and a "cloud".

Root only; not part of the default CI suite. Only the addresses assigned here are used
(``10.231.0.1`` cloud, ``10.231.0.2`` edge, a /30 on the veth pair); no traffic leaves the two
namespaces. Everything is torn down on ``__exit__``, at interpreter exit (atexit) and on failure
inside ``__enter__``: processes started here are terminated (then killed), the namespaces are
deleted (which deletes the veth pair), the CPU cgroup is removed.

Link shaping (:meth:`Testbed.set_link`, callable during a run): ``tc qdisc replace ... netem rate R
delay rtt/2`` on both veth ends. Where the kernel has no ``sch_netem`` (as on the machine these
results were measured on: "Specified qdisc kind is unknown") it falls back to ``tbf rate R`` on both
ends, and the delay comes from a userspace TCP relay when one was started with
:meth:`Testbed.start_delay_proxy` (``tools/testbed/delayproxy.py``: each chunk is held ``rtt/2`` ms
in each direction; :meth:`set_link` updates it during a run); :attr:`Testbed.link_mode` says which is
in force.

Packet loss (``set_link(..., loss_pct=L, loss_dir="up")``, also callable during a run, whether or not
the kernel has ``sch_netem``): ``iptables -m statistic --mode random --probability L/100 -j DROP`` in
a chain ``OSPLIT_LOSS`` of the *receiving* namespace, jumped to from its ``INPUT`` chain for packets
arriving on its veth end. ``loss_dir``: ``"up"`` (default) drops edge -> cloud packets (at the cloud's
ingress), ``"down"`` cloud -> edge packets (at the edge's ingress), ``"both"`` each direction
independently with probability L. Every packet counts, TCP ACKs and handshakes included. Dropping at
the receiver is what a lossy wire does: a drop on the sender's own output path (``OUTPUT`` /
``POSTROUTING``, or any local qdisc other than netem) is reported to the sending socket (``EPERM``
for UDP; TCP sees a local congestion signal and resends at once) instead of being noticed by a
timeout or duplicate ACKs. Changes replace the rule in place (``iptables -R``: no loss-free gap).
Needs the ``iptables`` binary (Debian: ``apt-get install iptables``; ``iptables-legacy`` or
``iptables-nft``, whichever works in a namespace, see :func:`loss_available`) only when a loss
above 0 is asked for. The rules live in the two namespaces and go with them on teardown; nothing is
run in the root namespace.

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


# ---------------------------------------------------------------------------------- packet loss
LOSS_CHAIN = "OSPLIT_LOSS"
LOSS_DIRS = ("up", "down", "both")
IPTABLES = ("iptables-legacy", "iptables-nft", "iptables")  # tried in this order, in the namespace
_INSTALL = "apt-get install iptables"


def parse_loss_pct(value: object) -> float:
    """``1``, ``0.5``, ``"1"``, ``"1%"`` -> percent in [0, 100); anything else: a one-line ValueError."""
    text = str(value).strip()
    try:
        pct = float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        raise ValueError(f"loss must be a percentage in [0, 100) such as 1 or 1%, got {value!r}") from None
    if not 0.0 <= pct < 100.0:  # also rejects nan
        raise ValueError(f"loss must be a percentage in [0, 100) such as 1 or 1%, got {value!r}")
    return pct


def _check_loss_dir(loss_dir: str) -> str:
    if loss_dir not in LOSS_DIRS:
        raise ValueError(f"loss_dir must be one of {', '.join(LOSS_DIRS)}, got {loss_dir!r}")
    return loss_dir


def _find_iptables(ns: str) -> str:
    """The first iptables binary that can add a ``statistic`` DROP rule inside namespace ``ns``
    (tried on a throwaway chain, removed again); a one-line RuntimeError when there is none."""
    why = []
    for name in IPTABLES:  # bounded: three candidates
        path = shutil.which(name)
        if path is None:
            continue
        chain = "OSPLIT_PROBE"
        ipt = ["ip", "netns", "exec", ns, path, "-w", "5"]
        r = _run(ipt + ["-N", chain], check=False)
        if r.returncode == 0:
            r = _run(ipt + ["-A", chain, "-m", "statistic", "--mode", "random", "--probability", "0.5", "-j", "DROP"],
                     check=False)
            _run(ipt + ["-F", chain], check=False)
            _run(ipt + ["-X", chain], check=False)
            if r.returncode == 0:
                return path
        why.append(f"{name}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    detail = f" ({'; '.join(why)})" if why else ""
    raise RuntimeError(f"packet loss needs a working iptables with the statistic match: {_INSTALL}{detail}")


def loss_available() -> str | None:
    """None when packet loss can be emulated here (a testbed can be built and an iptables binary
    adds a ``statistic`` DROP rule in a namespace), else the reason it cannot."""
    reason = available()
    if reason:
        return reason
    if not any(shutil.which(n) for n in IPTABLES):
        return f"packet loss needs iptables: {_INSTALL}"
    probe = f"osplitlossprobe{os.getpid()}"
    r = _run(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        _find_iptables(probe)
    except RuntimeError as exc:
        return str(exc)
    finally:
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
        self.loss_pct, self.loss_dir = 0.0, "up"  # set by set_link / set_loss
        self._iptables: str | None = None  # found on the first loss > 0
        self._loss_chain: dict[str, bool] = {}  # namespace -> its OSPLIT_LOSS chain holds the DROP rule
        self._up = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Testbed:
        reason = available()
        if reason:
            raise RuntimeError(f"cannot build the testbed: {reason}")
        atexit.register(self.close)
        self._on_sigterm()
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

    def _on_sigterm(self) -> None:
        """``kill PID`` (SIGTERM) would end the process without ``finally`` blocks or atexit
        handlers and leave the namespaces, the cgroup and the qdiscs behind; turn it into
        ``SystemExit(143)`` so the teardown runs (main thread only, and only where nobody else
        installed a handler). :meth:`close` restores the previous handler."""
        import signal
        import threading

        self._old_sigterm = None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            def stop(signum, frame):  # noqa: ANN001, ARG001
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, stop)

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
                _run(["ip", "netns", "del", ns], check=False)  # deletes the veth pair and the loss rules
            self._up = False
            self._loss_chain.clear()
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
        if getattr(self, "_old_sigterm", None) is not None:
            import signal
            import threading

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

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
    def set_link(self, rate_mbps: float, rtt_ms: float = 0.0, loss_pct: float = 0.0, loss_dir: str = "up") -> str:
        """Shape both directions to ``rate_mbps`` (+ rtt/2 delay each way) and drop ``loss_pct`` % of
        the packets in ``loss_dir`` (``"up"``: edge -> cloud, the default; ``"down"``; ``"both"``).
        Callable during a run; returns (and stores in :attr:`link_mode`) what is in force."""
        loss_pct = parse_loss_pct(loss_pct)  # validate everything before touching the link
        _check_loss_dir(loss_dir)
        if loss_pct > 0 and self._iptables is None:  # fail before changing anything
            self._iptables = _find_iptables(self.cloud_ns)
        mode = "netem"
        for ns, dev in ((self.cloud_ns, self.cloud_dev), (self.edge_ns, self.edge_dev)):
            args = ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                    "rate", f"{rate_mbps}mbit", "delay", f"{rtt_ms / 2}ms"]
            if mode == "netem" and _run(args, check=False).returncode == 0:
                continue
            mode = "tbf"
            # 1 ms worth of bytes (at least 4 KB, a few MTUs): a larger bucket lets short transfers
            # through faster than the rate (a 16 KB bucket made 25 KB go ~2.5x faster at 20 Mbit/s)
            burst = max(4096, int(rate_mbps * 1e6 / 8 / 1000))
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                  "rate", f"{rate_mbps}mbit", "burst", str(burst), "latency", "2000ms"])
        loss = self.set_loss(loss_pct, loss_dir)
        if mode == "netem":
            self.link_mode = f"netem rate {rate_mbps}mbit delay {rtt_ms / 2}ms"
        elif self.delay_file is not None:
            self.delay_file.write_text(f"{rtt_ms / 2}\n")
            self.link_mode = f"tbf rate {rate_mbps}mbit + userspace relay delay {rtt_ms / 2}ms each way (sch_netem unavailable)"
        else:
            self.link_mode = f"tbf rate {rate_mbps}mbit (sch_netem unavailable: no added delay)"
        self.link_mode += f"; {loss}"
        return self.link_mode

    def set_loss(self, loss_pct: float, loss_dir: str = "up") -> str:
        """Random packet loss (see the module docstring), callable during a run; returns a description.
        Loss 0 needs no iptables unless a loss was set before (then its rules are emptied)."""
        loss_pct = parse_loss_pct(loss_pct)
        _check_loss_dir(loss_dir)
        lossy = set()
        if loss_pct > 0:
            lossy = {"up": {self.cloud_ns}, "down": {self.edge_ns}, "both": {self.cloud_ns, self.edge_ns}}[loss_dir]
        if lossy and self._iptables is None:
            self._iptables = _find_iptables(self.cloud_ns)
        rule = ["-m", "statistic", "--mode", "random", "--probability", f"{loss_pct / 100:.12g}", "-j", "DROP"]
        for ns, dev in ((self.cloud_ns, self.cloud_dev), (self.edge_ns, self.edge_dev)):
            if ns not in lossy and ns not in self._loss_chain:
                continue  # never had a loss rule: nothing to do, no iptables needed
            ipt = ["ip", "netns", "exec", ns, str(self._iptables), "-w", "5"]
            if ns not in self._loss_chain:
                _run(ipt + ["-N", LOSS_CHAIN])
                _run(ipt + ["-I", "INPUT", "1", "-i", dev, "-j", LOSS_CHAIN])
                self._loss_chain[ns] = False
            if ns in lossy:  # replace in place: no loss-free gap between two settings
                _run(ipt + (["-R", LOSS_CHAIN, "1"] if self._loss_chain[ns] else ["-A", LOSS_CHAIN]) + rule)
                self._loss_chain[ns] = True
            elif self._loss_chain[ns]:
                _run(ipt + ["-F", LOSS_CHAIN])
                self._loss_chain[ns] = False
        self.loss_pct, self.loss_dir = loss_pct, loss_dir
        if not loss_pct:
            return "loss 0%"
        where = {"up": "edge->cloud", "down": "cloud->edge", "both": "each direction"}[loss_dir]
        return f"loss {loss_pct:g}% {where} (iptables statistic drop)"

    def loss_drops(self) -> dict[str, int]:
        """Packets dropped by the loss rules since they were last set: ``{"up": n, "down": n}``."""
        out = {"up": 0, "down": 0}
        for key, ns in (("up", self.cloud_ns), ("down", self.edge_ns)):
            if self._loss_chain.get(ns):
                r = _run(["ip", "netns", "exec", ns, str(self._iptables), "-w", "5", "-L", LOSS_CHAIN, "-v", "-n", "-x"])
                rows = [ln.split() for ln in r.stdout.splitlines()[2:] if ln.split()]
                out[key] = sum(int(row[0]) for row in rows if row[0].isdigit())
        return out

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
