"""An HTTP reverse proxy in front of a real registry that records requests and injects faults.

    proxy = FaultProxy(registry.url)           # or the `fault_proxy` fixture
    proxy.respond(429, method="GET", path=r"/manifests/", times=1, retry_after=2)
    proxy.reset(after_bytes=1000, path=r"/blobs/sha256:")
    ... run the client against proxy.host ...
    assert proxy.count(method="PUT", path=r"/blobs/uploads/") == 3

Bodies stream through untouched in both directions (no decompression either way) and
`Location` headers naming the upstream are rewritten to the proxy, so upload sessions come
back through it. The first rule that matches a request (method, `re.search` on the path) and
has not used up its `times` decides what happens to it:

    respond(status)     answer without forwarding (429 with or without Retry-After, 5xx, ...)
    latency(seconds)    wait, then forward
    reset(after_bytes)  send the headers and that many body bytes, then RST (or FIN: hard=False);
                        after_bytes=None drops the connection before any response
    stall(...)          stop before the headers (after_bytes=None) or after some body bytes,
                        for `seconds` or until the client or the proxy gives up
    corrupt(offset)     flip one byte of the body: same length, different digest

`delay` (seconds per request) and `bandwidth` (bytes/s, one shared link per direction) shape
all traffic. The proxy runs its own event loop in a daemon thread, so it works the same under
sync tests, async tests and subprocesses.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import re
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

T = TypeVar("T")
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "expect",  # aiohttp's client would not wait for the 100 Continue it asks for
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


@dataclass(frozen=True)
class Respond:
    """Answer with this status, headers and body instead of forwarding."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Latency:
    """Wait before forwarding."""

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Cut the connection after `after_bytes` body bytes (None: before any response)."""

    after_bytes: int | None = 0
    hard: bool = True


@dataclass(frozen=True)
class Stall:
    """Stop sending before the headers (None) or after `after_bytes` body bytes."""

    after_bytes: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Corrupt:
    """Flip the body byte at `offset` (default: the middle of the body)."""

    offset: int | None = None


Action = Respond | Latency | Reset | Stall | Corrupt


@dataclass
class Rule:
    """A fault for requests matching `method` and `path`, for the first `times` of them."""

    action: Action
    method: str | None = None
    path: str = ".*"
    times: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule still applies to a request."""
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


@dataclass
class Record:
    """One request through the proxy, filled in as it progresses.

    `status`, `forwarded` and the byte counts are updated before the client can see their
    effect; `done` is set once the proxy has finished, which may be just after the client
    received the end of the response.
    """

    method: str
    path: str
    query: str
    started: float
    fault: str | None = None
    forwarded: bool = False
    status: int | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    duration: float | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        """Whether the exchange is over (answered, reset, or abandoned)."""
        return self.duration is not None


