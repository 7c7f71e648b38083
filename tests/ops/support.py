"""The real `mirrord` binary as operators run it: daemon processes, configs, scrapes, logs.

    daemon = MirrordDaemon.start(tmp_path, config)      # `mirrord run --config FILE`
    await daemon.wait_healthy()
    samples = await daemon.wait_for_metrics(lambda s: s.value("mirrord_tags_total") >= 3)
    daemon.stop()                                       # SIGTERM; returns the exit status

Configs are written as JSON, which every YAML reader accepts, so no test needs a YAML writer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.images import Image, ImageBuilder
from tests.harness.skopeo import Endpoint, seed

MIRRORD = Path(sys.executable).with_name("mirrord")
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def mirrord_cli(*args: str, check: bool = True) -> Completed:
    """Run `mirrord ARGS...` without blocking the test's event loop."""
    process = await asyncio.create_subprocess_exec(
        str(MIRRORD), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    done = Completed(process.returncode or 0, out.decode(), err.decode())
    if check and done.returncode != 0:
        raise AssertionError(f"mirrord {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def daemon_config(
    directory: Path,
    *,
    destination: str,
    sources: Sequence[Mapping[str, Any]],
    port: int | None = None,
    **extra: Any,
) -> Path:
    """A daemon config in `directory`: SQLite there, plain-HTTP destination, JSON logs, fast
    retries, a schedule far away (the first tick runs at start)."""
    spec: dict[str, Any] = {
        "database": f"sqlite:///{directory / 'mirrord.db'}",
        "listen": f"127.0.0.1:{port or free_port()}",
        "log": {"format": "json", "level": "info"},
        "destination": {"registry": destination, "prefix": "mirror", "tls": "plain-http"},
        "schedule": {"interval": "24h"},
        "limits": {"jobs": 4, "blobs": 8},
        "retry": {"attempts": 1, "base": "1s", "max": "2s"},
        "sources": list(sources),
    }
    spec.update(extra)
    return write_json(directory / "config.yaml", spec)


def skopeo_source(
    directory: Path, name: str, registry: str, images: Mapping[str, list[str]]
) -> dict[str, Any]:
    """A `sources:` entry naming a skopeo sync file for plain-HTTP `registry`."""
    path = write_json(
        directory / f"{name}.yaml", {registry: {"tls-verify": False, "images": dict(images)}}
    )
    return {"file": str(path), "name": name}


def seed_images(
    builder: ImageBuilder, registry: Endpoint, workdir: Path, refs: Mapping[str, Image]
) -> int:
    """Push each `repo:tag -> image` to `registry`; return the bytes of their unique blobs."""
    tags = {f"t{i}": image for i, image in enumerate(refs.values())}
    layout = builder.write_layout(workdir / "seed-layout", tags)
    for tag, ref in zip(tags, refs, strict=True):
        seed(layout, tag, registry, ref)
    return layout.total_bytes


# ------------------------------------------------------------------------------------------
# Scrapes
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Samples:
    """One scrape of /metrics, parsed by prometheus-client's own parser."""

    rows: tuple[Sample, ...]

    @classmethod
    def parse(cls, text: str) -> Samples:
        rows = [
            Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        return cls(tuple(rows))

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.rows
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels` (0 if none)."""
        return sum(s.value for s in self.matching(name, **labels))

    def has(self, name: str, **labels: str) -> bool:
        return bool(self.matching(name, **labels))

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.rows}


# ------------------------------------------------------------------------------------------
# The daemon
# ------------------------------------------------------------------------------------------


class MirrordDaemon:
    """One `mirrord run` subprocess; its stderr (the log) goes to a file."""

    def __init__(self, config: Path, log: Path, process: subprocess.Popen[bytes]) -> None:
        self.config = config
        self.log = log
        self.process = process
        self.listen = str(json.loads(config.read_text())["listen"])
        self.token: str | None = None

    @classmethod
    def start(cls, directory: Path, config: Path, *args: str) -> Self:
        log = directory / f"daemon-{time.monotonic_ns()}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(MIRRORD), "run", "--config", str(config), "--drain", "10", *args],
                stdout=sink,
                stderr=sink,
                env=os.environ | {"NO_COLOR": "1"},
            )
        return cls(config, log, process)

    def url(self, path: str) -> str:
        return f"http://{self.listen}{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def wait_healthy(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"mirrord run exited {self.process.returncode}:\n{self}")
                try:
                    async with session.get(self.url("/healthz")) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"mirrord run did not answer /healthz in {within}s:\n{self}")

    async def get(self, path: str) -> tuple[int, Any]:
        """GET `path`: (status, parsed JSON body, or the text for /metrics)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url(path), headers=self._headers()) as resp,
        ):
            text = await resp.text()
            is_json = resp.content_type == "application/json"
            return resp.status, json.loads(text) if is_json else text

    async def metrics(self) -> Samples:
        status, text = await self.get("/metrics")
        assert status == 200, (status, text)
        return Samples.parse(text)

    async def wait_for_metrics(
        self, ready: Callable[[Samples], bool], within: float = 60.0
    ) -> Samples:
        """Scrape until `ready(samples)` holds; fail with the last scrape and the log."""
        deadline = time.monotonic() + within
        samples = await self.metrics()
        while not ready(samples):
            if time.monotonic() > deadline:
                text = "\n".join(f"{s.name}{dict(s.labels)} {s.value}" for s in samples.rows)
                raise AssertionError(f"metrics not as expected after {within}s:\n{text}\n{self}")
            await asyncio.sleep(0.2)
            samples = await self.metrics()
        return samples

    async def wait_for_api(
        self, path: str, ready: Callable[[Any], bool], within: float = 30.0
    ) -> Any:
        """GET `path` until `ready(body)` holds; return that body."""
        deadline = time.monotonic() + within
        while True:
            status, body = await self.get(path)
            assert status == 200, (status, body)
            if ready(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} not as expected after {within}s: {body}\n{self}")
            await asyncio.sleep(0.2)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig`, wait for the exit and return its status (SIGKILL after a timeout)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines (other lines, if any, are left out)."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records

    def __str__(self) -> str:
        tail = "\n".join(self.log_text().splitlines()[-40:])
        return f"--- mirrord log ({self.log}) ---\n{tail}"
