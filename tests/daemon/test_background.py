"""The one-shot's background tasks: one of them failing ends `sync`, never leaves it waiting."""

from __future__ import annotations

import asyncio

import pytest

from mirrord.errors import StoreError
from mirrord.oneshot import background


async def forever() -> None:
    await asyncio.Event().wait()


async def fails_soon() -> None:
    await asyncio.sleep(0.01)
    raise StoreError("database error while claiming jobs: database is locked")


async def test_a_failing_claim_loop_ends_the_wait_with_its_error() -> None:
    async with background(fails_soon(), forever()) as beside:
        with pytest.raises(StoreError, match="database is locked"):
            await asyncio.wait_for(beside.until(forever()), timeout=10)


async def test_a_background_task_that_returns_does_not_end_the_wait() -> None:
    finished = asyncio.Event()

    async def main() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    async def returns() -> None:
        return None

    async with background(returns(), forever()) as beside:
        await asyncio.wait_for(beside.until(main()), timeout=10)
    assert finished.is_set()


async def test_the_wait_s_own_error_reaches_the_caller_and_background_tasks_are_cancelled() -> None:
    async def broken() -> None:
        raise ValueError("run vanished")

    async with background(forever()) as beside:
        with pytest.raises(ValueError, match="run vanished"):
            await beside.until(broken())
        (task,) = beside.tasks
    assert task.cancelled()