class FaultProxy:
    """A recording, fault-injecting reverse proxy on a free 127.0.0.1 port."""

    cert_dir: Path | None = None  # clients speak plain HTTP to the proxy

    def __init__(
        self,
        upstream: str,
        *,
        upstream_ssl: ssl.SSLContext | None = None,
        delay: float = 0.0,
        bandwidth: float | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.bandwidth = bandwidth
        self._upstream_ssl = upstream_ssl
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._records: list[Record] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.BaseRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping: asyncio.Event | None = None
        self._links = {"up": _Link(), "down": _Link()}
        self._port = 0

    def __repr__(self) -> str:
        return f"FaultProxy({self.url} -> {self.upstream})"

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, to use in place of the registry's host."""
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://{self.host}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and begin listening."""
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()
        self._call(self._serve())

    def stop(self) -> None:
        """Stop listening, end stalled exchanges, close the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- rules -----------------------------------------------------------------------------

    def add(
        self,
        action: Action,
        *,
        method: str | None = None,
        path: str = ".*",
        times: int | None = None,
    ) -> Rule:
        """Append a rule; it applies to later requests only."""
        rule = Rule(action, method, path, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def respond(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str = ".*",
        times: int | None = None,
        retry_after: float | datetime | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Rule:
        """Answer `status` without forwarding; `retry_after` as seconds or an HTTP-date."""
        all_headers = {"Content-Type": "application/json"} | dict(headers or {})
        if isinstance(retry_after, datetime):
            all_headers["Retry-After"] = format_datetime(retry_after, usegmt=True)
        elif retry_after is not None:
            all_headers["Retry-After"] = f"{retry_after:g}"
        payload = _error_body(status) if body is None else body
        return self.add(
            Respond(status, all_headers, payload), method=method, path=path, times=times
        )

    def latency(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path: str = ".*",
        times: int | None = None,
    ) -> Rule:
        """Hold matching requests for `seconds` before forwarding them."""
        return self.add(Latency(seconds), method=method, path=path, times=times)

    def reset(
        self,
        *,
        after_bytes: int | None = 0,
        hard: bool = True,
        method: str | None = None,
        path: str = ".*",
        times: int | None = None,
    ) -> Rule:
        """Cut matching responses after `after_bytes` body bytes (RST, or FIN if not `hard`)."""
        return self.add(Reset(after_bytes, hard), method=method, path=path, times=times)

    def stall(
        self,
        *,
        after_bytes: int | None = None,
        seconds: float | None = None,
        method: str | None = None,
        path: str = ".*",
        times: int | None = None,
    ) -> Rule:
        """Stop matching responses (before headers, or after some body bytes) for `seconds`,
        then carry on; `seconds=None` stalls until the client hangs up or the proxy stops."""
        return self.add(Stall(after_bytes, seconds), method=method, path=path, times=times)

    def corrupt(
        self,
        *,
        offset: int | None = None,
        method: str | None = None,
        path: str = ".*",
        times: int | None = None,
    ) -> Rule:
        """Flip one byte of matching response bodies (same length, wrong digest)."""
        return self.add(Corrupt(offset), method=method, path=path, times=times)

    def clear_rules(self) -> None:
        """Drop every rule: requests are forwarded untouched again."""
        with self._lock:
            self._rules.clear()

    # -- records ---------------------------------------------------------------------------

    def records(
        self, *, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> list[Record]:
        """Requests so far (oldest first) matching method, path regex and status."""
        with self._lock:
            records = list(self._records)
        return [r for r in records if _selected(r, method, path, status)]

    def count(
        self, *, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> int:
        """How many requests matched."""
        return len(self.records(method=method, path=path, status=status))

    def times(self, *, method: str | None = None, path: str | None = None) -> list[float]:
        """`time.monotonic()` start times of the matching requests."""
        return [r.started for r in self.records(method=method, path=path)]

    def bytes_uploaded(self, *, method: str | None = None, path: str | None = None) -> int:
        """Request-body bytes forwarded upstream."""
        return sum(r.request_bytes for r in self.records(method=method, path=path))

    def bytes_downloaded(self, *, method: str | None = None, path: str | None = None) -> int:
        """Response-body bytes sent to clients."""
        return sum(r.response_bytes for r in self.records(method=method, path=path))

    def clear_records(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._records.clear()

    async def wait_for(
        self, *, method: str | None = None, path: str | None = None, count: int = 1
    ) -> list[Record]:
        """Poll (from any event loop) until `count` matching requests have started.

        Bound it with `asyncio.timeout(...)` in the caller.
        """
        while len(found := self.records(method=method, path=path)) < count:
            await asyncio.sleep(0.01)
        return found

    # -- serving (runs on the proxy's loop) ------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(ssl=self._upstream_ssl or True, limit=0),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        server = web.Server(self._handle, handler_cancellation=True, auto_decompress=False)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        record = Record(request.method, request.path, request.query_string, time.monotonic())
        with self._lock:
            self._records.append(record)
            rule = next((r for r in self._rules if r.matches(request.method, request.path)), None)
            if rule is not None:
                rule.hits += 1
        action = rule.action if rule else None
        record.fault = type(action).__name__.lower() if action else None
        try:
            return await self._exchange(request, action, record)
        except _Dropped:
            record.error = "connection cut"
            # aiohttp finds the transport closed and quietly gives up on this response.
            return web.Response()
        except asyncio.CancelledError:
            record.error = "client went away"
            raise
        finally:
            record.duration = time.monotonic() - record.started

    async def _exchange(
        self, request: web.BaseRequest, action: Action | None, record: Record
    ) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(action, Latency):
            await asyncio.sleep(action.seconds)
        if isinstance(action, Respond):
            record.status = action.status
            return web.Response(status=action.status, headers=action.headers, body=action.body)
        if isinstance(action, Reset) and action.after_bytes is None:
            await _cut(request, hard=action.hard)
            raise _Dropped
        if isinstance(action, Stall) and action.after_bytes is None:
            await self._pause(action.seconds, request)
        return await self._forward(request, action, record)

    async def _forward(
        self, request: web.BaseRequest, action: Action | None, record: Record
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        body = self._upload(request, record) if request.body_exists else None
        url = URL(self.upstream + request.raw_path, encoded=True)
        record.forwarded = True
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            )
        except aiohttp.ClientError as exc:
            record.status, record.error = 502, repr(exc)
            return web.Response(status=502, text=f"fault proxy: upstream failed: {exc}")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, self._rewrite(name, value))
            record.status = upstream.status
            await response.prepare(request)
            await self._download(upstream, response, request, action, record)
            await response.write_eof()
            return response

    async def _upload(self, request: web.BaseRequest, record: Record) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK):
            await self._links["up"].send(len(chunk), self.bandwidth)
            record.request_bytes += len(chunk)
            yield chunk

    async def _download(
        self,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        request: web.BaseRequest,
        action: Action | None,
        record: Record,
    ) -> None:
        limit = action.after_bytes if isinstance(action, Reset | Stall) else None
        flip_at = _flip_offset(action, upstream.content_length)
        async for chunk in upstream.content.iter_chunked(CHUNK):
            data = _flip(chunk, flip_at, record.response_bytes)
            if limit is not None and record.response_bytes + len(data) >= limit:
                head = limit - record.response_bytes
                await self._send(response, data[:head], record)
                await self._limit_reached(request, action)
                limit, data = None, data[head:]
            await self._send(response, data, record)
        if limit is not None:  # the body was shorter than the limit (or empty, as for HEAD)
            await self._limit_reached(request, action)

    async def _limit_reached(self, request: web.BaseRequest, action: Action | None) -> None:
        if isinstance(action, Reset):
            await _cut(request, hard=action.hard)
            raise _Dropped
        if isinstance(action, Stall):
            await self._pause(action.seconds, request)

    async def _send(self, response: web.StreamResponse, data: bytes, record: Record) -> None:
        if not data:
            return
        await self._links["down"].send(len(data), self.bandwidth)
        # Count first: the client may see the bytes before this coroutine resumes.
        record.response_bytes += len(data)
        await response.write(data)

    async def _pause(self, seconds: float | None, request: web.BaseRequest) -> None:
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        await _cut(request, hard=False)
        raise _Dropped

    def _rewrite(self, name: str, value: str) -> str:
        if name.lower() == "location" and value.startswith(self.upstream):
            return self.url + value[len(self.upstream) :]
        return value


class _Dropped(Exception):
    """The connection was cut on purpose; aiohttp has nothing left to send."""


class _Link:
    """A shared pipe of `rate` bytes/s: each send waits for its slot on the wire."""

    def __init__(self) -> None:
        self._free_at = 0.0

    async def send(self, size: int, rate: float | None) -> None:
        if not rate:
            return
        now = time.monotonic()
        self._free_at = max(now, self._free_at) + size / rate
        await asyncio.sleep(self._free_at - now)


async def _cut(request: web.BaseRequest, *, hard: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if hard and sock is not None:
        await _flushed(transport, sock)
        # Linger 0 turns close into an RST instead of an orderly FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def _flushed(
    transport: asyncio.BaseTransport, sock: socket.socket, limit: float = 2.0
) -> None:
    # An RST discards whatever the kernel has not sent yet: wait for the bytes already
    # written to leave, so the client sees exactly `after_bytes` before the reset.
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pending = (
            transport.get_write_buffer_size()
            if isinstance(transport, asyncio.WriteTransport)
            else 0
        )
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        if pending == 0 and unsent == 0:
            return
        await asyncio.sleep(0.005)


def _flip_offset(action: Action | None, length: int | None) -> int | None:
    if not isinstance(action, Corrupt):
        return None
    if action.offset is not None:
        return action.offset
    return (length or 0) // 2


def _flip(chunk: bytes, flip_at: int | None, sent: int) -> bytes:
    if flip_at is None or not 0 <= flip_at - sent < len(chunk):
        return chunk
    i = flip_at - sent
    return chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]


def _selected(record: Record, method: str | None, path: str | None, status: int | None) -> bool:
    if method is not None and record.method.upper() != method.upper():
        return False
    if path is not None and re.search(path, record.path) is None:
        return False
    return status is None or record.status == status


def _error_body(status: int) -> bytes:
    code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE" if status >= 500 else "UNKNOWN"
    message = f"injected by the fault proxy ({status})"
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


class Upstream(Protocol):
    """Something a proxy can front: a `RegistryServer`, for one."""

    @property
    def url(self) -> str: ...

    def ssl_context(self) -> ssl.SSLContext | None: ...


class MakeFaultProxy(Protocol):
    """What the `fault_proxy` fixture hands a test."""

    def __call__(
        self, upstream: Upstream | str, *, delay: float = 0.0, bandwidth: float | None = None
    ) -> FaultProxy: ...


class FaultProxyPool:
    """Starts proxies in front of upstreams and stops them all."""

    def __init__(self) -> None:
        self._proxies: list[FaultProxy] = []

    def start(
        self, upstream: Upstream | str, *, delay: float = 0.0, bandwidth: float | None = None
    ) -> FaultProxy:
        """A running proxy in front of `upstream` (a URL or a registry)."""
        if isinstance(upstream, str):
            proxy = FaultProxy(upstream, delay=delay, bandwidth=bandwidth)
        else:
            proxy = FaultProxy(
                upstream.url, upstream_ssl=upstream.ssl_context(), delay=delay, bandwidth=bandwidth
            )
        self._proxies.append(proxy)
        proxy.start()
        return proxy

    def close(self) -> None:
        """Stop every proxy this pool started."""
        while self._proxies:
            self._proxies.pop().stop()
