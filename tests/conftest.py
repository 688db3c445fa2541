import onnxruntime
import pytest

# onnxruntime logs errors it also raises as exceptions; keep test output readable.
onnxruntime.set_default_logger_severity(4)


@pytest.fixture(scope="session")
def rpc_tracker():
    """A TVM RPC tracker and one RPC server (key 'local') on 127.0.0.1; yields the tracker port.

    Shared by the tuning and profiling tests (skipped without tornado); torn down at the end."""
    import time

    pytest.importorskip("tornado")
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    from onnxsplit.compile.tune import RPCError, check_rpc

    tracker = Tracker("127.0.0.1", port=19190, port_end=19290, silent=True)
    server = None
    try:
        server = rpc.Server("127.0.0.1", port=19300, port_end=19400, key="local",
                            tracker_addr=("127.0.0.1", tracker.port), silent=True)
        deadline = time.time() + 20
        while True:
            try:
                check_rpc("127.0.0.1", tracker.port, "local", timeout=5)
                break
            except RPCError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield tracker.port
    finally:
        if server is not None:
            server.terminate()
        tracker.terminate()
