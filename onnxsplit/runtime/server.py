"""The embedded cloud server: the cloud half of a bundle behind the KServe v2 HTTP/REST protocol.

Standard library only (``http.server.ThreadingHTTPServer``: one thread per connection, HTTP/1.1
keep-alive) and one onnxruntime ``InferenceSession`` per served model, shared by all threads
(``run`` is thread-safe). One server serves several models: given a dynamic bundle (``compile
--dynamic``, schema ``onnxsplit.dynamic/1``) it serves the cloud half of every plan, each under its
own name (``<stem>-p<k>-cloud``), so a :class:`~onnxsplit.dynamic.DynamicRunner` switching plans
talks to one process on one port. Endpoints:

``GET  /v2/health/live``, ``GET /v2/health/ready``      (never need the token: for probes)
``GET  /v2``                                             server metadata
``POST /v2/repository/index``                            the served models (Triton's model-repository extension)
``GET  /v2/models/{name}[/versions/1]``                  model metadata (inputs/outputs, datatypes, shapes)
``GET  /v2/models/{name}[/versions/1]/ready``            model readiness
``GET  /v2/models/{name}[/versions/1]/config``           Triton-style model config as JSON
``POST /v2/models/{name}[/versions/1]/infer``            inference (JSON or binary tensor extension)
``POST /v2/onnxsplit/probe``                             bandwidth probe: reads and discards the body
                                                         (at most the request limit), answers
                                                         ``{"received_bytes": n, "receive_bytes": m,
                                                         "receive_ms": t}`` (onnxsplit extension, used by
                                                         the dynamic runner's estimator; m bytes arrived
                                                         over t ms, see :class:`ArrivalClock`)

Every error is a 4xx/5xx with a one-line JSON body ``{"error": "..."}`` naming the input at fault.
Inference responses carry the server's own timings in ``parameters``: ``cloud_ms`` (session.run),
``server_decode_ms`` and ``server_encode_ms`` (request parsing/validation and response encoding;
time spent reading or writing the socket is network time and is not included), and the arrival of
the binary tensors, ``server_receive_bytes`` over ``server_receive_ms`` (:class:`ArrivalClock`).
"""

from __future__ import annotations

import collections
import hmac
import json
import socket
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from ..dynamic_bundle import SCHEMA as DYNAMIC_SCHEMA
from ..dynamic_bundle import load_dynamic_bundle
from .bundle import Bundle, BundleError, TensorSpec, load_bundle
from .protocol import (
    HEADER_LENGTH,
    Encoded,
    ProtocolError,
    RequestHeader,
    array_from_json,
    decode_body,
    encode_response,
    fmt_shape,
    parse_request_header,
    read_binary_tensor,
    read_exact,
    shape_matches,
    triton_type,
)

DRAIN_LIMIT = 1 << 20  # unread request bytes up to this are drained to keep the connection alive
SMALL_RESPONSE = 1 << 16  # responses up to this are sent with a single send()


def default_max_request_bytes(bundle: Bundle) -> int:
    """Room for the inputs as JSON text (≈ 16 characters per element) plus 1 MiB, at least 16 MiB."""
    total = 0
    for t in bundle.cloud_inputs:
        n = 1
        for d in t.shape:
            n *= d or 1
        total += n * 16
    return max(16 << 20, total + (1 << 20))


class ArrivalClock:
    """When a request body's bytes arrived: the receiver's view of the uplink.

    A sender on a starved CPU (an edge device at its CPU quota) times its own transfers with its
    stalls included; the server, on its own core, sees when the bytes actually come in. The rate
    is taken over the bytes after the first ``skip_fraction`` of the body (which may have arrived
    in one burst, e.g. a token bucket's burst, or queued while the handler started):
    :meth:`rate_sample` returns ``(bytes, ms)`` over that tail, ``(0, 0.0)`` when the whole tail
    was already there in one read (a link too fast for this body to resolve), or None for an
    empty body.
    """

    def __init__(self, skip_fraction: float = 0.25):
        self.skip_fraction = skip_fraction
        self.points: list[tuple[float, int]] = []  # (perf_counter after a read, bytes so far)
        self.total = 0

    def add(self, nbytes: int) -> None:
        if nbytes > 0:
            self.total += nbytes
            self.points.append((time.perf_counter(), self.total))

    def rate_sample(self) -> tuple[int, float] | None:
        if not self.points:
            return None
        cut = self.skip_fraction * self.total
        q = next(i for i, (_, cum) in enumerate(self.points) if cum >= cut)
        t_q, cum_q = self.points[q]
        t_end, cum_end = self.points[-1]
        return cum_end - cum_q, (t_end - t_q) * 1e3

    def parameters(self) -> dict[str, float]:
        """``server_receive_bytes`` / ``server_receive_ms`` for a response (empty without a body)."""
        r = self.rate_sample()
        return {} if r is None else {"server_receive_bytes": int(r[0]), "server_receive_ms": round(r[1], 4)}


