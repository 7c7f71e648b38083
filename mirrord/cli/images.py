"""skopeo-shaped commands for single images: copy, inspect, list-tags, delete, manifest-digest."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from mirrord.blobs import BlobService, MemoryBlobIndex
from mirrord.cli import main
from mirrord.cli.common import (
    authfile_flag,
    fail,
    global_flags,
    pass_values,
    registry_flags,
    registry_options,
    retry_times_flag,
    run,
)
from mirrord.cli.gotemplate import TemplateError, go_time, render
from mirrord.cli.live import CopyPrinter
from mirrord.cli.local import copy_any, inspect_any, is_local
from mirrord.errors import IntegrityError, InvalidManifest, InvalidReference, ManifestUnknown
from mirrord.manifests import Descriptor, compute_digest, parse_manifest, select_instance
from mirrord.model import Platform, PlatformPolicy
from mirrord.refs import ImageReference
from mirrord.registry.client import RegistryClient
from mirrord.registry.options import RegistryOptions
from mirrord.transfer import CopyResult, copy_image
from mirrord.transports.docker import ClientPool, RegistryDestination, RegistrySource
from mirrord.transports.location import DockerLocation, parse_location

DEFAULT_BLOB_STREAMS = 6
MAX_CONFIG_SIZE = 4 * 1024 * 1024


def _docker(text: str, default_tag: str | None = "latest") -> ImageReference:
    location = parse_location(text, default_tag)
    if not isinstance(location, DockerLocation):
        raise InvalidReference(f"{text}: this command needs a docker:// reference")
    return location.ref


def _check_destination(text: str) -> None:
    """A `docker://` destination names a tag or a digest, not both (skopeo refuses it too)."""
    if text.startswith("docker://"):
        ref = _docker(text, None)
        if ref.tag and ref.digest:
            raise InvalidReference(f"{text}: a copy destination names a tag or a digest, not both")


def _copy_destination(dst: ImageReference, src: ImageReference) -> ImageReference:
    """skopeo's rule: without a tag or digest the destination takes the source's tag, else
    `latest` (pushed by digest alone, the image would be untagged: garbage to the registry)."""
    return dst if dst.tag or dst.digest else dst.with_tag(src.tag or "latest")


def platform_policy(values: dict[str, Any]) -> PlatformPolicy:
    """skopeo's choice: --all copies everything; otherwise the system (or overridden) platform."""
    if values.get("platform"):
        platforms = tuple(Platform.parse(p) for p in values["platform"].split(","))
        return PlatformPolicy.subset(platforms)
    if values.get("all") or values.get("multi_arch") == "all":
        return PlatformPolicy.all()
    return PlatformPolicy.system(global_flags().system_platform())


def _ref_in_repo(ref: ImageReference) -> str:
    return ref.reference


