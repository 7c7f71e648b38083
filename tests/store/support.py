"""Helpers for the store tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mirrord.store import Job, JobKind, NewJob, Queue, Run, Store

T0 = 1_700_000_000.0
FIGURES: list[str] = []  # measurements, printed in the test summary by conftest.py

OpenStore = Callable[[], Awaitable[Store]]


def record_figure(line: str) -> None:
    """A measurement to report (figures are printed, never asserted: machines are noisy)."""
    FIGURES.append(line)


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


async def get_job(queue: Queue, job_id: int) -> Job:
    """The job, which must exist."""
    job = await queue.job(job_id)
    assert job is not None, f"no job {job_id}"
    return job


async def get_run(queue: Queue, run_id: int) -> Run:
    """The run, which must exist."""
    run = await queue.run(run_id)
    assert run is not None, f"no run {run_id}"
    return run
