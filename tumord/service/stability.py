"""When is a file complete? When its signature has held still for a quiet window.

A signature is (inode, size, mtime, ctime) from lstat. ctime matters: it moves on every write,
chmod and utime, and no user can set it back, so a copy that restores the original mtime at
the end (`cp -p`, rsync -t, unzip) still counts as a change. Comparing two signatures taken a
window apart is independent of the clocks of network file servers.

Two windows: a short `settle` after the file was closed after writing (the writer said it is
done; we only confirm nothing else follows; a file renamed into the folder was complete before
it arrived, so the intake gives it no window at all), and a long `stable` for
files seen in other ways (creation, modification, a rescan, the polling observer), where a
slow writer may still hold the file open.
"""
from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass

Signature = tuple[int, int, int, int]


def signature(path: str) -> Signature | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _Candidate:
    sig: Signature
    closed: bool  # a close-after-write or move-in was the last word on this file
    due: float
    generation: int


class Stability:
    """Candidate files and when each is next checked; not thread-safe (the intake thread owns it)."""

    def __init__(self, settle: float, stable: float, clock=time.monotonic):
        self.settle, self.stable, self.clock = settle, stable, clock
        self._candidates: dict[str, _Candidate] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._generation = 0

    def __contains__(self, path: str) -> bool:
        return path in self._candidates

    def __len__(self) -> int:
        return len(self._candidates)

    def note(self, path: str, closed: bool, delay: float | None = None) -> None:
        """Something happened to `path`; it must now stay unchanged for a full window."""
        sig = signature(path)
        if sig is None:
            self.forget(path)
            return
        window = delay if delay is not None else (self.settle if closed else self.stable)
        self._generation += 1
        due = self.clock() + window
        self._candidates[path] = _Candidate(sig, closed, due, self._generation)
        heapq.heappush(self._heap, (due, self._generation, path))

    def signature_of(self, path: str) -> Signature | None:
        """The signature `path` had when last noted, if it is a candidate."""
        c = self._candidates.get(path)
        return c.sig if c is not None else None

    def forget(self, path: str) -> None:
        self._candidates.pop(path, None)  # its heap entry is skipped by generation

    def next_due(self) -> float | None:
        while self._heap:
            due, gen, path = self._heap[0]
            c = self._candidates.get(path)
            if c is not None and c.generation == gen:
                return due
            heapq.heappop(self._heap)
        return None

    def pop_ready(self) -> list[str]:
        """Files whose window has passed with an unchanged signature; changed ones wait again."""
        now, ready = self.clock(), []
        while self._heap and self._heap[0][0] <= now:
            _, gen, path = heapq.heappop(self._heap)
            c = self._candidates.get(path)
            if c is None or c.generation != gen:
                continue
            sig = signature(path)
            if sig is None:
                del self._candidates[path]
            elif sig != c.sig:
                self.note(path, c.closed)
            else:
                del self._candidates[path]
                ready.append(path)
        return ready
