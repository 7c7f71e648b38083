"""`mirrord sync` with local transports, as skopeo sync's `--src dir` / `--dest dir` (plus `oci`
and `registry-storage` on either side).

Sources: `--src yaml FILE` or `--src docker REF` (planned as usual), or a local SOURCE: a
directory of dir: images (`NAME:TAG/manifest.json`, as `skopeo sync --dest dir` writes them),
an OCI layout (each `repo:tag` entry; a bare `tag` is named after the layout's directory), or a
registry's storage (every tag of every repository). Destinations: DEST/NAME:TAG dir: images,
one OCI layout with `NAME:TAG` entries, a registry's storage, or a registry. A dir or OCI
destination is updated in place on every run (skopeo refuses or wipes it): unchanged images are
skipped, blobs already there are kept, new ones are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mirrord.cli.common import EXIT_OK, EXIT_PARTIAL, fail, registry_options, run
from mirrord.cli.images import platform_policy
from mirrord.config.load import PLACEHOLDER_DESTINATION, reference_source, skopeo_sync_config
from mirrord.config.naming import Destination
from mirrord.errors import InvalidReference, MirrordError
from mirrord.model import PlatformPolicy
from mirrord.plan import plan
from mirrord.refs import ImageReference, check_repository, check_tag
from mirrord.registry.options import RegistryOptions
from mirrord.transfer import CopyResult, copy_image
from mirrord.transports.base import ImageDestination, ImageSource
from mirrord.transports.dirlayout import DirDestination, DirImage, DirSource
from mirrord.transports.factory import Registries
from mirrord.transports.localfs import LocalRoot
from mirrord.transports.ocilayout import OciDestination, OciLayout, OciSource
from mirrord.transports.regstorage import RegistryStorage

LOCAL = ("dir", "oci", "registry-storage")
JOBS = 4


@dataclass(frozen=True, slots=True)
class SyncImage:
    """One image to copy: where to read it, and its name below the destination."""

    open_source: Callable[[], ImageSource]
    reference: str  # in the source
    repository: str  # below DEST
    tag: str | None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"


def sync_local(values: dict[str, Any]) -> int:
    """Run the sync; the exit code (0, or 3 when some images failed)."""
    if values["config"] is not None or not (values["source"] and values["destination"]):
        fail("local transports take SOURCE and DESTINATION arguments (not --config)", 2)
    # sync names its flag `all_` (a Python keyword otherwise); platform_policy reads `all`.
    policy = platform_policy({**values, "all": values.get("all_") or values.get("all")})
    options = {
        "source": registry_options("src", values),
        "destination": registry_options("dest", values),
    }
    done, failed = run(_sync(values, policy, options))
    click.echo(f"{done + failed} images: {done} synced, {failed} failed")
    return EXIT_PARTIAL if failed else EXIT_OK


async def _sync(
    values: dict[str, Any], policy: PlatformPolicy, options: dict[str, RegistryOptions]
) -> tuple[int, int]:
    async with Registries(lambda host, role: options[role]) as registries:
        images = await _images(values, registries, policy)
        gate = asyncio.Semaphore(JOBS)
        async with _destinations(
            values["dest_transport"], values["destination"], registries
        ) as open_dst:

            async def one(image: SyncImage) -> bool:
                async with gate:
                    try:
                        destination, ref = open_dst(image)
                        result = await copy_image(
                            image.open_source(), image.reference, destination, ref, policy
                        )
                    except MirrordError as exc:
                        click.echo(f"mirrord: error: {image.name}: {exc}", err=True)
                        return False
                _show(values, image, result)
                return True

            results = await asyncio.gather(*(one(i) for i in images))
    return sum(results), len(results) - sum(results)


def _show(values: dict[str, Any], image: SyncImage, result: CopyResult) -> None:
    if not values["quiet"]:
        state = "unchanged" if result.skipped else f"{result.manifests_pushed} manifests"
        click.echo(f"Synced {image.name} {result.digest} ({state})")


# -- sources ---------------------------------------------------------------------------------


async def _images(
    values: dict[str, Any], registries: Registries, policy: PlatformPolicy
) -> list[SyncImage]:
    kind, source = values["src_transport"], values["source"]
    if kind == "dir":
        return _dir_images(Path(source))
    if kind == "oci":
        return _oci_images(Path(source))
    if kind == "registry-storage":
        return _storage_images(Path(source))
    return await _registry_images(values, registries, policy)


def _split(name: str) -> tuple[str, str]:
    repo, _, tag = name.rpartition(":")
    if not repo:
        repo, tag = name, "latest"
    return check_repository(repo), check_tag(tag)


def _dir_images(root: Path) -> list[SyncImage]:
    fs = LocalRoot(root)
    images = []
    for path in fs.walk_files(fs.root):
        if path.name != "manifest.json" or fs.stat_file(path.parent / "version") is None:
            continue
        repo, tag = _split(path.parent.relative_to(fs.root).as_posix())
        directory = path.parent
        images.append(SyncImage(functools.partial(_dir_source, directory), "", repo, tag))
    return sorted(images, key=lambda i: i.name)


def _dir_source(path: Path) -> ImageSource:
    return DirSource(DirImage.open(path))


def _oci_images(root: Path) -> list[SyncImage]:
    layout = OciLayout.open(root)
    source = OciSource(layout)
    default_repo = check_repository(layout.fs.root.name.lower())
    images = []
    for name in layout.names():
        repo, tag = _split(name) if ":" in name else (default_repo, check_tag(name))
        images.append(SyncImage(lambda: source, name, repo, tag))
    return images


def _storage_images(root: Path) -> list[SyncImage]:
    storage = RegistryStorage.open(root)
    return [
        SyncImage(functools.partial(storage.source, repo), tag, repo, tag)
        for repo in storage.repositories()
        for tag in storage.tags(repo)
    ]


async def _registry_images(
    values: dict[str, Any], registries: Registries, policy: PlatformPolicy
) -> list[SyncImage]:
    """`--src yaml` / `--src docker`: the usual plan, named as under a bare registry."""
    kwargs: dict[str, Any] = {
        "scoped": values["scoped"],
        "append_suffix": values["append_suffix"],
        "platforms": policy,
    }
    if values["src_transport"] == "yaml":
        config = skopeo_sync_config(PLACEHOLDER_DESTINATION, file=Path(values["source"]), **kwargs)
    else:
        reference_source(values["source"])
        config = skopeo_sync_config(PLACEHOLDER_DESTINATION, reference=values["source"], **kwargs)

    async def lister(repo: ImageReference, _: RegistryOptions) -> list[str]:
        return await registries.pool.source(repo.registry).list_tags(repo.repository)

    planned = await plan(config, lister)
    for failure in planned.failures:
        click.echo(f"mirrord: error: {failure}", err=True)
    return [
        SyncImage(
            functools.partial(registries.source, r.source),
            r.source.reference,
            r.destination.repository,
            r.destination.tag,
            r.destination.digest,
        )
        for r in planned.requests
    ]


# -- destinations ----------------------------------------------------------------------------

OpenDestination = Callable[[SyncImage], tuple[ImageDestination, str]]


@contextlib.asynccontextmanager
async def _destinations(
    kind: str, dest: str, registries: Registries
) -> AsyncIterator[OpenDestination]:
    """A function giving each image its destination and the reference to write it under."""
    if kind == "docker":
        target = Destination.parse(dest)

        def to_registry(image: SyncImage) -> tuple[ImageDestination, str]:
            repo = "/".join(p for p in (target.prefix, image.repository) if p)
            ref = ImageReference(target.registry, repo)
            return registries.destination(ref), image.tag or image.digest or "latest"

        yield to_registry
    elif kind == "dir":
        root = LocalRoot(Path(dest), create=True)

        def to_dir(image: SyncImage) -> tuple[ImageDestination, str]:
            leaf = (
                f"{image.repository}:{image.tag}"
                if image.tag
                else f"{image.repository}@{image.digest}"
            )
            path = root.path(*leaf.split("/"))
            root.makedirs(path)
            return DirDestination(DirImage.open(path, create=True)), "latest"

        yield to_dir
    elif kind == "oci":
        destination = OciDestination(OciLayout.open(Path(dest), create=True))
        yield lambda image: (destination, _oci_name(image))
    elif kind == "registry-storage":
        storage = RegistryStorage.open(Path(dest), create=True)
        yield lambda image: (storage.destination(image.repository), image.tag or image.digest or "")
    else:
        raise InvalidReference(f"--dest {kind}: unknown transport")


def _oci_name(image: SyncImage) -> str:
    return f"{image.repository}:{image.tag}" if image.tag else image.digest or ""
