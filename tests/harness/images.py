"""Deterministic test images written as OCI image layouts.

    builder = ImageBuilder("seed", store_dir)
    base = builder.layer("base")                                   # shared by both images
    app = builder.image("app", layers=[base, builder.layer("app")], kind="docker")
    multi = builder.index("multi", attestations=True)              # OCI index, 2 platforms
    layout = builder.write_layout(tmp / "layout", {"v1": app, "multi": multi})

The same seed and labels give byte-identical blobs and manifests on every run: tar entries have
fixed mtimes and owners, gzip headers carry no name or time. Manifests are indented JSON, as
Docker writes them, so a client that re-serialises a manifest changes its digest and is caught.
Every blob lands once in the builder's content-addressed store; layouts hard-link from it.
A layer of a requested size is generated in 1 MiB steps and stored uncompressed inside gzip
(deflate level 0), so 512 MiB builds in seconds and never sits in memory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import re
import secrets
import shutil
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

Kind = Literal["oci", "docker"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)

_MEDIA = {
    "oci": (OCI_MANIFEST, OCI_INDEX, OCI_CONFIG, OCI_LAYER),
    "docker": (DOCKER_MANIFEST, DOCKER_LIST, DOCKER_CONFIG, DOCKER_LAYER),
}
_MTIME = 1_577_836_800  # 2020-01-01T00:00:00Z, for every tar entry
_CREATED = "2020-01-01T00:00:00Z"
_CHUNK = 1 << 20
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")


@dataclass(frozen=True)
class Platform:
    """`os/architecture[/variant]`, as in an index entry."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse `linux/arm64` or `linux/arm/v7`."""
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"platform {text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_json(self) -> dict[str, str]:
        """The `platform` object of a descriptor."""
        fields = {"architecture": self.architecture, "os": self.os}
        return fields | ({"variant": self.variant} if self.variant else {})


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer in the store; `diff_id` is the digest of the uncompressed tar."""

    digest: str
    size: int
    diff_id: str


@dataclass(frozen=True, eq=False)
class Image:
    """A manifest or index the builder made, with everything it references.

    `blobs` maps the digest of every config and layer blob reachable from this manifest
    (children included) to its size; `manifests` holds the raw bytes of this manifest and of
    every child manifest.
    """

    media_type: str
    digest: str
    manifest: bytes
    blobs: Mapping[str, int]
    children: tuple[Image, ...] = ()
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    @property
    def size(self) -> int:
        """Size of the manifest bytes."""
        return len(self.manifest)

    @property
    def is_index(self) -> bool:
        """Whether this is a Docker manifest list or an OCI index."""
        return self.media_type in (OCI_INDEX, DOCKER_LIST)

    @property
    def manifests(self) -> dict[str, bytes]:
        """Raw bytes of this manifest and every descendant manifest, by digest."""
        return {image.digest: image.manifest for image in self.walk()}

    def walk(self) -> Iterator[Image]:
        """This image, then every descendant, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of the unique config and layer blobs (manifests excluded)."""
        return sum(self.blobs.values())

    def descriptor(self) -> dict[str, Any]:
        """An OCI descriptor for this manifest (with platform and annotations when set)."""
        desc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            desc["artifactType"] = self.artifact_type
        if self.platform is not None:
            desc["platform"] = self.platform.as_json()
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return desc


@dataclass(frozen=True, eq=False)
class Layout:
    """An OCI image layout on disk and the images its `index.json` names, by tag."""

    path: Path
    tags: Mapping[str, Image]

    @property
    def blobs(self) -> dict[str, int]:
        """Every config and layer blob of every tag, by digest (each once)."""
        found: dict[str, int] = {}
        for image in self.tags.values():
            found |= image.blobs
        return found

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of the unique config and layer blobs in the layout."""
        return sum(self.blobs.values())


