"""From what the configuration selects, and the tags registries list, to CopyRequests.  [pure]

The configuration is loaded into `RepoSelection`s: one per (source, repository, destination).
A selection names tags and digests outright and/or asks for the registry's tag list, filtered
(every tag, a regex, a semver constraint, minus `exclude`, then the `keep-latest` newest).
Listing is injected (`TagLister`), so this module does no I/O of its own; `plan()` lists every
repository that needs it, with bounded concurrency, and keeps failures as values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mirrord.errors import MirrordError
from mirrord.model import CopyRequest, PlatformPolicy
from mirrord.refs import ImageReference, is_tag
from mirrord.registry.options import RegistryOptions
from mirrord.semver import Constraint, Version
from mirrord.tagregex import TagRegex

log = logging.getLogger(__name__)

DEFAULT_LISTING_CONCURRENCY = 8

TagLister = Callable[[ImageReference, RegistryOptions], Awaitable[list[str]]]
Immutable = bool | TagRegex


@dataclass(frozen=True, slots=True)
class RepoSelection:
    """What to copy from one source repository, and where it goes.

    `source` and `target` are names (no tag). Digests are pushed by digest; `pinned` entries
    are fetched by digest and pushed under their tag. `suffix` is skopeo's `--append-suffix`.
    """

    source: ImageReference
    target: ImageReference
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    pinned: tuple[tuple[str, str], ...] = ()
    all_tags: bool = False
    tag_regexes: tuple[TagRegex, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    exclude: TagRegex | None = None
    keep_latest: int | None = None
    suffix: str = ""
    platforms: PlatformPolicy = field(default_factory=PlatformPolicy.all)
    immutable: Immutable = False
    source_name: str = ""

    @property
    def needs_listing(self) -> bool:
        """True when the registry's tag list decides (all tags, a regex, a constraint)."""
        return self.all_tags or bool(self.tag_regexes or self.constraints)

    @property
    def key(self) -> str:
        """Stable identity of the selection (for a per-repository listing job)."""
        return f"{self.source_name}:{self.source.name}->{self.target.name}"


@dataclass(frozen=True, slots=True)
class ListingFailure:
    """A repository whose tag list could not be read; the error keeps its type."""

    repository: ImageReference
    error: MirrordError

    def __str__(self) -> str:
        return f"{self.repository.name}: listing tags failed: {self.error}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of planning: the copies, the listings that failed, the collisions resolved."""

    requests: tuple[CopyRequest, ...]
    failures: tuple[ListingFailure, ...] = ()
    conflicts: tuple[str, ...] = ()


class PlanInput(Protocol):
    """What `plan()` needs from a loaded configuration."""

    @property
    def selections(self) -> tuple[RepoSelection, ...]: ...

    def registry_options(self, host: str) -> RegistryOptions: ...


# -- choosing tags ----------------------------------------------------------------------------


def _valid_tags(repository: ImageReference, listed: Iterable[str]) -> list[str]:
    tags = []
    for tag in listed:
        if is_tag(tag):
            tags.append(tag)
        else:
            log.warning("%s: skipping listed tag %r: not a valid tag", repository.name, tag[:140])
    return tags


def _selected(selection: RepoSelection, tag: str) -> bool:
    if selection.all_tags:
        return True
    if any(p.search(tag) for p in selection.tag_regexes):
        return True
    return any(c.allows_tag(tag) for c in selection.constraints)


def newest_first(tags: Iterable[str]) -> list[str]:
    """Versions first, highest first (semver order); then the other tags, lexically descending."""

    parsed = [(Version.parse(t), t) for t in tags]
    versions = sorted(((v, t) for v, t in parsed if v is not None), reverse=True)
    others = sorted((t for v, t in parsed if v is None), reverse=True)
    return [t for _, t in versions] + others


def select_tags(selection: RepoSelection, listed: Iterable[str]) -> tuple[str, ...]:
    """The listed tags the selection's filters keep (named tags are not included)."""
    if not selection.needs_listing:
        return ()
    chosen = [t for t in _valid_tags(selection.source, listed) if _selected(selection, t)]
    if selection.exclude is not None:
        chosen = [t for t in chosen if not selection.exclude.search(t)]
    if selection.keep_latest is not None:
        chosen = newest_first(set(chosen))[: selection.keep_latest]
    return tuple(sorted(set(chosen)))


# -- naming copies ----------------------------------------------------------------------------


def _is_immutable(selection: RepoSelection, tag: str) -> bool:
    policy = selection.immutable
    return policy.search(tag) if isinstance(policy, TagRegex) else policy


def _copy(selection: RepoSelection, source: ImageReference, tag: str) -> CopyRequest | None:
    dst_tag = tag + selection.suffix
    if not is_tag(dst_tag):
        log.warning("%s: skipping tag %r: %r is not a valid tag", source.name, tag, dst_tag)
        return None
    return CopyRequest(
        source,
        selection.target.with_tag(dst_tag),
        selection.platforms,
        selection.source_name,
        _is_immutable(selection, tag),
    )


