"""`mirrord demo`: the daemon's main job on embedded defaults, on loopback, in a temp dir."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import click

from mirrord.cli import main
from mirrord.cli.common import run
from mirrord.daemon import Daemon
from mirrord.demo import demo_config, demo_environment, free_port, seed
from mirrord.scheduler import MANUAL_PRIORITY, enqueue_run
from mirrord.status import collect_status, render_status
from mirrord.store import RunStatus, RunTrigger, Store

SHOWN_METRICS = re.compile(
    r"^mirrord_(tags_total|blobs_total|destination_written_bytes_total|jobs_finished_total"
    r"|registry_requests_total\{[^}]*method=\"(upload|mount)\"|source_last_success)"
)


async def wait_for_runs(store: Store, count: int, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        runs = await store.queue.runs(limit=count)
        if len(runs) >= count and all(r.status is not RunStatus.RUNNING for r in runs):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError


async def show_metrics(listen: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"http://{listen}/metrics") as resp:
        text = await resp.text()
    click.echo("\nSome metrics (GET /metrics):")
    for line in text.splitlines():
        if SHOWN_METRICS.match(line):
            click.echo(f"  {line}")


async def _demo(keep_running: bool) -> None:
    async with demo_environment() as (workdir, source, mirror):
        click.echo(f"Source registry {source.host}, mirror registry {mirror.host} (in {workdir})")
        count = await seed(source.host)
        click.echo(f"Pushed {count} sample tags to the source registry.")
        listen = f"127.0.0.1:{free_port()}"
        config = demo_config(workdir, source.host, mirror.host, listen)
        click.echo(f"Config: {config}\n\n{config.read_text()}")
        click.echo((workdir / "sync.yaml").read_text())
        daemon = Daemon(config, drain=10)
        task = asyncio.create_task(daemon.run(), name="daemon")
        async with await Store.open(daemon.config.database) as store:
            await wait_for_runs(store, 1)
            click.echo(
                "\nFirst sync done. Running it again (nothing changed: every tag is skipped)."
            )
            await enqueue_run(store, daemon.config, RunTrigger.MANUAL, MANUAL_PRIORITY)
            await wait_for_runs(store, 2)
            click.echo("\n" + render_status(await collect_status(store)))
            # The daemon refreshes the per-source gauges some seconds after jobs end: now, so the
            # metrics below show the run that just ended.
            await daemon.metrics.refresh_from(store, daemon.source_names())
        await show_metrics(listen)
        if keep_running:
            click.echo(f"\nThe daemon keeps running: http://{listen}/metrics  (Ctrl-C stops it)")
        else:
            daemon.stop()
        await task


@main.command()
@click.option("--keep-running", is_flag=True, help="Leave the daemon running after the demo.")
def demo(keep_running: bool) -> None:
    """A local demo: two registries on loopback, sample images, a sync, the metrics."""
    run(_demo(keep_running))
