"""onnxsplit.runtime: the KServe v2 hand-off (protocol, embedded server, edge runner, fallback, Triton repo).

Everything runs on loopback (127.0.0.1) with ephemeral ports; servers are stopped by their fixtures
and every loop and wait is bounded.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxsplit import zoo
from onnxsplit.cli import main as onnxsplit_main
from onnxsplit.runtime import protocol as P
from onnxsplit.runtime.bundle import BundleError, load_bundle
from onnxsplit.runtime.cli import main as runtime_main
from onnxsplit.runtime.client import CloudUnavailable, DeadlineExceeded, EdgeRunner, RemoteError
from onnxsplit.runtime.server import CloudServer
from onnxsplit.runtime.triton import write_triton_repository
from onnxsplit.runtime_ort import random_feeds

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------- fixtures
def _uint8_boundary_model() -> onnx.ModelProto:
    """x -> Clip -> *50 -> Cast(uint8) [cut here] -> Cast(float) -> *0.02 -> MatMul -> logits."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(5.0, np.float32), "hi"),
        numpy_helper.from_array(np.array(50.0, np.float32), "scale_up"),
        numpy_helper.from_array(np.array(0.02, np.float32), "scale_down"),
        numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Clip", ["x", "lo", "hi"], ["clip.out"], name="clip"),
        helper.make_node("Mul", ["clip.out", "scale_up"], ["up.out"], name="up"),
        helper.make_node("Cast", ["up.out"], ["q"], name="quant", to=TensorProto.UINT8),
        helper.make_node("Cast", ["q"], ["dq.cast"], name="dequant", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["dq.cast", "scale_down"], ["down.out"], name="down"),
        helper.make_node("MatMul", ["down.out", "w"], ["logits"], name="head"),
    ]
    g = helper.make_graph(
        nodes, "uint8_boundary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _split(src: Path, out: Path, *plan: str) -> Path:
    assert onnxsplit_main(["split", str(src), *plan, "-o", str(out), "--force"]) == 0
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (bundle folder, original model)."""
    tmp = tmp_path_factory.mktemp("bundles")
    multi = tmp / "multi_io.onnx"
    onnx.save(zoo.multi_io(), str(multi))
    u8 = tmp / "uint8.onnx"
    onnx.save(_uint8_boundary_model(), str(u8))
    tiny, resnet = ROOT / "examples" / "tiny_cnn.onnx", ROOT / "examples" / "resnet_like.onnx"
    out = {
        "tiny": (_split(tiny, tmp / "tiny", "--at", "9"), tiny),
        "resnet": (_split(resnet, tmp / "resnet", "--at", "12"), resnet),
        "multi_io": (_split(multi, tmp / "multi", "--at", "8"), multi),
        "all_cloud": (_split(multi, tmp / "all_cloud", "--at", "0"), multi),
        "uint8": (_split(u8, tmp / "u8", "--cut", "q"), u8),
    }
    return out


def _reference(model: Path, feeds: dict) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _feeds(model: Path, seed: int = 1) -> dict[str, np.ndarray]:
    return random_feeds(onnx.load(str(model)), seed=seed)


@pytest.fixture()
def server(bundles):  # noqa: ANN001, ANN201
    """A factory: server(name, **options) -> started CloudServer, stopped at teardown."""
    started = []

    def make(name: str = "tiny", **kw) -> CloudServer:  # noqa: ANN003
        kw.setdefault("optimize", False)
        srv = CloudServer(bundles[name][0], port=0, **kw).start()
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


def _http(srv: CloudServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
          conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        if own:
            conn.close()


def _infer_path(srv: CloudServer) -> str:
    return f"/v2/models/{srv.model_name}/infer"


# ------------------------------------------------------------------------------- protocol
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.array([[1, 255, 0]], dtype=np.uint8),
        np.array([-3, 7], dtype=np.int8),
        np.array([1 << 40, -5], dtype=np.int64),
        np.array([0.5, -2.0], dtype=np.float16),
        np.array([1e300, -0.0], dtype=np.float64),
        np.array([[True, False]]),
        np.array(3.5, dtype=np.float32),  # rank 0
        np.zeros((0, 4), dtype=np.float32),  # empty
        np.array([b"ab", b"", "\u00e9".encode()], dtype=object),
    ],
    ids=lambda a: f"{a.dtype}{list(a.shape)}",
)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_protocol_round_trip(arr: np.ndarray, binary: bool) -> None:
    enc = P.encode_request({"t": arr, "u": np.ones(3, np.float32)}, binary=binary, request_id="7")
    hl = int(enc.http_headers()[P.HEADER_LENGTH]) if enc.binary else None
    req, tensors = P.decode_body(enc.body(), hl, response=False)
    assert req.id == "7" and req.wants_binary("anything") is True
    got = tensors["t"]
    assert got.shape == arr.shape and got.dtype == arr.dtype
    assert list(got.reshape(-1)) == list(arr.reshape(-1))
    resp = P.encode_response("m", {"y": arr}, binary=binary, request_id="7", parameters={"cloud_ms": 1.5}, time_key="enc")
    hl = int(resp.http_headers()[P.HEADER_LENGTH]) if resp.binary else None
    dec = P.decode_body(resp.body(), hl, response=True)
    assert dec.id == "7" and dec.parameters["cloud_ms"] == 1.5 and "enc" in dec.parameters
    assert dec.outputs["y"].dtype == arr.dtype and list(dec.outputs["y"].reshape(-1)) == list(arr.reshape(-1))


def test_protocol_datatype_mapping() -> None:
    assert P.datatype_of(np.zeros(1, np.float32)) == "FP32" and P.datatype_of(np.zeros(1, np.uint8)) == "UINT8"
    assert P.onnx_datatype(TensorProto.FLOAT) == "FP32" and P.onnx_datatype(TensorProto.STRING) == "BYTES"
    assert P.triton_type("UINT8") == "TYPE_UINT8" and P.triton_type("BYTES") == "TYPE_STRING"
    assert P.datatype_from_name("float") == "FP32" and P.datatype_from_name("uint8") == "UINT8"
    with pytest.raises(P.ProtocolError, match="unknown datatype 'FP8'"):
        P.np_dtype("FP8")


def test_protocol_binary_payload_is_not_copied() -> None:
    arr = np.arange(1 << 16, dtype=np.float32)
    enc = P.encode_request({"x": arr})
    assert isinstance(enc.buffers[0], memoryview) and np.shares_memory(np.asarray(enc.buffers[0]), arr)


# ------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("name", ["tiny", "resnet", "multi_io", "all_cloud", "uint8"])
def test_end_to_end_bit_identical(bundles, server, name: str) -> None:  # noqa: ANN001
    bundle, model = bundles[name]
    srv = server(name)
    with EdgeRunner(bundle, srv.url, optimize=False) as runner:
        for seed in range(3):
            feeds = _feeds(model, seed)
            if name == "uint8":
                feeds["x"] = np.abs(feeds["x"]) * 2
            res = runner.infer(feeds)
            ref = _reference(model, feeds)
            assert not res.fallback and res.attempts == 1 and res.error is None
            assert list(res.outputs) == list(ref)
            for k in ref:
                assert res.outputs[k].dtype == ref[k].dtype
                assert np.array_equal(res.outputs[k], ref[k]), k
    assert set(res.timings_ms) == {"edge", "serialize", "network", "cloud", "deserialize", "total"}
    assert all(v >= 0 for v in res.timings_ms.values())
    parts = sum(v for k, v in res.timings_ms.items() if k != "total")
    assert parts <= res.timings_ms["total"] * 1.05 + 0.05
    assert res.server_timings_ms["cloud_ms"] == res.timings_ms["cloud"]


def test_uint8_boundary_goes_as_uint8(bundles, server) -> None:  # noqa: ANN001
    bundle = load_bundle(bundles["uint8"][0])
    assert [(t.name, t.datatype) for t in bundle.cloud_inputs] == [("q", "UINT8")]
    srv = server("uint8")
    status, _, body = _http(srv, "GET", f"/v2/models/{srv.model_name}")
    assert status == 200
    assert json.loads(body)["inputs"] == [{"name": "q", "datatype": "UINT8", "shape": [1, 64]}]
    enc = P.encode_request({"q": np.arange(64, dtype=np.uint8).reshape(1, 64)})
    status, h, body = _http(srv, "POST", _infer_path(srv), enc.body(), enc.http_headers())
    assert status == 200 and h["content-type"] == "application/octet-stream"
    dec = P.decode_body(body, int(h[P.HEADER_LENGTH.lower()]), response=True)
    assert dec.outputs["logits"].shape == (1, 10) and dec.outputs["logits"].dtype == np.float32
    # float32 sent where the model takes uint8: a clear 400
    enc = P.encode_request({"q": np.zeros((1, 64), np.float32)})
    status, _, body = _http(srv, "POST", _infer_path(srv), enc.body(), enc.http_headers())
    assert status == 400 and json.loads(body)["error"] == "input 'q': datatype FP32 does not match the model's UINT8"


def test_quantization_manifest_fields_are_read(bundles, tmp_path: Path) -> None:  # noqa: ANN001
    dst = tmp_path / "q"
    shutil.copytree(bundles["uint8"][0], dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["plan"]["boundary"][0].update(dtype="float", wire_dtype="uint8", scale=0.02, zero_point=0, wire_nbytes=64)
    (dst / "manifest.json").write_text(json.dumps(m))
    b = load_bundle(dst)
    assert b.boundary[0].wire_dtype == "uint8" and b.boundary[0].extra == {"scale": 0.02, "zero_point": 0}
    assert b.boundary_nbytes == 64
    m["plan"]["boundary"][0]["wire_dtype"] = "int8"  # disagrees with the cloud model's declared input
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="boundary tensor 'q': manifest.json says int8 on the wire but the cloud model declares UINT8"):
        load_bundle(dst)


def test_int8_quantized_split_served_end_to_end(tmp_path: Path) -> None:
    """`onnxsplit split --quantize int8`: the boundary travels under its wire name as uint8."""
    tiny = ROOT / "examples" / "tiny_cnn.onnx"
    out = tmp_path / "q"
    assert onnxsplit_main(["split", str(tiny), "--at", "5", "--quantize", "int8", "-o", str(out), "--force"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    wire = m["plan"]["boundary"][0]
    assert wire["wire_name"] != wire["name"] and wire["wire_dtype"] == "uint8"
    b = load_bundle(out)
    assert [(t.name, t.datatype) for t in b.cloud_inputs] == [(wire["wire_name"], "UINT8")]
    assert b.boundary[0].extra["tensor_name"] == wire["name"] and b.boundary_nbytes == wire["wire_nbytes"]
    srv = CloudServer(out, port=0).start()
    try:
        feeds = _feeds(tiny)
        ref = _reference(tiny, feeds)
        with EdgeRunner(out, srv.url) as er:
            r = er.infer(feeds)
        assert not r.fallback and r.attempts == 1
        for name, want in ref.items():
            got = r.outputs[name]
            assert float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want))) > 0.99
    finally:
        srv.stop()


def test_json_mode_runner_and_all_edge_bundle(bundles, server, tmp_path: Path) -> None:  # noqa: ANN001
    bundle, model = bundles["resnet"]
    srv = server("resnet")
    feeds = _feeds(model)
    with EdgeRunner(bundle, srv.url, optimize=False, binary=False) as runner:
        res = runner.infer(feeds)
    assert np.array_equal(res.outputs["logits"], _reference(model, feeds)["logits"])
    all_edge = _split(model, tmp_path / "all_edge", "--at", str(len(load_bundle(bundle).manifest["plan"]["edge_nodes"]) + 25))
    with EdgeRunner(all_edge, "http://127.0.0.1:9", optimize=False) as runner:  # nothing to send: no network
        res = runner.infer(feeds)
    assert res.attempts == 0 and not res.fallback
    assert np.array_equal(res.outputs["logits"], _reference(model, feeds)["logits"])
    with pytest.raises(BundleError, match="no cloud model"):
        CloudServer(all_edge, port=0)


# ------------------------------------------------------------------------------- other clients
def test_tritonclient_http_binary_and_json(bundles, server) -> None:  # noqa: ANN001
    httpclient = pytest.importorskip("tritonclient.http")
    bundle, model = bundles["resnet"]
    srv = server("resnet")
    feeds = _feeds(model)
    runner = EdgeRunner(bundle, None, optimize=False)
    boundary = load_bundle(bundle).boundary_feeds(feeds, runner.run_edge(feeds))
    ref = _reference(model, feeds)["logits"]
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(srv.model_name)
        meta = client.get_model_metadata(srv.model_name)
        assert [i["name"] for i in meta["inputs"]] == list(boundary)
        assert {i["datatype"] for i in meta["inputs"]} == {"FP32"}
        for binary_in, binary_out, compression in [(True, True, None), (False, False, None), (True, False, "gzip")]:
            inputs = []
            for name, arr in boundary.items():
                inp = httpclient.InferInput(name, list(arr.shape), "FP32")
                inp.set_data_from_numpy(arr, binary_data=binary_in)
                inputs.append(inp)
            outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary_out)]
            result = client.infer(srv.model_name, inputs, outputs=outputs, request_id="r1",
                                  request_compression_algorithm=compression)
            assert np.array_equal(result.as_numpy("logits"), ref), (binary_in, binary_out, compression)
            assert result.get_response()["id"] == "r1"
        result = client.infer(srv.model_name, inputs)  # no outputs listed: all outputs, binary
        assert np.array_equal(result.as_numpy("logits"), ref)
        with pytest.raises(Exception, match="unknown model 'nope'"):
            client.infer("nope", inputs)
    finally:
        client.close()


def test_plain_json_request_and_binary_output_per_output(bundles, server) -> None:  # noqa: ANN001
    bundle, model = bundles["tiny"]
    srv = server("tiny")
    feeds = _feeds(model)
    b = load_bundle(bundle)
    x = EdgeRunner(b, None, optimize=False).run_edge(feeds)["squeeze.conv.out"]
    ref = _reference(model, feeds)["logits"]
    doc = {"id": "abc", "inputs": [{"name": "squeeze.conv.out", "datatype": "FP32", "shape": [1, 4, 8, 8],
                                    "data": x.tolist()}]}  # nested lists are accepted too
    status, h, body = _http(srv, "POST", _infer_path(srv), json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert status == 200 and h["content-type"] == "application/json"
    out = json.loads(body)
    assert out["id"] == "abc" and out["model_name"] == "tiny_cnn-cloud" and out["outputs"][0]["datatype"] == "FP32"
    assert np.array_equal(np.array(out["outputs"][0]["data"], np.float32).reshape(1, 10), ref)
    assert {"cloud_ms", "server_decode_ms", "server_encode_ms"} <= set(out["parameters"])
    doc["outputs"] = [{"name": "logits", "parameters": {"binary_data": True}}]
    status, h, body = _http(srv, "POST", _infer_path(srv), json.dumps(doc).encode())
    assert status == 200 and P.HEADER_LENGTH.lower() in h
    dec = P.decode_body(body, int(h[P.HEADER_LENGTH.lower()]), response=True)
    assert np.array_equal(dec.outputs["logits"], ref)
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", f"/v2/models/{srv.model_name}/ready",
                 f"/v2/models/{srv.model_name}/versions/1", f"/v2/models/{srv.model_name}/config"):
        status, _, body = _http(srv, "GET", path)
        assert status == 200, path
    assert json.loads(_http(srv, "GET", f"/v2/models/{srv.model_name}/config")[2])["input"][0]["data_type"] == "TYPE_FP32"


# ------------------------------------------------------------------------------- validation
def _binary(tensors: dict, **kw) -> tuple[bytes, dict]:  # noqa: ANN003
    enc = P.encode_request(tensors, **kw)
    return enc.body(), enc.http_headers()


def _sized(declared: int, sent: int) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "squeeze.conv.out", "datatype": "FP32", "shape": [1, 4, 8, 8],
                                   "parameters": {"binary_data_size": declared}}]}).encode()
    return head + bytes(sent), {P.HEADER_LENGTH: str(len(head))}


X = np.zeros((1, 4, 8, 8), np.float32)
GOOD = {"name": "squeeze.conv.out", "datatype": "FP32", "shape": [1, 4, 8, 8], "data": [0.0] * 256}


@pytest.mark.parametrize(
    "path, body, headers, status, message",
    [
        ("/v2/models/nope/infer", *_binary({"squeeze.conv.out": X}), 404, "unknown model 'nope'; this server serves: tiny_cnn-cloud"),
        (None, *_binary({"squeeze.conv.out": X, "extra": X}), 400, "unexpected input 'extra'; model 'tiny_cnn-cloud' takes: squeeze.conv.out"),
        (None, *_binary({"wrong_name": X}), 400, "unexpected input 'wrong_name'"),
        (None, json.dumps({"inputs": []}).encode(), {}, 400, "request has no 'inputs' list"),
        (None, *_binary({"squeeze.conv.out": X[0]}), 400, "input 'squeeze.conv.out': shape [4,8,8] does not match the model's [1,4,8,8]"),
        (None, *_binary({"squeeze.conv.out": X.astype(np.float64)}), 400, "input 'squeeze.conv.out': datatype FP64 does not match the model's FP32"),
        (None, b'{"inputs": [', {}, 400, "malformed JSON request"),
        (None, b"[1, 2]", {}, 400, "malformed JSON request: expected an object"),
        (None, json.dumps({"inputs": [{**GOOD, "data": [0.0] * 255}]}).encode(), {}, 400,
         "input 'squeeze.conv.out': 255 data elements for shape [1,4,8,8] (256 expected)"),
        (None, json.dumps({"inputs": [{**GOOD, "datatype": "FP99"}]}).encode(), {}, 400, "input 'squeeze.conv.out': unknown datatype 'FP99'"),
        (None, json.dumps({"inputs": [{**GOOD, "data": ["a"] * 256}]}).encode(), {}, 400, "input 'squeeze.conv.out': data is not a list of FP32"),
        (None, json.dumps({"inputs": [GOOD], "outputs": [{"name": "nope"}]}).encode(), {}, 400,
         "unknown output 'nope'; model 'tiny_cnn-cloud' returns: logits"),
        (None, json.dumps({"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]}).encode(), {}, 400,
         "input 'squeeze.conv.out' has neither 'data' nor parameters.binary_data_size"),
        (None, *_sized(1000, 1000), 400, "input 'squeeze.conv.out': binary_data_size is 1000 but FP32[1,4,8,8] takes 1024 bytes"),
        (None, *_sized(1024, 1000), 400, "truncated body: the inputs' binary_data_size add up to 1024 bytes but only 1000 follow"),
        (None, *_sized(1024, 1030), 400, "6 unexpected bytes after the last binary tensor"),
        (None, b"{}", {P.HEADER_LENGTH: "99"}, 400, "Inference-Header-Content-Length 99 is larger than the body (2 bytes)"),
        ("/v2/nothing", b"{}", {}, 404, "unknown endpoint POST /v2/nothing"),
    ],
    ids=lambda v: v.split(";")[0][:40] if isinstance(v, str) and " " in v else "-",
)
def test_bad_requests_get_4xx_with_one_line_message(server, path, body, headers, status, message) -> None:  # noqa: ANN001
    srv = server("tiny")
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        st, h, raw = _http(srv, "POST", path or _infer_path(srv), body, headers, conn=conn)
        assert st == status
        err = json.loads(raw)["error"]
        assert message in err and "\n" not in err
        # the keep-alive connection still serves a good request after the error
        st, _, raw = _http(srv, "POST", _infer_path(srv), *_binary({"squeeze.conv.out": X}), conn=conn)
        assert st == 200
    finally:
        conn.close()


def _raw_exchange(srv: CloudServer, data: bytes, *, shut_write: bool = True) -> bytes:
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    return b"".join(chunks)


def test_truncated_oversized_and_odd_transfers(server) -> None:  # noqa: ANN001
    srv = server("tiny", max_request_bytes=4096)
    body, headers = _binary({"squeeze.conv.out": X})
    head = f"POST {_infer_path(srv)} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    # the connection drops half way through the tensor bytes
    out = _raw_exchange(srv, head.encode() + body[: len(body) - 300])
    assert out.startswith(b"HTTP/1.1 400") and b"truncated body: input 'squeeze.conv.out' has 724 of its 1024 bytes" in out
    # the JSON header itself is cut short
    out = _raw_exchange(srv, head.encode() + body[:50])
    assert out.startswith(b"HTTP/1.1 400") and b"truncated body" in out
    # over the limit: refused from the Content-Length alone, before reading the body
    big, bh = _binary({"squeeze.conv.out": np.zeros((1, 4, 16, 16), np.float32)})
    st, h, raw = _http(srv, "POST", _infer_path(srv), big, bh)
    assert st == 413 and f"request body of {len(big)} bytes exceeds the server limit of 4096 bytes" in json.loads(raw)["error"]
    assert h.get("connection") == "close"
    st, _, raw = _http(srv, "POST", _infer_path(srv), b"{}", {"Transfer-Encoding": "chunked"})
    assert st == 411
    st, h, raw = _http(srv, "GET", _infer_path(srv))
    assert st == 405 and h["allow"] == "POST" and "use POST" in json.loads(raw)["error"]
    out = _raw_exchange(srv, f"POST {_infer_path(srv)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 411") and b"Content-Length header required" in out
    # a small gzip body that would expand past the limit is refused without expanding it all
    import gzip

    bomb = gzip.compress(json.dumps({"inputs": [GOOD]}).encode() + b" " * 100_000)
    st, _, raw = _http(srv, "POST", _infer_path(srv), bomb, {"Content-Encoding": "gzip"})
    assert st == 413 and "decompressed request body exceeds the server limit of 4096 bytes" in json.loads(raw)["error"]
    st, _, raw = _http(srv, "POST", _infer_path(srv), b"not gzip", {"Content-Encoding": "gzip"})
    assert st == 400 and "body is not valid gzip data" in json.loads(raw)["error"]
    st, _, raw = _http(srv, "POST", _infer_path(srv), b"{}", {"Content-Encoding": "br"})
    assert st == 415
    assert srv.stats.to_json()["server_errors"] == 0


def test_idle_keep_alive_connection_closed_by_server_is_reopened(bundles, server) -> None:  # noqa: ANN001
    bundle, model = bundles["tiny"]
    srv = server("tiny", idle_timeout=0.2)
    feeds = _feeds(model)
    with EdgeRunner(bundle, srv.url, optimize=False, retries=0, fallback=False) as r:
        assert r.infer(feeds).attempts == 1
        time.sleep(0.5)  # the server drops the idle connection; the pooled one is stale
        res = r.infer(feeds)
        assert not res.fallback and res.attempts == 1


def test_bearer_token(bundles, server) -> None:  # noqa: ANN001
    bundle, model = bundles["tiny"]
    srv = server("tiny", token="s3cret")
    body, headers = _binary({"squeeze.conv.out": X})
    for auth in (None, "Bearer wrong", "s3cret", "Basic s3cret"):
        h = dict(headers, **({"Authorization": auth} if auth else {}))
        st, rh, raw = _http(srv, "POST", _infer_path(srv), body, h)
        assert st == 401 and "bearer token" in json.loads(raw)["error"] and rh["www-authenticate"].startswith("Bearer")
    assert _http(srv, "GET", f"/v2/models/{srv.model_name}")[0] == 401
    assert _http(srv, "GET", "/v2/health/ready")[0] == 200  # probes need no token
    st, _, _ = _http(srv, "POST", _infer_path(srv), body, dict(headers, Authorization="Bearer s3cret"))
    assert st == 200
    feeds = _feeds(model)
    with EdgeRunner(bundle, srv.url, token="wrong", optimize=False) as r:
        with pytest.raises(RemoteError, match="answered 401: missing or wrong bearer token") as ei:
            r.infer(feeds)  # a configuration error: raised, no fallback
        assert ei.value.status == 401
    with EdgeRunner(bundle, srv.url, token="s3cret", optimize=False) as r:
        assert not r.infer(feeds).fallback
        assert r.check_server()["name"] == srv.model_name


# ------------------------------------------------------------------------------- concurrency
def test_32_concurrent_clients_50_requests_each(bundles, server) -> None:  # noqa: ANN001
    bundle, model = bundles["tiny"]
    # onnxruntime's float results depend on the intra-op thread count (and, with a shared pool, on how
    # concurrent runs split it): one thread everywhere keeps the comparison bit-exact.
    srv = server("tiny", threads=1)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1  # 32 threads share the CPU: no spinning thread pools
    ref_sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    b = load_bundle(bundle)
    n_clients, n_requests = 32, 50
    failures: list[str] = []
    done = [0] * n_clients
    barrier = threading.Barrier(n_clients, timeout=60)

    def client(c: int) -> None:
        try:
            rng = np.random.default_rng(1000 + c)
            xs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(n_requests)]
            expected = [ref_sess.run(None, {"image": x})[0] for x in xs]
            with EdgeRunner(b, srv.url, optimize=False, retries=0, fallback=False, timeout=30, threads=1) as r:
                barrier.wait()
                for i, x in enumerate(xs):
                    res = r.infer({"image": x})
                    if not np.array_equal(res.outputs["logits"], expected[i]):
                        failures.append(f"client {c} request {i}: wrong output")
                    done[c] += 1
        except Exception as exc:  # noqa: BLE001
            failures.append(f"client {c}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "clients hung"
    assert not failures, failures[:5]
    assert sum(done) == n_clients * n_requests
    assert srv.stats.to_json()["inferences"] >= n_clients * n_requests - n_clients  # last records may still be in flight


def test_one_runner_shared_by_threads(bundles, server) -> None:  # noqa: ANN001
    bundle, model = bundles["resnet"]
    srv = server("resnet")
    feeds = [_feeds(model, s) for s in range(8)]
    refs = [_reference(model, f)["logits"] for f in feeds]
    errors = []
    with EdgeRunner(bundle, srv.url, optimize=False) as runner:
        def work(k: int) -> None:
            for i in range(20):
                j = (k + i) % 8
                if not np.array_equal(runner.infer(feeds[j]).outputs["logits"], refs[j]):
                    errors.append((k, i))

        ts = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in ts)


# ------------------------------------------------------------------------------- failures
def test_server_stopped_mid_run_falls_back(bundles, server) -> None:  # noqa: ANN001
    bundle, model = bundles["tiny"]
    srv = server("tiny")
    feeds = [_feeds(model, s) for s in range(6)]
    refs = [_reference(model, f)["logits"] for f in feeds]
    results = []
    stop_at = threading.Event()

    def loop() -> None:
        with EdgeRunner(bundle, srv.url, optimize=False, retries=1, backoff_s=0.01, timeout=2) as r:
            for i in range(400):
                if i == 40:
                    stop_at.set()
                res = r.infer(feeds[i % 6])
                results.append((i, res))
                if sum(x.fallback for _, x in results) >= 20:
                    break

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    assert stop_at.wait(30)
    srv.stop()  # stops listening and cuts open connections, like a crash
    t.join(timeout=60)
    assert not t.is_alive()
    assert results and all(np.array_equal(res.outputs["logits"], refs[i % 6]) for i, res in results)
    assert not any(res.fallback for i, res in results[:40])
    fb = [res for _, res in results if res.fallback]
    assert len(fb) >= 20 and all("unreachable" in res.error for res in fb) and fb[-1].attempts == 2


def test_server_process_killed_then_cli_reports_fallback(bundles, tmp_path: Path) -> None:  # noqa: ANN001
    bundle, model = bundles["tiny"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxsplit.runtime.cli", "serve", str(bundle), "--port", "0", "--json", "--no-optimize"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # blocks until the server listens (or dies)
        assert line, proc.stderr.read()
        url = json.loads(line)["url"]
        feeds = _feeds(model)
        ref = _reference(model, feeds)["logits"]
        runner = EdgeRunner(bundle, url, optimize=False, retries=2, backoff_s=0.01, timeout=5)
        res = runner.infer(feeds)
        assert not res.fallback and np.array_equal(res.outputs["logits"], ref)
        proc.kill()
        proc.wait(timeout=10)
        t0 = time.perf_counter()
        res = runner.infer(feeds)  # the pooled keep-alive connection is dead, then connections are refused
        assert res.fallback and res.attempts == 3 and "connection refused" in res.error
        assert np.array_equal(res.outputs["logits"], ref)
        assert time.perf_counter() - t0 < 5
        np.save(tmp_path / "x.npy", feeds["image"])
        with pytest.raises(CloudUnavailable, match="unreachable after 1 attempt"):
            EdgeRunner(bundle, url, retries=0, fallback=False).infer(feeds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    cli = [sys.executable, "-m", "onnxsplit.runtime.cli", "run", str(bundle), "--input", str(tmp_path / "x.npy"),
           "--server", url, "--retries", "0", "--no-optimize"]
    out = subprocess.run(cli + ["--output", str(tmp_path / "y.npz")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "fallback" in out.stdout and "cloud (local fallback)" in out.stdout
    assert np.array_equal(np.load(tmp_path / "y.npz")["logits"], ref)
    out = subprocess.run(cli + ["--json"], capture_output=True, text=True, timeout=60)
    doc = json.loads(out.stdout)
    assert doc["fallback"] is True and "connection refused" in doc["fallback_reason"]
    out = subprocess.run(cli + ["--no-fallback"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: cloud") and out.stderr.count("\n") == 1


@pytest.fixture()
def silent_listener():  # noqa: ANN201
    """A socket that accepts connections (kernel backlog) but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def test_read_timeout_retries_then_fallback(bundles, silent_listener) -> None:  # noqa: ANN001
    bundle, model = bundles["tiny"]
    feeds = _feeds(model)
    t0 = time.perf_counter()
    with EdgeRunner(bundle, silent_listener, timeout=0.2, retries=1, backoff_s=0.01, optimize=False) as r:
        res = r.infer(feeds)
    took = time.perf_counter() - t0
    assert res.fallback and res.attempts == 2 and "timed out" in res.error
    assert 0.4 <= took < 3
    assert np.array_equal(res.outputs["logits"], _reference(model, feeds)["logits"])
    with EdgeRunner(bundle, silent_listener, timeout=0.1, retries=0, fallback=False) as r:
        with pytest.raises(CloudUnavailable, match="timed out"):
            r.infer(feeds)


def test_cloud_deadline_stops_the_round_trip_without_retry_or_fallback(bundles, silent_listener, server,
                                                                       tmp_path: Path) -> None:  # noqa: ANN001
    """infer(cloud_deadline_s=T): a cloud that does not answer in T raises DeadlineExceeded after about
    T (no retries, no local fallback: the caller decides); a body the peer does not read is stopped
    mid-way; in time, the result is the normal one and the pooled connection gets its plain timeout back."""
    bundle, model = bundles["tiny"]
    feeds = _feeds(model)
    with EdgeRunner(bundle, silent_listener, timeout=5.0, retries=2, optimize=False) as r:
        t0 = time.perf_counter()
        with pytest.raises(DeadlineExceeded, match="no answer within the deadline") as e:
            r.infer(feeds, cloud_deadline_s=0.2)
        took = time.perf_counter() - t0
    assert 0.2 <= took < 2.0 and 190 <= e.value.elapsed_ms < 1500
    assert e.value.sent_nbytes == e.value.body_nbytes > 0  # a small body: all of it left, no answer came
    # 32 MB all-cloud request to a peer that never reads: the send blocks once the socket buffers are full
    big = tmp_path / "big.onnx"
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1024, 1024])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1024, 1024])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(big))
    big_bundle = _split(big, tmp_path / "big", "--at", "0")
    x = {"x": np.ones((1, 8, 1024, 1024), np.float32)}
    with EdgeRunner(big_bundle, silent_listener, timeout=5.0, retries=2) as r:
        with pytest.raises(DeadlineExceeded) as e:
            r.infer(x, cloud_deadline_s=0.3)
    assert 0 < e.value.sent_nbytes < e.value.body_nbytes and e.value.body_nbytes > 32_000_000
    srv = server("tiny")
    with EdgeRunner(bundle, srv.url, optimize=False) as r:
        res = r.infer(feeds, cloud_deadline_s=10.0)
        assert not res.fallback and res.attempts == 1
        assert np.array_equal(res.outputs["logits"], _reference(model, feeds)["logits"])
        assert len(r._pool) == 1 and r._pool[0].sock.gettimeout() == r.timeout
        assert np.array_equal(r.infer(feeds).outputs["logits"], res.outputs["logits"])