def _by_digest(selection: RepoSelection, digest: str) -> CopyRequest:
    # A digest names one immutable image, pushed by digest alone.
    return CopyRequest(
        selection.source.with_digest(digest),
        selection.target.with_digest(digest),
        selection.platforms,
        selection.source_name,
        True,
    )


def copies_for(selection: RepoSelection, listed: Iterable[str] = ()) -> tuple[CopyRequest, ...]:
    """The copies one selection asks for, given its repository's listed tags."""
    tags = sorted(set(selection.tags) | set(select_tags(selection, listed)))
    source = selection.source
    tagged = [_copy(selection, source.with_tag(t), t) for t in tags]
    pinned = [
        _copy(selection, ImageReference(source.registry, source.repository, t, d), t)
        for t, d in selection.pinned
    ]
    digests = [_by_digest(selection, d) for d in selection.digests]
    return tuple(r for r in (*tagged, *pinned, *digests) if r is not None)


# -- one plan ---------------------------------------------------------------------------------


def _order(request: CopyRequest) -> tuple[str, str, str]:
    return (request.key, str(request.source), request.source_name)


def merge(requests: Iterable[CopyRequest]) -> tuple[tuple[CopyRequest, ...], tuple[str, ...]]:
    """One request per destination, sorted; a destination wanted from two places is a conflict."""
    kept: dict[str, CopyRequest] = {}
    conflicts = []
    for request in sorted(requests, key=_order):
        first = kept.setdefault(request.key, request)
        if first is request or _same_copy(first, request):
            continue
        conflicts.append(
            f"{request.key}: selected from {first.source} ({first.source_name or '-'}) and "
            f"{request.source} ({request.source_name or '-'}); copying from {first.source}"
        )
    for conflict in conflicts:
        log.warning("%s", conflict)
    return tuple(kept.values()), tuple(conflicts)


def _same_copy(a: CopyRequest, b: CopyRequest) -> bool:
    return (a.source, a.platforms) == (b.source, b.platforms)


def plan_listed(
    selections: Sequence[RepoSelection],
    listings: Mapping[ImageReference, Sequence[str]],
    failures: Sequence[ListingFailure] = (),
) -> Plan:
    """The plan for already-listed repositories (a repository missing from `listings` yields
    only its named tags and digests)."""
    requests = [r for s in selections for r in copies_for(s, listings.get(s.source, ()))]
    merged, conflicts = merge(requests)
    return Plan(merged, tuple(failures), conflicts)


async def list_repositories(
    repositories: Iterable[ImageReference],
    lister: TagLister,
    options_for: Callable[[str], RegistryOptions],
    limit: int = DEFAULT_LISTING_CONCURRENCY,
) -> dict[ImageReference, list[str] | ListingFailure]:
    """List each repository's tags, at most `limit` at once; failures come back as values."""
    gate = asyncio.Semaphore(limit)

    async def one(repository: ImageReference) -> list[str] | ListingFailure:
        async with gate:
            try:
                return list(await lister(repository, options_for(repository.registry)))
            except MirrordError as exc:
                return ListingFailure(repository, exc)

    unique = sorted(set(repositories), key=str)
    results = await asyncio.gather(*(one(r) for r in unique))
    return dict(zip(unique, results, strict=True))


async def plan(
    config: PlanInput, lister: TagLister, limit: int = DEFAULT_LISTING_CONCURRENCY
) -> Plan:
    """List what needs listing, then plan every selection of `config`."""
    selections = config.selections
    wanted = [s.source for s in selections if s.needs_listing]
    listed = await list_repositories(wanted, lister, config.registry_options, limit)
    tags = {r: v for r, v in listed.items() if not isinstance(v, ListingFailure)}
    failures = [v for v in listed.values() if isinstance(v, ListingFailure)]
    return plan_listed(selections, tags, failures)


# -- showing a plan ---------------------------------------------------------------------------


def render_plan(requests: Sequence[CopyRequest], as_json: bool = False) -> str:
    """A plan for people (an aligned table) or for programs (a JSON array)."""
    if as_json:
        return json.dumps([r.to_json() for r in requests], indent=2)
    if not requests:
        return "nothing to copy"
    rows = [(str(r.source), str(r.destination), str(r.platforms)) for r in requests]
    width = max(len(src) for src, _, _ in rows)
    dst_width = max(len(dst) for _, dst, _ in rows)
    lines = [f"{src:<{width}}  ->  {dst:<{dst_width}}  {plat}" for src, dst, plat in rows]
    lines.append(f"{len(rows)} cop{'y' if len(rows) == 1 else 'ies'}")
    return "\n".join(lines)
