"""The store's clock: on PostgreSQL the database server's, so that daemons whose own clocks
disagree still agree on leases and due times; elsewhere this machine's, or a test's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mirrord.store import JobState, Store
from tests.store.support import FakeClock, copy_jobs, get_job

LEASE = 60.0
SKEW = 90.0  # more than a lease


class SkewedClock:
    """This machine's time off by `skew` seconds: the clock of a daemon on another machine."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def __call__(self) -> float:
        return time.time() + self.skew


@pytest.mark.parametrize(
    ("claimer_skew", "reaper_skew"),
    [(0.0, SKEW), (-SKEW, 0.0)],
    ids=["reaper-ahead", "claimer-behind"],
)
async def test_daemons_whose_clocks_differ_by_more_than_a_lease_keep_each_others_jobs(
    postgres_url: str, claimer_skew: float, reaper_skew: float, caplog: pytest.LogCaptureFixture
) -> None:
    claimer = await Store.open(postgres_url, local=SkewedClock(claimer_skew))
    reaper = await Store.open(postgres_url, local=SkewedClock(reaper_skew))
    [warning] = [r.getMessage() for r in caplog.records if "check NTP" in r.getMessage()]
    assert f"{SKEW:+.0f} s off" in warning or f"{-SKEW:+.0f} s off" in warning
    try:
        await claimer.queue.enqueue(copy_jobs(1))
        [job] = await claimer.queue.claim("claimer:1", lease_seconds=LEASE)
        assert not await reaper.queue.reap()
        assert (await get_job(reaper.queue, job.id)).state is JobState.RUNNING
        assert abs(claimer.clock() - reaper.clock()) < 1.0
    finally:
        await claimer.close()
        await reaper.close()


async def test_sync_clock_follows_a_step_of_the_local_clock(postgres_url: str) -> None:
    local = SkewedClock(0.0)
    async with await Store.open(postgres_url, local=local) as store:
        local.skew = 3600.0  # NTP stepped this machine's clock
        assert store.queue.clock() - time.time() == pytest.approx(3600.0, abs=1.0)
        await store.sync_clock()  # the reaper's, every reap_every seconds
        assert store.queue.clock() == pytest.approx(time.time(), abs=1.0)


async def test_an_explicit_clock_wins(database_url: str, clock: FakeClock) -> None:
    async with await Store.open(database_url, clock=clock, local=SkewedClock(SKEW)) as store:
        await store.sync_clock()
        assert store.queue.clock is clock
        assert store.queue.clock() == clock.now


async def test_sqlite_keeps_this_machines_clock(tmp_path: Path) -> None:
    local = SkewedClock(SKEW)
    async with await Store.open(f"sqlite:///{tmp_path / 'm.db'}", local=local) as store:
        assert store.clock is local
        assert store.queue.clock is local
