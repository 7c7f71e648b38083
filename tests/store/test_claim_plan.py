"""On SQLite a claim reads the claim index in its own order and stops at its limit, so its
cost does not grow with the number of queued jobs (it once sorted every queued job)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store import Store
from tests.store.support import copy_jobs


async def _claim_plan(conn: AsyncConnection, store: Store) -> list[str]:
    statement = store.queue._claim_statement  # the statement every claim executes
    compiled = statement.compile(dialect=conn.dialect)
    values = compiled.construct_params(
        {"claim_worker": "w", "claim_limit": 16, "claim_lease": 2e9, "claim_now": 1e9}
    )
    params = tuple(values[name] for name in compiled.positiontup or ())
    rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
    return [str(row[-1]) for row in rows]


async def test_a_claim_walks_the_claim_index_and_sorts_nothing(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        run_id = await store.queue.create_run("schedule")
        await store.queue.enqueue(copy_jobs(2000), run_id)
        plan = await store.db.read(lambda conn: _claim_plan(conn, store), "explaining")
    finally:
        await store.close()
    assert any("USING INDEX ix_jobs_claim" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
