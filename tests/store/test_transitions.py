"""The database itself refuses illegal states and transitions, whatever SQL reaches it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.errors import StoreError
from mirrord.store import TRANSITIONS, JobState, Store, migrate
from mirrord.store.db import Database
from mirrord.store.models import jobs
from tests.store.support import T0, OpenStore, get_job

# Column values that satisfy every CHECK for a job in each state, so that only the transition
# itself is on trial.
VALID: dict[JobState, dict[str, Any]] = {
    JobState.QUEUED: {"worker": None, "lease_until": None, "finished_at": None},
    JobState.RUNNING: {"worker": "w", "lease_until": T0 + 60, "finished_at": None},
    JobState.SUCCEEDED: {"worker": "w", "lease_until": None, "finished_at": T0},
    JobState.FAILED: {"worker": "w", "lease_until": None, "finished_at": T0},
    JobState.CANCELLED: {"worker": None, "lease_until": None, "finished_at": T0},
}


@pytest.fixture(params=["built", "migrated"])
async def store(request: pytest.FixtureRequest, database_url: str, open_store: OpenStore) -> Store:
    """A store on a new database as `Store.open` builds it (from the models), or as the
    migrations build it: the trigger must be the same either way."""
    if request.param == "migrated":
        db = Database(database_url)
        try:
            await migrate.upgrade(db, str(migrate.head_revision()))
        finally:
            await db.dispose()
    return await open_store()


async def _insert(
    store: Store, key: str, state: JobState, overrides: dict[str, Any] | None = None
) -> int:
    row = {
        "kind": "copy",
        "key": key,
        "payload": "{}",
        "state": state.value,
        "due_at": T0,
        "created_at": T0,
        **VALID[state],
        **(overrides or {}),
    }

    async def work(conn: AsyncConnection) -> int:
        result = await conn.execute(insert(jobs).values(row).returning(jobs.c.id))
        return int(result.scalar_one())

    return await store.db.write(work, "test insert")


async def _set_state(store: Store, job_id: int, state: JobState) -> None:
    statement = update(jobs).where(jobs.c.id == job_id).values(state=state.value, **VALID[state])

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(statement)

    await store.db.write(work, "test update")


async def test_every_transition_is_allowed_or_refused_exactly_as_the_table_says(
    store: Store,
) -> None:
    for number, (old, new) in enumerate(itertools.permutations(JobState, 2)):
        job_id = await _insert(store, f"k{number}", old)
        if new in TRANSITIONS[old]:
            await _set_state(store, job_id, new)
            assert (await get_job(store.queue, job_id)).state is new
        else:
            with pytest.raises(StoreError, match="illegal job state transition"):
                await _set_state(store, job_id, new)
            assert (await get_job(store.queue, job_id)).state is old


async def test_a_succeeded_job_can_never_run_again(store: Store) -> None:
    job_id = await _insert(store, "k", JobState.SUCCEEDED)
    with pytest.raises(StoreError, match="illegal job state transition"):
        await _set_state(store, job_id, JobState.RUNNING)


async def test_unknown_states_and_kinds_are_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await _insert(store, "k", JobState.QUEUED, {"state": "paused"})
    with pytest.raises(StoreError):
        await _insert(store, "k", JobState.QUEUED, {"kind": "delete"})


async def test_a_running_job_without_a_lease_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await _insert(store, "k", JobState.RUNNING, {"lease_until": None})


async def test_a_finished_job_must_have_a_finish_time_and_an_active_one_must_not(
    store: Store,
) -> None:
    with pytest.raises(StoreError):
        await _insert(store, "a", JobState.FAILED, {"finished_at": None})
    with pytest.raises(StoreError):
        await _insert(store, "b", JobState.QUEUED, {"finished_at": T0})


async def test_a_second_queued_or_running_job_per_key_is_refused(store: Store) -> None:
    await _insert(store, "k", JobState.QUEUED)
    await _insert(store, "k", JobState.RUNNING)
    await _insert(store, "k", JobState.FAILED)
    await _insert(store, "k", JobState.FAILED)
    with pytest.raises(StoreError):
        await _insert(store, "k", JobState.QUEUED)
    with pytest.raises(StoreError):
        await _insert(store, "k", JobState.RUNNING)
