"""A small pool for bundle tests: images seeded by skopeo into a real registry, so the pool's
storage is written by Distribution itself.

    PREFIX/app/web:v1, v2   OCI images sharing a base layer (v2 adds one)
    PREFIX/app/api:1.0      a Docker schema2 image on the same base
    PREFIX/multi:latest     an OCI index, two platforms, with attestation manifests
    PREFIX/tools:2.0        a Docker manifest list
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from mirrord.cli import main
from tests.harness.images import Image, ImageBuilder
from tests.harness.registry import RegistryServer
from tests.harness.skopeo import inspect_raw, seed

V2 = "docker/registry/v2"
LIST_V1 = ("app/web:v1", "app/api:1.0", "multi:latest", "tools:2.0")


@dataclass
class Corpus:
    """Images in a pool registry under `prefix`, by `repo:tag` relative to it."""

    registry: RegistryServer
    prefix: str
    images: dict[str, Image]
    builder: ImageBuilder
    workdir: Path

    @property
    def storage_pool(self) -> str:
        return f"registry-storage:{self.registry.storage_dir}:{self.prefix}"

    @property
    def docker_pool(self) -> str:
        return f"docker://{self.registry.host}/{self.prefix}"

    def list_file(self, names: tuple[str, ...], name: str = "images-list.txt") -> Path:
        path = self.workdir / name
        path.write_text("##apps\n" + "".join(f"{n}\n" for n in names))
        return path

    def add(self, name: str, image: Image) -> None:
        """Push one more image into the pool."""
        repo, tag = name.split(":")
        layout = self.builder.write_layout(
            self.workdir / f"layout-{len(self.images)}", {tag: image}
        )
        seed(layout, tag, self.registry, f"{self.prefix}/{repo}:{tag}")
        self.images[name] = image

    def raw(self, name: str) -> bytes:
        """What the pool registry serves for `name` (skopeo inspect --raw)."""
        return inspect_raw(self.registry, f"{self.prefix}/{name}")


def build_corpus(registry: RegistryServer, workdir: Path, seed_text: str) -> Corpus:
    builder = ImageBuilder(seed_text, workdir / "store")
    prefix = "pool-" + hashlib.sha256(seed_text.encode()).hexdigest()[:8]
    corpus = Corpus(registry, prefix, {}, builder, workdir)
    base = builder.layer("base", size=200_000)
    corpus.add("app/web:v1", builder.image("web1", layers=[base, builder.layer("web1")]))
    corpus.add(
        "app/api:1.0", builder.image("api", layers=[base, builder.layer("api")], kind="docker")
    )
    corpus.add("multi:latest", builder.index("multi", attestations=True))
    corpus.add("tools:2.0", builder.index("tools", kind="docker"))
    return corpus


def mirrord(*args: str | Path) -> Result:
    """Run the mirrord CLI in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_files(storage: Path) -> set[str]:
    """Digests of the blob data files in a registry storage directory."""
    base = storage / "docker/registry/v2/blobs/sha256"
    return {f"sha256:{p.parent.name}" for p in base.glob("*/*/data")} if base.exists() else set()


def plant(storage: Path, repo: str, tag: str, raw: bytes) -> str:
    """Store a manifest in a registry storage by hand, as a hostile pool would."""
    digest = sha256(raw)
    hexdigest = digest[7:]
    data = storage / V2 / f"blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
    data.parent.mkdir(parents=True)
    data.write_bytes(raw)
    manifests = storage / V2 / "repositories" / repo / "_manifests"
    for link in (
        manifests / f"revisions/sha256/{hexdigest}/link",
        manifests / f"tags/{tag}/current/link",
    ):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(digest)
    return digest


def retag(storage: Path, repo: str, tag: str, digest: str) -> None:
    """Point a tag of a registry storage at another manifest by hand (a new file: the old one
    may be hard-linked to the pool's)."""
    link = storage / V2 / "repositories" / repo / "_manifests/tags" / tag / "current/link"
    link.unlink()
    link.write_text(digest)


def write_tar(path: Path, members: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> None:
    """A tar of regular files, in order (pairs may repeat a name, as a hostile one does)."""
    pairs = members.items() if isinstance(members, Mapping) else members
    with tarfile.open(path, "w") as tar:
        for name, data in pairs:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
