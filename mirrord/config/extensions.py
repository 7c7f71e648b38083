"""mirrord's extensions to skopeo's sync YAML, and how their levels combine.

skopeo ignores keys it does not know, so every extension lives under one registry-level key,
`mirrord:`, and the file stays valid for skopeo:

    quay.io:
      images-by-tag-regex: {coreos/etcd: '^v3\\.'}
      mirrord:
        exclude: '-(rc|alpha|beta)'
        keep-latest: 5
        repos:
          coreos/etcd: {destination: infra/etcd, platforms: [linux/amd64, linux/arm64]}

A repo's settings override its registry's, which override the source entry's in the daemon
config, which override the daemon-wide defaults.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, NonNegativeInt, PositiveInt

from mirrord.config.context import Choices as Choices  # re-exported
from mirrord.config.fields import (
    EmptyIfNull,
    ImmutableTags,
    Model,
    Platforms,
    Regex,
    TLSChoice,
)


class SelectionOptions(Model):
    """Options that shape what is copied; settable per source, registry and repo."""

    exclude: Regex | None = None
    keep_latest: PositiveInt | None = Field(None, alias="keep-latest")
    platforms: Platforms | None = None
    immutable_tags: ImmutableTags | None = Field(None, alias="immutable-tags")


class RepoExtension(SelectionOptions):
    """`mirrord.repos.<repo>`: per-repo options, and where under the prefix the repo goes."""

    destination: str | None = None


class RegistryExtension(SelectionOptions):
    """`<registry>.mirrord`: registry-wide options and per-repo ones."""

    tls: TLSChoice | None = None
    ratelimit_floor: NonNegativeInt | None = Field(None, alias="ratelimit-floor")
    repos: Annotated[dict[str, RepoExtension | None], EmptyIfNull] = Field(default_factory=dict)