class CloudModel:
    """The cloud half: one session, declared inputs/outputs, validation and run."""

    def __init__(self, bundle: Bundle, *, optimize: bool = True, threads: int | None = None):
        if bundle.cloud_path is None:
            raise BundleError(f"bundle {bundle.root} has no cloud model (an all-edge plan): there is nothing to serve")
        self.bundle = bundle
        self.name = bundle.model_name
        self.session = bundle.session("cloud", optimize=optimize, threads=threads)
        self.inputs: dict[str, TensorSpec] = {t.name: t for t in bundle.cloud_inputs}
        self.outputs: dict[str, TensorSpec] = {t.name: t for t in bundle.cloud_outputs}

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [t.to_json() for t in self.inputs.values()],
            "outputs": [t.to_json() for t in self.outputs.values()],
        }

    def config(self) -> dict:
        def io(t: TensorSpec) -> dict:
            return {"name": t.name, "data_type": triton_type(t.datatype), "dims": [-1 if d is None else d for d in t.shape]}

        return {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": 0,
            "input": [io(t) for t in self.inputs.values()],
            "output": [io(t) for t in self.outputs.values()],
        }

    def validate(self, req: RequestHeader, binary_bytes: int | None) -> list[str]:
        """Check a request header against the model; returns the output names to return."""
        expected = ", ".join(self.inputs)
        for t in req.inputs:
            spec = self.inputs.get(t.name)
            if spec is None:
                raise ProtocolError(f"unexpected input '{t.name}'; model '{self.name}' takes: {expected}")
            if t.datatype != spec.datatype:
                raise ProtocolError(f"input '{t.name}': datatype {t.datatype} does not match the model's {spec.datatype}")
            if not shape_matches(t.shape, spec.shape):
                raise ProtocolError(
                    f"input '{t.name}': shape {fmt_shape(t.shape)} does not match the model's {fmt_shape(spec.shape)}"
                )
            if t.binary_size is not None and t.nbytes is not None and t.binary_size != t.nbytes:
                raise ProtocolError(
                    f"input '{t.name}': binary_data_size is {t.binary_size} but {t.datatype}{fmt_shape(t.shape)} "
                    f"takes {t.nbytes} bytes"
                )
        given = {t.name for t in req.inputs}
        for name in self.inputs:
            if name not in given:
                raise ProtocolError(f"missing input '{name}'; model '{self.name}' takes: {expected}")
        if binary_bytes is not None and req.binary_total != binary_bytes:
            if req.binary_total > binary_bytes:
                raise ProtocolError(
                    f"truncated body: the inputs' binary_data_size add up to {req.binary_total} bytes but only "
                    f"{binary_bytes} follow the JSON header"
                )
            raise ProtocolError(
                f"{binary_bytes - req.binary_total} unexpected bytes after the last binary tensor "
                f"(binary_data_size add up to {req.binary_total})"
            )
        names = []
        for o in req.outputs:
            if o["name"] not in self.outputs:
                raise ProtocolError(f"unknown output '{o['name']}'; model '{self.name}' returns: {', '.join(self.outputs)}")
            names.append(o["name"])
        return names or list(self.outputs)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        feeds = {
            k: (v.astype(str) if v.dtype == object and self.inputs[k].datatype == "BYTES" else v) for k, v in feeds.items()
        }
        try:
            values = self.session.run(outputs, feeds)
        except Exception as exc:  # onnxruntime's exception types are not importable portably
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ProtocolError(f"inference failed: {msg}", status=500) from None
        return dict(zip(outputs, values))


