"""Per-source gauges follow the configuration: a source that left it stops being exported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mirrord.metrics import Metrics
from mirrord.store import NewJob, RunTrigger, Store
from mirrord.store.records import JobKind


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path / 'metrics.db'}") as opened:
        yield opened


async def _failed_run(store: Store, source: str) -> None:
    run_id = await store.queue.create_run(RunTrigger.SCHEDULE)
    job = NewJob(JobKind.COPY, f"mirror.example/{source}:v1", {}, source_name=source)
    await store.queue.enqueue([job], run_id)
    await store.queue.close_run(run_id)
    [claimed] = await store.queue.claim("w")
    await store.queue.fail(claimed.id, "w", "denied", "403")


def exported(metrics: Metrics, source: str) -> list[str]:
    text = metrics.render().decode()
    return [line for line in text.splitlines() if f'source="{source}"' in line]


async def test_a_source_renamed_in_the_config_no_longer_keeps_its_failure_exported(
    store: Store,
) -> None:
    await _failed_run(store, "old-name")
    metrics = Metrics()
    await metrics.refresh_from(store, {"old-name"})
    assert any("mirrord_source_last_run_status" in line for line in exported(metrics, "old-name"))
    await metrics.refresh_from(store, {"new-name"})  # renamed, then SIGHUP
    assert exported(metrics, "old-name") == []
