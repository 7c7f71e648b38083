"""Running the daemon and operating it: run, status, jobs, retry, cancel, enqueue.

The operator commands work on the same database as a running daemon (SQLite in WAL mode lets
them read while it writes; their writes are short transactions).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mirrord.cli import main
from mirrord.cli.common import EXIT_FAILED, fail, pass_values, run
from mirrord.cli.config_cmds import report_config_error
from mirrord.config.daemon import MirrorConfig
from mirrord.config.load import load_config
from mirrord.errors import ConfigError, InvalidReference
from mirrord.logs import held_records, replay, setup_logging
from mirrord.scheduler import MANUAL_PRIORITY, enqueue_run
from mirrord.status import collect_status, job_facts, render_jobs, render_status
from mirrord.store import JobState, RunTrigger, Store

DEFAULT_CONFIG = Path("/etc/mirrord/config.yaml")
T = TypeVar("T")


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c",
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="MIRRORD_CONFIG",
        default=DEFAULT_CONFIG,
        show_default=True,
        help="Daemon config (env MIRRORD_CONFIG).",
    )(f)


def database_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--database", metavar="URL", help="Database URL (default: the config's).")(
        f
    )


def _load(path: Path) -> MirrorConfig:
    try:
        return load_config(path)
    except (ConfigError, InvalidReference) as exc:
        report_config_error(exc)


def _database(values: dict[str, Any]) -> str:
    return values.get("database") or _load(values["config"]).database


def with_store(
    values: dict[str, Any], work: Callable[[Store], Awaitable[T]], *, create: bool = False
) -> T:
    """Run `work` on the state database; a missing SQLite file is an error (a mistyped path
    must not become a new, empty database that reports nothing to do) unless `create`."""

    async def go() -> T:
        async with await Store.open(_database(values), create=create) as store:
            return await work(store)

    return run(go())


@main.command("run")
@config_option
@click.option("--drain", type=float, default=30.0, show_default=True, help="Seconds to drain.")
@pass_values
def run_daemon(values: dict[str, Any]) -> None:
    """Run the daemon: schedule syncs, run jobs, serve /metrics (SIGTERM drains, SIGHUP reloads)."""
    from mirrord.daemon import Daemon

    # The config says how to log, so what loading it logs is held and written after set-up.
    with held_records() as loading:
        daemon = _construct(lambda: Daemon(values["config"], values["drain"]))
    setup_logging(daemon.config.log.level, daemon.config.log.format, timestamps=True)
    replay(loading)
    try:
        run(daemon.run())
    except OSError as exc:
        fail(f"cannot start: {exc.strerror or exc}")


def _construct(make: Callable[[], T]) -> T:
    try:
        return make()
    except (ConfigError, InvalidReference) as exc:
        report_config_error(exc)


@main.command()
@config_option
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as /api/status does).")
@pass_values
def status(values: dict[str, Any]) -> None:
    """Runs, queue depth by state, last success per source, recent failures."""
    facts = with_store(values, collect_status)
    click.echo(json.dumps(facts, indent=2) if values["as_json"] else render_status(facts))


@main.command()
@config_option
@database_option
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only this state.")
@click.option("--run", "run_id", type=int, help="Only jobs of this run.")
@click.option("-n", "--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as /api/jobs does).")
@pass_values
def jobs(values: dict[str, Any]) -> None:
    """List jobs, newest first, with their outcome or failure reason."""
    state = JobState(values["state"]) if values["state"] else None
    found = with_store(
        values, lambda store: store.queue.jobs(state, values["limit"], values["run_id"])
    )
    if values["as_json"]:
        click.echo(json.dumps({"jobs": [job_facts(j) for j in found]}, indent=2))
    else:
        click.echo(render_jobs(found))


@main.command()
@click.argument("job_id", type=int, required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@config_option
@database_option
@pass_values
def retry(values: dict[str, Any]) -> None:
    """Queue a failed job (or --failed: all of them) again, at high priority."""
    if (values["job_id"] is None) == (not values["all_failed"]):
        fail("give a JOB id or --failed", 2)
    if values["all_failed"]:
        result = with_store(values, lambda store: store.queue.retry_failed())
    else:
        result = with_store(values, lambda store: store.queue.retry(values["job_id"]))
    if not result:
        fail("nothing to retry (only failed or cancelled jobs can be retried)", EXIT_FAILED)
    click.echo(f"requeued {len(result.requeued)} job(s), {len(result.superseded)} already queued")


@main.command()
@click.argument("job_id", type=int)
@config_option
@database_option
@pass_values
def cancel(values: dict[str, Any]) -> None:
    """Cancel a queued or running job (a running copy stops within about 2 s)."""
    if not with_store(values, lambda store: store.queue.cancel(values["job_id"])):
        fail(f"job {values['job_id']} is not queued or running")
    click.echo(f"cancelled job {values['job_id']}")


@main.command()
@config_option
@pass_values
def enqueue(values: dict[str, Any]) -> None:
    """Sync now: plan the config into a run at high priority (a running daemon picks it up)."""
    config = _load(values["config"])

    async def go(store: Store) -> int:
        return await enqueue_run(store, config, RunTrigger.MANUAL, MANUAL_PRIORITY)

    run_id = with_store({"database": config.database, **values}, go, create=True)
    click.echo(f"run {run_id} enqueued")
