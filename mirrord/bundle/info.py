"""`mirrord-bundle.json`: what a bundle holds, written last, once everything else is durable.

    {"mirrord-bundle": 1, "format": "registry-storage", "created": "...", "source": "...",
     "images": [{"repository": "app", "tag": "v1", "digest": "sha256:..."}, ...],
     "blobs": ["sha256:...", ...],     data (blobs and manifests) this bundle carries
     "base": ["sha256:...", ...]}      data its previous bundle(s) carry (--since)

A bundle directory without it is incomplete (an export that was interrupted: run it again).
An export removes the old one before it changes anything and leaves `mirrord-bundle.incomplete`
until the new one is written, so an interrupted export is told from a registry's own storage
(which has neither). `blobs | base` is what a bundle made `--since` this one may leave out.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from mirrord.errors import InvalidReference, LocalStorageError
from mirrord.refs import check_digest, check_repository, check_tag
from mirrord.transports.jsonfile import dump_json, load_json

BUNDLE_FILE = "mirrord-bundle.json"
INCOMPLETE_FILE = "mirrord-bundle.incomplete"  # while an export writes (or after it was killed)
INCOMPLETE_TEXT = b"an export is writing this bundle, or was interrupted: run it again\n"
VERSION = 1
FORMATS = ("registry-storage", "oci", "docker-archive")


@dataclass(frozen=True, slots=True)
class BundleImage:
    """An image in a bundle: repository, tag (None when it is held by digest only), digest."""

    repository: str
    tag: str | None
    digest: str

    @property
    def order(self) -> tuple[str, str, str]:
        """Sort key: by repository, then tag (digest-only images first)."""
        return (self.repository, self.tag or "", self.digest)

    @property
    def name(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "tag": self.tag, "digest": self.digest}

    @classmethod
    def from_json(cls, data: Any) -> BundleImage:
        if not isinstance(data, dict):
            raise InvalidReference("image entry is not an object")
        tag = data.get("tag")
        return cls(
            check_repository(str(data.get("repository", ""))),
            None if tag is None else check_tag(str(tag)),
            check_digest(str(data.get("digest", ""))),
        )


@dataclass(frozen=True, slots=True)
class BundleInfo:
    format: str
    images: tuple[BundleImage, ...]
    blobs: frozenset[str]
    base: frozenset[str] = frozenset()
    source: str = ""
    created: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )

    @property
    def covers(self) -> frozenset[str]:
        """Every blob this bundle and its bases carry together."""
        return self.blobs | self.base

    def to_bytes(self) -> bytes:
        return dump_json(
            {
                "mirrord-bundle": VERSION,
                "format": self.format,
                "created": self.created,
                "source": self.source,
                "images": [i.to_json() for i in sorted(self.images, key=lambda image: image.order)],
                "blobs": sorted(self.blobs),
                "base": sorted(self.base),
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes, what: str) -> BundleInfo:
        doc = load_json(raw, what)
        if not isinstance(doc, dict) or doc.get("mirrord-bundle") != VERSION:
            raise LocalStorageError(f"{what}: not a mirrord bundle description (version {VERSION})")
        try:
            fmt = str(doc.get("format"))
            if fmt not in FORMATS:
                raise InvalidReference(f"unknown format {fmt[:40]!r}")
            return cls(
                format=fmt,
                images=tuple(BundleImage.from_json(i) for i in _list(doc, "images")),
                blobs=frozenset(check_digest(str(d)) for d in _list(doc, "blobs")),
                base=frozenset(check_digest(str(d)) for d in _list(doc, "base")),
                source=str(doc.get("source", "")),
                created=str(doc.get("created", "")),
            )
        except InvalidReference as exc:
            raise LocalStorageError(f"{what}: {exc}") from None


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise InvalidReference(f"{key} is not a list")
    return value
