"""Image references: the grammar of names, tags and digests, and docker.io normalisation.

Every tag and digest is validated here before it is used in a URL or a path (CVE-2024-3727):
digests accepted for storage are `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mirrord.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_HOST_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
MAX_NAME_LENGTH = 255
_SPACE_RE = re.compile(r"\s")  # str.isspace()'s characters


def is_digest(text: str) -> bool:
    return DIGEST_RE.fullmatch(text) is not None


def is_tag(text: str) -> bool:
    return TAG_RE.fullmatch(text) is not None


def check_digest(text: str) -> str:
    """Return `text` if it is a digest mirrord accepts, else raise InvalidReference."""
    if not is_digest(text):
        raise InvalidReference(f"invalid digest {text[:80]!r}")
    return text


def check_tag(text: str) -> str:
    if not is_tag(text):
        raise InvalidReference(f"invalid tag {text[:140]!r}")
    return text


def check_repository(text: str) -> str:
    if REPOSITORY_RE.fullmatch(text) is None or len(text) > MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid repository name {text[:260]!r}")
    return text


def check_registry(text: str) -> str:
    if _HOST_RE.fullmatch(text) is None:
        raise InvalidReference(f"invalid registry host {text[:260]!r}")
    return text


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a validated digest (safe to use as a file name)."""
    return check_digest(digest).split(":", 1)[1]


def normalize_registry(host: str) -> str:
    host = host.lower() if host.lower() in DOCKER_HUB_ALIASES else host
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def split_registry(name: str) -> tuple[str, str]:
    """Split `name` into (registry, repository) following Docker's rules.

    The first component is a registry when it contains '.' or ':' or is 'localhost';
    otherwise the registry is docker.io, where one-component names live under 'library/'.
    """
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = normalize_registry(first), rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


@dataclass(frozen=True, slots=True)
class ImageReference:
    """registry/repository[:tag][@digest], normalised and validated."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        check_registry(self.registry)
        check_repository(self.repository)
        if self.tag is not None:
            check_tag(self.tag)
        if self.digest is not None:
            check_digest(self.digest)
        if len(self.name) > MAX_NAME_LENGTH:
            raise InvalidReference(f"reference name longer than {MAX_NAME_LENGTH}: {self.name!r}")

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """Parse `[registry/]repo[:tag][@digest]`; a bare name gets no tag (callers decide)."""
        original = text
        if not text or len(text) > 512 or _SPACE_RE.search(text):
            raise InvalidReference(f"invalid image reference {original[:120]!r}")
        digest = None
        if "@" in text:
            text, digest = text.rsplit("@", 1)
            if not is_digest(digest):
                raise InvalidReference(
                    f"invalid digest in {original!r}: expected sha256:<64 hex> or sha512:<128 hex>"
                )
        tag = None
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not is_tag(tag):
                raise InvalidReference(f"invalid tag {tag!r} in {original!r}")
        registry, repository = split_registry(text)
        if REPOSITORY_RE.fullmatch(repository) is None:
            raise InvalidReference(
                f"invalid repository name {repository!r} in {original!r} "
                "(lowercase letters, digits and . _ - separators only)"
            )
        try:
            return cls(registry, repository, tag, digest)
        except InvalidReference as exc:
            raise InvalidReference(f"{exc} in {original!r}") from None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in a URL: the digest if pinned, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    def with_tag(self, tag: str | None) -> ImageReference:
        return ImageReference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
