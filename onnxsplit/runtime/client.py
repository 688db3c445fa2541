"""The edge runtime: run the edge half here, send the boundary tensors, get the outputs back.

:class:`EdgeRunner` holds the edge session and a small pool of keep-alive HTTP connections
(``http.client``; one per concurrent caller, so a runner can be shared by threads). Each
:meth:`EdgeRunner.infer`:

1. checks the feeds against the bundle (names, dtypes, shapes) and runs the edge model;
2. sends the boundary tensors (edge outputs with whatever dtype the edge model gives them -- an
   int8-quantized boundary goes as UINT8 -- and raw graph inputs unchanged) with the KServe v2
   binary tensor extension, and reads the cloud outputs straight into numpy arrays;
3. on a transport failure (refused/reset connection, connect or read timeout, 502/503/504)
   retries with exponential backoff, at most ``retries`` more times; when the cloud stays
   unreachable (or answers 5xx) it **falls back**: the cloud half (``OUT/cloud/model.onnx``, shipped
   in the bundle) runs locally and the result says ``fallback=True`` with the reason;
4. assembles the original outputs, in the original order, from the edge/cloud/input sides.

A 4xx answer (wrong token, unknown model, a bundle that does not match the server) is a
configuration error, not an outage: it raises :class:`RemoteError` instead of falling back.

``infer(feeds, cloud_deadline_s=T)``: the cloud round trip (after the edge half) must end within
``T`` seconds. Each buffer of the body is handed to the socket with its timeout set to the time
left (``sendall`` then bounds the whole buffer), and the response's binary outputs are read in
pieces with the timeout re-armed before each, each piece sized to take about 20 ms at the rate the
previous one came in (``DEADLINE_PIECE_S``), so a transfer on a link slower than the caller
assumed is stopped mid-body, either way (a JSON-encoded response is read in one piece; the
per-piece work costs edge CPU, ``tools/bench_deadline.py``); the connection is closed
(the server drops the partial request) and :class:`DeadlineExceeded` is raised, without retries
and without the local fallback: the caller (:class:`onnxsplit.dynamic.DynamicRunner`, hedging)
decides what runs instead.

Timings (ms): ``edge``; ``serialize`` (client request encoding + server response encoding);
``network`` (round trip minus everything the server reports: cloud compute and its own
(de)serialization); ``cloud`` (the server's session.run, or the local one on fallback);
``deserialize`` (server request decoding + client response decoding); ``total`` (wall clock of
the whole call, backoff sleeps included).
"""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from ..errors import OnnxSplitError, UsageError
from .bundle import Bundle, load_bundle
from .protocol import (
    HEADER_LENGTH,
    ProtocolError,
    array_from_json,
    decode_response_header,
    encode_request,
    read_binary_tensor,
)

RETRY_STATUS = (502, 503, 504)
SMALL_REQUEST = 1 << 16  # requests up to this go out in a single send()


