"""`mirrord export`, `mirrord import`, `mirrord verify`: air-gap bundles (README.md, "Air-gap bundles")."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mirrord.bundle.export import (
    DEFAULT_JOBS,
    ExportOptions,
    ExportReport,
    ItemOutcome,
    Pool,
    RegistryPool,
    StoragePool,
    export_bundle,
)
from mirrord.bundle.info import FORMATS
from mirrord.bundle.select import ExportItem, load_selections, plan_export
from mirrord.cli import main
from mirrord.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    authfile_flag,
    fail,
    global_flags,
    pass_values,
    registry_flags,
    registry_options,
    run,
)
from mirrord.config.naming import Destination
from mirrord.errors import InvalidReference
from mirrord.model import Platform, PlatformPolicy
from mirrord.transports.factory import Registries
from mirrord.transports.location import LocalLocation, parse_location
from mirrord.transports.regstorage import RegistryStorage
from mirrord.units import human_bytes

if TYPE_CHECKING:
    from mirrord.bundle.verify import VerifyReport

LISTING_CONCURRENCY = 8
# What the engine's blob outcomes mean when the destination is a bundle on disk.
BLOB_WORDS = {
    "mounted": "hard-linked",
    "uploaded": "copied",
    "skipped_head": "already there",
    "skipped_known": "in the base",
    "skipped_foreign": "foreign (not copied)",
}
STORAGE_POOL_HOST = "pool.invalid"  # names images of a pool that is a directory, not a host


def _pool_destination(text: str) -> tuple[Destination, LocalLocation | None]:
    """`docker://REGISTRY[/PREFIX]` or `registry-storage:PATH[:PREFIX]` -> (naming, storage)."""
    if text.startswith("docker://"):
        return Destination.parse(text.removeprefix("docker://")), None
    location = parse_location(text, None)
    if isinstance(location, LocalLocation) and location.transport == "registry-storage":
        return Destination.make(STORAGE_POOL_HOST, location.reference or ""), location
    raise InvalidReference(
        f"--from {text!r}: expected docker://REGISTRY[/PREFIX] or registry-storage:PATH[:PREFIX]"
    )


def _workdir(values: dict[str, Any]) -> Path | None:
    workdir: Path | None = values.get("workdir")
    return workdir


def _policy(values: dict[str, Any]) -> PlatformPolicy:
    if values.get("platform"):
        return PlatformPolicy.subset(
            tuple(Platform.parse(p) for p in values["platform"].split(","))
        )
    return PlatformPolicy.all()


@main.command("export")
@click.argument(
    "list_file", metavar="LIST", type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--from",
    "source",
    required=True,
    metavar="SOURCE",
    help="Where LIST was synced to: docker://REGISTRY[/PREFIX] or registry-storage:PATH[:PREFIX].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="registry-storage",
    show_default=True,
    help="Bundle layout.",
)
@click.option(
    "--since",
    type=click.Path(path_type=Path, exists=True),
    metavar="PREVIOUS_BUNDLE",
    help="Write only blobs PREVIOUS_BUNDLE lacks (an incremental bundle).",
)
@click.option("--platform", metavar="OS/ARCH,...", help="Only these platforms (default: all).")
@click.option("--jobs", type=click.IntRange(1, 64), default=DEFAULT_JOBS, show_default=True)
@click.option("--verify-blobs", is_flag=True, help="Re-hash pool blobs before hard-linking them.")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), help="Scratch space.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
@authfile_flag
@registry_flags("src")
@pass_values
def export(values: dict[str, Any]) -> None:
    """Write the images LIST names, found in SOURCE, into BUNDLE for an air-gapped registry.

    LIST is an image list file, a skopeo sync YAML file, an image-syncer file or a daemon
    config. BUNDLE is a directory (registry-storage or oci) or, packed, BUNDLE.tar or
    BUNDLE.tar.zst; with --format docker-archive it is a .tar that `docker load` reads.
    """
    options = ExportOptions(
        format=values["fmt"],
        since=values["since"],
        platforms=_policy(values),
        archive_platform=global_flags().system_platform(),
        jobs=values["jobs"],
        rehash=values["verify_blobs"],
        workdir=_workdir(values),
    )
    src_options = registry_options("src", values)
    report = run(
        _export(
            values["list_file"],
            values["source"],
            values["bundle"],
            options,
            src_options,
            values["quiet"],
        )
    )
    _export_summary(report)
    raise SystemExit(_exit_code(len(report.outcomes), len(report.failed)))


async def _export(
    list_file: Path,
    source: str,
    bundle: Path,
    options: ExportOptions,
    src_options: Any,
    quiet: bool,
) -> ExportReport:
    naming, storage = _pool_destination(source)
    selections = load_selections(list_file, naming)
    async with Registries(lambda host, role: src_options) as registries:
        pool: Pool
        if storage is not None:
            pool = StoragePool(RegistryStorage.open(storage.path))
        else:
            pool = RegistryPool(registries, naming.registry)
        items = await _plan(selections, pool, naming.prefix)
        return await export_bundle(items, pool, bundle, options, _ExportPrinter(quiet))


async def _plan(selections: Any, pool: Pool, prefix: str) -> tuple[ExportItem, ...]:
    gate = asyncio.Semaphore(LISTING_CONCURRENCY)
    wanted = sorted({s.target.repository for s in selections if s.needs_listing})

    async def listed(repo: str) -> list[str]:
        async with gate:
            return await pool.list_tags(repo)

    tags = dict(zip(wanted, await asyncio.gather(*(listed(r) for r in wanted)), strict=True))
    items, _ = plan_export(selections, tags, prefix)
    if not items:
        raise InvalidReference("LIST selects no image in SOURCE")
    return items


class _ExportPrinter:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, outcome: ItemOutcome) -> None:
        if outcome.error is not None:
            click.echo(f"mirrord: error: {outcome.item.name}: {outcome.error}", err=True)
        elif not self.quiet and outcome.result is not None:
            blobs = ", ".join(
                f"{n} {BLOB_WORDS.get(k, k)}" for k, n in sorted(outcome.result.blobs.items())
            )
            state = "unchanged" if outcome.result.skipped else blobs or "no blobs"
            click.echo(f"Exported {outcome.item.name} {outcome.result.digest} ({state})")


def _export_summary(report: ExportReport) -> None:
    blobs = Counter(report.blobs)
    done = len(report.outcomes) - len(report.failed)
    click.echo(
        f"{report.bundle}: {done} of {len(report.outcomes)} images in {report.duration:.2f}s; "
        f"{report.blobs_in_bundle} blobs in the bundle ({blobs['mounted']} hard-linked, "
        f"{blobs['uploaded']} copied: {human_bytes(report.bytes_copied)}, "
        f"{blobs['skipped_head'] + blobs['skipped_known']} already there or in the base)"
    )


def _exit_code(total: int, failed: int) -> int:
    if not failed:
        return EXIT_OK
    return EXIT_FAILED if failed == total else EXIT_PARTIAL


@main.command("import")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True))
@click.argument("destination", metavar="docker://REGISTRY[/PREFIX]")
@click.option("--jobs", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), help="Scratch space.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
@authfile_flag
@registry_flags("dest")
@pass_values
def import_(values: dict[str, Any]) -> None:
    """Push every image of BUNDLE (any layout mirrord writes) into a registry.

    Resumable: run it again after an interruption; nothing already in the registry is resent.
    """
    text = values["destination"]
    if not text.startswith("docker://"):
        fail(f"{text}: import pushes to a registry: docker://REGISTRY[/PREFIX]", 2)
    try:
        target = Destination.parse(text.removeprefix("docker://"))
    except InvalidReference as exc:
        fail(str(exc), 2)
    options = registry_options("dest", values)
    total, failed, seconds = run(_import(values["bundle"], target, options, values))
    click.echo(
        f"{values['bundle']}: {total - failed} of {total} images imported into {target} in {seconds:.1f}s"
    )
    raise SystemExit(_exit_code(total, failed))


async def _import(
    bundle: Path, target: Destination, options: Any, values: dict[str, Any]
) -> tuple[int, int, float]:
    from mirrord.bundle.importer import ImportOutcome, import_bundle
    from mirrord.bundle.layouts import open_bundle

    loop = asyncio.get_running_loop()
    started = loop.time()

    def show(outcome: ImportOutcome) -> None:
        if outcome.error is not None:
            click.echo(f"mirrord: error: {outcome.entry.name}: {outcome.error}", err=True)
        elif not values["quiet"] and outcome.result is not None:
            state = "unchanged" if outcome.result.skipped else human_bytes(outcome.result.bytes)
            click.echo(f"Imported {outcome.entry.name} -> {outcome.destination} ({state})")

    with open_bundle(bundle, _workdir(values)) as opened:
        outcomes = await import_bundle(
            opened, target, lambda host, role: options, jobs=values["jobs"], on_item=show
        )
    failed = sum(o.error is not None for o in outcomes)
    return len(outcomes), failed, loop.time() - started


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--base",
    type=click.Path(path_type=Path, exists=True),
    help="For an incremental bundle: the bundle it was made --since.",
)
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), help="Scratch space.")
def verify(bundle: Path, base: Path | None, workdir: Path | None) -> None:
    """Re-hash every blob of BUNDLE and check every manifest's references."""
    report = run(_verify(bundle, base, workdir))
    for problem in report.problems:
        click.echo(f"{bundle}: {problem}", err=True)
    if not report.ok:
        fail(f"{bundle}: {len(report.problems)} problem(s)")
    in_base = f"; {report.in_base} references left to its base" if report.in_base else ""
    click.echo(
        f"{bundle}: OK: {report.images} images, {report.blobs} blobs "
        f"({human_bytes(report.bytes)}) re-hashed{in_base}"
    )


async def _verify(bundle: Path, base: Path | None, workdir: Path | None) -> VerifyReport:
    from mirrord.bundle.layouts import covered_blobs, open_bundle
    from mirrord.bundle.verify import verify_bundle

    covered = covered_blobs(base, workdir) if base is not None else None
    with open_bundle(bundle, workdir) as opened:
        return await verify_bundle(opened, covered)
