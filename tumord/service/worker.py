"""One base for the service's threads: one way to stop, a heartbeat, and a trouble report.

As watchdog's BaseThread: `stop()` sets `stopping`, and each worker's loop ends when it sees it.
`beat()` shows the thread is not hung. `trouble()` says why a stage cannot get on: either it is
waiting for something only the world can fix (no space left, the input folder missing), which
restarting would not help, or it is failing; a failure that lasts `stall_seconds` stops the
systemd watchdog pings (service.healthy), so that systemd restarts the service.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Trouble:
    reason: str  # for a person: what is wrong and where
    waiting: bool  # True: waiting for the world (space, a folder); False: failing
    since: float  # time.monotonic() when it began


class Worker(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self.heartbeat = time.monotonic()
        self._trouble: Trouble | None = None

    def stop(self) -> None:
        self.stopping.set()

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def trouble(self) -> Trouble | None:
        return self._trouble

    def report(self, reason: str, waiting: bool) -> bool:
        """Records a problem; True when it is new (so the caller logs it once, not on every retry)."""
        old = self._trouble
        if old is not None and old.reason == reason:
            return False
        self._trouble = Trouble(reason, waiting, old.since if old is not None else time.monotonic())
        return True

    def resolved(self) -> Trouble | None:
        """Clears the problem; returns it if there was one (so the caller logs the recovery)."""
        old, self._trouble = self._trouble, None
        return old


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def problem(e: BaseException, where: str | os.PathLike) -> tuple[str, bool]:
    """(reason for a person, waiting) for an error writing under `where`. No space (a full disk
    or quota; SQLite says "database or disk is full") is waited out: nothing else would help."""
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
        return f"no space left on {where}", True
    if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return f"no space left on {where}", True
    if isinstance(e, OSError):
        named = f" ({e.filename})" if e.filename else ""
        return f"cannot write to {where}{named}: {e.strerror or e}", False
    return f"cannot write to {where}: {e}", False