def test_cloud_deadline_also_bounds_a_slow_answer(bundles) -> None:  # noqa: ANN001
    """The request gets through, the answer's binary output trickles in (1 KB per 20 ms, 400 KB):
    the deadline stops the read too (before, the socket timeout applied per read, so an answer that
    kept coming ran to its end), and the exception says how much of the announced answer arrived."""
    from onnxsplit.runtime.protocol import HEADER_LENGTH, encode_response

    bundle, model = bundles["tiny"]
    feeds = _feeds(model)
    big = np.zeros(100_000, np.float32)
    enc = encode_response("m", {"logits": big}, binary=True)
    payload = b"".join(bytes(b) for b in enc.buffers)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         + f"{HEADER_LENGTH}: {len(enc.header)}\r\nContent-Length: {len(enc.header) + len(payload)}\r\n\r\n".encode()
                         + enc.header)
            for i in range(0, len(payload), 1024):
                if stop.is_set():
                    return
                try:
                    conn.sendall(payload[i:i + 1024])
                except OSError:
                    return
                time.sleep(0.02)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        with EdgeRunner(bundle, f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=5.0, retries=2, optimize=False) as r:
            t0 = time.perf_counter()
            with pytest.raises(DeadlineExceeded, match="response bytes received") as e:
                r.infer(feeds, cloud_deadline_s=0.3)
            took = time.perf_counter() - t0
    finally:
        stop.set()
        srv.close()
        th.join(5)
    assert took < 2.0  # the whole answer takes 8 s
    assert e.value.resp_nbytes == big.nbytes and 0 < e.value.recv_nbytes < big.nbytes
    assert e.value.sent_nbytes == e.value.body_nbytes and 0 < e.value.recv_ms <= e.value.elapsed_ms


