"""Manifests and indexes: media types, strict parsing, platform selection.  [pure]

Manifests are never rewritten: the bytes that arrive are the bytes that are pushed. Parsing is
only for finding what a manifest references. Hostile documents are refused before anything is
built from them: oversized, duplicate JSON keys, a `mediaType` that contradicts the
Content-Type, documents that are both image and index (CVE-2021-41190), invalid digests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mirrord.errors import InvalidManifest, UnsupportedOperation
from mirrord.model import Platform, PlatformMode, PlatformPolicy
from mirrord.refs import DIGEST_RE

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST, OCI_ARTIFACT})
SCHEMA1_TYPES = frozenset({DOCKER_V1_SIGNED, DOCKER_V1})
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST, OCI_ARTIFACT])
_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})
NON_DISTRIBUTABLE = ("foreign", "nondistributable")

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_DESCRIPTORS = 4096
MAX_BLOB_SIZE = 1 << 42  # 4 TiB: larger "sizes" are hostile
MAX_INDEX_DEPTH = 4


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    urls: tuple[str, ...] = ()

    @property
    def distributable(self) -> bool:
        return not self.urls and not any(m in self.media_type for m in NON_DISTRIBUTABLE)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A verified manifest or index: its exact bytes, digest, type and references."""

    raw: bytes = field(repr=False)
    media_type: str
    digest: str
    children: tuple[Descriptor, ...] = ()  # index entries
    blobs: tuple[Descriptor, ...] = ()  # config + layers (+ artifact blobs)
    subject: Descriptor | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def size(self) -> int:
        return len(self.raw)


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidManifest(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _load_json(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw, object_pairs_hook=_reject_duplicates)
    except InvalidManifest:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidManifest(f"not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("manifest is not a JSON object")
    return doc


def _bare_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _media_type(doc: dict[str, Any], content_type: str | None) -> str:
    declared = doc.get("mediaType")
    header = _bare_type(content_type)
    if declared is not None and not isinstance(declared, str):
        raise InvalidManifest("mediaType is not a string")
    if declared and header not in _GENERIC_TYPES and declared != header:
        raise InvalidManifest(f"mediaType {declared!r} contradicts Content-Type {header!r}")
    if declared:
        return declared
    if header not in _GENERIC_TYPES:
        return header
    if doc.get("schemaVersion") == 1:
        return DOCKER_V1_SIGNED if "signatures" in doc else DOCKER_V1
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def parse_manifest(
    raw: bytes, content_type: str | None = None, digest: str | None = None
) -> Manifest:
    """Verify and parse manifest bytes. `digest`, when given, must match the bytes."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise InvalidManifest(f"manifest larger than {MAX_MANIFEST_SIZE} bytes")
    actual = compute_digest(raw, digest.split(":", 1)[0] if digest else "sha256")
    if digest is not None and actual != digest:
        raise InvalidManifest(f"manifest digest mismatch: expected {digest}, got {actual}")
    doc = _load_json(raw)
    media_type = _media_type(doc, content_type)
    if media_type in SCHEMA1_TYPES:
        raise UnsupportedOperation("Docker schema1 manifests are not supported (deprecated format)")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise InvalidManifest("ambiguous document: both an index and an image manifest")
    if media_type in INDEX_TYPES:
        children = _descriptors(doc, "manifests", with_platform=True)
        return Manifest(raw, media_type, actual, children=children, subject=_subject(doc))
    if media_type not in IMAGE_TYPES and "layers" not in doc and "blobs" not in doc:
        raise InvalidManifest(f"unsupported manifest media type {media_type!r}")
    return Manifest(raw, media_type, actual, blobs=_image_blobs(doc), subject=_subject(doc))


def _image_blobs(doc: dict[str, Any]) -> tuple[Descriptor, ...]:
    config = doc.get("config")
    blobs = (_descriptor(config, "config"),) if config is not None else ()
    return blobs + _descriptors(doc, "layers") + _descriptors(doc, "blobs")


def _subject(doc: dict[str, Any]) -> Descriptor | None:
    subject = doc.get("subject")
    return None if subject is None else _descriptor(subject, "subject")


def _descriptors(
    doc: dict[str, Any], key: str, with_platform: bool = False
) -> tuple[Descriptor, ...]:
    items = doc.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise InvalidManifest(f"{key} is not a list")
    if len(items) > MAX_DESCRIPTORS:
        raise InvalidManifest(f"{key} has more than {MAX_DESCRIPTORS} entries")
    return tuple(_descriptor(item, f"{key}[{i}]", with_platform) for i, item in enumerate(items))


def _descriptor(item: Any, where: str, with_platform: bool = False) -> Descriptor:
    if not isinstance(item, dict):
        raise InvalidManifest(f"{where} is not an object")
    digest, size, media_type = item.get("digest"), item.get("size"), item.get("mediaType", "")
    if not isinstance(digest, str) or DIGEST_RE.fullmatch(digest) is None:
        raise InvalidManifest(f"{where}: invalid digest {str(digest)[:80]!r}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise InvalidManifest(f"{where}: invalid size {str(size)[:40]!r}")
    if not isinstance(media_type, str):
        raise InvalidManifest(f"{where}: mediaType is not a string")
    urls = item.get("urls") or ()
    annotations = item.get("annotations") or {}
    if not isinstance(urls, list | tuple) or not isinstance(annotations, dict):
        raise InvalidManifest(f"{where}: malformed urls or annotations")
    platform = _platform(item.get("platform"), where) if with_platform else None
    return Descriptor(
        media_type,
        digest,
        size,
        platform,
        {str(k): str(v) for k, v in annotations.items()},
        tuple(map(str, urls)),
    )


def _platform(value: Any, where: str) -> Platform | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidManifest(f"{where}: platform is not an object")
    os_, arch, variant = value.get("os"), value.get("architecture"), value.get("variant")
    if not isinstance(os_, str) or not isinstance(arch, str):
        raise InvalidManifest(f"{where}: platform needs os and architecture")
    return Platform(os_, arch, variant if isinstance(variant, str) and variant else None)


# ---- platform selection ------------------------------------------------------------------


def _matching(children: tuple[Descriptor, ...], wanted: Platform) -> list[Descriptor]:
    return [
        c
        for c in children
        if c.platform is not None
        and wanted.matches(c.platform.os, c.platform.architecture, c.platform.variant)
    ]


def select_instance(index: Manifest, wanted: Platform) -> Descriptor:
    """skopeo's default for an index: the one instance for `wanted` (exact variant preferred)."""
    candidates = _matching(index.children, wanted)
    exact = [
        c for c in candidates if c.platform is not None and c.platform.variant == wanted.variant
    ]
    if not candidates:
        available = (
            ", ".join(sorted({str(c.platform) for c in index.children if c.platform})) or "none"
        )
        raise UnsupportedOperation(
            f"no image for platform {wanted} in the index (available: {available})"
        )
    return (exact or candidates)[0]


def select_subset(index: Manifest, wanted: tuple[Platform, ...]) -> tuple[Descriptor, ...]:
    """Entries for the wanted platforms, plus attestations that refer to a kept entry."""
    kept = [c for c in index.children if any(_matching((c,), w) for w in wanted)]
    if not kept:
        raise UnsupportedOperation(
            f"none of the platforms {', '.join(map(str, wanted))} is in the index"
        )
    kept_digests = {c.digest for c in kept}
    attestations = [
        c
        for c in index.children
        if c.annotations.get("vnd.docker.reference.digest") in kept_digests
    ]
    return tuple(c for c in index.children if c in kept or c in attestations)


def subset_index(index: Manifest, children: tuple[Descriptor, ...]) -> Manifest:
    """A new index holding only `children` (a new document, hence a new digest)."""
    doc = _load_json(index.raw)
    keep = {c.digest for c in children}
    doc["manifests"] = [m for m in doc["manifests"] if m.get("digest") in keep]
    raw = json.dumps(doc, indent=3).encode()
    return parse_manifest(raw, index.media_type)


def children_for_policy(index: Manifest, policy: PlatformPolicy) -> tuple[Descriptor, ...]:
    if policy.mode is PlatformMode.LIST:
        return select_subset(index, policy.platforms)
    return index.children
