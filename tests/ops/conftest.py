"""Operations fixtures: `mirrord run` subprocesses, stopped (SIGTERM, then SIGKILL) after a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.ops.support import MirrordDaemon


class StartDaemon(Protocol):
    def __call__(self, config: Path, *args: str) -> MirrordDaemon: ...


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    """`start_daemon(config)`: a running `mirrord run --config CONFIG`, stopped after the test."""
    started: list[MirrordDaemon] = []

    def start(config: Path, *args: str) -> MirrordDaemon:
        daemon = MirrordDaemon.start(tmp_path, config, *args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
