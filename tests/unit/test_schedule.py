"""When the scheduler's next tick is due."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mirrord.config.daemon import ScheduleSpec
from mirrord.scheduler import next_tick

# Berlin's rules as a POSIX TZ string: glibc reads it without the tz database.
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", BERLIN)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("berlin")
@pytest.mark.parametrize(
    ("today", "tomorrow"),
    [("2026-03-28", "2026-03-29"), ("2026-10-24", "2026-10-25")],
    ids=["clocks-forward", "clocks-back"],
)
def test_a_cron_time_stays_local_across_a_daylight_saving_change(today: str, tomorrow: str) -> None:
    noon = time.mktime(time.strptime(f"{today} 12:00", "%Y-%m-%d %H:%M"))
    due = next_tick(ScheduleSpec(cron="0 9 * * *"), None, noon)
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(due)) == f"{tomorrow} 09:00"


def test_an_interval_starts_at_once_then_counts_from_the_last_tick() -> None:
    every = ScheduleSpec.model_validate({"interval": "1h"})
    assert next_tick(every, None, 1000.0) == 1000.0
    assert next_tick(every, 1000.0, 1500.0) == 4600.0
