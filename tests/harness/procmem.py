"""A child process's own peak RSS, read from /proc while it runs.

`wait4()`'s `ru_maxrss` cannot be used for this: at exec, Linux charges the child with the RSS
of the parent it was forked from (pytest, or the benchmark), so a child smaller than its parent
reports the parent's size. `VmHWM` in /proc/PID/status is the high-water mark of the process's
current memory (the program it exec'd), so a sample taken any time after the peak sees it.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

_VMHWM = re.compile(r"^VmHWM:\s+(\d+) kB", re.MULTILINE)


def high_water_kib(pid: int) -> int | None:
    """The process's peak RSS so far in KiB; None once it has exited (or never existed)."""
    try:
        match = _VMHWM.search(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None  # a zombie has no memory left


class PeakRss(threading.Thread):
    """Samples a running child's peak RSS until it exits or `stop()` is called.

    Start it only after the child has exec'd (`subprocess.Popen` returns after that)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.kib = 0
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.is_set():
            kib = high_water_kib(self.pid)
            if kib is None:
                return
            self.kib = max(self.kib, kib)
            self._done.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._done.set()
        self.join()
        return self.kib * 1024
