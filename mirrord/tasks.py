"""Task helpers: work that runs to its end even when its caller is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def to_completion(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in a task of its own, to its end even if the caller is cancelled meanwhile;
    the cancellation is raised once it has ended.

    For what must not stop half-way: a database transaction (cancelled with a statement in
    flight, its connection is thrown away but SQLite keeps its lock until the statement is
    freed, so the next writer waited out the whole busy timeout and failed with "database is
    locked"), the few writes that plan a run, a drain handing jobs back."""
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # the caller is gone: its error is not "never retrieved"
        raise cancelled
    return task.result()