class Stats:
    """Thread-safe request counters and recent cloud latencies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.cloud_ms: collections.deque[float] = collections.deque(maxlen=100_000)
        self.total_ms: collections.deque[float] = collections.deque(maxlen=100_000)
        self.bytes_in = 0
        self.bytes_out = 0

    def record(self, status: int, *, infer: bool = False, cloud_ms: float | None = None, total_ms: float | None = None,
               bytes_in: int = 0, bytes_out: int = 0) -> None:
        with self.lock:
            self.counts["requests"] += 1
            self.counts["ok" if status < 400 else "client_errors" if status < 500 else "server_errors"] += 1
            if infer and status < 400:
                self.counts["inferences"] += 1
                if cloud_ms is not None:
                    self.cloud_ms.append(cloud_ms)
                if total_ms is not None:
                    self.total_ms.append(total_ms)
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def to_json(self) -> dict:
        with self.lock:
            def pct(values: collections.deque, q: float) -> float | None:
                return float(np.percentile(np.fromiter(values, float), q)) if values else None

            return {
                "requests": self.counts["requests"],
                "inferences": self.counts["inferences"],
                "client_errors": self.counts["client_errors"],
                "server_errors": self.counts["server_errors"],
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "cloud_ms_p50": pct(self.cloud_ms, 50),
                "cloud_ms_p99": pct(self.cloud_ms, 99),
                "request_ms_p50": pct(self.total_ms, 50),
                "request_ms_p99": pct(self.total_ms, 99),
            }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, app: CloudServer):  # noqa: ANN001
        self.app = app
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, handler)


class _Headers(dict):
    """Request headers, keys lower-cased; ``get`` is case-insensitive (the email-based parser of
    http.server costs ~20 µs per request, a tenth of a small inference round trip)."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


