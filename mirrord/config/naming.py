"""Destination names, exactly as skopeo sync forms them (plus mirrord's `path` and per-repo
`destination`).  [pure]

For destination `REG/PREFIX` and source `registry.example.com/coreos/etcd`:

    basename   REG/PREFIX/etcd                               (skopeo's default)
    scoped     REG/PREFIX/registry.example.com/coreos/etcd   (skopeo --scoped)
    path       REG/PREFIX/coreos/etcd                        (docker.io's `library/` dropped)
    per-repo   REG/PREFIX/<destination>
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mirrord.errors import InvalidReference
from mirrord.refs import DOCKER_HUB, ImageReference, check_registry, check_repository

_LIBRARY = "library/"


class Naming(StrEnum):
    """How a source repository is named under the destination prefix."""

    BASENAME = "basename"  # skopeo's default: the last path component
    SCOPED = "scoped"  # skopeo --scoped: source registry + full path
    PATH = "path"  # the full path without the registry (docker.io's library/ dropped)


@dataclass(frozen=True, slots=True)
class Destination:
    """skopeo sync's DESTINATION argument: a registry and an optional path prefix."""

    registry: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Destination:
        """`REGISTRY[/PREFIX]`; the first component is always the registry."""
        registry, _, prefix = text.strip().strip("/").partition("/")
        return cls.make(registry, prefix)

    @classmethod
    def make(cls, registry: str, prefix: str = "") -> Destination:
        """A destination; InvalidReference when the registry or prefix cannot be one."""
        check_registry(registry)
        if "." not in registry and ":" not in registry and registry != "localhost":
            # skopeo would read `myhost/busybox` as docker.io/myhost/busybox.
            raise InvalidReference(
                f"destination registry {registry!r} is not a host name: it needs a '.', "
                "a ':port', or to be 'localhost'"
            )
        prefix = prefix.strip("/")
        if prefix:
            check_repository(prefix)
        return cls(registry, prefix)

    def __str__(self) -> str:
        return f"{self.registry}/{self.prefix}" if self.prefix else self.registry


def repository_path(source: ImageReference) -> str:
    """`path` naming: the repository without its registry (docker.io's `library/` dropped)."""
    hub_library = source.registry == DOCKER_HUB and source.repository.startswith(_LIBRARY)
    return source.repository.removeprefix(_LIBRARY) if hub_library else source.repository


def _path(source: ImageReference, naming: Naming) -> str:
    if naming is Naming.SCOPED:
        return f"{source.registry}/{source.repository}"
    if naming is Naming.PATH:
        return repository_path(source)
    return source.repository.rsplit("/", 1)[-1]


def target_repository(
    source: ImageReference, destination: Destination, naming: Naming, override: str | None = None
) -> ImageReference:
    """Where `source` (a name) goes; InvalidReference when the result is not a valid name."""
    path = override.strip("/") if override is not None else _path(source, naming)
    repository = "/".join(p for p in (destination.prefix, path) if p)
    if destination.registry == DOCKER_HUB and "/" not in repository:
        repository = _LIBRARY + repository
    try:
        return ImageReference(destination.registry, check_repository(repository))
    except InvalidReference:
        scoped = override is None and naming is Naming.SCOPED
        hint = " (a registry with a port cannot be scoped)" if scoped else ""
        raise InvalidReference(
            f"destination {destination.registry}/{repository} is not a valid repository name" + hint
        ) from None
