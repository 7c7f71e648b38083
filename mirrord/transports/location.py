"""Image locations as the command line writes them: `docker://REF`, `dir:PATH`, `oci:PATH[:REF]`,
`docker-archive:PATH[:REF]`, `registry-storage:PATH[:REPO[:TAG]]`.  [pure]"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirrord.errors import InvalidReference
from mirrord.refs import ImageReference

LOCAL_TRANSPORTS = ("dir", "oci", "docker-archive", "registry-storage")


@dataclass(frozen=True, slots=True)
class DockerLocation:
    ref: ImageReference

    def __str__(self) -> str:
        return f"docker://{self.ref}"


@dataclass(frozen=True, slots=True)
class LocalLocation:
    transport: str
    path: Path
    reference: str | None = None  # a tag, image name or repo:tag, as the transport defines it

    def __str__(self) -> str:
        suffix = f":{self.reference}" if self.reference else ""
        return f"{self.transport}:{self.path}{suffix}"


Location = DockerLocation | LocalLocation


def parse_docker(text: str, default_tag: str | None = "latest") -> DockerLocation:
    ref = ImageReference.parse(text)
    if ref.tag is None and ref.digest is None and default_tag is not None:
        ref = ref.with_tag(default_tag)
    return DockerLocation(ref)


def parse_location(text: str, default_tag: str | None = "latest") -> Location:
    """Parse a transport-qualified image name, with skopeo's spelling."""
    transport, sep, rest = text.partition(":")
    if transport == "docker" and rest.startswith("//"):
        return parse_docker(rest[2:], default_tag)
    if sep and transport in LOCAL_TRANSPORTS:
        return _local(transport, rest, text)
    raise InvalidReference(
        f"invalid image location {text!r}: expected docker://REGISTRY/REPO[:TAG], "
        "dir:PATH, oci:PATH[:TAG], docker-archive:PATH[:REF] or registry-storage:PATH"
    )


def _local(transport: str, rest: str, original: str) -> LocalLocation:
    if not rest:
        raise InvalidReference(f"invalid image location {original!r}: the path is empty")
    if transport == "dir":
        return LocalLocation(transport, Path(rest))
    path, _, reference = rest.partition(":")
    return LocalLocation(transport, Path(path), reference or None)
