"""The `mirrord` command. Each area registers its subcommands from its own module."""

from __future__ import annotations

import click

from mirrord import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mirrord")
def main() -> None:
    """Keep container registries mirrored: skopeo-sync YAML in, verified copies out."""


def _register() -> None:
    # Imported for their side effect of adding commands to `main`.
    from mirrord.cli import commands  # noqa: F401


_register()
