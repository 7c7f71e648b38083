"""Fixtures for the end-to-end tests: the `mirrord` command, and source images seeded once.

The corpus (a Docker schema2 image with an empty layer, an OCI image, a Docker manifest list,
an OCI index with attestation entries over three platforms) is built once per session and
seeded with skopeo into the session's shared registries, in repository `it/corpus`, one tag
per kind. Tests copy *from* there and write only to their own `unique_repo` or to a fresh
`make_registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.images import Image, ImageBuilder, Layout
from tests.harness.registry import Credentials, MakeRegistry, RegistryServer, Variant
from tests.harness.skopeo import seed
from tests.integration.support import Mirrord

CORPUS_REPO = "it/corpus"
KINDS = ("docker", "oci", "list", "index")
INDEX_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/s390x")


@dataclass(frozen=True)
class Seeded:
    """Where a corpus image lives: `registry/CORPUS_REPO:kind`."""

    registry: RegistryServer
    kind: str
    image: Image

    @property
    def repo(self) -> str:
        return CORPUS_REPO

    @property
    def tag(self) -> str:
        return self.kind

    @property
    def ref(self) -> str:
        """`docker://HOST/it/corpus:KIND`."""
        return f"docker://{self.registry.host}/{CORPUS_REPO}:{self.kind}"

    @property
    def creds(self) -> Credentials | None:
        return self.registry.creds


SeedCorpus = Callable[[Variant, str], Seeded]


@pytest.fixture
def cli(tmp_path: Path) -> Mirrord:
    """Runs the real `mirrord` command with a private HOME under the test's tmp_path."""
    return Mirrord(tmp_path / "home")


@pytest.fixture(scope="session")
def corpus_builder(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilder:
    return ImageBuilder("integration-corpus", tmp_path_factory.mktemp("corpus-store"))


@pytest.fixture(scope="session")
def corpus_layout(corpus_builder: ImageBuilder, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """One image of each kind, in one OCI layout tagged by kind."""
    b = corpus_builder
    base = b.layer("base")
    images = {
        "docker": b.image(
            "docker", layers=[base, b.empty_layer(), b.layer("docker")], kind="docker"
        ),
        "oci": b.image("oci", layers=[base, b.layer("oci")]),
        "list": b.index("list", kind="docker"),
        "index": b.index("index", platforms=INDEX_PLATFORMS, attestations=True),
    }
    return b.write_layout(tmp_path_factory.mktemp("corpus-layout"), images)


@pytest.fixture(scope="session")
def seed_corpus(shared_registry: MakeRegistry, corpus_layout: Layout) -> SeedCorpus:
    """`seed_corpus(variant, kind)`: that corpus image in the shared `variant` registry (seeded
    on first use)."""
    done: dict[tuple[Variant, str], Seeded] = {}

    def get(variant: Variant, kind: str) -> Seeded:
        if (variant, kind) not in done:
            registry = shared_registry(variant)
            seed(corpus_layout, kind, registry, f"{CORPUS_REPO}:{kind}", creds=registry.creds)
            done[variant, kind] = Seeded(registry, kind, corpus_layout.tags[kind])
        return done[variant, kind]

    return get
