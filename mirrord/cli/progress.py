"""Progress for humans and CI: a live display in a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import atexit
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from mirrord.oneshot import OneShotResult
from mirrord.registry.events import Observer
from mirrord.store import Job, JobKind, JobState, RunStatus
from mirrord.units import human_bytes
from mirrord.worker import JobEvents, JobOutcome

if TYPE_CHECKING:
    from rich.live import Live

PLAIN_EVERY = 10.0


class SyncProgress(Observer, JobEvents):
    """Counts jobs and bytes as a sync runs and shows them."""

    def __init__(self, quiet: bool = False, tty: bool | None = None) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.started_at = time.monotonic()
        self.copied = self.skipped = self.errors = self.retrying = 0
        self.bytes = 0
        self._last_line = self.started_at
        self._live: Live | None = None
        if self.tty and not quiet:
            from rich.console import Console
            from rich.live import Live  # imported only for a terminal: it is slow to import

            self._live = Live(
                self._render(), console=Console(stderr=True), refresh_per_second=4, transient=True
            )
            self._live.start()
            atexit.register(self._live.stop)  # errors exit through sys.exit: restore the tty

    # -- hooks ---------------------------------------------------------------------------------

    def transferred(self, registry: str, direction: str, nbytes: int) -> None:
        if direction == "write":
            self.bytes += nbytes
            self._tick()

    def finished(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        if job.kind is not JobKind.COPY:
            return
        if outcome.outcome == "skipped":
            self.skipped += 1
        else:
            self.copied += 1
            self._say(
                f"copied {job.payload.get('source')} -> {job.key} ({human_bytes(outcome.bytes_written)})"
            )
        self._tick()

    def failed(
        self, job: Job, error: BaseException, state: JobState | None, duration: float
    ) -> None:
        if state is JobState.QUEUED:
            self.retrying += 1
            self._say(f"retrying {job.key}: {error}")
        else:
            self.errors += 1
            self._say(f"FAILED {job.key}: {error}", force=True)
        self._tick()

    # -- output --------------------------------------------------------------------------------

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started_at, 1e-6)
        return (
            f"{self.copied} copied, {self.skipped} unchanged, {self.errors} failed"
            f"{f', {self.retrying} retried' if self.retrying else ''}; "
            f"{human_bytes(self.bytes)} written ({human_bytes(self.bytes / elapsed)}/s)"
        )

    def _render(self) -> Any:
        from rich.text import Text

        return Text(f"syncing: {self._line()}", style="bold")

    def _say(self, text: str, force: bool = False) -> None:
        if self.quiet and not force:
            return
        if self._live is not None:
            self._live.console.print(text, highlight=False)
        else:
            click.echo(text, err=True)

    def _tick(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            return
        now = time.monotonic()
        if not self.quiet and now - self._last_line >= PLAIN_EVERY:
            self._last_line = now
            click.echo(f"progress: {self._line()}", err=True)

    def summary(self, result: OneShotResult) -> None:
        if self._live is not None:
            self._live.stop()
        run = result.summary.run
        elapsed = time.monotonic() - self.started_at
        status = run.status.value
        if run.status is RunStatus.SUCCEEDED and not result.ok:
            status = "incomplete"  # nothing failed, but some work was cancelled
        line = self._line() + (f", {len(result.cancelled)} cancelled" if result.cancelled else "")
        click.echo(f"Run {run.id} {status}: {line} in {elapsed:.1f}s", err=True)
        for failed in result.summary.failed:
            click.echo(f"  failed: {failed.key}: {failed.reason}: {failed.error}", err=True)
        for job in result.cancelled:
            click.echo(f"  cancelled: {job.key}: {job.reason}", err=True)
