"""Helpers for the end-to-end tests: the real `mirrord` command as a subprocess, skopeo-style
flags for a registry, checks of what landed, and a fake registry for hostile answers.

    result = cli("copy", "--all", *src_flags(source), *dest_flags(dest), src_ref, dst_ref)
    result.ok()                                   # exit 0, or an AssertionError showing stderr
    assert result.error_line() == "mirrord: error: ..."

Every run has a timeout, a private HOME (no auth file of the machine is ever read), captured
output, and its peak RSS (sampled from /proc while it runs, so only the `mirrord` process
itself counts: see tests/harness/procmem.py).
Bytecode is cached (in a directory of its own, never in the checkout) even where the
environment says PYTHONDONTWRITEBYTECODE: an installed mirrord has its .pyc files, and
compiling every module again would cost each run a third of a second.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from tests.harness.images import Image
from tests.harness.procmem import high_water_kib
from tests.harness.registry import Credentials
from tests.harness.skopeo import Endpoint, copy_to_oci, inspect_raw

DEFAULT_TIMEOUT = 120.0
MiB = 1 << 20
PYCACHE = Path(tempfile.gettempdir()) / f"mirrord-tests-pycache-{os.getuid()}"


def mirrord_command() -> list[str]:
    """The installed `mirrord` entry point next to this interpreter, else `python -m mirrord`."""
    script = Path(sys.executable).with_name("mirrord")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mirrord"]


@dataclass(frozen=True)
class CliResult:
    """What one `mirrord` run did."""

    args: tuple[str, ...]
    returncode: int
    stdout_bytes: bytes
    stderr: str
    max_rss: int  # bytes, of the mirrord process alone

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode(errors="replace")

    @property
    def output(self) -> str:
        """stdout and stderr together (for canary greps)."""
        return self.stdout + self.stderr

    def ok(self) -> Self:
        """Assert the run succeeded; show its output if not."""
        assert self.returncode == 0, self.describe()
        return self

    def error_lines(self) -> list[str]:
        """stderr lines that are not log warnings (what a user reads as the error)."""
        return [
            line
            for line in self.stderr.splitlines()
            if line.strip() and not line.startswith("WARNING ")
        ]

    def error_line(self) -> str:
        """The single error line of a failed run (asserts there is exactly one)."""
        lines = self.error_lines()
        assert len(lines) == 1, f"expected one error line:\n{self.describe()}"
        assert lines[0].startswith("mirrord: error: "), self.describe()
        return lines[0]

    def describe(self) -> str:
        return (
            f"mirrord {' '.join(self.args)}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class Mirrord:
    """Runs the real `mirrord` command with a private HOME and auth locations under `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path_prepend: list[Path] = []
        home.mkdir(parents=True, exist_ok=True)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        dropped = ("REGISTRY_AUTH_FILE", "PYTHONDONTWRITEBYTECODE")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env |= {
            "PYTHONPYCACHEPREFIX": str(PYCACHE),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "DOCKER_CONFIG": str(self.home / "docker"),
            "PATH": os.pathsep.join([*map(str, self.path_prepend), env.get("PATH", "")]),
        }
        return env | dict(extra or {})

    @property
    def default_authfile(self) -> Path:
        """Where `login` writes without --authfile (skopeo's `$XDG_RUNTIME_DIR/containers`)."""
        return self.home / "run" / "containers" / "auth.json"

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CliResult:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(
                [*mirrord_command(), *args],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env(env),
                start_new_session=True,
            )
            if stdin is not None:
                assert process.stdin is not None
                process.stdin.write(stdin.encode())
                process.stdin.close()
            status, max_rss = _wait(process, timeout)
            out.seek(0)
            err.seek(0)
            return CliResult(
                tuple(args),
                status,
                out.read(),
                err.read().decode(errors="replace"),
                max_rss,
            )


def _wait(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, int]:
    """Reap the child, sampling its peak RSS (bytes) meanwhile; kill it after `timeout`."""
    deadline = time.monotonic() + timeout
    peak_kib = 0
    while True:
        peak_kib = max(peak_kib, high_water_kib(process.pid) or 0)
        pid, status = os.waitpid(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, peak_kib * 1024
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            os.wait4(process.pid, 0)
            process.returncode = -signal.SIGKILL
            raise AssertionError(f"mirrord {process.args!r} did not finish within {timeout}s")
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------
# Flags and references
# ------------------------------------------------------------------------------------------


def flags(endpoint: Endpoint, side: str = "", creds: Credentials | bool | None = True) -> list[str]:
    """skopeo-style TLS and credential flags for `endpoint` (`side` is "src", "dest" or "").

    `creds=True` uses the endpoint's own credentials when it has any; False sends none.
    """
    prefix = f"--{side}-" if side else "--"
    cert_dir = endpoint.cert_dir
    tls = [f"{prefix}cert-dir", str(cert_dir)] if cert_dir else [f"{prefix}tls-verify=false"]
    if creds is True:
        creds = getattr(endpoint, "creds", None)
    auth = [f"{prefix}creds", creds.joined()] if isinstance(creds, Credentials) else []
    return tls + auth


def src_flags(endpoint: Endpoint, creds: Credentials | bool | None = True) -> list[str]:
    return flags(endpoint, "src", creds)


def dest_flags(endpoint: Endpoint, creds: Credentials | bool | None = True) -> list[str]:
    return flags(endpoint, "dest", creds)


def docker_ref(endpoint: Endpoint, repo_ref: str) -> str:
    return f"docker://{endpoint.host}/{repo_ref}"


# ------------------------------------------------------------------------------------------
# What landed
# ------------------------------------------------------------------------------------------


def assert_same_image(
    endpoint: Endpoint,
    repo: str,
    tag: str,
    image: Image,
    workdir: Path,
    creds: Credentials | None = None,
) -> None:
    """`repo:tag` serves `image` byte for byte (parent and every child), and skopeo can pull
    all of it (it verifies every digest on the way)."""
    assert inspect_raw(endpoint, f"{repo}:{tag}", creds=creds) == image.manifest
    for child in list(image.walk())[1:]:
        assert inspect_raw(endpoint, f"{repo}@{child.digest}", creds=creds) == child.manifest
    copy_to_oci(endpoint, f"{repo}:{tag}", workdir / f"verify-{tag}", creds=creds)


def access_log(log: str, method: str, path_regex: str) -> list[str]:
    """Lines of a Distribution access log for requests `METHOD <path matching path_regex>`."""
    pattern = re.compile(rf'"{method} ({path_regex})\S* HTTP/1\.1" (\d+)')
    return [m.group(0) for m in pattern.finditer(log)]


# ------------------------------------------------------------------------------------------
# A fake registry for answers a real one cannot be made to give
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request a fake server received."""

    method: str
    path_qs: str
    headers: Mapping[str, str]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeServer:
    """An aiohttp server on a real loopback socket, in its own thread, recording requests.

    `routes` maps (method, path) to a handler; anything else is a 404. With `ssl_context`
    it speaks HTTPS.
    """

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def requests(self, path_regex: str = ".*") -> list[Seen]:
        return [s for s in list(self.seen) if re.search(path_regex, s.path_qs)]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers)))
        handler = self.routes.get((request.method, request.path))
        if handler is None and request.method == "HEAD":
            handler = self.routes.get(("GET", request.path))
        if handler is None:
            return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)
        return await handler(request)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self._port = self._runner.addresses[0][1]

    def __enter__(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def json_handler(
    body: bytes,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Handler:
    """A handler answering fixed bytes."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status, body=body, headers={"Content-Type": content_type, **(headers or {})}
        )

    return handle


def redirect_handler(location: str, status: int = 307) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return handle
