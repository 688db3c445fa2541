"""Userspace one-way delay for the testbed on kernels without ``sch_netem``.

    python -m tools.testbed.delayproxy --host 10.231.0.1 --map 10000:9000,10001:9001 --delay-file F

Listens on ``host:LISTEN`` for every ``LISTEN:UPSTREAM`` pair of ``--map`` and relays each TCP
connection to ``host:UPSTREAM``. Every chunk read in either direction is written to the other side
``d`` milliseconds after it arrived, in order, where ``d`` is the one-way delay read from
``--delay-file`` (one number, ms; re-read at most every 50 ms, so the delay can change during a
run). With ``d = rtt / 2`` a request/response exchange takes one extra
round trip, as with ``tc netem delay rtt/2`` on both ends of the link.

Differences from netem, documented in docs/e2e-results.md: the delay applies to application data,
not to TCP segments and ACKs (the proxy's own TCP connections see no added delay, so slow start is
not slowed down by the RTT). Rate shaping stays in the kernel (tbf), and so does packet loss (an
iptables ``statistic`` drop in the namespaces, ``Testbed.set_link(..., loss_pct=)``), not the relay.
Bounded: every connection ends when either side closes; the process exits on SIGTERM or when stdin
closes. Prints ``{"ready": true, "ports": {...}}`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time


class Delay:
    """The current one-way delay in seconds, from a file re-read at most every 50 ms (mtimes can be
    too coarse to notice two writes in a row)."""

    def __init__(self, path: str | None, default_ms: float = 0.0):
        self.path, self.value_s = path, default_ms / 1e3
        self._checked = 0.0

    def __call__(self) -> float:
        now = time.monotonic()
        if self.path and now - self._checked > 0.05:
            self._checked = now
            try:
                with open(self.path) as f:
                    self.value_s = max(0.0, float(f.read().strip() or 0.0)) / 1e3
            except (OSError, ValueError):
                pass  # a write in progress: keep the last value
        return self.value_s


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def rx() -> None:
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            await queue.put((time.monotonic() + delay(), data))
            if not data:
                return

    async def tx() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    writer.write_eof()
                except (OSError, RuntimeError):
                    writer.close()
                return
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return

    await asyncio.gather(rx(), tx())


async def _serve(host: str, routes: dict[int, int], delay: Delay) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter, upstream: int) -> None:
        try:
            u_reader, u_writer = await asyncio.wait_for(asyncio.open_connection(host, upstream), timeout=10)
        except (OSError, asyncio.TimeoutError):
            c_writer.close()
            return
        try:
            await asyncio.gather(_pump(c_reader, u_writer, delay), _pump(u_reader, c_writer, delay))
        finally:
            for w in (c_writer, u_writer):
                w.close()

    servers = []
    for listen, upstream in routes.items():
        servers.append(await asyncio.start_server(lambda r, w, u=upstream: handle(r, w, u), host, listen))
    print(json.dumps({"ready": True, "ports": {str(k): v for k, v in routes.items()}}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    await stop.wait()
    for s in servers:
        s.close()


def parse_map(text: str) -> dict[int, int]:
    routes = {}
    for pair in text.split(","):
        if pair.strip():
            a, _, b = pair.partition(":")
            routes[int(a)] = int(b)
    if not routes:
        raise ValueError("--map needs at least one LISTEN:UPSTREAM pair")
    return routes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--map", required=True, help="LISTEN:UPSTREAM,... ports on --host")
    ap.add_argument("--delay-file", default=None, help="file holding the one-way delay in ms")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay when there is no file")
    args = ap.parse_args(argv)
    asyncio.run(_serve(args.host, parse_map(args.map), Delay(args.delay_file, args.delay_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
