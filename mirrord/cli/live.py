"""Progress of `mirrord copy`: a live line in a terminal, skopeo-like lines otherwise.

On a terminal (stderr is a TTY) a rich live line shows blobs done, bytes written and the rate,
with each finished blob printed above it. Elsewhere (CI logs, pipes) each blob gets one plain
line as it is decided, and a long upload adds a `progress:` line every `every` seconds. rich is
imported only for a terminal: it costs a noticeable part of a short command's start-up.
"""

from __future__ import annotations

import atexit
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from mirrord.manifests import Descriptor
from mirrord.transfer import CopyResult
from mirrord.transports.base import BlobOutcome
from mirrord.units import human_bytes

if TYPE_CHECKING:
    from rich.live import Live

PLAIN_EVERY = 10.0
LIVE_EVERY = 0.1


class CopyPrinter:
    """Receives a copy's blob decisions and byte counts; prints them for people or for logs."""

    def __init__(self, quiet: bool, tty: bool | None = None, every: float = PLAIN_EVERY) -> None:
        self.quiet = quiet
        self.every = every
        self.started_at = self._last_line = time.monotonic()
        self._last_update = 0.0
        self.blobs: dict[str, int] = {}
        self.bytes = 0
        self._live: Live | None = None
        if not quiet and (sys.stderr.isatty() if tty is None else tty):
            self._start_live()

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._live = Live(
            self._render(), console=Console(stderr=True), refresh_per_second=4, transient=True
        )
        self._live.start()
        atexit.register(self.close)  # an error exits through sys.exit: restore the terminal

    # -- hooks ---------------------------------------------------------------------------------

    def blob(self, desc: Descriptor, outcome: BlobOutcome) -> None:
        self.blobs[outcome.value] = self.blobs.get(outcome.value, 0) + 1
        size = human_bytes(desc.size)
        self._say(f"Copying blob {desc.digest[:19]} ({size}): {outcome.value.replace('_', ' ')}")
        self._tick()

    def moved(self, nbytes: int) -> None:
        self.bytes += nbytes
        self._tick()

    def done(self, src: str, dst: str, result: CopyResult) -> None:
        self.close()
        if self.quiet:
            return
        if result.skipped:
            click.echo(f"Skipping: {dst} is already at {result.digest}")
            return
        if result.note:
            click.echo(f"Note: {result.note}")
        click.echo(
            f"Copied {src} -> {dst} ({result.digest}, {human_bytes(result.bytes)} "
            f"in {result.duration:.1f}s)"
        )

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- output --------------------------------------------------------------------------------

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started_at, 1e-6)
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(self.blobs.items()))
        return (
            f"{sum(self.blobs.values())} blobs done{f' ({counts})' if counts else ''}; "
            f"{human_bytes(self.bytes)} written ({human_bytes(self.bytes / elapsed)}/s)"
        )

    def _render(self) -> Any:
        from rich.text import Text

        return Text(f"copying: {self.line()}", style="bold")

    def _say(self, text: str) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.console.print(text, highlight=False)
        else:
            click.echo(text)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._live is not None:
            if now - self._last_update >= LIVE_EVERY:  # bytes arrive per chunk: re-render less
                self._last_update = now
                self._live.update(self._render())
            return
        if not self.quiet and now - self._last_line >= self.every:
            self._last_line = now
            click.echo(f"progress: {self.line()}")
