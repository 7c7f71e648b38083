"""`mirrord demo`: two registries on loopback, sample images, one sync, the metrics.

Everything lives in a temporary directory and is removed at the end. It needs Distribution's
`docker-registry` binary (Debian package `docker-registry`), which `scripts/dev demo` installs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from mirrord.errors import MirrordError
from mirrord.manifests import OCI_INDEX, OCI_MANIFEST
from mirrord.registry.client import RegistryClient
from mirrord.registry.http import RegistryHttp
from mirrord.registry.options import RegistryOptions, TLSMode

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PLAIN = RegistryOptions(tls=TLSMode.PLAIN_HTTP)
SAMPLES = {  # repository -> tags
    "library/alpine": ["3.19", "3.20", "3.21"],
    "library/nginx": ["1.26", "1.27"],
    "team/api": ["v1.0.0", "v1.1.0", "v2.0.0-rc.1"],
}
MULTI_ARCH = {"library/nginx"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRegistry:
    host: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def local_registry(workdir: Path, name: str) -> Iterator[LocalRegistry]:
    binary = shutil.which("docker-registry")
    if binary is None:
        raise MirrordError("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = workdir / f"{name}.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "error"},
                "storage": {"filesystem": {"rootdirectory": str(workdir / name)}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        yield LocalRegistry(f"127.0.0.1:{port}", process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


async def wait_ready(host: str, within: float = 10.0) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(within / 0.05)):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://{host}/v2/") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise MirrordError(f"the demo registry at {host} did not start")


def _layer(name: str, size: int) -> bytes:
    content = hashlib.shake_256(name.encode()).digest(size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(f"{name.replace('/', '_')}.bin")
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buffer.getvalue(), mtime=0)


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


class Seeder:
    """Pushes small, deterministic sample images with mirrord's own registry client."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    async def blob(self, repo: str, data: bytes) -> None:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        session = await self.client.start_upload(repo, digest)
        assert session is not None
        await self.client.finish_upload(session, digest, len(data), data)

    async def image(self, repo: str, tag: str, arch: str) -> bytes:
        base = _layer("shared-base", 2 << 20)  # shared by every sample: uploaded once, then mounted
        app = _layer(f"{repo}:{tag}:{arch}", 512 << 10)
        config = json.dumps(
            {"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}
        ).encode()
        for data in (base, app, config):
            await self.blob(repo, data)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER, base), _descriptor(OCI_LAYER, app)],
        }
        return json.dumps(manifest, indent=2).encode()

    async def tag(self, repo: str, tag: str) -> None:
        if repo not in MULTI_ARCH:
            raw = await self.image(repo, tag, "amd64")
            await self.client.put_manifest(repo, tag, raw, OCI_MANIFEST)
            return
        entries = []
        for arch in ("amd64", "arm64"):
            raw = await self.image(repo, tag, arch)
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            await self.client.put_manifest(repo, digest, raw, OCI_MANIFEST)
            entries.append(
                {
                    **_descriptor(OCI_MANIFEST, raw),
                    "platform": {"os": "linux", "architecture": arch},
                }
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2
        )
        await self.client.put_manifest(repo, tag, index.encode(), OCI_INDEX)


async def seed(host: str) -> int:
    client = RegistryClient(RegistryHttp(host, PLAIN, role="destination"))
    try:
        seeder = Seeder(client)
        for repo, tags in SAMPLES.items():
            for tag in tags:
                await seeder.tag(repo, tag)
    finally:
        await client.close()
    return sum(len(tags) for tags in SAMPLES.values())


def demo_config(workdir: Path, source: str, destination: str, listen: str) -> Path:
    skopeo_file = workdir / "sync.yaml"
    skopeo_file.write_text(
        f"# A skopeo sync file, used unchanged.\n{source}:\n  tls-verify: false\n  images:\n"
        "    library/alpine: []\n    library/nginx: []\n"
        '  images-by-semver:\n    team/api: ">= 1.0.0"\n'
    )
    config = workdir / "config.yaml"
    config.write_text(
        f"database: sqlite+aiosqlite:///{workdir}/mirrord.db\n"
        f"listen: {listen}\n"
        "log: {format: text, level: info}\n"
        f"destination: {{registry: '{destination}', prefix: mirror, tls: plain-http}}\n"
        "schedule: {interval: 1h}\n"
        "limits: {jobs: 4, blobs: 8}\n"
        f"sources:\n  - file: {skopeo_file}\n"
    )
    return config


@contextlib.asynccontextmanager
async def demo_environment() -> AsyncIterator[tuple[Path, LocalRegistry, LocalRegistry]]:
    with tempfile.TemporaryDirectory(prefix="mirrord-demo-") as tmp:
        workdir = Path(tmp)
        with local_registry(workdir, "source") as src, local_registry(workdir, "mirror") as dst:
            await wait_ready(src.host)
            await wait_ready(dst.host)
            yield workdir, src, dst
