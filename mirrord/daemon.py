"""The daemon: wires the store, engine, scheduler, workers and HTTP endpoints; owns signals.

Lifecycle:
- start: load and validate the config, open the database (migrations applied), serve HTTP,
  then run the named background tasks: scheduler, workers, heartbeat, reaper, metrics refresh.
  One of them dying (a database gone, a disk full) drains the rest and exits 1, so that
  systemd's `Restart=on-failure` starts it again; they are supervised, not fire-and-forget.
- SIGTERM/SIGINT: stop claiming, let running copies finish for up to `drain` seconds, hand the
  rest back to the queue, exit 0.
- SIGHUP: reload the config; an invalid new config is refused (logged), the old one kept. The
  HTTP token is re-read; `listen`, `database`, `log` and `limits.blobs` take effect at the next
  start (said so). Once a stop has begun, SIGHUP is ignored until the exit.
- systemd (`Type=notify`): READY=1 once the signals are handled, so a `systemctl reload` sent
  while starting waits for it instead of killing the process with SIGHUP's default action.
- SIGKILL: nothing to do here by design. Leases expire and the next start (or another daemon)
  requeues the jobs; blobs already in the destination are found by the blob index and HEAD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from mirrord.config.daemon import MirrorConfig
from mirrord.config.load import load_config
from mirrord.engine import Engine, engine_limits
from mirrord.errors import MirrordError
from mirrord.metrics import Metrics
from mirrord.registry.options import RegistryOptions
from mirrord.runner import JobRunner
from mirrord.scheduler import Scheduler
from mirrord.store import Store
from mirrord.web import WebState, make_app, serve
from mirrord.worker import FanOut, JobLog, WorkerPool, pool_settings

log = logging.getLogger(__name__)

DEFAULT_DRAIN = 30.0
RETENTION_EVERY = 3600.0


class DaemonFailed(MirrordError):
    """A background task died; the daemon drained and stopped (exit 1: systemd restarts it)."""


class Daemon:
    """One running mirrord. `await Daemon(path).run()` returns when it has stopped."""

    def __init__(self, config_path: Path, drain: float = DEFAULT_DRAIN) -> None:
        self.config_path = config_path
        self.drain_seconds = drain
        self.config = load_config(config_path)
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._died: str | None = None

    def current_config(self) -> MirrorConfig:
        return self.config

    async def run(self) -> None:
        async with await Store.open(self.config.database) as store:
            engine = Engine(store, self._options_for, engine_limits(self.config), self.metrics)
            runner = JobRunner(engine, self.current_config, self._wake)
            events = FanOut(JobLog(), self.metrics)
            pool = WorkerPool(store, runner, pool_settings(self.config), events)
            self.pool, self.engine = pool, engine
            self.scheduler = Scheduler(store, self.current_config, pool.wake)
            self.web = WebState(
                store, self.metrics, lambda: self.scheduler.running, self.config.http_token
            )
            web_runner = await self._serve()
            try:
                await self._supervise(store, pool)
            finally:
                await self._shutdown(pool, engine, web_runner)
        if self._died is not None:
            raise DaemonFailed(f"stopped: background task {self._died}")

    def source_names(self) -> set[str]:
        """The configured sources' names: the metrics export only these."""
        return {source.name for source in self.config.sources}

    def _options_for(self, host: str, role: str) -> RegistryOptions:
        return self.config.registry_options(host)

    def _wake(self) -> None:
        self.pool.wake()

    async def _serve(self) -> web.AppRunner:
        host, port = self.config.listen
        runner = await serve(make_app(self.web), host, port)
        log.info("serving /metrics, /healthz, /readyz and /api on %s:%d", host, port)
        return runner

    async def _supervise(self, store: Store, pool: WorkerPool) -> None:
        self._install_signals()
        notify_systemd("READY=1")
        self._spawn("scheduler", self.scheduler.run())
        self._spawn("workers", pool.run())
        self._spawn("heartbeat", pool.heartbeat())
        self._spawn("cancels", pool.watch_cancels())
        self._spawn("reaper", pool.reaper())
        self._spawn("metrics", self.metrics.keep_fresh(store, sources=self.source_names))
        self._spawn("retention", self._retention(store))
        self.metrics.scheduler_up.set(1)
        log.info("mirrord started: %s", self.config.summary())
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        done, _ = await asyncio.wait([stop, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop:
                self._died = f"{task.get_name()} {_why(task)}"
                log.error("background task %s; stopping", self._died)
        stop.cancel()

    async def _retention(self, store: Store) -> None:
        """Delete finished jobs and runs past the configured history, hourly."""
        while True:
            history = self.config.history
            pruned = await store.queue.prune_history(history.keep_days, history.keep_jobs)
            if pruned.jobs_deleted or pruned.runs_deleted:
                log.info(
                    "history: deleted %d old job(s), %d old run(s)",
                    pruned.jobs_deleted,
                    pruned.runs_deleted,
                )
            await asyncio.sleep(RETENTION_EVERY)

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def stop(self) -> None:
        log.info("stopping: draining running jobs (up to %.0fs)", self.drain_seconds)
        notify_systemd("STOPPING=1")
        self._stop.set()

    def reload(self) -> None:
        if self._stop.is_set():
            # A stopping daemon drains with the config it ran with; the new one applies at the
            # next start (systemd's `reload` racing a `stop`, or a SIGHUP sent by a script).
            log.info("reload ignored: mirrord is stopping")
            return
        try:
            new = load_config(self.config_path)
        except MirrordError as exc:
            problems = getattr(exc, "problems", (str(exc),))
            log.error("reload refused, keeping the running config: %s", "; ".join(problems))
            return
        for setting in ("listen", "database", "log"):
            if getattr(new, setting) != getattr(self.config, setting):
                log.warning("%s changed: it takes effect when mirrord restarts", setting)
        if new.limits.blobs != self.config.limits.blobs:
            log.warning("limits.blobs changed: it takes effect when mirrord restarts")
        self.config = new
        self.web.token = new.http_token
        self.engine.reconfigure(self._options_for, engine_limits(new))
        self.pool.settings = pool_settings(new)
        self.scheduler.reschedule()
        self.pool.wake()
        log.info("configuration reloaded: %s", new.summary())

    async def _shutdown(self, pool: WorkerPool, engine: Engine, runner: web.AppRunner) -> None:
        """Stop in order; every step runs even if one before it failed (the first failure is
        raised at the end)."""
        self.scheduler.running = False
        self.metrics.scheduler_up.set(0)
        pool.stop_claiming()
        steps = _Steps()
        for task in self._tasks:  # no new tick; one under way finishes planning (a few writes)
            if task.get_name() == "scheduler":
                task.cancel()
        async with steps.step("draining", longer_than=self.drain_seconds + 5):
            handed_back = await pool.drain(self.drain_seconds)
            if handed_back:
                log.info("handed %d unfinished job(s) back to the queue", handed_back)
        for task in self._tasks:
            task.cancel()
        async with steps.step("stopping the background tasks"):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        async with steps.step("closing the HTTP server"):
            await runner.cleanup()
        async with steps.step("closing registry connections"):
            await engine.close()
        self._ignore_late_reloads()
        log.info("mirrord stopped")
        steps.raise_first()

    def _ignore_late_reloads(self) -> None:
        """From here to the exit a SIGHUP is ignored: the loop's handler goes with the loop,
        and SIGHUP's default action would end a cleanly stopped daemon as killed by it."""
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


class _Steps:
    """The steps of a shutdown: each one that takes longer than it should (a stop should take
    the drain, not more) or fails is logged by name, and the rest still run."""

    def __init__(self) -> None:
        self.failed: Exception | None = None

    @contextlib.asynccontextmanager
    async def step(self, what: str, longer_than: float = 5.0) -> AsyncIterator[None]:
        started = time.monotonic()
        try:
            yield
        except Exception as exc:
            log.error("stopping: %s failed: %s", what, exc)
            self.failed = self.failed or exc
        if (took := time.monotonic() - started) > longer_than:
            log.warning("stopping: %s took %.1fs", what, took)

    def raise_first(self) -> None:
        if self.failed is not None:
            raise self.failed


def _why(task: asyncio.Task[Any]) -> str:
    """How a background task that should run forever ended."""
    if task.cancelled():
        return "was cancelled"
    exc = task.exception()
    return f"died: {exc}" if exc is not None else "returned"


def notify_systemd(state: str) -> None:
    """Tell systemd (`Type=notify`) about a state change; nothing without $NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
