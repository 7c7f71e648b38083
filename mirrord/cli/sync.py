"""`mirrord sync` (one-shot, daemon config or skopeo's arguments) and `mirrord plan` (dry run)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mirrord.cli import main
from mirrord.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    authfile_flag,
    fail,
    pass_values,
    registry_flags,
    registry_options,
    run,
)
from mirrord.cli.config_cmds import config_from_flags, report_config_error, skopeo_sync_flags
from mirrord.cli.images import platform_policy
from mirrord.cli.progress import SyncProgress
from mirrord.config.daemon import MirrorConfig
from mirrord.config.load import load_config, reference_source, skopeo_sync_config
from mirrord.config.registries import RegistrySettings
from mirrord.errors import ConfigError, InvalidReference
from mirrord.logs import setup_logging
from mirrord.oneshot import OneShotResult, sync_once
from mirrord.plan import plan, render_plan
from mirrord.refs import ImageReference
from mirrord.registry.events import Observers
from mirrord.registry.options import RegistryOptions
from mirrord.store import JobKind, JobState, Store
from mirrord.transports.docker import ClientPool, OptionsFor

if TYPE_CHECKING:
    from mirrord.metrics import Metrics


@contextlib.contextmanager
def state_database(value: str | None) -> Iterator[str]:
    """The job database of skopeo-style syncs: persistent by default (its blob index makes the
    next run cheaper); with `throwaway`, a new one deleted when the sync ends."""
    if value != "throwaway":
        yield _persistent_database(value)
        return
    with tempfile.TemporaryDirectory(prefix="mirrord-sync-") as scratch:
        yield f"sqlite+aiosqlite:///{scratch}/sync.db"


def _persistent_database(value: str | None) -> str:
    if value:
        return value if "://" in value else f"sqlite+aiosqlite:///{Path(value).absolute()}"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return f"sqlite+aiosqlite:///{state / 'mirrord' / 'sync.db'}"


def overlay(
    config: MirrorConfig, cli: dict[str, RegistryOptions], *, sources_only: bool = False
) -> OptionsFor:
    """Registry options: what the files say, and skopeo's --src-*/--dest-* flags for the rest
    (a YAML `tls-verify` or `credentials` wins for its registry, as in skopeo). With
    `sources_only` (a skopeo sync file) the file's settings are the source's only, as in
    skopeo: a destination on the same host gets the --dest-* flags, never the source's login."""

    def options_for(host: str, role: str) -> RegistryOptions:
        said = config.registries.get(host, RegistrySettings())
        if sources_only and role == "destination":
            said = RegistrySettings()
        base = config.registry_options(host)
        flags = cli[role]
        return dataclasses.replace(
            base,
            tls=said.tls or flags.tls,
            cert_dir=said.cert_dir or flags.cert_dir,
            credentials=said.credentials or flags.credentials,
            authfile=flags.authfile,
            no_creds=flags.no_creds and said.credentials is None,
            registry_token=flags.registry_token,
        )

    return options_for


def _config(values: dict[str, Any]) -> MirrorConfig:
    if values["config"] is not None:
        if values["source"] or values["destination"]:
            fail("--config takes no SOURCE/DESTINATION arguments", 2)
        return load_config(values["config"])
    if not (values["source"] and values["destination"]):
        fail("give --config FILE, or SOURCE and DESTINATION like skopeo sync", 2)
    if values["dest_transport"] != "docker":
        fail(f"--dest {values['dest_transport']}: only docker destinations are supported here", 2)
    kwargs: dict[str, Any] = {
        "scoped": values["scoped"],
        "append_suffix": values["append_suffix"],
        "platforms": platform_policy({"all": values["all_"], "platform": values["platform"]}),
    }
    if values["src_transport"] == "yaml":
        return skopeo_sync_config(values["destination"], file=Path(values["source"]), **kwargs)
    reference_source(values["source"])  # validates the --src docker reference
    return skopeo_sync_config(values["destination"], reference=values["source"], **kwargs)


def load_or_exit(load: Callable[[], MirrorConfig]) -> MirrorConfig:
    try:
        return load()
    except (ConfigError, InvalidReference) as exc:
        report_config_error(exc)


