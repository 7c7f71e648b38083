"""A TCP proxy that behaves like a WAN link, and counts what crosses it.

    python bench/wanproxy.py --listen 127.0.0.1:7000 --upstream 127.0.0.1:5000 \
        --rtt-ms 40 --mbit 400 --stats stats.json

Every byte is delivered half an RTT after it was read, in order, in each direction; a new
connection pays one RTT before the upstream accepts it (the TCP handshake). Bandwidth is one
token bucket per direction shared by all connections, like a real access link. With
`--rtt-ms 0 --mbit 0` it only counts: bytes and connections each way, written to `--stats`.
It runs as its own process so that its CPU is never charged to the client being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

CHUNK = 256 * 1024  # per read: fewer wake-ups, so the simulated link takes little of the CPU


class Bucket:
    """Token bucket in bytes per second; 0 means unlimited."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = 0.0
        self.stamp = time.monotonic()
        self.burst = max(rate * 0.005, CHUNK)  # 5 ms worth of bytes

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class Stats:
    def __init__(self) -> None:
        self.up = 0  # client -> upstream
        self.down = 0  # upstream -> client
        self.connections = 0

    def add_up(self, n: int) -> None:
        self.up += n

    def add_down(self, n: int) -> None:
        self.down += n

    def dump(self, path: Path | None) -> None:
        if path is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"up": self.up, "down": self.down, "connections": self.connections})
            )
            tmp.replace(path)


async def pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    bucket: Bucket,
    count: Callable[[int], None],
) -> None:
    queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if data is None:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    delivery = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            await bucket.take(len(data))
            count(len(data))
            queue.put_nowait((time.monotonic() + delay, data))
        queue.put_nowait((time.monotonic() + delay, None))
        await delivery
    except (ConnectionError, OSError):
        delivery.cancel()


class WanProxy:
    def __init__(self, upstream: tuple[str, int], rtt: float, rate: float, stats: Stats) -> None:
        self.upstream = upstream
        self.half = rtt / 2
        self.up_bucket, self.down_bucket = Bucket(rate), Bucket(rate)
        self.stats = stats

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        await asyncio.sleep(self.half * 2)  # the handshake's round trip
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=CHUNK * 4)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                pump(client_r, up_w, self.half, self.up_bucket, self.stats.add_up),
                pump(up_r, client_w, self.half, self.down_bucket, self.stats.add_down),
            )
        finally:
            for w in (client_w, up_w):
                w.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--mbit", type=float, default=400.0)
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args()
    stats = Stats()
    proxy = WanProxy(_address(args.upstream), args.rtt_ms / 1000, args.mbit * 1e6 / 8, stats)
    server = await asyncio.start_server(proxy.handle, *_address(args.listen), limit=CHUNK * 4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            stats.dump(args.stats)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    stats.dump(args.stats)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
