"""`mirrord demo`, as `scripts/dev demo` runs it: two syncs, then the metrics it prints."""

from __future__ import annotations

import re
import time

from tests.ops.support import mirrord_cli

LAST_SUCCESS = re.compile(
    r'^  mirrord_source_last_success_timestamp_seconds\{source="sync"\} (\S+)$', re.MULTILINE
)


async def test_the_demo_prints_when_its_source_last_succeeded() -> None:
    started = time.time()
    done = await mirrord_cli("demo")
    assert "Some metrics (GET /metrics):" in done.stdout
    match = LAST_SUCCESS.search(done.stdout)
    assert match, done.stdout  # the demo's sync file is its one source, named `sync`
    assert started - 1 <= float(match[1]) <= time.time()
