"""Latency of an edge whose CPU is limited by a bandwidth quota (Linux CFS).

A container's CPU limit (cgroup ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, e.g. Kubernetes
``limits: cpu: 100m``; the netns testbed's emulated edge) is not a uniformly slower CPU: in each
period of ``period_ms`` the group may run ``quota_ms`` at full speed, then it is throttled until
the next period starts. A long job averages ``quota_ms / period_ms`` of full speed; a short job
that starts with quota left runs at full speed. For split computing this matters: the edge is
idle while its request crosses the network and the cloud computes, so a split plan whose edge half
needs less CPU than one period's quota runs it unthrottled, which a whole-model slowdown factor
(every edge millisecond x ``period / quota``) over-prices by up to ``period_ms - quota_ms`` per
request.

Contract of :meth:`EdgeCpuQuota.request_latency_ms`: the mean latency of requests issued back to
back, each needing ``cpu_ms`` of the edge CPU (full-speed milliseconds) and then ``wait_ms`` off it
(network, the cloud half); the quota is refilled at each period boundary and does not accumulate
(no CFS burst); the mean is over the requests that start in ``_WINDOW`` periods (at least
``_REQUESTS``, at most ``_MAX_REQUESTS`` requests) after ``_WARMUP`` periods, for ``_PHASES``
starting points spread over one period; with ``wait_ms = 0``
the CPU is never idle and the mean is exactly ``cpu_ms * period / quota``. Exact for this model
(each request is computed in closed form, not in time steps: ``tests/test_cpu_quota.py`` checks it
against a simulation in 0.25-ms steps).

In the search (:class:`onnxsplit.search.problem.Link` ``edge_quota``) the problem's edge costs
stay on the *long-run* scale (a whole model run back to back on the limited CPU: what a
whole-model calibration measures), so the cut search's linear costs are unchanged; only a plan's
latency is evaluated with this model: CPU = edge ms x ``quota / period`` +
``request_cpu_ms`` (the client's own work per offloaded request), off-CPU = network + cloud,
averaged over a spread of that CPU time (``cpu_spread``).
All-edge plans run back to back on the CPU, i.e. at the long-run rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["EdgeCpuQuota", "check_objective", "fit_request_wait_ms"]

_PHASES = 8
_WARMUP = 2
_REQUESTS = 12
_WINDOW = 8  # periods: the mean is over requests starting in at least this many whole periods
_MAX_REQUESTS = 2000
_SPREAD = (-1.0, -0.5, 0.0, 0.5, 1.0)
_EPS = 1e-9


@dataclass(frozen=True)
class EdgeCpuQuota:
    """``quota_ms`` of CPU per ``period_ms`` (CFS bandwidth control) on the edge.

    ``request_cpu_ms``: edge CPU each offloaded request costs besides its edge half (HTTP client,
    serialization), full-speed ms. ``cpu_spread``: :meth:`plan_latency_ms` averages over request
    CPU times spread uniformly by +-that share (5 points), because a request's CPU time varies from
    request to request and the kernel enforces the quota at its own granularity (it let the testbed's
    edge run 11.6 % of the time under a 10 % quota): the exact model jumps by a whole period when the
    CPU crosses the quota, the real latency ramps (default 0.25; 0: the exact model). Latency
    objectives only: energy and throughput stay linear.
    """

    quota_ms: float
    period_ms: float
    request_cpu_ms: float = 0.0
    cpu_spread: float = 0.25

    def __post_init__(self) -> None:
        for name in ("quota_ms", "period_ms", "request_cpu_ms"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise UsageError(f"edge CPU quota: {name} must be a finite number >= 0, got {v}")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "cpu_spread", float(self.cpu_spread))
        if not 0 <= self.cpu_spread < 1:
            raise UsageError(f"edge CPU quota: cpu_spread must be in [0, 1), got {self.cpu_spread}")
        if not 0 < self.quota_ms <= self.period_ms:
            raise UsageError(f"edge CPU quota: need 0 < quota_ms <= period_ms, got quota_ms {self.quota_ms:g}, "
                             f"period_ms {self.period_ms:g} (e.g. 0.1 CPU: quota_ms 10, period_ms 100)")

    @classmethod
    def from_cpus(cls, cpus: float, period_ms: float = 100.0, request_cpu_ms: float = 0.0, **kw: float) -> EdgeCpuQuota:
        """``cpus`` CPUs (a container limit: 0.1 = ``100m``) over CFS periods of ``period_ms``
        (Linux default 100 ms)."""
        return cls(float(cpus) * float(period_ms), float(period_ms), request_cpu_ms, **kw)

    @property
    def cpus(self) -> float:
        """The long-run share of one CPU."""
        return self.quota_ms / self.period_ms

    def to_json(self) -> dict:
        return {"quota_ms": self.quota_ms, "period_ms": self.period_ms, "request_cpu_ms": self.request_cpu_ms,
                "cpu_spread": self.cpu_spread}

    def _run(self, t: float, k: int, used: float, cpu: float) -> tuple[float, int, float]:
        """Run ``cpu`` ms starting at time ``t`` in period ``k`` with ``used`` of its quota spent;
        returns (finish time, its period, quota used in it)."""
        q, p = self.quota_ms, self.period_ms
        end = (k + 1) * p
        avail = min(q - used, end - t)  # quota left, or the period ends first (then it is refilled)
        if cpu <= avail + _EPS:
            return t + cpu, k, used + cpu
        cpu -= max(avail, 0.0)
        k += 1  # throttled (or the period ended) until the next boundary
        full = max(math.ceil(cpu / q - _EPS) - 1, 0)  # whole periods spent at the quota
        k += full
        cpu -= full * q
        return k * p + cpu, k, cpu

    def request_latency_ms(self, cpu_ms: float, wait_ms: float = 0.0) -> float:
        """Mean latency of back-to-back requests needing ``cpu_ms`` on the edge CPU, then
        ``wait_ms`` off it (see the module docstring)."""
        cpu_ms, wait_ms = float(cpu_ms), float(wait_ms)
        if not (cpu_ms >= 0 and wait_ms >= 0):
            raise UsageError(f"cpu_ms and wait_ms must be >= 0, got {cpu_ms}, {wait_ms}")
        if math.isinf(cpu_ms) or math.isinf(wait_ms):
            return math.inf
        if cpu_ms <= _EPS:
            return wait_ms
        p = self.period_ms
        if wait_ms <= _EPS:  # the CPU is never idle: exactly the long-run rate
            return cpu_ms / self.cpus
        total, n = 0.0, 0
        for j in range(_PHASES):
            t0 = j * p / _PHASES
            t, k, used, i, kept = t0, 0, 0.0, 0, 0
            while True:
                start = t
                t, k, used = self._run(t, k, used, cpu_ms)
                t += wait_ms
                nk = int(math.floor(t / p + _EPS))
                if nk > k:
                    k, used = nk, 0.0
                if i >= _WARMUP and start >= t0 + _WARMUP * p:
                    total += t - start
                    n += 1
                    kept += 1
                    if (kept >= _REQUESTS and start >= t0 + (_WARMUP + _WINDOW) * p) or kept >= _MAX_REQUESTS:
                        break
                i += 1
        return total / n

    def plan_latency_ms(self, edge_ms: float, offload_ms: float | None) -> float:
        """Latency of a plan whose edge half costs ``edge_ms`` on the long-run scale and whose
        request then spends ``offload_ms`` off the edge CPU (network + cloud; ``None``: nothing is
        offloaded, all-edge)."""
        cpu = float(edge_ms) * self.cpus
        if offload_ms is None:
            return self.request_latency_ms(cpu, 0.0)  # CPU-bound back to back: the long-run rate, no spread needed
        return self.offload_latency_ms(cpu + self.request_cpu_ms, float(offload_ms))

    def offload_latency_ms(self, cpu_ms: float, wait_ms: float) -> float:
        """:meth:`request_latency_ms` averaged over ``cpu_ms`` spread by +-``cpu_spread``."""
        if self.cpu_spread == 0 or cpu_ms == 0 or math.isinf(cpu_ms):
            return self.request_latency_ms(cpu_ms, wait_ms)
        return sum(self.request_latency_ms(cpu_ms * (1 + self.cpu_spread * u), wait_ms) for u in _SPREAD) / len(_SPREAD)


def check_objective(objective: str) -> None:
    """An edge CPU quota is modelled for latency (and throughput: the long-run rate) only."""
    if objective not in ("latency", "throughput"):
        raise UsageError(f"an edge CPU limit is modelled for the latency and throughput objectives, not {objective!r}: "
                         "drop the limit or use --objective latency")


def fit_request_wait_ms(quota: EdgeCpuQuota, measured_ms: float, cpu_ms: float) -> float:
    """The off-CPU time per request (``w >= 0``) for which back-to-back requests of ``cpu_ms`` edge
    CPU take ``measured_ms`` on average under ``quota`` (e.g. from timed empty requests: their
    measured mean latency and their CPU time), with the same CPU spread as a plan's requests
    (:meth:`EdgeCpuQuota.offload_latency_ms`); the closest value on a 0.01-ms grid."""
    measured_ms, cpu_ms = float(measured_ms), float(cpu_ms)
    if not (math.isfinite(measured_ms) and measured_ms >= 0 and math.isfinite(cpu_ms) and cpu_ms >= 0):
        raise UsageError(f"measured_ms and cpu_ms must be finite numbers >= 0, got {measured_ms}, {cpu_ms}")
    if quota.offload_latency_ms(cpu_ms, 0.0) >= measured_ms:  # the CPU alone takes that long already
        return 0.0
    steps = max(int(measured_ms / 0.01), 0)
    best_w, best_err = 0.0, math.inf
    for i in range(steps + 1):
        w = i * 0.01
        err = abs(quota.offload_latency_ms(cpu_ms, w) - measured_ms)
        if err < best_err - 1e-12:
            best_w, best_err = w, err
    return best_w
