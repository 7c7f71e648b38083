"""Backoff delays and error classification.  [pure]

Transient: connection errors, timeouts, 408, 429 (honouring Retry-After), 5xx, a vanished upload
session. Permanent: auth failures, denied, unknown repository/tag/blob, digest mismatch, invalid
manifest, configuration and reference errors. The error types carry the classification
(`MirrordError.transient`); this module turns it into decisions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from mirrord.errors import MirrordError, RateLimited

RETRY_AFTER_CAP = 900.0  # seconds; a longer Retry-After is waited only this long per attempt


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base: float = 2.0
    cap: float = 600.0
    attempts: int = 5  # total attempts, the first included
    jitter: float = 0.2  # +- this fraction

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (1 = first retry): capped, jittered exponential."""
        raw: float = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        spread = raw * self.jitter
        jitter: float = (rng or random).uniform(-spread, spread)
        return max(0.0, raw + jitter)


REQUEST_BACKOFF = BackoffPolicy(base=0.5, cap=30.0, attempts=4, jitter=0.2)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, MirrordError):
        return error.transient
    return isinstance(error, (TimeoutError, ConnectionError))


def retry_delay(error: BaseException, attempt: int, policy: BackoffPolicy) -> float:
    """How long to wait before retrying after `error`; Retry-After wins when it is longer."""
    delay = policy.delay(attempt)
    if isinstance(error, RateLimited) and error.retry_after is not None:
        delay = max(delay, min(error.retry_after, RETRY_AFTER_CAP))
    return delay


def should_retry(error: BaseException, attempts_made: int, policy: BackoffPolicy) -> bool:
    return is_transient(error) and attempts_made < policy.attempts


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # More than 8 digits is years; past 4300, int() refuses (a 5 KB header would crash).
        return float(int(value)) if len(value) <= 8 else 1e8
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_ratelimit(value: str | None) -> int | None:
    """Docker Hub's `ratelimit-remaining: 20;w=21600` -> 20."""
    if not value:
        return None
    head = value.split(";", 1)[0].strip()
    if not (head.isascii() and head.isdigit()) or len(head) > 12:
        return None  # not a count (past 4300 digits int() refuses: a 5 KB header would crash)
    return int(head)