def test_503_is_retried_and_cooldown_skips_the_network(bundles) -> None:  # noqa: ANN001
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class Busy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            hits.append(1)
            body = b'{"error": "overloaded"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:  # noqa: ANN002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    th = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    try:
        bundle, model = bundles["tiny"]
        feeds = _feeds(model)
        with EdgeRunner(bundle, f"http://127.0.0.1:{httpd.server_port}", retries=3, backoff_s=0.001,
                        cooldown_s=30, optimize=False) as r:
            res = r.infer(feeds)
            assert res.fallback and res.attempts == 4 and len(hits) == 4 and "answered 503: overloaded" in res.error
            res = r.infer(feeds)  # within the cooldown: straight to the local cloud half
            assert res.fallback and res.attempts == 0 and len(hits) == 4 and "marked down" in res.error
    finally:
        httpd.shutdown()
        httpd.server_close()
        th.join(timeout=5)


# ------------------------------------------------------------------------------- bundle + CLI
def test_bundle_errors_are_one_clear_line(bundles, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    src = bundles["tiny"][0]
    with pytest.raises(BundleError, match="bundle folder .*nope not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_bundle(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        load_bundle(bad)
    (bad / "manifest.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(BundleError, match="has schema 'other/9'; this onnxsplit reads 'onnxsplit.manifest/1'"):
        load_bundle(bad)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(src, corrupt)
    data = bytearray((corrupt / "cloud" / "model.onnx").read_bytes())
    data[-5] ^= 0xFF
    (corrupt / "cloud" / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="bundle file cloud/model.onnx is corrupt: sha256"):
        load_bundle(corrupt)
    (corrupt / "cloud" / "model.onnx").unlink()
    with pytest.raises(BundleError, match="bundle file cloud/model.onnx is missing"):
        load_bundle(corrupt)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    rc = runtime_main(["run", str(corrupt), "--input", str(tmp_path / "x.npy"), "--server", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: bundle file cloud/model.onnx is missing") and err.count("\n") == 1
    rc = runtime_main(["serve", str(bad), "--port", "0"])
    assert rc == 2 and "schema" in capsys.readouterr().err


def test_cli_run_against_server(bundles, server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    bundle, model = bundles["multi_io"]
    srv = server("multi_io")
    feeds = _feeds(model)
    ref = _reference(model, feeds)
    np.savez(tmp_path / "x.npz", **feeds)
    rc = runtime_main(["run", str(bundle), "--input", str(tmp_path / "x.npz"), "--server", srv.url, "--no-optimize",
                       "--output", str(tmp_path / "y.npz"), "--repeat", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "fallback" not in out and "cloud: multi_io-cloud at" in out and "median of 3" in out
    got = np.load(tmp_path / "y.npz")
    assert sorted(got.files) == sorted(ref) and all(np.array_equal(got[k], ref[k]) for k in ref)
    rc = runtime_main(["run", str(bundle), "--input", str(tmp_path / "x.npz"), "--server", srv.url, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["fallback"] is False and doc["attempts"] == 1
    assert {d["source"] for d in doc["outputs"].values()} == {"edge", "cloud"}
    assert set(doc["timings_ms"]) == {"edge", "serialize", "network", "cloud", "deserialize", "total"}
    np.save(tmp_path / "one.npy", feeds["image"])
    rc = runtime_main(["run", str(bundle), "--input", str(tmp_path / "one.npy"), "--server", srv.url])
    assert rc == 2 and "holds one array but the model takes 2 inputs (image, vector)" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", image=feeds["image"], vector=feeds["vector"].astype(np.float64))
    rc = runtime_main(["run", str(bundle), "--input", str(tmp_path / "wrong.npz"), "--server", srv.url])
    assert rc == 2 and "input 'vector' is FP64 (float64) but the model expects FP32" in capsys.readouterr().err


def test_cli_serve_prints_and_stops(bundles) -> None:  # noqa: ANN001
    bundle, _ = bundles["tiny"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxsplit.runtime.cli", "serve", str(bundle), "--port", "0", "--token", "t"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving tiny_cnn-cloud on http://127.0.0.1:"), proc.stderr.read()
        url = first.split()[3]
        r = EdgeRunner(bundle, url, token="t")
        assert r.server_ready() and not r.infer(_feeds(bundles["tiny"][1])).fallback
        r.close()
        proc.send_signal(2)  # SIGINT: clean stop with a summary table
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "requests" in out and "inferences" in out and "stopped tiny_cnn-cloud" in out


# ------------------------------------------------------------------------------- Triton
def _model_config_pb2():  # noqa: ANN202
    """Triton's own ModelConfig protobuf (shipped in tritonclient), loaded without grpc."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        return None
    s = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(s)
    try:
        s.loader.exec_module(mod)
    except Exception:  # noqa: BLE001 - protobuf runtime too old/new for the generated file
        return None
    return mod


@pytest.mark.parametrize("name", ["resnet", "uint8", "multi_io"])
def test_triton_repository_round_trip(bundles, tmp_path: Path, name: str) -> None:  # noqa: ANN001
    bundle = load_bundle(bundles[name][0])
    folder = write_triton_repository(bundle.root, tmp_path / "triton")
    assert folder == tmp_path / "triton" / bundle.model_name
    assert (folder / "1" / "model.onnx").read_bytes() == bundle.cloud_path.read_bytes()
    text = (folder / "config.pbtxt").read_text()
    pb2 = _model_config_pb2()
    if pb2 is not None:
        from google.protobuf import text_format

        cfg = text_format.Parse(text, pb2.ModelConfig())
        got_in = [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input]
        got_out = [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.output]
        assert (cfg.name, cfg.platform, cfg.max_batch_size) == (bundle.model_name, "onnxruntime_onnx", 0)
    else:  # a minimal reading of the same text
        import re

        assert re.search(r'^name: "(.*)"$', text, re.M).group(1) == bundle.model_name
        assert 'platform: "onnxruntime_onnx"' in text and "max_batch_size: 0" in text
        blocks = re.findall(r'name: "([^"]+)"\s+data_type: (TYPE_\w+)\s+dims: \[ ([^\]]*) \]', text)
        ios = [(n, t, [int(d) for d in dims.split(",")]) for n, t, dims in blocks]
        got_in, got_out = ios[: len(bundle.cloud_inputs)], ios[len(bundle.cloud_inputs) :]
    want = lambda specs: [(t.name, f"TYPE_{t.datatype}", list(t.shape)) for t in specs]  # noqa: E731
    assert got_in == want(bundle.cloud_inputs) and got_out == want(bundle.cloud_outputs)
    if name == "uint8":
        assert got_in == [("q", "TYPE_UINT8", [1, 64])]


def test_runner_sends_raw_inputs_and_rejects_bad_feeds(bundles, server) -> None:  # noqa: ANN001
    bundle, model = bundles["multi_io"]
    b = load_bundle(bundle)
    assert {x.source for x in b.boundary} == {"edge", "input"}  # a raw graph input crosses as-is
    srv = server("multi_io")
    feeds = _feeds(model)
    with EdgeRunner(b, srv.url, optimize=False) as r:
        with pytest.raises(Exception, match="missing input 'vector'"):
            r.infer({"image": feeds["image"]})
        with pytest.raises(Exception, match=r"input 'image' has shape \[1,3,8,8\] but the model expects \[1,3,16,16\]"):
            r.infer({**feeds, "image": feeds["image"][:, :, :8, :8]})
        with pytest.raises(Exception, match="unexpected input 'z'"):
            r.infer({**feeds, "z": feeds["vector"]})


def test_random_feeds_respect_embedding_table_sizes() -> None:
    """Integer inputs that index a table directly stay inside it (BERT token_type_ids: 2 rows)."""
    table = numpy_helper.from_array(np.zeros((2, 4), np.float32), "type_table")
    g = helper.make_graph(
        [helper.make_node("Gather", ["type_table", "token_type_ids"], ["emb"], name="g"),
         helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT, name="c")],
        "bert_like",
        [helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, [1, 4096]),
         helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 4096])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, 4096, 4]),
         helper.make_tensor_value_info("ids_f", TensorProto.FLOAT, [1, 4096])],
        [table],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = random_feeds(m, seed=0)
    assert set(np.unique(feeds["token_type_ids"])) == {0, 1}
    assert set(np.unique(feeds["input_ids"])) == {0, 1, 2, 3}
    ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
