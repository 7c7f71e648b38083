"""The data that flows between planning, the queue and the transfer engine.  [pure]"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mirrord.errors import InvalidReference
from mirrord.refs import ImageReference

_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    """os/architecture[/variant], as in an OCI index entry."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidReference(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(
        cls, os: str | None = None, arch: str | None = None, variant: str | None = None
    ) -> Platform:
        """The platform skopeo would pick: the host's, overridden field by field."""
        machine_arch, machine_variant = _MACHINE_TO_ARCH.get(
            _platform.machine().lower(), (_platform.machine().lower(), None)
        )
        return cls(
            os or "linux",
            arch or machine_arch,
            variant if variant is not None else (machine_variant if arch is None else None),
        )

    def matches(self, os: str, architecture: str, variant: str | None) -> bool:
        """True when an index entry's platform satisfies this one (a missing variant matches any)."""
        if (self.os, self.architecture) != (os, architecture):
            return False
        return self.variant is None or variant is None or self.variant == variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class PlatformMode(StrEnum):
    ALL = "all"  # copy the whole index, digest preserved
    SYSTEM = "system"  # skopeo's default: only the instance for one platform, pushed under the tag
    LIST = "list"  # a subset: a new index holding only these platforms (new digest)


@dataclass(frozen=True, slots=True)
class PlatformPolicy:
    mode: PlatformMode = PlatformMode.ALL
    platforms: tuple[Platform, ...] = ()

    @classmethod
    def all(cls) -> PlatformPolicy:
        return cls(PlatformMode.ALL)

    @classmethod
    def system(cls, platform: Platform | None = None) -> PlatformPolicy:
        return cls(PlatformMode.SYSTEM, (platform or Platform.host(),))

    @classmethod
    def subset(cls, platforms: tuple[Platform, ...]) -> PlatformPolicy:
        if not platforms:
            raise InvalidReference("a platform list needs at least one os/arch")
        return cls(PlatformMode.LIST, tuple(sorted(set(platforms))))

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "platforms": [str(p) for p in self.platforms]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlatformPolicy:
        return cls(PlatformMode(data["mode"]), tuple(Platform.parse(p) for p in data["platforms"]))

    def __str__(self) -> str:
        if self.mode is PlatformMode.ALL:
            return "all"
        return ",".join(str(p) for p in self.platforms)


@dataclass(frozen=True, slots=True)
class CopyRequest:
    """One planned copy: a source image (by tag or digest) to a destination tag or digest.

    `key` is the destination-centric dedup key of the job queue: at most one queued and one
    running job per key. `immutable` says the configuration declares this tag never moves: a
    destination that already has the tag needs no further check.
    """

    source: ImageReference
    destination: ImageReference
    platforms: PlatformPolicy = field(default_factory=PlatformPolicy.all)
    source_name: str = ""
    immutable: bool = False

    @property
    def key(self) -> str:
        return str(self.destination)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "platforms": self.platforms.to_json(),
            "source_name": self.source_name,
            "immutable": self.immutable,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CopyRequest:
        return cls(
            ImageReference.parse(data["source"]),
            ImageReference.parse(data["destination"]),
            PlatformPolicy.from_json(data["platforms"]),
            data.get("source_name", ""),
            bool(data.get("immutable", False)),
        )
