"""`mirrord check-config` and `mirrord convert`; the skopeo-sync flags other commands share."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mirrord.cli import main
from mirrord.cli.common import EXIT_USAGE, global_flags
from mirrord.config.autodetect import load_any
from mirrord.config.daemon import MirrorConfig
from mirrord.config.imagesyncer import convert_files, dump_config, holds_secrets
from mirrord.errors import ConfigError, InvalidReference
from mirrord.model import Platform, PlatformPolicy
from mirrord.redact import redact_text

F = TypeVar("F", bound=Callable[..., Any])


def skopeo_sync_flags(f: F) -> F:
    """skopeo sync's destination flags, for commands that accept a plain skopeo sync file."""
    options = [
        click.option(
            "--dest", metavar="REGISTRY[/PREFIX]", help="Destination (skopeo sync's DEST)."
        ),
        click.option(
            "--scoped", is_flag=True, help="Prefix images with the source registry and path."
        ),
        click.option("--append-suffix", default="", metavar="SUFFIX", help="Append to tags."),
        click.option("--all", "-a", "all_", is_flag=True, help="Copy every platform of a list."),
        click.option("--platform", metavar="OS/ARCH,...", help="Copy only these platforms."),
        click.option(
            "--auth",
            type=click.Path(path_type=Path, dir_okay=False),
            help="image-syncer auth file (with an image-syncer images file).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _platforms(values: dict[str, Any]) -> PlatformPolicy | None:
    if values.get("platform"):
        return PlatformPolicy.subset(
            tuple(Platform.parse(p) for p in values["platform"].split(","))
        )
    if values.get("all_"):
        return PlatformPolicy.all()
    flags = global_flags()
    if flags.override_os or flags.override_arch or flags.override_variant:
        return PlatformPolicy.system(flags.system_platform())
    return None


def config_from_flags(path: Path, values: dict[str, Any]) -> MirrorConfig:
    """Load `path` (daemon config, skopeo sync file or image-syncer file) with the shared flags."""
    return load_any(
        path,
        dest=values.get("dest"),
        scoped=bool(values.get("scoped")),
        append_suffix=values.get("append_suffix") or "",
        platforms=_platforms(values),
        auth=values.get("auth"),
    )


def report_config_error(error: ConfigError | InvalidReference) -> NoReturn:
    """Every problem on its own line, then exit 2."""
    click.echo(f"mirrord: error: {redact_text(str(error))}", err=True)
    if isinstance(error, ConfigError) and error.problems != (str(error),):
        for problem in error.problems:
            click.echo(redact_text(problem), err=True)
    sys.exit(EXIT_USAGE)


@main.command("check-config")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@skopeo_sync_flags
def check_config(file: Path, **values: Any) -> None:
    """Validate a daemon config, a skopeo sync file or an image-syncer file.

    Exit 0 with a one-line summary when valid; exit 2 listing every problem when not. For a
    skopeo sync file, --dest/--scoped/--append-suffix check the destination names too.
    """
    try:
        config = config_from_flags(file, values)
    except (ConfigError, InvalidReference) as exc:
        report_config_error(exc)
    click.echo(f"{file}: OK: {config.summary()}")


@main.command("convert")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--auth", type=click.Path(path_type=Path, dir_okay=False), help="image-syncer auth file."
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here (0600)."
)
def convert(file: Path, auth: Path | None, output: Path | None) -> None:
    """Convert an image-syncer config (images, or auth + images) into a mirrord config."""
    try:
        data = convert_files(file, auth)
    except (ConfigError, InvalidReference) as exc:
        report_config_error(exc)
    text = dump_config(data, str(file))
    if output is None:
        if holds_secrets(data):
            click.echo("mirrord: warning: the output holds passwords", err=True)
        click.echo(text, nl=False)
        return
    _write_private(output, text)
    click.echo(f"wrote {output}", err=True)


def _write_private(path: Path, text: str) -> None:
    # 0600 from creation: the converted file may carry the image-syncer passwords.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
