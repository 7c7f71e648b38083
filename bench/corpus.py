"""The benchmark corpus: ~70 tags over 24 repositories, ~400 MiB of unique blobs.

Three base layers are shared by groups of eight repositories and one small layer by all; each
tag adds its own application layer; every 5th repository is multi-arch (an OCI index over
linux/amd64 and linux/arm64, each platform with its own base and application layers). Layers
are generated (seeded, incompressible) by the test harness's image builder, so the corpus is
identical on every machine. The seeded source registry's storage is kept under bench/out and
reused by later runs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.harness.images import Image, ImageBuilder, Layer
from tests.harness.registry import RegistryServer
from tests.harness.skopeo import seed

MiB = 1 << 20
REPOS = 24
TAGS_PER_REPO = 3
APP_LAYER = 4 * MiB
BASES = (24 * MiB, 16 * MiB, 12 * MiB)  # one per group of 8 repositories
COMMON = 4 * MiB
CORPUS_VERSION = 1


@dataclass(frozen=True)
class Corpus:
    tags: dict[str, str]  # "repo:tag" -> top-level digest
    blobs: dict[str, int]  # unique blob digest -> size

    @property
    def unique_bytes(self) -> int:
        return sum(self.blobs.values())

    @property
    def repos(self) -> list[str]:
        return sorted({key.split(":")[0] for key in self.tags})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"tags": self.tags, "blobs": self.blobs}, indent=1))

    @classmethod
    def load(cls, path: Path) -> Corpus:
        data = json.loads(path.read_text())
        return cls(data["tags"], data["blobs"])


class CorpusBuilder:
    def __init__(self, builder: ImageBuilder) -> None:
        self.b = builder
        self.common = builder.layer("common", size=COMMON)
        self.bases = {arch: [self._base(i, arch) for i in range(3)] for arch in ("amd64", "arm64")}

    def _base(self, group: int, arch: str) -> Layer:
        size = BASES[group] if arch == "amd64" else BASES[group] // 2
        return self.b.layer(f"base-{group}-{arch}", size=size)

    def image(self, repo: int, tag: int, arch: str) -> Image:
        app = self.b.layer(f"app-{repo}-{tag}-{arch}", size=APP_LAYER)
        layers = [self.bases[arch][repo // 8], self.common, app]
        return self.b.image(f"r{repo}-{tag}-{arch}", layers=layers, platform=f"linux/{arch}")

    def tag(self, repo: int, tag: int) -> Image:
        if repo % 5 != 0:
            return self.image(repo, tag, "amd64")
        children = [self.image(repo, tag, arch) for arch in ("amd64", "arm64")]
        return self.b.index(f"r{repo}-{tag}", images=children)


def build_and_seed(registry: RegistryServer, work: Path) -> Corpus:
    """Generate the corpus and push it into `registry` with skopeo (digests preserved)."""
    builder = CorpusBuilder(ImageBuilder("mirrord-bench", work / "store"))
    tags: dict[str, str] = {}
    blobs: dict[str, int] = {}
    for repo in range(REPOS):
        name = f"bench/group{repo // 8}/app{repo:02d}"
        for tag in range(TAGS_PER_REPO - (1 if repo % 12 == 11 else 0)):  # 70 tags in all
            image = builder.tag(repo, tag)
            version = f"1.{tag}.0"
            layout = builder.b.write_layout(work / "layouts" / f"{repo}-{tag}", {version: image})
            seed(layout, version, registry, f"{name}:{version}")
            tags[f"{name}:{version}"] = image.digest
            blobs |= image.blobs
    shutil.rmtree(work / "layouts")
    shutil.rmtree(work / "store")
    return Corpus(tags, blobs)


def cached_source(out: Path) -> tuple[RegistryServer, Corpus]:
    """A running source registry holding the corpus, built once and reused."""
    root = out / f"corpus-v{CORPUS_VERSION}"
    manifest = root / "corpus.json"
    registry = RegistryServer(root / "registry", "anonymous")
    registry.start()
    if manifest.exists():
        return registry, Corpus.load(manifest)
    print(f"building the corpus in {root} (once) ...", flush=True)
    corpus = build_and_seed(registry, root)
    corpus.save(manifest)
    return registry, corpus
