"""Logging: readable text in a terminal, JSON lines for the daemon; redaction in one place.

Every line goes through `RedactingFormatter` as the last step before the sink, so the message,
its arguments, the structured fields and any traceback are scrubbed by the same rules
(`mirrord.redact`), whichever format wrote the line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from mirrord.redact import redact_text

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
NOISY = ("aiohttp", "alembic")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a caller passed with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(fields(record))
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`LEVEL message key=value ...`; with `timestamps`, a UTC time first (for the daemon)."""

    def __init__(self, timestamps: bool = False) -> None:
        when = "%(asctime)s " if timestamps else ""
        super().__init__(f"{when}%(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in fields(record).items() if v not in (None, ""))
        return f"{line} [{extra}]" if extra else line


class RedactingFormatter(logging.Formatter):
    """Scrubs the finished line: signed URL query values, userinfo, Authorization values."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


def resolve_format(fmt: str, stream: TextIO) -> str:
    """`auto`: text for a person at a terminal, JSON lines for journald and log shippers."""
    if fmt != "auto":
        return fmt
    return "text" if stream.isatty() else "json"


def setup_logging(level: str = "warning", fmt: str = "text", timestamps: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    json_lines = resolve_format(fmt, sys.stderr) == "json"
    inner = JsonFormatter() if json_lines else TextFormatter(timestamps)
    handler.setFormatter(RedactingFormatter(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def held_records() -> Iterator[list[logging.LogRecord]]:
    """Hold the records logged inside the block, e.g. while loading the config that says how
    to log; `replay()` them once logging is set up. If the block fails, they are written with
    the logging in place before it, so no warning is lost."""
    held: list[logging.LogRecord] = []
    root = logging.getLogger()
    saved = root.handlers[:]
    catcher = _Catcher(held)
    root.handlers[:] = [catcher]
    try:
        yield held
    except BaseException:
        root.handlers[:] = saved
        replay(held)
        held.clear()
        raise
    finally:
        if catcher in root.handlers:
            root.handlers[:] = saved


def replay(records: list[logging.LogRecord]) -> None:
    for record in records:
        logging.getLogger(record.name).handle(record)


class _Catcher(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)
