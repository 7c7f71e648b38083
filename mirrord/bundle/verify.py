"""`mirrord verify BUNDLE`: re-hash every blob, check every manifest's references.

Three passes, every problem reported (not just the first):
1. the files themselves: no symlink anywhere, no half-written temp file, no export left
   unfinished (mirrord-bundle.incomplete without a description);
2. every blob and manifest stored: its bytes hashed again, compared with the digest it is
   stored under (a truncated or flipped file shows here), in threads, since hashing is the cost;
3. every image: its tag naming the digest mirrord-bundle.json records, its manifest (digest
   checked), each child of an index, each config and layer present with the size its
   descriptor says (and, in registry storage, linked into the repository, else the registry
   answers 404). Blobs an incremental bundle leaves to its base are checked against the base's
   list when the base is given, else counted as "in base".
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from mirrord.bundle.layouts import Bundle, Entry
from mirrord.errors import MirrordError
from mirrord.manifests import MAX_INDEX_DEPTH, Manifest, parse_manifest
from mirrord.transports.base import ImageSource


@dataclass
class VerifyReport:
    images: int = 0
    blobs: int = 0
    bytes: int = 0
    in_base: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_bundle(
    bundle: Bundle, base: frozenset[str] | None = None, threads: int | None = None
) -> VerifyReport:
    """Check everything in `bundle`; `base` lists blobs its base bundle carries."""
    report = VerifyReport()
    report.problems.extend(bundle.scan())
    if report.problems:
        return report  # a planted symlink: read nothing more from this tree
    await _rehash_all(bundle, report, threads or os.cpu_count() or 2)
    allowed = base if base is not None else bundle.info.base if bundle.info else frozenset()
    present = bundle.blob_digests()
    for entry in bundle.entries():
        report.images += 1
        try:
            await _check_image(bundle, entry, present, allowed, report)
        except MirrordError as exc:
            report.problems.append(f"{entry.name}: {exc}")
    return report


async def _rehash_all(bundle: Bundle, report: VerifyReport, threads: int) -> None:
    gate = asyncio.Semaphore(threads)

    async def one(digest: str) -> None:
        async with gate:
            try:
                actual, size = await asyncio.to_thread(bundle.rehash, digest)
            except MirrordError as exc:
                report.problems.append(f"blob {digest}: {exc}")
                return
        report.blobs += 1
        report.bytes += size
        if actual != digest:
            report.problems.append(
                f"blob {digest}: its bytes hash to {actual} (corrupt or truncated)"
            )

    await asyncio.gather(*(one(d) for d in sorted(bundle.blob_digests())))


async def _check_image(
    bundle: Bundle, entry: Entry, present: set[str], base: frozenset[str], report: VerifyReport
) -> None:
    source = bundle.source(entry)
    head = await source.head(entry.reference)
    if head is None:
        report.problems.append(f"{entry.name}: not found in the bundle")
        return
    if (problem := entry.digest_problem(head.digest)) is not None:
        report.problems.append(f"{entry.name}: {problem}")
        return
    pending: list[tuple[str, int]] = [(head.digest, 0)]
    while pending:
        digest, depth = pending.pop()
        if digest not in present and digest in base:
            report.in_base += 1
            continue
        manifest = await _manifest(source, digest)
        if depth > MAX_INDEX_DEPTH:
            report.problems.append(f"{entry.name}: indexes nested deeper than {MAX_INDEX_DEPTH}")
            return
        pending.extend((child.digest, depth + 1) for child in manifest.children)
        for desc in manifest.blobs:
            if not desc.distributable:
                continue
            if desc.digest not in present and desc.digest in base:
                report.in_base += 1
                continue
            problem = bundle.blob_problem(entry, desc)
            if problem is not None:
                report.problems.append(f"{entry.name}: {problem}")


async def _manifest(source: ImageSource, digest: str) -> Manifest:
    raw, media_type = await source.manifest(digest)
    return parse_manifest(raw, media_type, digest)