@main.command()
@click.argument("source")
@click.argument("destination")
@click.option("-a", "--all", "all", is_flag=True, help="Copy every platform of an index.")
@click.option(
    "--multi-arch",
    type=click.Choice(["system", "all"]),
    help="skopeo's spelling of --all (system = one platform).",
)
@click.option("--platform", help="Copy a subset: os/arch[,os/arch...] (makes a new index).")
@click.option(
    "--preserve-digests", is_flag=True, help="Accepted: mirrord always preserves digests."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--digestfile", type=click.Path(path_type=Path), help="Write the digest here.")
@click.option("--force", is_flag=True, help="Copy even if the destination already has the image.")
@click.option(
    "--remove-signatures",
    is_flag=True,
    help="Accepted for skopeo compatibility: mirrord never copies signatures.",
)
@click.option("-f", "--format", "fmt", hidden=True)
@retry_times_flag
@authfile_flag
@registry_flags("src")
@registry_flags("dest")
@pass_values
def copy(values: dict[str, Any]) -> None:
    """Copy an image between registries and local layouts, verifying every byte.

    SOURCE and DESTINATION are docker://REGISTRY/REPO[:TAG|@DIGEST], dir:PATH,
    oci:PATH[:REF], docker-archive:PATH[:REPO:TAG] or registry-storage:PATH:REPO[:TAG].
    """
    if values.get("fmt"):
        fail("--format: mirrord never converts manifests (digests are always preserved)", 2)
    _check_destination(values["destination"])
    if is_local(values["source"], values["destination"]):
        printer = CopyPrinter(values["quiet"])
        shown_src, shown_dst, result = copy_any(values, platform_policy(values), printer.blob)
        printer.done(shown_src, shown_dst, result)
        if values.get("digestfile"):
            values["digestfile"].write_text(result.digest)
        return
    src = _docker(values["source"])
    dst = _copy_destination(_docker(values["destination"], None), src)
    policy = platform_policy(values)
    options = {
        "source": registry_options("src", values),
        "destination": registry_options("dest", values),
    }
    pool = ClientPool(lambda host, role: options[role])
    printer = CopyPrinter(values["quiet"])
    result = run(_copy(src, dst, policy, pool, printer, not values["force"]))
    printer.done(f"docker://{src}", f"docker://{dst}", result)
    if values.get("digestfile"):
        values["digestfile"].write_text(result.digest)


async def _copy(
    src: ImageReference,
    dst: ImageReference,
    policy: PlatformPolicy,
    pool: ClientPool,
    printer: CopyPrinter,
    skip_unchanged: bool,
) -> CopyResult:
    async with pool:
        blobs = BlobService(MemoryBlobIndex(), asyncio.Semaphore(DEFAULT_BLOB_STREAMS))
        source = RegistrySource(pool.source(src.registry, src.repository), src.repository)
        destination = RegistryDestination(
            pool.destination(dst.registry, dst.repository), dst.repository, blobs
        )
        dst_ref = dst.digest or dst.tag
        return await copy_image(
            source,
            src.reference,
            destination,
            dst_ref,
            policy,
            skip_unchanged=skip_unchanged,
            on_blob=printer.blob,
            on_bytes=printer.moved,
        )


@main.command()
@click.argument("image")
@click.option("--raw", is_flag=True, help="Print the manifest (or index) bytes exactly.")
@click.option("--config", "show_config", is_flag=True, help="Print the image config.")
@click.option("-n", "--no-tags", is_flag=True, help="Do not list the repository's tags.")
@click.option(
    "-f",
    "--format",
    "template",
    metavar="TEMPLATE",
    help="Print with a Go template, as skopeo: '{{.Digest}}', '{{index .Labels \"k\"}}'.",
)
@retry_times_flag
@authfile_flag
@registry_flags("")
@pass_values
def inspect(values: dict[str, Any]) -> None:
    """Show an image's manifest digest, platform, layers and config (like skopeo inspect)."""
    if values["template"] and (values["raw"] or values["show_config"]):
        fail("--format applies to the summary: not with --raw or --config", 2)
    if is_local(values["image"]):
        summary = inspect_any(values, global_flags().system_platform())
        click.echo(_formatted(summary, values["template"]), nl=not values["raw"])
        return
    ref = _docker(values["image"])
    output = run(
        _inspect(ref, registry_options("", values), values, global_flags().system_platform())
    )
    if isinstance(output, str):
        output = _formatted(output, values["template"])
    if isinstance(output, bytes):  # --raw: the registry's bytes exactly, nothing added
        sys.stdout.flush()
        sys.stdout.buffer.write(output)
        sys.stdout.buffer.flush()
    else:
        click.echo(output)


def _formatted(summary: str, template: str | None) -> str:
    """The summary (JSON text) through `--format`'s template, with Go's types for its fields."""
    if not template:
        return summary
    data = json.loads(summary)
    for key in ("Labels",):
        data[key] = data.get(key) or {}  # a nil map prints map[]
    for key in ("RepoTags", "Layers", "LayersData", "Env"):
        data[key] = data.get(key) or []
    data.setdefault("Variant", "")
    data["Created"] = go_time(data.get("Created"))
    try:
        return render(template, data)
    except TemplateError as exc:
        fail(f"--format: {exc}", 2)


async def _inspect(
    ref: ImageReference, options: RegistryOptions, values: dict[str, Any], platform: Platform
) -> str | bytes:
    async with ClientPool(lambda host, role: options) as pool:
        client = pool.source(ref.registry, ref.repository)
        raw, media_type = await client.get_manifest(ref.repository, ref.reference)
        if values["raw"] and not values["show_config"]:
            return raw
        top = parse_manifest(raw, media_type, ref.digest)
        image = top
        if top.is_index:
            chosen = select_instance(top, platform)
            image = parse_manifest(
                *await client.get_manifest(ref.repository, chosen.digest), chosen.digest
            )
        config_desc = image.blobs[0] if image.blobs else None
        if values["raw"]:  # --raw --config: the config blob's bytes, as skopeo prints them
            return await _config_bytes(client, ref.repository, config_desc)
        config = await _read_config(client, ref.repository, config_desc)
        if values["show_config"]:
            return json.dumps(config, indent=4)
        tags = [] if values["no_tags"] else await client.list_tags(ref.repository)
        return json.dumps(_summary(ref.name, top.digest, image, config, tags), indent=4)


async def _config_bytes(client: RegistryClient, repo: str, desc: Descriptor | None) -> bytes:
    """The config blob, verified; empty when there is none or it is no JSON config."""
    if desc is None or desc.size > MAX_CONFIG_SIZE or "json" not in desc.media_type:
        return b""
    chunks = []
    async with client.open_blob(repo, desc.digest) as (_, body):
        async for chunk in body:
            chunks.append(chunk)
    data = b"".join(chunks)
    if compute_digest(data, desc.digest.split(":")[0]) != desc.digest:
        raise IntegrityError(f"{client.host}: config blob {desc.digest} does not match its digest")
    return data


async def _read_config(
    client: RegistryClient, repo: str, desc: Descriptor | None
) -> dict[str, Any]:
    data = await _config_bytes(client, repo, desc)
    try:
        parsed = json.loads(data) if data else {}
    except (ValueError, RecursionError):
        raise InvalidManifest(f"{client.host}: config blob of {repo} is not valid JSON") from None
    return parsed if isinstance(parsed, dict) else {}


def _summary(
    name: str, digest: str, image: Any, config: dict[str, Any], tags: list[str]
) -> dict[str, Any]:
    cfg = config.get("config") or {}
    layers = image.blobs[1:]
    variant = {"Variant": config["variant"]} if config.get("variant") else {}  # skopeo: omitempty
    return {
        "Name": name,
        "Digest": digest,
        "RepoTags": tags,
        "Created": config.get("created"),
        "DockerVersion": config.get("docker_version", ""),
        "Labels": cfg.get("Labels"),
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        **variant,
        "Layers": [layer.digest for layer in layers],
        "LayersData": [
            {
                "MIMEType": d.media_type,
                "Digest": d.digest,
                "Size": d.size,
                "Annotations": d.annotations or None,
            }
            for d in layers
        ],
        "Env": cfg.get("Env"),
    }


@main.command("list-tags")
@click.argument("repository")
@retry_times_flag
@authfile_flag
@registry_flags("")
@pass_values
def list_tags(values: dict[str, Any]) -> None:
    """List a repository's tags: docker://REGISTRY/REPO."""
    ref = _docker(values["repository"], None)
    if ref.tag or ref.digest:
        fail(f"{values['repository']}: list-tags takes a repository, without a tag or digest", 2)
    options = registry_options("", values)

    async def go() -> list[str]:
        async with ClientPool(lambda host, role: options) as pool:
            return await pool.source(ref.registry, ref.repository).list_tags(ref.repository)

    tags = run(go())
    click.echo(json.dumps({"Repository": ref.name, "Tags": tags}, indent=4))


@main.command()
@click.argument("image")
@retry_times_flag
@authfile_flag
@registry_flags("")
@pass_values
def delete(values: dict[str, Any]) -> None:
    """Delete an image (its manifest) from a registry: docker://REGISTRY/REPO:TAG|@DIGEST."""
    ref = _docker(values["image"])
    options = registry_options("", values)

    async def go() -> str:
        async with ClientPool(lambda host, role: options) as pool:
            client = pool.destination(ref.registry, ref.repository)
            digest = ref.digest
            if digest is None:
                head = await client.head_manifest(ref.repository, ref.reference)
                if head is None:
                    raise ManifestUnknown(f"{ref}: not found")
                digest = head.digest
            await client.delete_manifest(ref.repository, digest)
            return digest

    digest = run(go())
    click.echo(f"Deleted {ref.name}@{digest}")


@main.command("manifest-digest")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def manifest_digest(manifest: Path) -> None:
    """Print the digest of a manifest file."""
    click.echo(compute_digest(manifest.read_bytes()))