class RemoteError(OnnxSplitError):
    """The server answered with an error status (``status``); its one-line message is included."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class CloudUnavailable(OnnxSplitError):
    """The cloud could not be reached (after retries) and fallback is disabled."""


class DeadlineExceeded(OnnxSplitError):
    """The cloud round trip did not end within ``cloud_deadline_s`` (see the module docstring).
    ``elapsed_ms``: from the start of the round trip; ``body_nbytes``: the request body's size;
    ``sent_nbytes``: how much of it the socket had taken (whole buffers: the one being sent when
    time ran out is not counted); ``resp_nbytes``: the binary outputs' bytes the answer's header
    announced (0: no answer had started), of which ``recv_nbytes`` arrived in ``recv_ms`` of reads
    before the deadline."""

    def __init__(self, message: str, *, elapsed_ms: float, body_nbytes: int, sent_nbytes: int,
                 recv_nbytes: int = 0, recv_ms: float = 0.0, resp_nbytes: int = 0):
        super().__init__(message)
        self.elapsed_ms, self.body_nbytes, self.sent_nbytes = elapsed_ms, body_nbytes, sent_nbytes
        self.recv_nbytes, self.recv_ms, self.resp_nbytes = recv_nbytes, recv_ms, resp_nbytes


class _DeadlineHit(Exception):
    """Internal: the time left before the deadline ran out (between two socket operations)."""


#: with a deadline, the answer's binary outputs are read in pieces, the socket timeout re-armed before
#: each: the first of DEADLINE_FIRST_PIECE bytes, each next one sized to take about DEADLINE_PIECE_S at
#: the rate the previous one arrived (so a read overshoots the deadline by about that much; few pieces on a fast link)
DEADLINE_FIRST_PIECE = 8 * 1024
DEADLINE_MIN_PIECE = 4 * 1024
DEADLINE_MAX_PIECE = 1 << 20
DEADLINE_PIECE_S = 0.02


@dataclass
class Result:
    """What :meth:`EdgeRunner.infer` returns."""

    outputs: dict[str, np.ndarray]
    timings_ms: dict[str, float]
    fallback: bool
    attempts: int  # HTTP attempts made (0: no cloud needed, or the cloud is marked down)
    server: str | None = None
    error: str | None = None  # why the cloud was not used (set when fallback is True)
    server_timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self, *, data: bool = False) -> dict[str, Any]:
        outs = {}
        for name, arr in self.outputs.items():
            d: dict[str, Any] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
            if data:
                d["data"] = arr.tolist()
            outs[name] = d
        return {
            "outputs": outs,
            "fallback": self.fallback,
            "fallback_reason": self.error,
            "attempts": self.attempts,
            "server": self.server,
            "timings_ms": {k: round(v, 4) for k, v in self.timings_ms.items()},
            "server_timings_ms": self.server_timings_ms,
        }


class _Tuned:
    """Mixin for http.client connections: separate connect/read timeouts, and the header block and a
    bytes body leave in one send() (http.client sends them separately: two segments, two wake-ups of
    the server per request). TCP_NODELAY is set by http.client itself."""

    read_timeout: float

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock.settimeout(self.read_timeout)  # type: ignore[attr-defined]

    def _send_output(self, message_body=None, encode_chunked=False):  # noqa: ANN001, ANN202
        buf = getattr(self, "_buffer", None)
        if isinstance(message_body, bytes) and not encode_chunked and isinstance(buf, list):
            buf.extend((b"", b""))
            msg = b"\r\n".join(buf)
            del buf[:]
            self.send(msg + message_body)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _Connection(_Tuned, http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, connect_timeout: float, read_timeout: float):
        super().__init__(host, port, timeout=connect_timeout)
        self.read_timeout = read_timeout
        self.reused = False


class _TLSConnection(_Tuned, http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, connect_timeout: float, read_timeout: float):
        super().__init__(host, port, timeout=connect_timeout)
        self.read_timeout = read_timeout
        self.reused = False


class _Transport(Exception):
    """A transport-level failure worth retrying (wraps the cause)."""

    def __init__(self, cause: BaseException, *, stale: bool = False):
        super().__init__(str(cause))
        self.cause = cause
        self.stale = stale  # failed on a reused keep-alive connection before any answer


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Transport):
        exc = exc.cause
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection"
    msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


class EdgeRunner:
    """Run a bundle split between this machine (edge half) and a KServe v2 server (cloud half).

    ``server_url``: e.g. ``http://10.0.0.5:8000`` (a path prefix is kept; https works); None runs
    both halves locally. ``timeout``: read timeout per attempt (s); ``connect_timeout`` defaults to
    it. ``retries``: extra attempts after the first on transport failures, with backoff
    ``backoff_s * 2**i`` capped at ``max_backoff_s``. ``fallback``: finish locally when the cloud
    is unreachable (else raise :class:`CloudUnavailable`). ``cooldown_s``: after a fallback, skip
    the network for this long (0: try every call). ``optimize``: onnxruntime graph optimizations
    (disable on both sides for bit-identical outputs). ``binary``: binary tensor extension (else
    JSON, slow: for debugging). ``token`` (or ``$ONNXSPLIT_TOKEN``): bearer token.
    """

    def __init__(
        self,
        bundle: str | Path | Bundle,
        server_url: str | None = None,
        *,
        model_name: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float | None = None,
        retries: int = 2,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        fallback: bool = True,
        cooldown_s: float = 0.0,
        optimize: bool = True,
        threads: int | None = None,
        binary: bool = True,
        verify_checksums: bool = True,
        preload_fallback: bool = False,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify_checksums=verify_checksums)
        self.model_name = model_name or self.bundle.model_name
        self.token = token if token is not None else os.environ.get("ONNXSPLIT_TOKEN") or None
        if timeout <= 0 or (connect_timeout is not None and connect_timeout <= 0):
            raise UsageError("timeouts must be positive")
        if retries < 0:
            raise UsageError("retries must be >= 0")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else timeout)
        self.retries = int(retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.fallback = fallback
        self.cooldown_s = cooldown_s
        self.optimize = optimize
        self.threads = threads
        self.binary = binary
        self.server_url = server_url.rstrip("/") if server_url else None
        if self.server_url:
            u = urlsplit(self.server_url if "://" in self.server_url else f"http://{self.server_url}")
            if u.scheme not in ("http", "https") or not u.hostname:
                raise UsageError(f"server URL {server_url!r} is not http://HOST:PORT or https://HOST:PORT")
            self._tls = u.scheme == "https"
            self._host = u.hostname
            try:
                self._port = u.port
            except ValueError:
                raise UsageError(f"server URL {server_url!r} has a bad port") from None
            self._prefix = u.path.rstrip("/")
            self.server_url = f"{u.scheme}://{u.netloc}{self._prefix}"
        self._infer_path = f"{getattr(self, '_prefix', '')}/v2/models/{quote(self.model_name, safe='')}/infer"
        self._pool: list[http.client.HTTPConnection] = []
        self._pool_lock = threading.Lock()
        self._local_lock = threading.Lock()
        self._down_until = 0.0
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{id(self) & 0xFFFFFF:x}-"
        self._edge = self.bundle.session("edge", optimize=optimize, threads=threads) if self.bundle.edge_path else None
        self._edge_outputs = [o.name for o in self._edge.get_outputs()] if self._edge else []
        self._cloud_local = None
        if preload_fallback and self.bundle.cloud_path is not None:
            self._local_cloud()

    # ------------------------------------------------------------------ connections
    def _new_conn(self) -> http.client.HTTPConnection:
        cls = _TLSConnection if self._tls else _Connection
        return cls(self._host, self._port, self.connect_timeout, self.timeout)

    def _get_conn(self) -> http.client.HTTPConnection:
        with self._pool_lock:
            if self._pool:
                conn = self._pool.pop()
                conn.reused = True  # type: ignore[attr-defined]
                return conn
        return self._new_conn()

    def _put_conn(self, conn: http.client.HTTPConnection) -> None:
        with self._pool_lock:
            if len(self._pool) < 64:
                self._pool.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._pool_lock:
            conns, self._pool = self._pool, []
        for c in conns:
            c.close()

    def __enter__(self) -> EdgeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # ------------------------------------------------------------------ plain requests
    def _get_json(self, path: str) -> tuple[int, dict]:
        import json

        if not self.server_url:
            raise UsageError("no server URL: this runner runs locally")
        conn = self._new_conn()
        try:
            conn.request("GET", self._prefix + path, headers=self._auth())
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {"error": body[:200].decode("utf-8", "replace")}
        return resp.status, doc

    def probe_network(self, nbytes: int, *, details: bool = False) -> float | tuple[float, dict]:
        """POST ``nbytes`` zero bytes to the server's ``/v2/onnxsplit/probe`` endpoint (pooled
        keep-alive connection); returns the round-trip milliseconds (send + answer; no compute on either side),
        or with ``details`` ``(ms, the server's answer)`` (``receive_bytes`` / ``receive_ms``: when the bytes
        arrived at the server). Raises :class:`RemoteError` when the server has no such endpoint (e.g. Triton: 404)."""
        import json

        if not self.server_url:
            raise UsageError("no server URL: this runner runs locally")
        body = bytes(int(nbytes))
        conn = self._get_conn()
        try:
            t0 = time.perf_counter()
            try:
                conn.request("POST", self._prefix + "/v2/onnxsplit/probe", body=body,
                             headers={"Content-Type": "application/octet-stream", **self._auth()})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may refuse (413) and close before reading the body: read its answer
            resp = conn.getresponse()
            answer = resp.read()
            ms = (time.perf_counter() - t0) * 1e3
            if resp.status != 200:
                raise RemoteError(f"{self.server_url} answered {resp.status} to the bandwidth probe: "
                                  f"{_error_message(answer, resp.status)}", resp.status)
            doc = json.loads(answer)
            if not isinstance(doc, dict) or doc.get("received_bytes") != int(nbytes):
                raise RemoteError(f"{self.server_url}: probe answer {answer[:100]!r} does not echo {nbytes} bytes", 502)
            if resp.will_close:
                conn.close()
            else:
                self._put_conn(conn)
            conn = None
        finally:
            if conn is not None:
                conn.close()
        return (ms, doc) if details else ms

    def server_ready(self) -> bool:
        """GET /v2/health/ready; False when the server cannot be reached."""
        try:
            status, doc = self._get_json("/v2/health/ready")
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and bool(doc.get("ready", True))

    def check_server(self) -> dict:
        """Model metadata from the server, checked against this bundle's cloud inputs/outputs.

        Raises :class:`RemoteError` (unreachable: :class:`CloudUnavailable`) with the first mismatch.
        """
        try:
            status, doc = self._get_json(f"/v2/models/{quote(self.model_name, safe='')}")
        except (OSError, http.client.HTTPException) as exc:
            raise CloudUnavailable(f"cannot reach {self.server_url}: {_describe(exc)}") from None
        if status != 200:
            raise RemoteError(f"{self.server_url}: {doc.get('error', f'HTTP {status}')}", status)
        declared = {t["name"]: t for t in doc.get("inputs", [])}
        for spec in self.bundle.cloud_inputs:
            t = declared.get(spec.name)
            if t is None:
                raise RemoteError(f"server model '{self.model_name}' has no input '{spec.name}' (bundle mismatch)", 409)
            if t.get("datatype") != spec.datatype:
                raise RemoteError(
                    f"server model '{self.model_name}' input '{spec.name}' is {t.get('datatype')} but this bundle sends "
                    f"{spec.datatype} (bundle mismatch)",
                    409,
                )
        return doc

    # ------------------------------------------------------------------ one inference request
    @staticmethod
    def _arm(conn: http.client.HTTPConnection, deadline: float) -> None:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise _DeadlineHit
        conn.sock.settimeout(left)  # type: ignore[union-attr]

    def _post(self, tensors: Mapping[str, np.ndarray],
              deadline: float | None = None) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, float]]:
        """One attempt: (outputs, timings, server-reported timings); raises _Transport (retryable),
        RemoteError, or DeadlineExceeded (``deadline``: a ``time.perf_counter()`` instant)."""
        t0 = time.perf_counter()
        rid = f"{self._id_prefix}{next(self._ids)}"
        enc = encode_request(tensors, binary=self.binary, binary_output=self.binary, request_id=rid)
        headers = enc.http_headers()
        headers.update(self._auth())
        ser = time.perf_counter() - t0
        conn = self._get_conn()
        reused = getattr(conn, "reused", False)
        got_answer = False
        io = 0.0
        rx = 0  # bytes of the binary output tensors, read in ``io`` seconds (a downlink sample)
        announced = 0  # bytes of binary outputs the response header announced
        sent = 0
        t_send = time.perf_counter()
        try:
            if deadline is not None:
                if conn.sock is None:
                    conn.timeout = max(1e-3, min(self.connect_timeout, deadline - time.perf_counter()))
                    try:
                        conn.connect()
                    finally:
                        conn.timeout = self.connect_timeout
                self._arm(conn, deadline)
            conn.putrequest("POST", self._infer_path)  # (adds Accept-Encoding: identity)
            for k, v in headers.items():
                conn.putheader(k, v)
            if enc.content_length <= SMALL_REQUEST:
                conn.endheaders(enc.body())
                sent = enc.content_length
            else:
                conn.endheaders(enc.header)
                sent = len(enc.header)
                for b in enc.buffers:
                    if deadline is not None:  # sendall's timeout bounds the whole buffer (Python >= 3.5)
                        self._arm(conn, deadline)
                    conn.send(b)
                    sent += len(b) if isinstance(b, bytes) else b.nbytes
            if deadline is not None:
                self._arm(conn, deadline)  # for the answer's reads too
            resp = conn.getresponse()
            got_answer = True
            if resp.status != 200:
                body = resp.read()
                if resp.will_close:
                    conn.close()
                else:
                    self._put_conn(conn)
                conn = None
                msg = _error_message(body, resp.status)
                raise RemoteError(f"{self.server_url} answered {resp.status}: {msg}", resp.status)

            piece = DEADLINE_FIRST_PIECE

            def readinto(view: memoryview) -> int:
                nonlocal io, rx, piece
                if deadline is not None:  # a slow answer is bounded too: one piece per re-armed timeout
                    self._arm(conn, deadline)
                    view = view[:piece]
                t = time.perf_counter()
                n = resp.readinto(view)
                dt = time.perf_counter() - t
                io += dt
                rx += n or 0
                if deadline is not None and n:  # the next piece: about DEADLINE_PIECE_S at this piece's rate
                    piece = int(min(max(n / max(dt, 1e-6) * DEADLINE_PIECE_S, DEADLINE_MIN_PIECE), DEADLINE_MAX_PIECE))
                return n

            hl = resp.getheader(HEADER_LENGTH)
            raw = resp.read(int(hl)) if hl is not None else resp.read()
            t_dec = time.perf_counter()  # from here on: decoding, except the socket reads (io)
            doc, outs = decode_response_header(raw)
            if resp.getheader("Content-Encoding", "identity").lower() != "identity":
                raise ProtocolError(f"unrequested Content-Encoding {resp.getheader('Content-Encoding')!r}", 502)
            if doc.get("id") is not None and doc.get("id") != rid:
                raise ProtocolError(f"response id {doc.get('id')!r} does not match request id {rid!r}", 502)
            announced = sum(o.binary_size or 0 for o in outs)
            arrays = {}
            for o in outs:
                if o.binary_size is not None:
                    arrays[o.name] = read_binary_tensor(o, readinto, what="output")
                else:
                    arrays[o.name] = array_from_json(o.data, o.datatype, o.shape, o.name)
            if resp.length:  # bytes the header did not describe
                raise ProtocolError(f"{resp.length} unexpected bytes after the last output tensor", 502)
            t_end = time.perf_counter()
            if resp.will_close:
                conn.close()
            else:
                if deadline is not None and conn.sock is not None:
                    conn.sock.settimeout(self.timeout)  # pooled: back to the plain read timeout
                self._put_conn(conn)
            conn = None
        except RemoteError:
            raise
        except ProtocolError as exc:
            raise _Transport(exc) from None
        except (_DeadlineHit, OSError, http.client.HTTPException) as exc:
            if deadline is not None and (isinstance(exc, (_DeadlineHit, socket.timeout, TimeoutError))
                                         or time.perf_counter() >= deadline):
                elapsed = (time.perf_counter() - t_send) * 1e3
                raise DeadlineExceeded(
                    f"cloud {self.server_url}: no answer within the deadline ({elapsed:.1f} ms; "
                    f"{sent} of {enc.content_length} request bytes handed to the socket"
                    + (f", {rx} response bytes received" if rx else "") + ")",
                    elapsed_ms=elapsed, body_nbytes=enc.content_length, sent_nbytes=sent,
                    recv_nbytes=rx, recv_ms=io * 1e3, resp_nbytes=announced) from None
            stale = reused and not got_answer and isinstance(
                exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
            )
            raise _Transport(exc, stale=stale) from None
        finally:
            if conn is not None:
                conn.close()
        params = doc.get("parameters") or {}
        server = {k: float(params[k]) for k in ("cloud_ms", "server_decode_ms", "server_encode_ms", "server_receive_bytes",
                                                "server_receive_ms") if _is_number(params.get(k))}
        if rx:  # and this client's own receive time of the binary outputs (the downlink's receiver side)
            server["client_receive_bytes"], server["client_receive_ms"] = float(rx), io * 1e3
        window = (t_end - t_send) * 1e3
        client_deser = max(0.0, (t_end - t_dec - io) * 1e3)
        cloud = server.get("cloud_ms", 0.0)
        s_dec = server.get("server_decode_ms", 0.0)
        s_enc = server.get("server_encode_ms", 0.0)
        timings = {
            "serialize": ser * 1e3 + s_enc,
            "network": max(0.0, window - client_deser - cloud - s_dec - s_enc),
            "cloud": cloud,
            "deserialize": client_deser + s_dec,
        }
        return arrays, timings, server

    def cloud_infer(
        self, tensors: Mapping[str, np.ndarray], *, deadline_s: float | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, float], int, dict[str, float]]:
        """Send boundary tensors, with retries and backoff.

        Returns (cloud outputs, timings, attempts, server-reported timings).
        Raises :class:`CloudUnavailable` when every attempt failed at the transport level or the
        server answered 5xx, :class:`RemoteError` for a 4xx answer, :class:`DeadlineExceeded` when
        ``deadline_s`` (seconds from now, retries and backoff included) ran out.
        """
        if not self.server_url:
            raise CloudUnavailable("no server URL given")
        attempts = 0
        stale_retry_used = False
        last: BaseException | None = None
        t_start = time.perf_counter()
        deadline = None if deadline_s is None else t_start + float(deadline_s)
        i = 0
        while i <= self.retries:
            if i > 0 and last is not None and not getattr(last, "_immediate", False):
                pause = min(self.max_backoff_s, self.backoff_s * (2 ** (i - 1)))
                if deadline is not None and time.perf_counter() + pause >= deadline:
                    elapsed = (time.perf_counter() - t_start) * 1e3
                    raise DeadlineExceeded(f"cloud {self.server_url}: deadline ran out after {attempts} failed attempt(s)",
                                           elapsed_ms=elapsed, body_nbytes=0, sent_nbytes=0)
                time.sleep(pause)
            attempts += 1
            try:
                arrays, timings, server = self._post(tensors, deadline)
                return arrays, timings, attempts, server
            except _Transport as exc:
                last = exc
                if exc.stale and not stale_retry_used:  # the server closed an idle keep-alive connection
                    stale_retry_used = True
                    exc._immediate = True  # type: ignore[attr-defined]
                    attempts -= 1
                    continue
            except RemoteError as exc:
                if exc.status in RETRY_STATUS:
                    last = exc
                elif exc.status >= 500:
                    last = exc
                    break
                else:
                    raise
            i += 1
        elapsed = (time.perf_counter() - t_start) * 1e3
        why = str(last) if isinstance(last, RemoteError) else _describe(last) if last else "unknown error"
        err = CloudUnavailable(f"cloud {self.server_url} unreachable after {attempts} attempt(s): {why}")
        err.attempts = attempts  # type: ignore[attr-defined]
        err.elapsed_ms = elapsed  # type: ignore[attr-defined]
        raise err

    # ------------------------------------------------------------------ local halves
    def _local_cloud(self):  # noqa: ANN202
        with self._local_lock:
            if self._cloud_local is None:
                self._cloud_local = self.bundle.session("cloud", optimize=self.optimize, threads=self.threads)
            return self._cloud_local

    def run_edge(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The edge model's outputs (boundary activations and edge-produced graph outputs)."""
        if self._edge is None:
            return {}
        wanted = {i.name for i in self._edge.get_inputs()}
        try:
            values = self._edge.run(self._edge_outputs, {k: v for k, v in feeds.items() if k in wanted})
        except Exception as exc:  # onnxruntime's exception types are not importable portably
            raise OnnxSplitError(f"the edge model failed in onnxruntime: {_first_line(exc)}") from None
        return dict(zip(self._edge_outputs, values))

    def run_cloud_locally(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cloud half in this process (what fallback runs)."""
        sess = self._local_cloud()
        names = [o.name for o in sess.get_outputs()]
        try:
            return dict(zip(names, sess.run(names, dict(tensors))))
        except Exception as exc:  # noqa: BLE001
            raise OnnxSplitError(f"the cloud model failed in onnxruntime on this machine: {_first_line(exc)}") from None

    # ------------------------------------------------------------------ the API
    def infer(self, feeds: Mapping[str, np.ndarray], *, cloud_deadline_s: float | None = None) -> Result:
        """Edge half here, cloud half on the server (or here on fallback); original outputs.
        ``cloud_deadline_s``: see the module docstring (raises :class:`DeadlineExceeded`)."""
        t0 = time.perf_counter()
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        self.bundle.check_feeds(feeds)
        edge_results = self.run_edge(feeds)
        t_edge = time.perf_counter()
        timings = {"edge": (t_edge - t0) * 1e3, "serialize": 0.0, "network": 0.0, "cloud": 0.0, "deserialize": 0.0}
        cloud_results: dict[str, np.ndarray] = {}
        fallback, attempts, error, server_t = False, 0, None, {}
        if self.bundle.cloud_path is not None:
            tensors = self.bundle.boundary_feeds(feeds, edge_results)
            now = time.monotonic()
            if self.server_url is None:
                fallback, error = True, "no server URL given: ran the cloud half locally"
            elif now < self._down_until:
                fallback, error = True, f"cloud marked down for {self._down_until - now:.1f} s more after a failure"
            else:
                try:
                    cloud_results, t, attempts, server_t = self.cloud_infer(tensors, deadline_s=cloud_deadline_s)
                    timings.update(t)
                except CloudUnavailable as exc:
                    if not self.fallback:
                        raise
                    fallback, error = True, str(exc)
                    attempts = getattr(exc, "attempts", 0)
                    timings["network"] = getattr(exc, "elapsed_ms", 0.0)
                    if self.cooldown_s > 0:
                        self._down_until = time.monotonic() + self.cooldown_s
            if fallback:
                t1 = time.perf_counter()
                cloud_results = self.run_cloud_locally(tensors)
                timings["cloud"] = (time.perf_counter() - t1) * 1e3
        outputs = self.bundle.assemble(feeds, edge_results, cloud_results)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return Result(outputs, timings, fallback, attempts, self.server_url, error, server_t)

    def infer_local(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Both halves in this process (no network): the reference for the remote result."""
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        self.bundle.check_feeds(feeds)
        edge_results = self.run_edge(feeds)
        cloud = self.run_cloud_locally(self.bundle.boundary_feeds(feeds, edge_results)) if self.bundle.cloud_path else {}
        return self.bundle.assemble(feeds, edge_results, cloud)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _error_message(body: bytes, status: int) -> str:
    import json

    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            return " ".join(str(doc["error"]).split())
    except ValueError:
        pass
    text = body[:300].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or f"HTTP {status}"
