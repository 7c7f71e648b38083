"""Many claimers, one queue: every job is claimed exactly once, by tasks and by processes.

Also measures bulk enqueue and claim-all; the figures are printed in the test summary, never
asserted (machines are noisy).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mirrord.store import JobState, Store
from tests.store.support import FakeClock, OpenStore, copy_jobs, record_figure

ROOT = Path(__file__).resolve().parents[2]


async def _claim_all(store: Store, worker: str, limit: int) -> list[int]:
    claimed: list[int] = []
    while batch := await store.queue.claim(worker, limit=limit, lease_seconds=600):
        for job in batch:
            claimed.append(job.id)
            assert await store.queue.succeed(job.id, worker, "copied")
    return claimed


async def test_eight_claimers_with_their_own_engines_claim_each_job_exactly_once(
    store: Store, open_store: OpenStore
) -> None:
    expected = set((await store.queue.enqueue(copy_jobs(600))).job_ids)
    claimers = [await open_store() for _ in range(8)]
    results = await asyncio.gather(
        *(_claim_all(s, f"w{n}", limit=1 + n % 4) for n, s in enumerate(claimers))
    )
    claimed = [job_id for result in results for job_id in result]
    assert [job_id for job_id, n in Counter(claimed).items() if n > 1] == []
    assert set(claimed) == expected
    assert sum(1 for result in results if result) > 1  # the work was actually shared
    assert (await store.queue.counts_by_state())[JobState.SUCCEEDED] == 600


async def test_three_processes_claim_each_job_exactly_once(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    expected = set((await store.queue.enqueue(copy_jobs(450))).job_ids)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.store.claimer", database_url]
    processes = [
        await asyncio.create_subprocess_exec(
            *command, f"p{n}", str(go), cwd=ROOT, env=env, stdout=subprocess.PIPE
        )
        for n in range(3)
    ]
    await asyncio.sleep(0.5)  # let them open the store
    go.touch()
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    assert [p.returncode for p in processes] == [0, 0, 0]
    per_process = [
        [int(line) for line in out.decode().split() if line.isdigit()] for out, _ in outputs
    ]
    claimed = [job_id for ids in per_process for job_id in ids]
    assert [job_id for job_id, n in Counter(claimed).items() if n > 1] == []
    assert set(claimed) == expected
    assert all(per_process), "every process should have claimed some jobs"
    seconds = [
        float(line[2:])
        for out, _ in outputs
        for line in out.decode().splitlines()
        if line.startswith("# ")
    ]
    record_figure(
        f"{database_url.split('+', 1)[0]}: 3 processes claimed and completed 450 jobs "
        f"(5 per claim) in {max(seconds):.2f} s, process start-up included"
    )


async def test_concurrent_reapers_take_each_expired_job_back_once(
    store: Store, open_store: OpenStore, clock: FakeClock
) -> None:
    await store.queue.enqueue(copy_jobs(200))
    expired = {job.id for job in await store.queue.claim("dead", limit=200, lease_seconds=5)}
    reapers = [await open_store() for _ in range(4)]
    results = await asyncio.gather(*(r.queue.reap(now=clock.now + 10) for r in reapers))
    requeued = [job_id for result in results for job_id in result.requeued]
    assert sorted(requeued) == sorted(expired)
    assert (await store.queue.counts_by_state())[JobState.QUEUED] == 200


async def test_concurrent_enqueues_of_the_same_keys_leave_one_queued_job_per_key(
    store: Store, open_store: OpenStore
) -> None:
    planners = [await open_store() for _ in range(4)]
    results = await asyncio.gather(*(p.queue.enqueue(copy_jobs(300)) for p in planners))
    assert sum(r.enqueued for r in results) == 300
    assert sum(r.duplicates for r in results) == 900
    assert (await store.queue.counts_by_state())[JobState.QUEUED] == 300


async def test_bulk_enqueue_and_claim_figures(store: Store, database_url: str) -> None:
    backend = database_url.split("+", 1)[0]
    q = store.queue
    run_id = await q.create_run("schedule")
    started = time.perf_counter()
    result = await q.enqueue(copy_jobs(2000), run_id)
    enqueue_seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = await q.enqueue(copy_jobs(2000), run_id)
    duplicate_seconds = time.perf_counter() - started
    assert (result.enqueued, again.duplicates) == (2000, 2000)

    started = time.perf_counter()
    claimed = 0
    while batch := await q.claim("w", limit=50, lease_seconds=600):
        claimed += len(batch)
    claim_seconds = time.perf_counter() - started
    assert claimed == 2000

    started = time.perf_counter()
    for job in await q.jobs(JobState.RUNNING, limit=200):
        await q.succeed(job.id, "w", "copied")
    succeed_seconds = time.perf_counter() - started
    record_figure(
        f"{backend}: enqueue 2000 jobs {enqueue_seconds * 1000:.0f} ms "
        f"(again, all duplicates: {duplicate_seconds * 1000:.0f} ms); "
        f"claim all 2000 in batches of 50: {claim_seconds * 1000:.0f} ms "
        f"({claim_seconds / 40 * 1000:.1f} ms per claim); "
        f"succeed: {succeed_seconds / 200 * 1000:.1f} ms each"
    )