class ImageBuilder:
    """Makes layers, images, indexes and artifacts from `seed`, storing blobs under `store`."""

    def __init__(self, seed: str, store: Path) -> None:
        self.seed = seed
        self.store = store
        (store / "sha256").mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ImageBuilder({self.seed!r}, {str(self.store)!r})"

    # -- layers ----------------------------------------------------------------------------

    def layer(
        self,
        label: str,
        files: Mapping[str, bytes] | None = None,
        *,
        size: int | None = None,
        compresslevel: int | None = None,
    ) -> Layer:
        """A layer holding `files`, or one file of `size` pseudo-random bytes, or a few
        small files derived from the seed and `label` when neither is given."""
        if size is not None:
            path = f"data/{_safe(label)}.bin"
            entries: list[tuple[str, int, IO[bytes]]] = [
                (path, size, cast(IO[bytes], _PseudoRandomReader(self._rng(label), size)))
            ]
            return self._write_layer(entries, 0 if compresslevel is None else compresslevel)
        contents = self._default_files(label) if files is None else files
        entries = [(name, len(data), io.BytesIO(data)) for name, data in sorted(contents.items())]
        return self._write_layer(entries, 6 if compresslevel is None else compresslevel)

    def empty_layer(self) -> Layer:
        """A tar with no entries, gzip'd (the kind `RUN true` steps leave behind)."""
        return self._write_layer([], 6)

    # -- manifests -------------------------------------------------------------------------

    def image(
        self,
        label: str,
        *,
        layers: Sequence[Layer] | None = None,
        kind: Kind = "oci",
        platform: str | Platform = "linux/amd64",
        annotations: Mapping[str, str] | None = None,
    ) -> Image:
        """A runnable-looking image: config plus `layers` (one layer from `label` by default)."""
        manifest_type, _, config_type, layer_type = _MEDIA[kind]
        plat = platform if isinstance(platform, Platform) else Platform.parse(platform)
        layers = [self.layer(label)] if layers is None else list(layers)
        config = self._put(_dump(self._config(label, plat, layers)))
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config.digest, "size": config.size},
            "layers": [
                {"mediaType": layer_type, "digest": lay.digest, "size": lay.size} for lay in layers
            ],
        }
        if annotations:
            body["annotations"] = dict(annotations)
        blobs = {config.digest: config.size} | {lay.digest: lay.size for lay in layers}
        return self._manifest(manifest_type, body, blobs, platform=plat)

    def index(
        self,
        label: str,
        images: Sequence[Image] | None = None,
        *,
        kind: Kind = "oci",
        platforms: Sequence[str] = DEFAULT_PLATFORMS,
        attestations: bool = False,
    ) -> Image:
        """A Docker manifest list or OCI index over `images` (by default one image per
        platform, all sharing a base layer). `attestations` adds, per image, a BuildKit-style
        attestation manifest with platform `unknown/unknown` (OCI index only)."""
        if attestations and kind != "oci":
            raise ValueError("attestation manifests only appear in OCI indexes")
        children = (
            list(images) if images is not None else self._platform_images(label, kind, platforms)
        )
        if attestations:
            children += [self._attestation(label, child) for child in children]
        body = {
            "schemaVersion": 2,
            "mediaType": _MEDIA[kind][1],
            "manifests": [child.descriptor() for child in children],
        }
        blobs: dict[str, int] = {}
        for child in children:
            blobs |= child.blobs
        return self._manifest(_MEDIA[kind][1], body, blobs, children=tuple(children))

    def artifact(
        self,
        label: str,
        *,
        artifact_type: str = "application/vnd.mirrord.test.artifact.v1",
        layer_media_type: str = "application/vnd.mirrord.test.payload.v1+txt",
        payload: bytes | None = None,
        subject: Image | None = None,
    ) -> Image:
        """An OCI artifact: `artifactType`, the empty config, one blob of a custom media type."""
        config = self._put(b"{}")
        data = payload if payload is not None else f"{self.seed}/{label}\n".encode()
        blob = self._put(data)
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": layer_media_type, "digest": blob.digest, "size": blob.size}],
        }
        if subject is not None:
            body["subject"] = {k: v for k, v in subject.descriptor().items() if k != "platform"}
        blobs = {config.digest: config.size, blob.digest: blob.size}
        return self._manifest(OCI_MANIFEST, body, blobs, artifact_type=artifact_type)

    def signature(self, subject: Image) -> tuple[str, Image]:
        """A cosign-style signature of `subject` and its tag, `sha256-<hex>.sig`."""
        payload = _dump(
            {
                "critical": {
                    "identity": {"docker-reference": "mirrord.test/signed"},
                    "image": {"docker-manifest-digest": subject.digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        )
        layer = self._put(payload)
        fake_signature = base64.b64encode(hashlib.sha512(payload).digest()).decode()
        config = self._put(_dump({"architecture": "", "os": "", "config": {}, "rootfs": {}}))
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [
                {
                    "mediaType": COSIGN_SIGNATURE,
                    "digest": layer.digest,
                    "size": layer.size,
                    "annotations": {"dev.cosignproject.cosign/signature": fake_signature},
                }
            ],
        }
        blobs = {config.digest: config.size, layer.digest: layer.size}
        tag = subject.digest.replace(":", "-") + ".sig"
        return tag, self._manifest(OCI_MANIFEST, body, blobs)

    # -- layouts ---------------------------------------------------------------------------

    def write_layout(self, directory: Path, tags: Mapping[str, Image]) -> Layout:
        """Write an OCI image layout naming each image by its tag (`ref.name` annotation)."""
        blob_dir = directory / "blobs" / "sha256"
        blob_dir.mkdir(parents=True, exist_ok=True)
        (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        for image in tags.values():
            for digest in [*image.blobs, *image.manifests]:
                self._link(digest, blob_dir)
        entries = [
            image.descriptor() | {"annotations": {REF_NAME: tag}} for tag, image in tags.items()
        ]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        (directory / "index.json").write_bytes(_dump(index))
        return Layout(directory, dict(tags))

    # -- internals -------------------------------------------------------------------------

    def _rng(self, label: str) -> random.Random:
        return random.Random(f"{self.seed}\x00{label}")

    def _default_files(self, label: str) -> dict[str, bytes]:
        rng = self._rng(label)
        name = _safe(label)
        return {
            f"{name}/hello.txt": f"layer {label} of seed {self.seed}\n".encode(),
            f"{name}/data.bin": rng.randbytes(rng.randrange(1024, 8192)),
        }

    def _platform_images(self, label: str, kind: Kind, platforms: Sequence[str]) -> list[Image]:
        base = self.layer(f"{label}/base")
        return [
            self.image(
                f"{label}/{platform}",
                layers=[base, self.layer(f"{label}/{platform}")],
                kind=kind,
                platform=platform,
            )
            for platform in platforms
        ]

    def _attestation(self, label: str, subject: Image) -> Image:
        statement = _dump(
            {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": "https://spdx.dev/Document",
                "subject": [{"name": label, "digest": {"sha256": subject.digest[7:]}}],
                "predicate": {"spdxVersion": "SPDX-2.3", "name": label},
            }
        )
        layer = self._put(statement)
        unknown = Platform("unknown", "unknown")
        config = self._put(_dump(self._config(label, unknown, [], diff_ids=[layer.digest])))
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [
                {
                    "mediaType": IN_TOTO,
                    "digest": layer.digest,
                    "size": layer.size,
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"},
                }
            ],
        }
        annotations = {
            "vnd.docker.reference.digest": subject.digest,
            "vnd.docker.reference.type": "attestation-manifest",
        }
        blobs = {config.digest: config.size, layer.digest: layer.size}
        return self._manifest(OCI_MANIFEST, body, blobs, platform=unknown, annotations=annotations)

    def _config(
        self,
        label: str,
        platform: Platform,
        layers: Sequence[Layer],
        diff_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
        if platform.variant:
            config["variant"] = platform.variant
        config |= {
            "created": _CREATED,
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Labels": {"org.mirrord.test.seed": self.seed, "org.mirrord.test.label": label},
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": list(diff_ids) if diff_ids else [lay.diff_id for lay in layers],
            },
            "history": [
                {"created": _CREATED, "created_by": f"mirrord test layer {i}"}
                for i, _ in enumerate(layers)
            ],
        }
        return config

    def _manifest(
        self,
        media_type: str,
        body: Mapping[str, Any],
        blobs: Mapping[str, int],
        *,
        children: tuple[Image, ...] = (),
        platform: Platform | None = None,
        annotations: Mapping[str, str] | None = None,
        artifact_type: str | None = None,
    ) -> Image:
        raw = _dump(body)
        stored = self._put(raw)
        return Image(
            media_type=media_type,
            digest=stored.digest,
            manifest=raw,
            blobs=dict(blobs),
            children=children,
            platform=platform,
            annotations=dict(annotations or {}),
            artifact_type=artifact_type,
        )

    def _put(self, data: bytes) -> _Stored:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return _Stored(digest, len(data))

    def _write_layer(self, entries: Iterable[tuple[str, int, IO[bytes]]], level: int) -> Layer:
        tmp = self.store / f"layer-{secrets.token_hex(8)}.tmp"
        with tmp.open("wb") as out:
            compressed = _HashingWriter(out)
            with gzip.GzipFile(
                filename="",
                mode="wb",
                fileobj=cast(IO[bytes], compressed),
                mtime=0,
                compresslevel=level,
            ) as gz:
                uncompressed = _HashingWriter(gz)
                _write_tar(cast(IO[bytes], uncompressed), entries)
        digest = "sha256:" + compressed.sha256.hexdigest()
        tmp.replace(self._path(digest))
        return Layer(digest, compressed.size, "sha256:" + uncompressed.sha256.hexdigest())

    def _link(self, digest: str, blob_dir: Path) -> None:
        target = blob_dir / digest.split(":", 1)[1]
        if target.exists():
            return
        try:
            os.link(self._path(digest), target)
        except OSError:
            shutil.copyfile(self._path(digest), target)

    def blob_file(self, digest: str) -> Path:
        """The file in the store holding the blob (layer, config or manifest) `digest`."""
        return self._path(digest)

    def _path(self, digest: str) -> Path:
        return self.store / "sha256" / digest.split(":", 1)[1]


@dataclass(frozen=True)
class _Stored:
    digest: str
    size: int


class _HashingWriter:
    """Passes writes through to `inner`, keeping their sha256 and total size."""

    def __init__(self, inner: IO[bytes] | gzip.GzipFile) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


class _PseudoRandomReader(io.RawIOBase):
    """`size` bytes made of rotations of one seeded block: cheap, deterministic, streamed."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self._block = rng.randbytes(_CHUNK)
        self._remaining = size
        self._chunk_index = 0
        self._chunk = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        want = self._remaining if n is None or n < 0 else min(n, self._remaining)
        parts: list[bytes] = []
        while want > 0:
            if self._pos == len(self._chunk):
                self._chunk, self._pos = self._next_chunk(), 0
            part = self._chunk[self._pos : self._pos + want]
            self._pos += len(part)
            self._remaining -= len(part)
            want -= len(part)
            parts.append(part)
        return b"".join(parts)

    def _next_chunk(self) -> bytes:
        # A large odd stride keeps consecutive chunks from lining up with one another.
        shift = (self._chunk_index * 7919) % len(self._block)
        self._chunk_index += 1
        return self._block[shift:] + self._block[:shift]


def _write_tar(out: IO[bytes], entries: Iterable[tuple[str, int, IO[bytes]]]) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_CHUNK) as tar:
        seen_dirs: set[str] = set()
        for name, size, data in entries:
            for parent in _parents(name):
                if parent not in seen_dirs:
                    seen_dirs.add(parent)
                    tar.addfile(_tarinfo(parent + "/", 0, tarfile.DIRTYPE, 0o755))
            tar.addfile(_tarinfo(name, size, tarfile.REGTYPE, 0o644), data)


def _tarinfo(name: str, size: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, mode, _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._/-]", "_", label).strip("/") or "layer"


def _dump(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, indent=3).encode()
