"""Helpers for the store tests."""

from __future__ import annotations

from mirrord.store import JobKind, NewJob

T0 = 1_700_000_000.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def copy_jobs(count: int, prefix: str = "reg.example/repo", source: str = "src") -> list[NewJob]:
    """`count` copy jobs with distinct keys `prefix:t0`, `prefix:t1`, …"""
    return [
        NewJob(JobKind.COPY, f"{prefix}:t{i}", {"n": i}, source_name=source) for i in range(count)
    ]
