"""A claiming worker in its own process, for the multi-process tests.

    python -m tests.store.claimer URL WORKER GO_FILE

Waits for GO_FILE to exist (so that every process starts claiming at once), then claims and
completes jobs until none is left, printing each claimed job id on its own line.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from mirrord.store import Store


async def main(url: str, worker: str, go_file: Path) -> None:
    store = await Store.open(url)
    try:
        while not await asyncio.to_thread(go_file.exists):
            await asyncio.sleep(0.01)
        while batch := await store.queue.claim(worker, limit=5, lease_seconds=600):
            for job in batch:
                print(job.id, flush=True)
                await store.queue.succeed(job.id, worker, "copied")
    finally:
        await store.close()


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
    print(f"# {time.monotonic() - started:.3f}", flush=True)
