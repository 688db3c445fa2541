"""Dynamic split computing at run time: estimate the uplink, pick a plan per request.

:class:`BandwidthEstimator` -- the documented estimator. Each cloud round trip of a request that
moved ``B`` bytes (request tensors up + response tensors down) and whose timing breakdown reports
``network_ms`` (round trip minus the server's compute and (de)serialization, see
:mod:`onnxsplit.runtime.client`) gives one sample::

    sample_mbps = 8 * B / (1000 * max(network_ms - rtt_ms, min_ms))

``rtt_ms`` is the configured round-trip time, or (when not given) the running minimum of the
``network_ms`` of *small* transfers (``B < min_bytes``), which are dominated by latency and only
update that minimum. Samples of ``B >= min_bytes`` (and direct samples: probes, receiver-side
rates, below) update the estimate, clamped to ``[floor_mbps, ceil_mbps]``; before any sample it
is ``initial_mbps``. Two methods (``method``):

* ``"median"`` (the default): the estimate is the median of the last ``window`` (5) samples. A
  *trusted* sample (a receiver-side probe, itself the median of its repeats; a hedged request's
  bound; both below) replaces it and restarts the window: a link that collapsed or came back is
  believed at once (when only a jump beyond ``drop_factor`` was believed, a probe reading 4x the
  stale estimate of an all-edge runner was one sample among stale ones: MiniLM's runner stayed
  all-edge for 2 s at 20 Mbit/s on the testbed). An isolated sample far off does not move it (on
  the testbed: a sender stalled by its CPU quota in mid-body reads 3-10x low, a body that fitted
  in the token bucket's burst or that the delay relay coalesced reads 5-10x high); a real change
  does once it holds the majority of the window (3 samples), and a drop large enough to matter is
  caught sooner by the hedge.
* ``"ewma"``: an exponentially weighted moving average ``est <- alpha * sample + (1 - alpha) *
  est`` (the first sample sets it), except that any sample below ``est / drop_factor`` replaces the
  estimate (a collapsing link is believed at once: with the average alone, each of the next few
  requests would be sent on a plan sized for the old bandwidth), and so does a trusted sample above
  ``est * drop_factor``. It follows every low outlier: on the testbed its estimate collapsed under
  single stalled requests and the runner switched plans 3-10x as often as with the median
  (docs/e2e-results.md, ninth session).

The last samples are kept in ``history`` (``tools/bench_e2e.py`` records them per cell).

:class:`DynamicRunner` holds one :class:`~onnxsplit.runtime.EdgeRunner` per plan of a dynamic
bundle (:mod:`onnxsplit.dynamic_bundle`) and the policy table. Per request it reads the batch size
(leading dimension of the first input divided by the bundle's), looks the plan up at the current
estimate, runs it (a batch larger than the bundle's static batch runs as consecutive slices
through the same plan, outputs concatenated on axis 0), and feeds the response's timings back to
the estimator. Every plan is an exact split of the same model, so switching plans never changes
the answer (bit-identical with onnxruntime optimizations off). Requests are never dropped: if a
plan fails in any way (including a 4xx configuration error) the request is re-run on the
all-edge plan locally and the result says ``fallback=True``; after such a failure the cloud is
avoided for ``cooldown_s``. When the chosen plan sends nothing (all-edge) the estimate would go
stale: every ``probe_interval_s`` a background probe refreshes it: a *differential* probe to the
``/v2/onnxsplit/probe`` endpoint of the onnxsplit server (no compute on either side): empty POSTs
and POSTs of ``B`` zero bytes, alternated ``probe_repeats`` times on the same keep-alive
connection, and the sample ``8 * B / (min t_B - min t_empty)`` cancels the per-request cost and the
round-trip time (scheduling stalls only add time, so minima filter them). ``B`` targets
``probe_target_ms`` of transfer at ``probe_headroom`` times the current estimate (so a probe can
reveal a faster link than the estimate), within ``[min_bytes, probe_max_bytes]`` (16 KB .. 1 MB by
default). For a server without that endpoint
(Triton), one real round trip of zero-filled boundary tensors of the smallest plan that moves at
least ``min_bytes``.

**Receiver-side samples** (onnxsplit servers): the client's clock includes every stall of the
client's CPU, and an edge device at its CPU limit (the testbed's CFS quota; a busy board) stalls
often: on the testbed, differential probes read 14-29 Mbit/s on a 100 Mbit/s link while inference
kept the CPU busy. The server, on its own core, notes when the bytes of a probe or of an inference
request arrive (:class:`onnxsplit.runtime.server.ArrivalClock`: the rate over the body after its
first quarter, which may have come in one burst) and reports ``receive_bytes``/``receive_ms``
(``server_receive_bytes``/``server_receive_ms`` in inference responses). The kernel paces a sent
body at the link's rate whatever the sender's process does, so this rate is the link's. When a
server reports it, it is the sample (:func:`receiver_rate`; a probe's is the median over its
repeats). A probe body that arrived faster than the server could resolve is re-sent
``probe_escalation`` (8) times larger, up to ``probe_max_bytes``, so one probe finds a link far
faster than the estimate (on the testbed, 16 KB at 100 Mbit/s arrives within the token bucket's
burst); a request (or a largest probe) of ``B`` bytes that still is unresolvable counts as
``receiver_ramp`` (2) times the estimate, but at most ``8 * B / (1000 * unresolved_ms)`` (the rate
at which ``B`` bytes take ``unresolved_ms``, 0.1 ms: an unresolvable body says the link is at
least that fast, not how much faster) and at least the estimate (a body the estimate already calls
unresolvable says nothing new). Without the upper bound a run of unresolvable requests doubled the
estimate per request up to ``ceil_mbps``: on the testbed at 1000 Mbit/s, 25 KB bodies took the
median estimate to 100 Gbit/s in 25 requests. The downlink is sampled on its receiver side too:
when a response's binary outputs (at least ``min_bytes``) took at least ``downlink_min_ms`` (50)
to arrive at the edge, their rate over the bundle's down/up bandwidth ratio is one more sample,
taken after the request's
uplink sample (a link that slows down while a request is in flight shows on its response first;
shorter reads are not timed: an edge process can be descheduled for a scheduling period).
Requests moving fewer than ``min_bytes`` still only update the rtt minimum. ``probe()`` runs one
synchronously (done on start when ``probe_on_start``). A request whose sample collapsed the
estimate also starts a probe at once: the collapse is believed for the next requests, but a sender
stalled in the middle of its body (an edge at its CPU quota) makes the server see a gap and read a
rate far below the link's, and the probe (a median of repeats) then restores the estimate within
one probe instead of one probe interval.

**Feedback** (:class:`PlanFeedback`, on by default: ``feedback=True``): the table is only as good
as its latency model, which adds edge, transfer and cloud times. For batch-1 requests the runner
also records each plan's observed total latency minus its model latency at the estimate it was
chosen at, and picks the plan with the lowest corrected latency near the current estimate (the
table's plan unless another is better by more than 3 %; then the plan used last unless that choice
is better than it by more than 5 %: hysteresis, so a jittering estimate does not switch between
plans predicted within a few percent of each other). The first request after a switch or after a
pause (idle for more than ``cold_after_s``, 1 s, and 4x the previous idle time) is no residual: it
pays the switch or the pause. The
model terms per plan come from the bundle (:func:`onnxsplit.plan_timing.bundle_plan_terms`: the
measured halves after ``onnxsplit policy --timings``, else the compile-time predictions); a bundle
without either runs the table as is. ``feedback=False`` turns it off.

**Hedging** (on by default: ``hedge=True``; needs the same latency model as the feedback): the
cloud round trip of a batch-1 request (after its edge half) gets a deadline of ``hedge_factor`` (2)
x the plan's whole predicted latency at the estimate (corrected by the feedback) +
``hedge_slack_ms`` (50) (:meth:`DynamicRunner.deadline_ms`). The edge runner sends the body and reads
the answer against that deadline (``EdgeRunner.infer(cloud_deadline_s=...)``, in the calling thread:
no thread hand-off, which on an edge at its CPU quota can cost whole scheduling periods). A round
trip still unanswered then is stopped (the connection is closed, so the abandoned body stops
taking the uplink) and the request is *hedged*: the runner runs :attr:`DynamicRunner.hedge_plan`
(the table's plan at the lowest bandwidth when it sends nothing, e.g. an int8 all-edge plan; else
all-edge) and returns its answer (``DynamicResult.plan`` is that plan, ``hedged_from`` the
abandoned one). A hedge is also a sample: a body of ``B`` bytes unanswered after ``T`` ms says the
link is at most ``8 * B / (1000 * T)`` Mbit/s (when the answer had started, the same bound for its
announced bytes over the time spent reading them, over the down/up ratio), which replaces a higher
estimate when it is a collapse (and starts a probe at once, as above). So a request sent on a stale estimate (the link
dropped between two requests) costs about its deadline plus the local plan, not the whole
transfer at the new rate. Hedged requests are not feedback residuals.

Thread-safe: the estimator and the feedback are locked and EdgeRunners are shareable between
threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dynamic_bundle import DynamicBundle, load_dynamic_bundle
from .errors import UsageError

__all__ = ["BandwidthEstimator", "DynamicRunner", "DynamicResult", "PlanFeedback", "receiver_rate", "serve_plans"]


class BandwidthEstimator:
    """Uplink estimator (see the module docstring for the formula and the two ``method`` s).

    ``method``: ``"median"`` (the default: the median of the last ``window`` samples) or
    ``"ewma"``. ``history`` keeps the last ``history_len`` samples as ``(time.monotonic(), sample
    Mbit/s, trusted, estimate after)`` for benchmarks and debugging."""

    METHODS = ("ewma", "median")

    def __init__(self, initial_mbps: float = 10.0, *, alpha: float = 0.3, rtt_ms: float | None = None,
                 min_bytes: int = 16 * 1024, min_ms: float = 0.05, floor_mbps: float = 0.01, ceil_mbps: float = 1e5,
                 drop_factor: float = 4.0, method: str = "median", window: int = 5, history_len: int = 4096):
        if not 0 < alpha <= 1:
            raise UsageError("alpha must be in (0, 1]")
        if method not in self.METHODS:
            raise UsageError(f"unknown bandwidth estimator method {method!r}; known: {', '.join(self.METHODS)}")
        if int(window) < 1:
            raise UsageError("window must be >= 1")
        self.method = method
        self.window = int(window)
        self.alpha = float(alpha)
        self.initial_mbps = float(initial_mbps)
        self.fixed_rtt = rtt_ms
        self.min_bytes = int(min_bytes)
        self.min_ms = float(min_ms)
        if not drop_factor > 1:
            raise UsageError("drop_factor must be > 1")
        self.drop_factor = float(drop_factor)
        self.floor_mbps, self.ceil_mbps = float(floor_mbps), float(ceil_mbps)
        self._lock = threading.Lock()
        self._est: float | None = None
        self._recent: deque[float] = deque(maxlen=self.window)  # the median's window
        self._rtt_min: float | None = None
        self.samples = 0
        self.last_update = 0.0  # time.monotonic() of the last bandwidth sample
        self.history: deque[tuple[float, float, bool, float]] = deque(maxlen=max(0, int(history_len)))

    @property
    def rtt_ms(self) -> float:
        if self.fixed_rtt is not None:
            return float(self.fixed_rtt)
        return self._rtt_min if self._rtt_min is not None else 0.0

    @property
    def mbps(self) -> float:
        with self._lock:
            return self._est if self._est is not None else self.initial_mbps

    def reset(self, mbps: float | None = None) -> None:
        """Forget every sample; the estimate becomes ``mbps`` (a sample-free start: ``initial_mbps``)."""
        with self._lock:
            self._recent.clear()
            if mbps is None:
                self._est = None
            else:
                self._est = min(max(float(mbps), self.floor_mbps), self.ceil_mbps)
                self._recent.append(self._est)

    def sample(self, nbytes: int, network_ms: float) -> float | None:
        """The bandwidth sample of one transfer (None when it only updates the rtt)."""
        if nbytes < self.min_bytes:
            return None
        t = max(network_ms - self.rtt_ms, self.min_ms)
        return 8.0 * nbytes / (1000.0 * t)

    def update(self, nbytes: int, network_ms: float) -> float:
        """Feed one transfer; returns the current estimate."""
        if not (math.isfinite(network_ms) and network_ms >= 0):
            return self.mbps
        with self._lock:
            if nbytes < self.min_bytes:
                self._rtt_min = network_ms if self._rtt_min is None else min(self._rtt_min, network_ms)
            s = self.sample(nbytes, network_ms)
            if s is not None:
                self._add(s)
            return self._est if self._est is not None else self.initial_mbps

    def add_sample(self, mbps: float, *, trusted: bool = False) -> float:
        """Feed one direct bandwidth sample (e.g. from a probe); returns the estimate. A ``trusted``
        sample (a receiver-side probe: the median of its repeats; a hedged request's bound) more than
        ``drop_factor`` times above the estimate replaces it, as a collapse does: a link that came
        back is believed at once; with ``method="median"`` every trusted sample replaces it."""
        if not (math.isfinite(mbps) and mbps > 0):
            return self.mbps
        with self._lock:
            self._add(mbps, trusted=trusted)
            return float(self._est)  # type: ignore[arg-type]

    def _add(self, s: float, *, trusted: bool = False) -> None:  # caller holds the lock
        s = min(max(s, self.floor_mbps), self.ceil_mbps)
        est = self._est
        if self.method == "median":
            if est is None or trusted:
                self._recent.clear()
            self._recent.append(s)
            w = sorted(self._recent)  # at most `window` values: cheaper than np.median on an edge CPU
            n = len(w)
            self._est = w[n // 2] if n % 2 else 0.5 * (w[n // 2 - 1] + w[n // 2])
        elif est is None or s < est / self.drop_factor or (trusted and s > est * self.drop_factor):
            self._est = s
        else:
            self._est = self.alpha * s + (1 - self.alpha) * est
        self.samples += 1
        self.last_update = time.monotonic()
        if self.history.maxlen:
            self.history.append((self.last_update, s, bool(trusted), self._est))


class PlanFeedback:
    """Closed-loop correction of the batch-1 plan choice from the latencies the runner observes.

    The policy table is built from a latency model (predicted per-node costs, or measured halves
    plus a link model) that is additive: edge + transfer + cloud. Real requests are not always
    additive (a CPU quota that a request's edge work overruns stalls it for a whole period; a cost
    model misranks two plans a few percent apart). This keeps, per plan, the residuals
    ``observed total ms - predicted ms at the estimate used`` of its recent requests and chooses
    the plan with the lowest *corrected* latency::

        score(k, bw) = a_k + b_k / bw + median(residuals of k observed near bw, at most
                                               max_age_s old, the last `window` of them;
                                               none with fewer than `min_count`)

    "near" (:meth:`near`): within ``bandwidth_factor`` of ``bw``, or where plan k's model latency
    is within ``near_ms`` / ``near_fraction`` of its value at ``bw`` (the estimate of a fast link
    jitters by several x, which changes little for a plan that moves few bytes).

    A plan without such residuals scores its prediction (so one slow request of a plan whose
    latencies are bimodal, as under a CPU quota, does not send the runner exploring). The runner
    does not record a request during which its bandwidth estimate moved by more than
    ``bandwidth_factor`` (that request timed a link change). The table's plan (the one the runner
    would use without feedback) is kept unless another scores lower by more than ``margin``
    (relative). Only plans given in ``terms`` (the policy candidates: fp32 plans and int8 plans
    within their accuracy budget) are ever chosen. **Hysteresis**: the plan the runner used last
    (``incumbent``) is kept unless the plan chosen as above scores lower by more than
    ``hysteresis`` (relative, 5 %): at high bandwidths several plans are predicted within a
    millisecond of each other, and an estimate that jitters by 2x would otherwise switch between
    them request by request (on the testbed at 1000 Mbit/s YOLOv8n's runner used six plans in 71
    requests; a switch costs, e.g. the first request on another connection).

    **Re-try** (``retry_after``): residuals say how a plan ran when it was last used, and an
    abandoned plan would keep them for ``max_age_s``. A slow spell (the edge's CPU quota, a burst of
    load on the server) can make the best plan read slow for a few requests; the runner moves to
    another, and the spell's residuals would keep it away after the spell ended (YOLOv8n testbed run
    s9d: 25-29 ms on the plan it moved to for the rest of the cell, 20 ms on the one it left). So a
    plan that has not been observed for ``retry_after`` recorded requests (of any plan) scores its
    prediction again, and its old residuals are dropped when it is next observed: the runner tries
    it again if the model says it is better. Each re-try that finds the plan still slow doubles that
    plan's interval (up to ``retry_max``); ``window`` requests of the plan in a row reset it. The cost
    of a plan that is really slower than predicted: a re-try (one cold request and ``min_count``
    recorded ones) after 20, 40, 80, ... requests elsewhere.

    Convergence (what the tests check): with noise-free latencies, once every plan scoring below
    the table plan's observed latency has been tried, the plan kept is never slower than the table
    plan by more than ``margin``; when every prediction is optimistic (no plan is faster than
    predicted) it is the fastest plan. A plan that is *faster* than predicted is only found if
    it is tried, i.e. if the plans scoring below it turn out slower than it. Each try costs up to
    ``min_count`` requests on a plan that may be slow (``DynamicRunner`` records no residual for
    the first request after a switch or after a pause, which pays for that, so there one more).
    """

    def __init__(self, terms: Mapping[int, tuple[float, float]], *, window: int = 5, min_count: int = 2,
                 bandwidth_factor: float = 2.0, max_age_s: float = 60.0, margin: float = 0.03, history: int = 16,
                 near_ms: float = 0.5, near_fraction: float = 0.05, hysteresis: float = 0.05,
                 retry_after: int = 20, retry_max: int = 640):
        if not 1 <= min_count <= window <= history:
            raise UsageError("PlanFeedback needs 1 <= min_count <= window <= history")
        if not 1 <= retry_after <= retry_max:
            raise UsageError("PlanFeedback needs 1 <= retry_after <= retry_max")
        self.retry_after, self.retry_max = int(retry_after), int(retry_max)
        self._n = 0  # recorded requests, all plans
        self._seen: dict[int, int] = {}  # plan -> self._n at its newest observation
        self._interval: dict[int, int] = {}  # plan -> its current re-try interval (requests)
        self._streak: tuple[int | None, int] = (None, 0)  # (plan, how many of its requests in a row)
        if not bandwidth_factor > 1 or not max_age_s > 0 or not 0 <= margin < 1 or not 0 <= hysteresis < 1:
            raise UsageError("PlanFeedback needs bandwidth_factor > 1, max_age_s > 0, 0 <= margin < 1 and 0 <= hysteresis < 1")
        self.hysteresis = float(hysteresis)
        self.terms = {int(k): (float(a), float(b)) for k, (a, b) in terms.items()}
        self.window, self.min_count = int(window), int(min_count)
        self.max_age_s, self.margin = float(max_age_s), float(margin)
        self.near_ms, self.near_fraction = float(near_ms), float(near_fraction)
        self.log_bandwidth_factor = math.log(float(bandwidth_factor))
        # per plan, oldest first: (monotonic s, ln Mbit/s, model ms there, residual ms)
        self._obs: dict[int, deque[tuple[float, float, float, float]]] = {k: deque(maxlen=int(history)) for k in self.terms}
        self._lock = threading.Lock()

    def predict(self, k: int, mbps: float) -> float:
        a, b = self.terms[k]
        return a + b / max(float(mbps), 1e-9)

    def near(self, k: int, mbps_seen: float, mbps: float) -> bool:
        """Does a residual of plan ``k`` observed at ``mbps_seen`` apply at ``mbps``? Yes when the
        two bandwidths are within ``bandwidth_factor`` of each other, or when the plan's model
        latency differs by at most ``near_ms`` or ``near_fraction`` of it between them (a plan that
        moves few bytes has nearly the same latency at 400 and at 4000 Mbit/s)."""
        return self._near(math.log(max(mbps_seen, 1e-9)), self.predict(k, mbps_seen),
                          math.log(max(mbps, 1e-9)), self.predict(k, mbps))

    def _near(self, lb0: float, p0: float, lb1: float, p1: float) -> bool:
        if abs(lb0 - lb1) <= self.log_bandwidth_factor + 1e-9:
            return True
        return abs(p0 - p1) <= max(self.near_ms, self.near_fraction * min(p0, p1))

    def residual(self, k: int, mbps: float, now: float | None = None) -> float | None:
        """Median residual (ms) of plan ``k``'s last ``window`` requests near ``mbps`` within
        ``max_age_s``; None with fewer than ``min_count`` of them. Cheap (it runs before every
        request, on the edge device's CPU): at most ``history`` entries per plan, newest first."""
        now = time.monotonic() if now is None else now
        lb, p = math.log(max(float(mbps), 1e-9)), self.predict(k, mbps)
        got: list[float] = []
        with self._lock:
            if self._stale(k):
                return None
            for t, lb0, p0, r in reversed(self._obs.get(k, ())):
                if now - t > self.max_age_s:
                    break
                if self._near(lb0, p0, lb, p):
                    got.append(r)
                    if len(got) >= self.window:
                        break
        if len(got) < self.min_count:
            return None
        got.sort()
        n = len(got)
        return got[n // 2] if n % 2 else 0.5 * (got[n // 2 - 1] + got[n // 2])

    def score(self, k: int, mbps: float, now: float | None = None) -> float:
        r = self.residual(k, mbps, now)
        return self.predict(k, mbps) + (r if r is not None else 0.0)

    def choose(self, mbps: float, default: int, allowed: Any = None, now: float | None = None,
               incumbent: int | None = None) -> int:
        """The plan to run at ``mbps``: ``default`` (the table's) unless an allowed candidate plan
        scores lower by more than ``margin``; then ``incumbent`` (the plan used last) instead unless
        that choice scores lower than it by more than ``hysteresis``."""
        now = time.monotonic() if now is None else now
        best, best_score, default_score = default, math.inf, None
        scores: dict[int, float] = {}
        for k in self.terms:
            if allowed is not None and k not in allowed:
                continue
            sc = scores[k] = self.score(k, mbps, now)
            if k == default:
                default_score = sc
            if sc < best_score:
                best, best_score = k, sc
        chosen, chosen_score = best, best_score
        if default_score is not None and best_score >= default_score * (1.0 - self.margin):
            chosen, chosen_score = default, default_score
        if (incumbent is not None and incumbent != chosen and incumbent in scores and math.isfinite(chosen_score)
                and chosen_score >= scores[incumbent] * (1.0 - self.hysteresis)):
            return incumbent
        return chosen

    def observe(self, k: int, mbps: float, total_ms: float, now: float | None = None) -> None:
        """Record one request of plan ``k`` chosen at estimate ``mbps`` that took ``total_ms``."""
        if k not in self.terms or not (math.isfinite(total_ms) and total_ms >= 0 and mbps > 0):
            return
        now = time.monotonic() if now is None else now
        p = self.predict(k, mbps)
        with self._lock:
            if self._stale(k):  # a re-try: what the plan did before it was left no longer counts
                self._obs[k].clear()
                self._interval[k] = min(2 * self._interval.get(k, self.retry_after), self.retry_max)
            self._obs[k].append((now, math.log(float(mbps)), p, float(total_ms) - p))
            self._n += 1
            self._seen[k] = self._n
            last, run = self._streak
            self._streak = (k, run + 1 if last == k else 1)
            if self._streak[1] >= self.window:
                self._interval.pop(k, None)

    def _stale(self, k: int) -> bool:
        """Has plan ``k`` (observed before) gone ``retry_after`` (or its backed-off interval)
        recorded requests without an observation? Call with the lock held."""
        seen = self._seen.get(k)
        return seen is not None and self._n - seen > self._interval.get(k, self.retry_after)


@dataclass
class DynamicResult:
    outputs: dict[str, np.ndarray]
    timings_ms: dict[str, float]
    plan: int
    batch_size: int
    estimate_mbps: float  # estimate used to choose the plan
    fallback: bool = False
    error: str | None = None
    results: list = field(default_factory=list)  # per-slice runtime Results
    hedged_from: int | None = None  # plan abandoned at its deadline (``plan`` answered instead)


#: receiver-side rates need at least this many bytes and this long a window to be trusted
RECEIVER_MIN_BYTES = 4096
RECEIVER_MIN_MS = 0.05


def receiver_rate(nbytes: Any, ms: Any) -> float | None:
    """Mbit/s from a server's arrival report (``nbytes`` arrived over ``ms``), or None when the
    report is missing or too small to resolve (the bytes were all there at once)."""
    if not isinstance(nbytes, (int, float)) or not isinstance(ms, (int, float)):
        return None
    if nbytes < RECEIVER_MIN_BYTES or ms < RECEIVER_MIN_MS:
        return None
    return 8.0 * float(nbytes) / (1000.0 * float(ms))


def _cloud_bytes(bundle: Any) -> tuple[int, set[str]]:
    up = sum(b.bytes_on_wire for b in bundle.boundary)
    return up, {n for n, s in bundle.outputs if s == "cloud"}


class DynamicRunner:
    """Pick a plan per request from the bandwidth estimate (see the module docstring).

    ``servers``: a URL used for every plan (a server hosting every plan's cloud model), or a mapping
    plan id -> URL (e.g. from :func:`serve_plans`); plans without a URL run their cloud half locally.
    ``plans``: restrict to these plan ids (all-edge is always kept). ``runner_kwargs`` go to every
    EdgeRunner (timeouts, retries, optimize, ...). ``force_plan``: always use this plan (baselines).
    """

    def __init__(self, bundle: str | Path | DynamicBundle, servers: str | Mapping[int, str] | None, *,
                 estimator: BandwidthEstimator | None = None, plans: list[int] | None = None,
                 cooldown_s: float = 5.0, probe_on_start: bool = True, probe_interval_s: float = 2.0,
                 force_plan: int | None = None, probe_target_ms: float = 8.0, probe_max_bytes: int = 1 << 20,
                 probe_headroom: float = 4.0, probe_repeats: int = 3, receiver_ramp: float = 2.0,
                 probe_escalation: int = 8, downlink_min_ms: float = 50.0, unresolved_ms: float = 0.1,
                 feedback: bool | PlanFeedback = True, hedge: bool = True, hedge_factor: float = 2.0,
                 hedge_slack_ms: float = 50.0, cold_after_s: float = 1.0, **runner_kwargs: Any):
        from .runtime import EdgeRunner

        self.bundle = bundle if isinstance(bundle, DynamicBundle) else load_dynamic_bundle(bundle)
        self.estimator = estimator or BandwidthEstimator()
        keep = set(range(len(self.bundle.plans))) if plans is None else set(plans) | {self.bundle.all_edge}
        self.runners: dict[int, Any] = {}
        kw = {"retries": 1, "timeout": 30.0, **runner_kwargs}
        for k in sorted(keep):
            url = servers if isinstance(servers, str) or servers is None else servers.get(k)
            self.runners[k] = EdgeRunner(self.bundle.plan_dir(k), url, **kw)
        self.cooldown_s = cooldown_s
        self.probe_interval_s = probe_interval_s
        self.force_plan = force_plan
        self.probe_target_ms = float(probe_target_ms)
        self.probe_max_bytes = int(probe_max_bytes)
        self.probe_headroom = float(probe_headroom)
        self.probe_repeats = int(probe_repeats)
        if not receiver_ramp > 1:
            raise UsageError("receiver_ramp must be > 1")
        self.receiver_ramp = float(receiver_ramp)
        if not unresolved_ms > 0:
            raise UsageError("unresolved_ms must be > 0")
        self.unresolved_ms = float(unresolved_ms)
        if int(probe_escalation) < 2:
            raise UsageError("probe_escalation must be >= 2")
        self.probe_escalation = int(probe_escalation)
        self.downlink_min_ms = float(downlink_min_ms)
        self._down_ratio = float((self.bundle.manifest.get("link") or {}).get("downlink_over_uplink", 1.0))
        self.feedback: PlanFeedback | None = None
        if isinstance(feedback, PlanFeedback):
            self.feedback = feedback
        elif feedback:
            from .plan_timing import bundle_plan_terms

            terms = bundle_plan_terms(self.bundle)
            self.feedback = PlanFeedback(terms) if terms else None
        if not hedge_factor >= 1 or not hedge_slack_ms >= 0:
            raise UsageError("hedge_factor must be >= 1 and hedge_slack_ms >= 0")
        self.hedge_factor, self.hedge_slack_ms = float(hedge_factor), float(hedge_slack_ms)
        self.cold_after_s = float(cold_after_s)
        self._hedge_model: PlanFeedback | None = None  # predicts a plan's latency for its deadline
        if hedge:
            if self.feedback is not None:
                self._hedge_model = self.feedback
            else:
                from .plan_timing import bundle_plan_terms

                terms = bundle_plan_terms(self.bundle)
                self._hedge_model = PlanFeedback(terms) if terms else None
        self.hedge_plan = self._local_plan()
        self._probe_endpoint = True  # until a server answers 404 to it
        self._down_until = 0.0
        self._last_plan: int | None = None  # the last plan chosen normally (hysteresis' incumbent)
        self._prev_run_plan: int | None = None  # the plan the previous request ran, whatever the reason
        self._last_end: float | None = None  # perf_counter() at the end of the previous request
        self._prev_gap_s: float | None = None  # idle time before the previous request
        self._probe_lock = threading.Lock()
        self._probing = False
        self.counts: dict[int, int] = {k: 0 for k in self.runners}
        self._count_lock = threading.Lock()
        first = self.runners[self.bundle.all_edge].bundle
        self._base_batch = {s.name: (s.shape[0] if s.shape and s.shape[0] else 1) for s in first.edge_inputs}
        if probe_on_start and self._probe_plan() is not None:
            try:
                self.probe()
            except Exception:  # noqa: BLE001 - a failed probe only leaves the initial estimate
                pass

    # ------------------------------------------------------------------ plan choice
    def choose(self, batch_size: int = 1, mbps: float | None = None) -> int:
        """Plan id for a batch size at ``mbps`` (default: the current estimate)."""
        if self.force_plan is not None:
            return self.force_plan
        if time.monotonic() < self._down_until:
            return self.bundle.all_edge
        bw = self.estimator.mbps if mbps is None else mbps
        k = self.bundle.lookup(bw, batch_size)
        if k not in self.runners:  # restricted set: best allowed plan by the table's own order
            k = self.bundle.all_edge
        if self.feedback is not None and batch_size == 1:
            k = self.feedback.choose(bw, k, allowed=self.runners, incumbent=getattr(self, "_last_plan", None))
        return k

    def _local_plan(self) -> int:
        """The plan a hedged request falls back to: the table's plan at the lowest bandwidth if it
        sends nothing (e.g. an int8 all-edge plan), else the all-edge plan."""
        k = self.bundle.lookup(self.estimator.floor_mbps, 1)
        r = self.runners.get(k)
        return k if r is not None and r.bundle.cloud_path is None else self.bundle.all_edge

    def deadline_ms(self, k: int, mbps: float) -> float | None:
        """How long the cloud round trip of a batch-1 request of plan ``k`` chosen at ``mbps`` may
        take before the runner hedges it (``hedge_factor`` x the plan's whole predicted latency,
        corrected by the feedback, + ``hedge_slack_ms``); None where it is not hedged (no cloud
        half, no latency model)."""
        m = getattr(self, "_hedge_model", None)
        r = self.runners.get(k)
        if m is None or k not in m.terms or r is None or r.server_url is None or r.bundle.cloud_path is None:
            return None
        if k == getattr(self, "hedge_plan", self.bundle.all_edge):
            return None
        ms = m.score(k, mbps) if m is self.feedback else m.predict(k, mbps)
        if not math.isfinite(ms):
            return None
        return self.hedge_factor * max(ms, 0.0) + self.hedge_slack_ms

    def _probe_plan(self) -> int | None:
        cands = []
        for k, r in self.runners.items():
            if r.server_url is None or r.bundle.cloud_path is None:
                continue
            up, _ = _cloud_bytes(r.bundle)
            cands.append((up < self.estimator.min_bytes, up if up >= self.estimator.min_bytes else -up, k))
        return min(cands)[2] if cands else None

    def probe(self) -> float:
        """One real round trip with zero-filled boundary tensors; updates and returns the estimate."""
        k = self._probe_plan()
        if k is None:
            return self.estimator.mbps
        r = self.runners[k]
        if self._probe_endpoint:
            from .runtime.client import RemoteError

            try:
                mbps, trusted = self._probe_rate(r)
                return self.estimator.add_sample(mbps, trusted=trusted)
            except RemoteError as exc:
                if exc.status not in (404, 405):
                    raise
                self._probe_endpoint = False  # not an onnxsplit server: probe with real tensors
        from .runtime.protocol import np_dtype

        tensors = {t.name: np.zeros([d or 1 for d in t.shape], dtype=np_dtype(t.datatype)) for t in r.bundle.cloud_inputs}
        outs, t, _attempts, _srv = r.cloud_infer(tensors)
        down = sum(int(v.nbytes) for v in outs.values())
        return self.estimator.update(sum(int(v.nbytes) for v in tensors.values()) + down, t["network"])

    def probe_bytes(self) -> int:
        """Size of the next differential probe (see the module docstring)."""
        # sized for probe_headroom x the estimate, so one probe can reveal a much faster link
        want = self.estimator.mbps * self.probe_headroom * 125.0 * self.probe_target_ms  # Mbit/s * ms -> bytes
        return int(min(max(want, self.estimator.min_bytes), max(self.probe_max_bytes, self.estimator.min_bytes)))

    def unresolved_rate(self, nbytes: int) -> float:
        """The sample of a body of ``nbytes`` that arrived too fast for the server to time: the
        estimate x ``receiver_ramp``, at most the rate at which ``nbytes`` take ``unresolved_ms``,
        at least the estimate (see the module docstring)."""
        est = self.estimator.mbps
        bound = 8.0 * max(int(nbytes), 0) / (1000.0 * getattr(self, "unresolved_ms", 0.1))
        return max(min(est * self.receiver_ramp, bound), est)

    def probe_sample(self, runner: Any) -> float:
        """One probe through ``runner``'s server: Mbit/s (``nan`` if not measurable); see :meth:`_probe_rate`."""
        return self._probe_rate(runner)[0]

    def _probe_rate(self, runner: Any) -> tuple[float, bool]:
        """One probe through ``runner``'s server: Mbit/s (``nan`` if not measurable).

        Receiver-side when the server reports arrival times (see the module docstring): the median
        of the repeats' rates. A body that arrived faster than the server could resolve is sent
        again ``probe_escalation`` times larger (up to ``probe_max_bytes``), so one probe finds a
        much faster link; if even that is unresolvable, :meth:`unresolved_rate`. Without
        arrival times: differential (client clock). Returns (Mbit/s, whether it is a receiver-side
        median, which the estimator trusts to raise the estimate at once)."""
        n = self.probe_bytes()
        cap = max(self.probe_max_bytes, n)
        t0 = runner.probe_network(0)  # also (re)opens the keep-alive connection
        while True:
            t1 = math.inf
            rates, instant = [], 0
            for _ in range(max(1, self.probe_repeats)):  # delays only add: the minimum filters them out
                ms, answer = runner.probe_network(n, details=True)
                t1 = min(t1, ms)
                t0 = min(t0, runner.probe_network(0))
                r = receiver_rate(answer.get("receive_bytes"), answer.get("receive_ms"))
                if r is not None:
                    rates.append(r)
                elif "receive_bytes" in answer:
                    instant += 1
            if rates:
                return float(np.median(rates)), True
            if not instant:
                return (8.0 * n / (1000.0 * (t1 - t0)) if t1 > t0 else float("nan")), False
            if n >= cap:
                return self.unresolved_rate(n), False
            n = min(n * self.probe_escalation, cap)

    def _maybe_probe(self, *, now: bool = False) -> None:
        """Probe in the background if the estimate is older than ``probe_interval_s`` (or at once
        with ``now``); one probe at a time; never with ``probe_interval_s <= 0``."""
        if self.probe_interval_s <= 0:
            return
        if not now and time.monotonic() - self.estimator.last_update < self.probe_interval_s:
            return
        with self._probe_lock:
            if self._probing:
                return
            self._probing = True

        def run() -> None:
            try:
                self.probe()
            except Exception:  # noqa: BLE001
                pass
            finally:
                with self._probe_lock:
                    self._probing = False

        threading.Thread(target=run, name="onnxsplit-bw-probe", daemon=True).start()

    # ------------------------------------------------------------------ inference
    def batch_size_of(self, feeds: Mapping[str, np.ndarray]) -> int:
        for name, base in self._base_batch.items():
            if name in feeds:
                n = int(np.shape(feeds[name])[0]) if np.ndim(feeds[name]) else 1
                if n % base:
                    raise UsageError(f"input '{name}' has leading dimension {n}, not a multiple of the bundle's {base}")
                return max(1, n // base)
        return 1

    def _run_plan(self, k: int, feeds: Mapping[str, np.ndarray], b: int) -> tuple[dict, list]:
        r = self.runners[k]
        if b == 1:
            res = r.infer(feeds)
            return res.outputs, [res]
        results, outs = [], []
        for i in range(b):
            part = {n: np.asarray(v)[i * self._base_batch.get(n, 1):(i + 1) * self._base_batch.get(n, 1)]
                    for n, v in feeds.items()}
            res = r.infer(part)
            results.append(res)
            outs.append(res.outputs)
        return {n: np.concatenate([o[n] for o in outs], axis=0) for n in outs[0]}, results

    def _hedged(self, k: int, exc: Any) -> None:
        """A cloud round trip of plan ``k`` stopped at its deadline (``exc``: the
        :class:`~onnxsplit.runtime.client.DeadlineExceeded`). No answer had started: its body of
        ``B`` bytes was not answered within ``T`` ms, so the uplink is at most ``8 * B / (1000 * T)``
        Mbit/s. The answer had started (the body got through): the downlink was too slow for the
        ``R`` announced bytes, so it is at most ``8 * R / (1000 * t)`` over ``t`` ms of reads (the
        received part's own rate when it is a sample, see ``downlink_min_ms``), which over the
        bundle's down/up ratio is an uplink figure. Either is a sample when below the estimate."""
        mbps = None
        resp = int(getattr(exc, "resp_nbytes", 0) or 0)
        rx, rx_ms = int(getattr(exc, "recv_nbytes", 0) or 0), float(getattr(exc, "recv_ms", 0.0) or 0.0)
        if resp or rx:
            n = rx if rx >= self.estimator.min_bytes and rx_ms >= self.downlink_min_ms else resp
            if n >= self.estimator.min_bytes and rx_ms > 0:
                mbps = 8.0 * n / (1000.0 * rx_ms) / self._down_ratio
        else:
            up = max(int(getattr(exc, "body_nbytes", 0) or 0), _cloud_bytes(self.runners[k].bundle)[0])
            t = float(getattr(exc, "elapsed_ms", 0.0) or 0.0)
            if up >= self.estimator.min_bytes and t > 0:
                mbps = 8.0 * up / (1000.0 * t)
        if mbps is not None and mbps < self.estimator.mbps:  # a bound, not a noisy rate: trusted
            self.estimator.add_sample(mbps, trusted=True)

    def _learn(self, k: int, results: list) -> tuple[bool, str | None]:
        """Bandwidth samples of plan ``k``'s runtime results; returns (any fell back, first error)."""
        fallback, error = False, None
        for res in results:
            if res.fallback:
                fallback = True
                error = error or res.error
                self._down_until = time.monotonic() + self.cooldown_s
            elif res.attempts:
                up, cloud_out = _cloud_bytes(self.runners[k].bundle)
                srv = res.server_timings_ms
                if up >= self.estimator.min_bytes and "server_receive_bytes" in srv:  # receiver-side sample
                    r = receiver_rate(srv["server_receive_bytes"], srv.get("server_receive_ms"))
                    self.estimator.add_sample(r if r is not None else self.unresolved_rate(up))
                else:
                    down = sum(int(res.outputs[n].nbytes) for n in cloud_out if n in res.outputs)
                    self.estimator.update(up + down, res.timings_ms.get("network", 0.0))
                rx, rx_ms = srv.get("client_receive_bytes", 0.0), srv.get("client_receive_ms", 0.0)
                if rx >= self.estimator.min_bytes and rx_ms >= self.downlink_min_ms:  # downlink, receiver side
                    self.estimator.add_sample(8.0 * rx / (1000.0 * rx_ms) / self._down_ratio)
        return fallback, error

    def infer(self, feeds: Mapping[str, np.ndarray]) -> DynamicResult:
        t0 = time.perf_counter()
        b = self.batch_size_of(feeds)
        est = self.estimator.mbps
        k = self.choose(b, est)
        error, fallback, hedged_from = None, False, None
        deadline = self.deadline_ms(k, est) if b == 1 and self.force_plan is None else None
        try:
            if deadline is not None:
                from .runtime.client import DeadlineExceeded

                try:
                    res = self.runners[k].infer(feeds, cloud_deadline_s=deadline / 1e3)
                    outputs, results = res.outputs, [res]
                except DeadlineExceeded as exc:
                    self._hedged(k, exc)
                    hedged_from, k = k, self.hedge_plan
                    outputs, results = self._run_plan(k, feeds, 1)
            else:
                outputs, results = self._run_plan(k, feeds, b)
        except Exception as exc:  # noqa: BLE001 - never drop a request: redo it all-edge, locally
            error, fallback = f"plan {k}: {type(exc).__name__}: {exc}", True
            self._down_until = time.monotonic() + self.cooldown_s
            k_failed, k = k, self.bundle.all_edge
            outputs, results = self._run_plan(k, feeds, b)
            error = error or f"plan {k_failed} failed"
        timings: dict[str, float] = {}
        for res in results:
            for name, v in res.timings_ms.items():
                timings[name] = timings.get(name, 0.0) + v
        fell_back, err = self._learn(k, results)
        fallback, error = fallback or fell_back, error or err
        timings["total"] = (time.perf_counter() - t0) * 1e3
        after = self.estimator.mbps
        if (self.feedback is not None and b == 1 and not fallback and self.force_plan is None
                and hedged_from is None):
            # a request that moved the estimate by more than the feedback's bandwidth factor timed a
            # link change, not the plan: not a residual; nor does the first request after a switch
            # or after a pause (it pays for that: on the testbed 20-25 ms more than the plan's next
            # requests; see _after_a_pause)
            prev = getattr(self, "_prev_run_plan", None)
            cold = prev is not None and (prev != k or self._after_a_pause(t0))
            if not cold and abs(math.log(max(after, 1e-9) / max(est, 1e-9))) <= self.feedback.log_bandwidth_factor:
                self.feedback.observe(k, est, timings["total"])
            self._last_plan = k  # the incumbent of the feedback's hysteresis
        with self._count_lock:
            self.counts[k] = self.counts.get(k, 0) + 1
            self._prev_run_plan = k
            last_end = getattr(self, "_last_end", None)
            self._prev_gap_s = None if last_end is None else max(t0 - last_end, 0.0)
            self._last_end = time.perf_counter()
        if after < est / self.estimator.drop_factor:  # collapsed: check it with a probe at once
            self._maybe_probe(now=True)
        elif self.runners[k].bundle.boundary == [] or not any(r.attempts for r in results):
            self._maybe_probe()
        return DynamicResult(outputs, timings, k, b, est, fallback, error, results, hedged_from)

    def _after_a_pause(self, t0: float) -> bool:
        """Did the request that started at ``t0`` follow a pause: more than ``cold_after_s`` idle
        and more than 4x the idle time before the previous request (a client that always sends
        every few seconds pays that in every request, and its requests are residuals)?"""
        last_end, prev_gap = getattr(self, "_last_end", None), getattr(self, "_prev_gap_s", None)
        if last_end is None:
            return False
        gap = t0 - last_end
        return gap > getattr(self, "cold_after_s", 1.0) and (prev_gap is None or gap > 4.0 * prev_gap)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()

    def __enter__(self) -> DynamicRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class serve_plans:  # noqa: N801 - used like a function / context manager
    """Serve every plan with a cloud half from one embedded CloudServer (one process, one port):
    ``urls`` maps plan id -> URL (the same URL for all; each plan is a model of its own name).

    ``port=0`` picks a free port.
    """

    def __init__(self, bundle: str | Path | DynamicBundle, *, host: str = "127.0.0.1", port: int = 0, **server_kwargs: Any):
        from .runtime.server import CloudServer

        self.bundle = bundle if isinstance(bundle, DynamicBundle) else load_dynamic_bundle(bundle)
        self.servers: dict[int, Any] = {}
        self.urls: dict[int, str] = {}
        plans = [int(p["id"]) for p in self.bundle.plans if p["kind"] != "all-edge"]
        if plans:
            srv = CloudServer([self.bundle.plan_dir(k) for k in plans], host=host, port=port, **server_kwargs).start()
            self.servers = dict.fromkeys(plans, srv)
            self.urls = dict.fromkeys(plans, srv.url)

    def stop(self) -> None:
        for srv in {id(s): s for s in self.servers.values()}.values():
            try:
                srv.stop()
            except Exception:  # noqa: BLE001
                pass
        self.servers.clear()

    def __enter__(self) -> serve_plans:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