@main.command()
@click.argument("source", required=False)
@click.argument("destination", required=False)
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="Daemon config.")
@click.option("--once", is_flag=True, help="Run once and exit (the default for sync).")
@click.option(
    "-s",
    "--src",
    "src_transport",
    type=click.Choice(["yaml", "docker", "dir", "oci", "registry-storage"]),
    default="yaml",
    show_default=True,
    help="SOURCE kind, as skopeo sync's --src.",
)
@click.option(
    "-d",
    "--dest",
    "dest_transport",
    type=click.Choice(["docker", "dir", "oci", "registry-storage"]),
    default="docker",
    show_default=True,
    help="DESTINATION kind, as skopeo sync's --dest.",
)
@click.option("--scoped", is_flag=True, help="Keep the source registry and path in names.")
@click.option("--append-suffix", default="", metavar="SUFFIX", help="Append to every tag.")
@click.option("-a", "--all", "all_", is_flag=True, help="Copy every platform of an index.")
@click.option("--platform", metavar="OS/ARCH,...", help="Copy only these platforms.")
@click.option("--preserve-digests", is_flag=True, help="Accepted: digests are always preserved.")
@click.option("--keep-going", is_flag=True, help="Accepted: mirrord always keeps going.")
@click.option(
    "--remove-signatures", is_flag=True, help="Accepted: mirrord never copies signatures."
)
@click.option("-f", "--format", "fmt", hidden=True)
@click.option("--dry-run", is_flag=True, help="Print what would be copied; copy nothing.")
@click.option("--retry-times", type=click.IntRange(0), help="Retries per image (default 4).")
@click.option("--digestfile", type=click.Path(path_type=Path), help="Write DIGEST REF lines.")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report here.")
@click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="At the end, write the run's metrics here (for node_exporter's textfile collector).",
)
@click.option("--state-db", metavar="PATH|URL|throwaway", help="Job database of this sync.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
@authfile_flag
@registry_flags("src")
@registry_flags("dest")
@pass_values
def sync(values: dict[str, Any]) -> None:
    """Mirror images once: `--config FILE`, or skopeo's `sync --src yaml FILE REGISTRY[/PREFIX]`.

    Runs every job to the end (failures do not stop the others), prints a summary and exits
    0 when all succeeded, 3 when some failed, 2 for a bad configuration. `--src` and `--dest`
    also take dir, oci and registry-storage (local layouts; see README.md).
    """
    if values.get("fmt"):
        fail("--format: mirrord never converts manifests (digests are always preserved)", 2)
    if values["src_transport"] not in ("yaml", "docker") or values["dest_transport"] != "docker":
        from mirrord.cli.localsync import sync_local

        raise SystemExit(sync_local(values))
    config = load_or_exit(lambda: _config(values))
    if values["retry_times"] is not None:
        spec = config.spec.model_copy(
            update={
                "retry": config.retry.model_copy(update={"attempts": values["retry_times"] + 1})
            }
        )
        config = dataclasses.replace(config, spec=spec)
    cli = {
        "source": registry_options("src", values),
        "destination": registry_options("dest", values),
    }
    options_for = overlay(config, cli, sources_only=values["config"] is None)
    if values["dry_run"]:
        text, complete = run(_plan_text(config, options_for, False))
        click.echo(text)
        raise SystemExit(EXIT_OK if complete else EXIT_PARTIAL)
    database = (
        contextlib.nullcontext(config.database)
        if values["config"]
        else state_database(values["state_db"])
    )
    progress = SyncProgress(quiet=values["quiet"])
    metrics = _metrics() if values["metrics_file"] else None
    with database as url:
        result = run(_sync(config, url, options_for, progress, metrics))
    progress.summary(result)
    if metrics is not None:
        metrics.write_textfile(values["metrics_file"])
    if values["report"]:
        write_report(values["report"], result)
    if values["digestfile"]:
        write_digestfile(values["digestfile"], result)
    raise SystemExit(EXIT_OK if result.ok else EXIT_PARTIAL)


def _metrics() -> Metrics:
    from mirrord.metrics import Metrics  # prometheus-client only when asked for

    return Metrics()


async def _sync(
    config: MirrorConfig,
    database: str,
    options_for: OptionsFor,
    progress: SyncProgress,
    metrics: Metrics | None = None,
) -> OneShotResult:
    listeners = (progress,) if metrics is None else (progress, metrics)
    async with await Store.open(database) as store:
        result = await sync_once(config, store, options_for, Observers(*listeners), listeners)
        if metrics is not None:
            await metrics.refresh_from(store)  # last success, run status, queue: from the database
        return result


def write_report(path: Path, result: OneShotResult) -> None:
    entries = [
        {
            "kind": job.kind.value,
            "source": job.payload.get("source") if job.kind is JobKind.COPY else None,
            "destination": job.key if job.kind is JobKind.COPY else None,
            "selection": job.payload.get("selection"),
            "state": job.state.value,
            "outcome": job.outcome,
            "reason": job.reason,
            "error": job.error,
            "digest": job.digest,
            "bytes": job.bytes_written,
            "duration": job.duration,
            "attempts": job.attempts,
        }
        for job in result.jobs
    ]
    run_ = result.summary.run
    report = {"run": run_.id, "status": run_.status.value, "jobs": entries}
    path.write_text(json.dumps(report, indent=2) + "\n")


def write_digestfile(path: Path, result: OneShotResult) -> None:
    """skopeo's --digestfile: `DIGEST docker://REF` per successful copy."""
    lines = [
        f"{job.digest} docker://{job.key}"
        for job in result.jobs
        if job.kind is JobKind.COPY and job.state is JobState.SUCCEEDED and job.digest
    ]
    path.write_text("".join(f"{line}\n" for line in lines))


async def _plan_text(
    config: MirrorConfig, options_for: OptionsFor, as_json: bool
) -> tuple[str, bool]:
    """The plan as text, and whether every listing it needed succeeded (failures are printed:
    a dry run exits 3 for them, as the sync itself would)."""
    async with ClientPool(options_for) as pool:

        async def lister(repo: ImageReference, _: RegistryOptions) -> list[str]:
            return await pool.source(repo.registry).list_tags(repo.repository)

        result = await plan(config, lister)
    for failure in result.failures:
        click.echo(f"mirrord: error: {failure}", err=True)
    for conflict in result.conflicts:
        click.echo(f"mirrord: warning: {conflict}", err=True)
    return render_plan(result.requests, as_json), not result.failures


@main.command("plan")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@skopeo_sync_flags
@authfile_flag
@registry_flags("src")
@pass_values
def plan_command(values: dict[str, Any]) -> None:
    """Dry run: list every source -> destination copy FILE would make. Creates nothing.

    FILE is a daemon config, or a skopeo sync file with --dest REGISTRY[/PREFIX].
    """
    setup_logging("error")
    config = load_or_exit(lambda: config_from_flags(values["file"], values))
    cli = {"source": registry_options("src", values), "destination": RegistryOptions()}
    text, complete = run(_plan_text(config, overlay(config, cli), values["as_json"]))
    click.echo(text)
    raise SystemExit(EXIT_OK if complete else EXIT_PARTIAL)
