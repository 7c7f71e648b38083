"""`mirrord import BUNDLE docker://REGISTRY[/PREFIX]`: every image of a bundle into a registry.

The registry side is the engine's own: `RegistryDestination` and `BlobService` (skip | mount |
upload, one transfer per digest, bytes verified while they stream), `copy_image` per image
(children, then the index, then the tag), several images at once. An interrupted import resumes
when run again: a tag already at its digest costs two HEADs, a blob already in its repository
answers HEAD, and a blob already elsewhere in the registry is mounted, because the bundle says
which other repositories use each blob and those are offered as mount candidates. Nothing that
reached the registry is sent twice.

A bundle an export left unfinished (a temp file, or no description where the export marked
one missing) is refused whole; an image whose tag no longer names the digest its description
records is refused alone, like any image that fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mirrord.blobs import BlobService, MemoryBlobIndex
from mirrord.bundle.layouts import Bundle, Entry
from mirrord.config.naming import Destination
from mirrord.errors import IntegrityError, LocalStorageError, MirrordError
from mirrord.manifests import MAX_INDEX_DEPTH, parse_manifest
from mirrord.model import PlatformPolicy
from mirrord.refs import ImageReference
from mirrord.transfer import CopyResult, copy_image
from mirrord.transports.base import ImageSource
from mirrord.transports.docker import ClientPool, OptionsFor, RegistryDestination

DEFAULT_JOBS = 4
DEFAULT_STREAMS = 8


class HintedIndex:
    """A blob index that also offers the repositories the bundle puts a blob in as mount
    candidates: after an interruption, a blob pushed to one of them is mounted, not re-sent."""

    def __init__(self, hints: dict[str, list[str]]) -> None:
        self._inner = MemoryBlobIndex()
        self._hints = hints

    async def known_in_repo(self, registry: str, repo: str, digest: str) -> bool:
        return await self._inner.known_in_repo(registry, repo, digest)

    async def mount_candidates(
        self, registry: str, digest: str, exclude_repo: str, limit: int
    ) -> list[str]:
        known = await self._inner.mount_candidates(registry, digest, exclude_repo, limit)
        hinted = [r for r in self._hints.get(digest, ()) if r != exclude_repo and r not in known]
        return [*known, *hinted][:limit]

    async def record(self, registry: str, repo: str, digest: str, size: int, source: str) -> None:
        await self._inner.record(registry, repo, digest, size, source)

    async def invalidate(self, registry: str, repo: str, digest: str) -> None:
        await self._inner.invalidate(registry, repo, digest)
        hints = self._hints.get(digest)
        if hints and repo in hints:
            hints.remove(repo)  # the mount was refused: it is not there


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    entry: Entry
    destination: ImageReference
    result: CopyResult | None = None
    error: MirrordError | None = None


ImportHook = Callable[[ImportOutcome], None]


def destination_for(target: Destination, entry: Entry) -> ImageReference:
    """Where a bundle image goes: REGISTRY/PREFIX/repository, by tag (or digest)."""
    repo = "/".join(p for p in (target.prefix, entry.repository) if p)
    base = ImageReference(target.registry, repo)
    return base.with_tag(entry.tag) if entry.tag else base.with_digest(entry.reference)


async def blob_hints(
    bundle: Bundle, entries: Sequence[Entry], target: Destination
) -> dict[str, list[str]]:
    """digest -> destination repositories that hold it, in import order."""
    hints: dict[str, list[str]] = {}
    for entry in entries:
        repo = destination_for(target, entry).repository
        for digest in await _blobs_of(bundle, entry):
            repos = hints.setdefault(digest, [])
            if repo not in repos:
                repos.append(repo)
    return hints


async def _blobs_of(bundle: Bundle, entry: Entry) -> set[str]:
    source = bundle.source(entry)
    try:
        head = await source.head(entry.reference)
    except MirrordError:
        return set()  # the copy itself reports it
    if head is None:
        return set()
    found: set[str] = set()
    pending = [(head.digest, 0)]
    while pending:
        digest, depth = pending.pop()
        try:
            manifest = parse_manifest(*await source.manifest(digest), digest)
        except MirrordError:
            continue  # the copy itself reports it
        found.update(b.digest for b in manifest.blobs)
        if depth < MAX_INDEX_DEPTH:
            pending.extend((c.digest, depth + 1) for c in manifest.children)
    return found


def check_complete(bundle: Bundle) -> None:
    """Refuse a bundle whose files `verify` would already refuse (an interrupted export)."""
    problems = bundle.scan()
    if problems:
        more = f" (and {len(problems) - 1} more: verify lists them)" if len(problems) > 1 else ""
        raise LocalStorageError(f"{bundle.path}: refusing to import: {problems[0]}{more}")


async def checked_source(bundle: Bundle, entry: Entry) -> tuple[ImageSource, str]:
    """The entry's source and what to copy from it: the digest its tag names, once that is
    known to be the one the description records (copying by digest, so a tag moved after the
    check cannot slip another image in)."""
    source = bundle.source(entry)
    head = await source.head(entry.reference)
    if head is None:
        return source, entry.reference  # an absent image is the copy's to report, as before
    problem = entry.digest_problem(head.digest)
    if problem is not None:
        raise IntegrityError(problem)
    return source, head.digest


async def import_bundle(
    bundle: Bundle,
    target: Destination,
    options_for: OptionsFor,
    *,
    jobs: int = DEFAULT_JOBS,
    streams: int = DEFAULT_STREAMS,
    on_item: ImportHook | None = None,
) -> list[ImportOutcome]:
    """Push every image of `bundle` to `target`; single failures are returned, not raised."""
    check_complete(bundle)
    entries = bundle.entries()
    blobs = BlobService(
        HintedIndex(await blob_hints(bundle, entries, target)), asyncio.Semaphore(streams)
    )
    gate = asyncio.Semaphore(jobs)
    async with ClientPool(options_for) as pool:
        client = pool.destination(target.registry)

        async def one(entry: Entry) -> ImportOutcome:
            dst = destination_for(target, entry)
            async with gate:
                try:
                    source, reference = await checked_source(bundle, entry)
                    result = await copy_image(
                        source,
                        reference,
                        RegistryDestination(client, dst.repository, blobs),
                        dst.tag or dst.digest,
                        PlatformPolicy.all(),
                    )
                    outcome = ImportOutcome(entry, dst, result)
                except MirrordError as exc:
                    outcome = ImportOutcome(entry, dst, error=exc)
            if on_item is not None:
                on_item(outcome)
            return outcome

        return list(await asyncio.gather(*(one(e) for e in entries)))
