"""The daemon as users run it: `mirrord run --config FILE` in a subprocess, real registries.

`corpus` seeds a source registry once per module: a few distinct images (sharing a base layer)
behind many tags, made cheap with `tag_on_disk`. `daemon_env` writes a config for a fresh
destination and runs the real binary; tests signal it, restart it, and read the registry and
the database afterwards.
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
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mirrord.store import Job, JobState, Store
from tests.harness.faultproxy import FaultProxy, MakeFaultProxy
from tests.harness.images import MANIFEST_MEDIA_TYPES, Image, ImageBuilder
from tests.harness.registry import MakeRegistry, RegistryServer
from tests.harness.skopeo import seed

T = TypeVar("T")
REPOS = ("team/web", "team/api", "infra/proxy", "infra/db")
IMAGES_PER_REPO = 3
TAGS_PER_REPO = 16  # 4 x 16 = 64 tags


@dataclass
class Corpus:
    registry: RegistryServer
    tags: dict[str, Image]  # "repo:tag" -> image
    blobs: dict[str, int]  # every unique blob digest -> size

    def tags_of(self, repo: str) -> dict[str, Image]:
        return {k.split(":", 1)[1]: v for k, v in self.tags.items() if k.startswith(f"{repo}:")}


def build_corpus(registry: RegistryServer, builder: ImageBuilder, work: Path) -> Corpus:
    base = builder.layer("base", size=1 << 20)
    tags: dict[str, Image] = {}
    blobs: dict[str, int] = {}
    for repo in REPOS:
        images = [
            builder.image(
                f"{repo}-{i}", layers=[base, builder.layer(f"{repo}-{i}", size=256 << 10)]
            )
            for i in range(IMAGES_PER_REPO)
        ]
        for i, image in enumerate(images):
            layout = builder.write_layout(work / f"{repo}-{i}".replace("/", "_"), {"v": image})
            seed(layout, "v", registry, f"{repo}:v{i}.0.0")
            blobs |= image.blobs
        for n in range(TAGS_PER_REPO):
            image = images[n % IMAGES_PER_REPO]
            tag = f"v{n % IMAGES_PER_REPO}.0.0" if n < IMAGES_PER_REPO else f"v{n}.1.0"
            if n >= IMAGES_PER_REPO:
                registry.tag_on_disk(repo, tag, image.digest)
            tags[f"{repo}:{tag}"] = image
    return Corpus(registry, tags, blobs)


@pytest.fixture(scope="module")
def corpus(shared_registry: MakeRegistry, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """64 tags over 4 repositories: 12 distinct images sharing a 1 MiB base layer."""
    registry = shared_registry("anonymous")
    work = tmp_path_factory.mktemp("corpus")
    return build_corpus(registry, ImageBuilder("daemon-corpus", work / "store"), work)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T | None], within: float = 60.0, step: float = 0.1) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (value := check()) is not None and value is not False:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {within}s")


def http_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class DaemonEnv:
    """A config for one destination registry, and the daemon processes run on it."""

    workdir: Path
    source: str  # host:port the daemon reads from (a proxy, usually)
    destination: str
    listen: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def database(self) -> str:
        return f"sqlite:///{self.workdir / 'mirrord.db'}"

    @property
    def log(self) -> Path:
        return self.workdir / f"daemon-{self.starts}.log"

    def write_config(
        self, sources: str, *, jobs: int = 4, limits: str = "", extra: str = ""
    ) -> None:
        self.config.write_text(
            f"database: {self.database}\n"
            f"listen: {self.listen}\n"
            "log: {format: json, level: info}\n"
            f"destination: {{registry: '{self.destination}', prefix: mirror, tls: plain-http}}\n"
            "schedule: {interval: 1h}\n"
            f"limits: {{jobs: {jobs}, blobs: 8, job-timeout: 2m, {limits}}}\n"
            "retry: {attempts: 4, base: 200ms, max: 1s}\n"
            f"registries:\n  '{self.source}': {{tls: plain-http}}\n"
            f"{extra}"
            f"sources:\n{sources}"
        )

    def skopeo_source(self, images: dict[str, list[str]]) -> str:
        """A skopeo sync file for `self.source`, as a `sources:` entry."""
        lines = [f"'{self.source}':", "  images:"]
        lines += [f"    {repo}: {json.dumps(tags)}" for repo, tags in images.items()]
        path = self.workdir / "sync.yaml"
        path.write_text("\n".join(lines) + "\n")
        return f"  - file: {path}\n"

    def start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mirrord",
                    "run",
                    "--config",
                    str(self.config),
                    "--drain",
                    "20",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(self._ready, within=30)
        return self.process

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"daemon exited with {self.process.returncode}:\n{self.log.read_text()}"
            )
        try:
            return bool(http_json(f"http://{self.listen}/readyz")["ready"])
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, within: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=within)

    def api(self, path: str) -> Any:
        return http_json(f"http://{self.listen}{path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def mirrord(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run an operator command against this daemon's config."""
        return subprocess.run(
            [sys.executable, "-m", "mirrord", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def jobs(self) -> list[Job]:
        async def read() -> list[Job]:
            async with await Store.open(self.database) as store:
                return await store.queue.jobs(limit=100_000)

        return asyncio.run(read())

    def states(self) -> dict[JobState, int]:
        counts: dict[JobState, int] = {}
        for job in self.jobs():
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts


@pytest.fixture
def daemon_env(
    tmp_path: Path, corpus: Corpus, make_registry: MakeRegistry, fault_proxy: MakeFaultProxy
) -> Iterator[tuple[DaemonEnv, FaultProxy, FaultProxy]]:
    """(env, source proxy, destination proxy): a fresh destination behind recording proxies."""
    destination = make_registry("anonymous")
    src_proxy = fault_proxy(corpus.registry)
    dst_proxy = fault_proxy(destination)
    env = DaemonEnv(tmp_path, src_proxy.host, dst_proxy.host)
    try:
        yield env, src_proxy, dst_proxy
    finally:
        env.stop()


def destination_digest(host: str, repo: str, tag: str) -> str | None:
    request = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", method="HEAD")
    request.add_header("Accept", ", ".join(MANIFEST_MEDIA_TYPES))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def mirrored_name(repo: str) -> str:
    """skopeo's default naming with prefix `mirror`: the last path component."""
    return f"mirror/{repo.rsplit('/', 1)[-1]}"


def all_tags_correct(corpus: Corpus, destination: str) -> bool:
    return all(
        destination_digest(destination, mirrored_name(key.split(":")[0]), key.split(":")[1])
        == image.digest
        for key, image in corpus.tags.items()
    )
