"""`mirrord copy` and `mirrord inspect` where a location is local: `dir:`, `oci:`,
`docker-archive:` or `registry-storage:` (the `docker://`-only paths stay in `images.py`)."""

from __future__ import annotations

import json
from typing import Any

from mirrord.cli.common import global_flags, registry_options, run
from mirrord.errors import IntegrityError
from mirrord.manifests import Descriptor, compute_digest, parse_manifest, select_instance
from mirrord.model import Platform, PlatformPolicy
from mirrord.transfer import BlobHook, CopyResult, copy_image
from mirrord.transports.base import ImageSource
from mirrord.transports.factory import Registries, names_of, open_destination, open_source
from mirrord.transports.location import Location, parse_location
from mirrord.transports.ocilayout import OciSource
from mirrord.transports.regstorage import StorageSource

MAX_CONFIG = 4 * 1024 * 1024


def is_local(*texts: str) -> bool:
    """Whether any of these locations is not a `docker://` one."""
    return any(not t.startswith("docker://") for t in texts)


def copy_any(
    values: dict[str, Any], policy: PlatformPolicy, on_blob: BlobHook
) -> tuple[str, str, CopyResult]:
    """Run `mirrord copy` between any two locations; returns (source, destination, result)."""
    src = parse_location(values["source"])
    dst = parse_location(values["destination"], None)
    options = {
        "source": registry_options("src", values),
        "destination": registry_options("dest", values),
    }
    platform = global_flags().system_platform()
    result = run(_copy(src, dst, policy, options, on_blob, not values["force"], platform))
    return str(src), str(dst), result


async def _copy(
    src: Location,
    dst: Location,
    policy: PlatformPolicy,
    options: dict[str, Any],
    on_blob: BlobHook,
    skip_unchanged: bool,
    platform: Platform,
) -> CopyResult:
    async with (
        Registries(lambda host, role: options[role]) as registries,
        open_source(src, registries) as (source, src_ref),
        open_destination(dst, registries, names_of(src), platform) as (destination, dst_ref),
    ):
        return await copy_image(
            source,
            src_ref,
            destination,
            dst_ref,
            policy,
            skip_unchanged=skip_unchanged,
            on_blob=on_blob,
        )


def inspect_any(values: dict[str, Any], platform: Platform) -> str:
    """`mirrord inspect` of any location: the raw manifest, the config, or skopeo's summary."""
    location = parse_location(values["image"])
    options = registry_options("", values)
    return run(_inspect(location, options, values, platform))


async def _inspect(
    location: Location, options: Any, values: dict[str, Any], platform: Platform
) -> str:
    from mirrord.cli.images import _summary

    async with (
        Registries(lambda host, role: options) as registries,
        open_source(location, registries) as (source, ref),
    ):
        raw, media_type = await source.manifest(ref)
        if values["raw"]:
            return raw.decode("utf-8", "replace")
        top = parse_manifest(raw, media_type)
        image = top
        if top.is_index:
            chosen = select_instance(top, platform)
            image = parse_manifest(*await source.manifest(chosen.digest), chosen.digest)
        config = await _read_config(source, image.blobs[0] if image.blobs else None)
        if values["show_config"]:
            return json.dumps(config, indent=4)
        tags = [] if values["no_tags"] else await _tags(source)
        return json.dumps(_summary(str(location), top.digest, image, config, tags), indent=4)


async def _read_config(source: ImageSource, desc: Descriptor | None) -> dict[str, Any]:
    if desc is None or desc.size > MAX_CONFIG or "json" not in desc.media_type:
        return {}
    parts = []
    async with source.blob(desc) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
    data = b"".join(parts)
    if compute_digest(data, desc.digest.split(":")[0]) != desc.digest:
        raise IntegrityError(f"config blob {desc.digest} does not match its digest")
    parsed = json.loads(data)
    return parsed if isinstance(parsed, dict) else {}


async def _tags(source: ImageSource) -> list[str]:
    if isinstance(source, StorageSource):
        return await source.tags()
    if isinstance(source, OciSource):
        return source.layout.names()
    return []