MAX_HEADERS = 100


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "onnxsplit"
    disable_nagle_algorithm = True
    server: _HTTPServer

    # ---------------------------------------------------------------- request line + headers
    def parse_request(self) -> bool:
        """http.server's parse_request with a lean header parser (same checks, same outcomes)."""
        self.command = None
        self.request_version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) != 3:
            self.send_error(400, f"bad request line {requestline[:100]!r}")
            return False
        command, path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            if version.startswith("HTTP/") and version[5:6].isdigit() and version[5:6] >= "2":
                self.send_error(505, f"HTTP version {version} not supported (HTTP/1.1)")
            else:
                self.send_error(400, f"bad request version {version[:20]!r}")
            return False
        self.request_version = version
        self.close_connection = version == "HTTP/1.0"
        self.command, self.path = command, ("/" + path.lstrip("/") if path.startswith("//") else path)
        headers = _Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(65537)
            if len(line) > 65536:
                self.send_error(431, "header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                self.send_error(400, f"malformed header line {line[:60]!r}")
                return False
            key = name.decode("latin-1").lower()
            val = value.strip().decode("latin-1")
            if key in ("content-length", HEADER_LENGTH.lower()) and key in headers and headers[key] != val:
                self.send_error(400, f"conflicting {name.decode('latin-1')} headers")
                return False
            headers[key] = val
        else:
            self.send_error(431, f"more than {MAX_HEADERS} headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        conntype = headers.get("connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
            if not self.handle_expect_100():
                return False
        return True

    # ---------------------------------------------------------------- connection bookkeeping
    def setup(self) -> None:
        self.timeout = self.server.app.idle_timeout
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.app.log is not None:
            self.server.app.log(f"{self.address_string()} {format % args}")

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = 0
        if n > self.server.app.max_request_bytes:
            self.close_connection = True
            self._send_error(413, self._too_large(n))
            return False
        return super().handle_expect_100()

    # ---------------------------------------------------------------- responses
    def _send(self, status: int, enc: Encoded | bytes, content_type: str = "application/json",
              extra: Mapping[str, str] | None = None) -> int:
        if isinstance(enc, Encoded):
            headers = enc.http_headers()
            chunks = [enc.header, *enc.buffers]
            length = enc.content_length
        else:
            headers = {"Content-Type": content_type, "Content-Length": str(len(enc))}
            chunks = [enc]
            length = len(enc)
        if extra:
            headers.update(extra)
        if self.close_connection:
            headers["Connection"] = "close"
        reason = self.responses.get(status, ("",))[0]
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock = self.connection
        if length <= SMALL_RESPONSE:
            sock.sendall(b"".join([head.encode("latin-1"), *(bytes(c) for c in chunks)]))
        else:
            sock.sendall(head.encode("latin-1") + chunks[0])
            for c in chunks[1:]:
                sock.sendall(c)
        self.log_request(status, length)
        return length

    def _send_json(self, status: int, doc: dict, extra: Mapping[str, str] | None = None) -> int:
        return self._send(status, json.dumps(doc, separators=(",", ":")).encode(), extra=extra)

    def _send_error(self, status: int, message: str, extra: Mapping[str, str] | None = None) -> None:
        self._drain_or_close()
        try:
            self._send_json(status, {"error": " ".join(message.split())}, extra)
        except OSError:
            self.close_connection = True
        self.server.app.stats.record(status)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (bad request line, header too long, unsupported method): JSON too.
        self.close_connection = True
        try:
            self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass

    def _drain_or_close(self) -> None:
        left = getattr(self, "_unread", 0)
        if left <= 0:
            return
        if left > DRAIN_LIMIT:
            self.close_connection = True
            return
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    self.close_connection = True
                    break
                left -= len(chunk)
        except OSError:
            self.close_connection = True
        self._unread = 0

    def _too_large(self, n: int) -> str:
        return (
            f"request body of {n} bytes exceeds the server limit of {self.server.app.max_request_bytes} bytes "
            "(onnxsplit serve --max-request-bytes)"
        )

    # ---------------------------------------------------------------- routing
    def _route(self, method: str) -> None:
        try:  # a body we never read must be drained (or the connection closed) before answering
            self._unread = max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            self._unread = 0
            self.close_connection = True
        app = self.server.app
        try:
            path = unquote(urlsplit(self.path).path).rstrip("/")
            parts = path.split("/")[1:] if path.startswith("/") else []
            if parts[:1] != ["v2"]:
                raise ProtocolError(f"unknown endpoint {method} {self.path}; the KServe v2 API lives under /v2", 404)
            rest = parts[1:]
            if rest in (["health", "live"], ["health", "ready"]):
                self._expect(method, "GET")
                live = rest[1] == "live"
                self._send_json(200, {"live": True} if live else {"ready": app.ready})
                app.stats.record(200)
                return
            if not app.authorized(self.headers.get("Authorization")):
                self._send_error(401, "missing or wrong bearer token: send the header 'Authorization: Bearer <token>'",
                                 {"WWW-Authenticate": 'Bearer realm="onnxsplit"'})
                return
            if not rest:
                self._expect(method, "GET")
                from .. import __version__

                self._send_json(200, {"name": "onnxsplit", "version": __version__, "extensions": ["binary_tensor_data"]})
                app.stats.record(200)
                return
            if rest == ["onnxsplit", "probe"]:
                self._expect(method, "POST")
                self._probe()
                app.stats.record(200)
                return
            if rest == ["repository", "index"]:
                self._expect(method, "POST")
                self._send_json(200, [{"name": n, "version": "1", "state": "READY" if app.ready else "UNAVAILABLE"}
                                      for n in app.models])
                app.stats.record(200)
                return
            if rest[0] != "models" or len(rest) < 2:
                raise ProtocolError(f"unknown endpoint {method} {self.path}", 404)
            name, tail = rest[1], rest[2:]
            if len(tail) >= 2 and tail[0] == "versions":
                if tail[1] != "1":
                    raise ProtocolError(f"model '{name}' has no version '{tail[1]}' (only version 1)", 404)
                tail = tail[2:]
            model = app.models.get(name)
            if model is None:
                raise ProtocolError(f"unknown model '{name}'; this server serves: {', '.join(app.models)}", 404)
            if not tail:
                self._expect(method, "GET")
                self._send_json(200, model.metadata())
            elif tail == ["ready"]:
                self._expect(method, "GET")
                self._send_json(200 if app.ready else 503, {"name": name, "ready": app.ready})
            elif tail == ["config"]:
                self._expect(method, "GET")
                self._send_json(200, model.config())
            elif tail == ["infer"]:
                self._expect(method, "POST")
                self._infer(model)
                return
            else:
                raise ProtocolError(f"unknown endpoint {method} {self.path}", 404)
            app.stats.record(200)
        except ProtocolError as exc:
            self._send_error(exc.status, str(exc), {"Allow": exc.allow} if getattr(exc, "allow", None) else None)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a server answers, it does not die
            self._send_error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _expect(self, method: str, allowed: str) -> None:
        if method != allowed:
            exc = ProtocolError(f"method {method} not allowed on {self.path}; use {allowed}", 405)
            exc.allow = allowed  # type: ignore[attr-defined]
            raise exc

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def _probe(self) -> None:
        """Read and discard a Content-Length body (bounded by the request limit)."""
        cl_text = self.headers.get("Content-Length")
        try:
            length = int(cl_text) if cl_text is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise ProtocolError(f"probe needs a Content-Length header, got {cl_text!r}", 411)
        if length > self.server.app.max_request_bytes:
            self.close_connection = True
            raise ProtocolError(self._too_large(length), 413)
        left = length
        clock = ArrivalClock()
        while left > 0:
            chunk = self.rfile.read1(min(left, 65536))  # what has arrived (one socket read): arrival times
            if not chunk:
                self.close_connection = True
                raise ProtocolError(f"truncated probe body: {length - left} of {length} bytes", 400)
            left -= len(chunk)
            clock.add(len(chunk))
        self._unread = 0
        r = clock.rate_sample()
        self._send_json(200, {"received_bytes": length, **({"receive_bytes": r[0], "receive_ms": round(r[1], 4)}
                                                            if r is not None else {})})

    # ---------------------------------------------------------------- inference
    def _infer(self, model: CloudModel) -> None:
        app = self.server.app
        t_start = time.perf_counter()
        net = 0.0  # seconds spent waiting on the socket (not decoding)
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ProtocolError("Transfer-Encoding is not supported; send the body with a Content-Length", 411)
        cl_text = self.headers.get("Content-Length")
        if cl_text is None:
            self.close_connection = True
            raise ProtocolError("Content-Length header required", 411)
        try:
            length = int(cl_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ProtocolError(f"bad Content-Length {cl_text!r}") from None
        if length > app.max_request_bytes:
            self.close_connection = True  # never read an oversized body, not even to drain it
            raise ProtocolError(self._too_large(length), 413)
        rfile = self.rfile
        clock = ArrivalClock()

        def readinto(view: memoryview) -> int:
            nonlocal net
            t = time.perf_counter()
            n = rfile.readinto1(view) or 0  # one socket read at a time: arrival times for the clock
            net += time.perf_counter() - t
            self._unread -= n
            clock.add(n)
            return n

        def read(n: int) -> bytes:
            buf = bytearray(n)
            got = read_exact(readinto, memoryview(buf))
            if got < n:
                self.close_connection = True
                raise ProtocolError(
                    f"truncated body: Content-Length is {length} but the body ended after {length - self._unread} bytes"
                )
            return bytes(buf)

        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        if encoding == "identity":
            encoding = ""
        hl_text = self.headers.get(HEADER_LENGTH)
        header_length = None
        if hl_text is not None:
            try:
                header_length = int(hl_text)
                if header_length < 0:
                    raise ValueError
            except ValueError:
                raise ProtocolError(f"bad {HEADER_LENGTH} {hl_text!r}: expected a byte count") from None
            if header_length > length and not encoding:
                raise ProtocolError(f"{HEADER_LENGTH} {header_length} is larger than the body ({length} bytes)")

        if encoding:  # compressed body (tritonclient's request_compression_algorithm): decode in memory
            if encoding not in ("gzip", "deflate"):
                raise ProtocolError(f"Content-Encoding {encoding!r} not supported (gzip, deflate)", 415)
            raw = read(length)
            # Bounded decompression: a small compressed body must not expand past the limit.
            d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            try:
                body = d.decompress(raw, app.max_request_bytes + 1)
            except zlib.error as exc:
                raise ProtocolError(f"body is not valid {encoding} data ({exc})") from None
            if len(body) > app.max_request_bytes or d.unconsumed_tail:
                raise ProtocolError(
                    f"decompressed request body exceeds the server limit of {app.max_request_bytes} bytes "
                    "(onnxsplit serve --max-request-bytes)", 413)
            if not d.eof:
                raise ProtocolError(f"body is not valid {encoding} data (truncated stream)")
            t0 = time.perf_counter()
            hl = len(body) if header_length is None else header_length
            if hl > len(body):
                raise ProtocolError(f"{HEADER_LENGTH} {hl} is larger than the decompressed body ({len(body)} bytes)")
            req = parse_request_header(body[:hl])
            outputs = model.validate(req, len(body) - hl)
            req, feeds = decode_body(body, header_length, response=False)
            decode_s = time.perf_counter() - t0
        else:
            head = read(length if header_length is None else header_length)
            t0 = time.perf_counter()
            net0 = net
            req = parse_request_header(head)
            outputs = model.validate(req, None if header_length is None else length - header_length)
            if header_length is None and req.binary_total:
                raise ProtocolError(
                    f"input '{next(t.name for t in req.inputs if t.binary_size is not None)}' has binary_data_size but "
                    f"the request has no {HEADER_LENGTH} header"
                )
            feeds = {}
            for t in req.inputs:
                if t.binary_size is not None:
                    feeds[t.name] = read_binary_tensor(t, readinto)
                else:
                    feeds[t.name] = array_from_json(t.data, t.datatype, t.shape, t.name)
            decode_s = time.perf_counter() - t0 - (net - net0)
        t1 = time.perf_counter()
        results = model.run(feeds, outputs)
        t2 = time.perf_counter()
        cloud_ms = (t2 - t1) * 1e3
        params = {"cloud_ms": round(cloud_ms, 4), "server_decode_ms": round(decode_s * 1e3, 4), **clock.parameters()}
        enc = encode_response(
            model.name, results, binary=req.wants_binary, request_id=req.id, parameters=params,
            time_key="server_encode_ms",
        )
        sent = self._send(200, enc)
        app.stats.record(200, infer=True, cloud_ms=cloud_ms, total_ms=(time.perf_counter() - t_start) * 1e3,
                         bytes_in=length, bytes_out=sent)


def load_bundles(source: str | Path | Bundle | Sequence[str | Path | Bundle], *,
                 verify_checksums: bool = True) -> list[Bundle]:
    """The bundles a server serves: one bundle, every plan of a dynamic bundle that has a cloud half
    (``onnxsplit.dynamic/1``), or each item of a list. Bundles without a cloud half are an error
    when named alone, skipped inside a dynamic bundle."""
    if isinstance(source, Bundle):
        return [source]
    if isinstance(source, (str, Path)):
        root = Path(source)
        try:
            schema = json.loads((root / "manifest.json").read_text()).get("schema")
        except (OSError, ValueError, AttributeError):
            schema = None  # load_bundle says what is wrong
        if schema == DYNAMIC_SCHEMA:
            dyn = load_dynamic_bundle(root)
            out = [load_bundle(dyn.plan_dir(int(p["id"])), verify_checksums=verify_checksums) for p in dyn.plans
                   if p["kind"] != "all-edge"]
            if not out:
                raise BundleError(f"dynamic bundle {root} has no plan with a cloud half: there is nothing to serve")
            return out
        return [load_bundle(root, verify_checksums=verify_checksums)]
    out = [b for item in source for b in load_bundles(item, verify_checksums=verify_checksums)]
    if not out:
        raise BundleError("no bundle to serve")
    return out


class CloudServer:
    """Serve bundles' cloud halves; ``start()`` runs it in a background thread, ``stop()`` ends it.

    ``bundle``: a bundle folder (or :class:`Bundle`), a dynamic bundle folder (every plan with a
    cloud half is served), or a list of bundles; each model is served under its own name
    (``models``; ``model`` is the first one).

    >>> with CloudServer("out/tiny", port=0) as srv:   # doctest: +SKIP
    ...     print(srv.url)
    """

    def __init__(
        self,
        bundle: str | Path | Bundle | Sequence[str | Path | Bundle],
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
        max_request_bytes: int | None = None,
        optimize: bool = True,
        threads: int | None = None,
        verify_checksums: bool = True,
        idle_timeout: float = 60.0,
        log=None,  # noqa: ANN001 - callable(str) for access-log lines, None = silent
    ):
        self.bundles = load_bundles(bundle, verify_checksums=verify_checksums)
        self.bundle = self.bundles[0]
        self.models: dict[str, CloudModel] = {}
        for b in self.bundles:
            if b.model_name in self.models:
                raise BundleError(f"two bundles serve the model name '{b.model_name}' ({self.models[b.model_name].bundle.root} "
                                  f"and {b.root}); give one a different 'name' in its manifest.json")
            self.models[b.model_name] = CloudModel(b, optimize=optimize, threads=threads)
        self.model = next(iter(self.models.values()))
        self.token = token or None
        self.max_request_bytes = (int(max_request_bytes) if max_request_bytes else
                                  max(default_max_request_bytes(b) for b in self.bundles))
        self.idle_timeout = idle_timeout
        self.log = log
        self.stats = Stats()
        self.ready = False
        try:
            self.httpd = _HTTPServer((host, port), _Handler, self)
        except OSError as exc:
            raise BundleError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None
        self.ready = True

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def url(self) -> str:
        host = self.host if ":" not in str(self.host) else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.05)

    def start(self) -> CloudServer:
        self._thread = threading.Thread(target=self.serve_forever, name=f"onnxsplit-serve-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listening socket and cut every open connection (like a crash)."""
        self.ready = False
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()
        with self.httpd.conn_lock:
            conns = list(self.httpd.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> CloudServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
