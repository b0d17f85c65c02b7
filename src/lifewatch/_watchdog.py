"""One watchdog thread per process: it keeps phase timeouts honest.

Blocking code (SQLAlchemy, alembic, a model load) cannot be cancelled, and a
loop it blocks fires no timeout. So a daemon thread, started by the first
phase with a timeout, wakes at each deadline and, if the phase still runs,
hands the frame of the thread running it (``sys._current_frames()``) to a
callback: that frame is where the thread is stuck.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

STACK_LIMIT = 40
"""Innermost frames kept: enough to reach the app's own code from a driver's."""


class Watch:
    """One deadline; ``cancel()`` when the phase ends before it."""

    def __init__(self, thread_id: int, callback: Callable[[FrameType | None], None]) -> None:
        self.thread_id = thread_id
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Watchdog:
    """Deadlines on ``time.perf_counter()``, the clock phase records use."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh: the thread does not survive a fork (gunicorn's workers)."""
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(
        self, deadline: float, thread_id: int, callback: Callable[[FrameType | None], None]
    ) -> Watch:
        """Call ``callback(frame of thread_id)`` at ``deadline`` unless cancelled first."""
        entry = Watch(thread_id, callback)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), entry))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="lifewatch-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    def _next(self) -> Watch:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                wait = self._heap[0][0] - time.perf_counter() if self._heap else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            entry = self._next()
            if entry.cancelled:
                continue
            frame = sys._current_frames().get(entry.thread_id)
            with contextlib.suppress(Exception):  # it reports through the lifecycle; never die
                entry.callback(frame)
            del frame


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG.reset)


@functools.cache
def _roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The stdlib and site-packages directories, read on the first overrun
    (``sysconfig.get_paths()`` costs about 1 ms, too much for every import)."""
    import sysconfig

    paths = sysconfig.get_paths()
    return (
        tuple(os.path.join(paths[k], "") for k in ("stdlib", "platstdlib")),
        tuple(os.path.join(paths[k], "") for k in ("purelib", "platlib")),
    )


def describe(frame: FrameType | None) -> tuple[str, str]:
    """Where a thread is stuck, and its stack (innermost last).

    Where: the innermost line outside Python's standard library (the app's
    ``event.wait()`` rather than ``threading.py``'s), else the innermost line.
    """
    if frame is None:
        return "unknown (the thread has ended)", ""
    summary = traceback.StackSummary.from_list(traceback.extract_stack(frame)[-STACK_LIMIT:])
    stdlib, packages = _roots()  # site-packages may sit inside the stdlib directory
    outside = [
        f for f in summary if not f.filename.startswith(stdlib) or f.filename.startswith(packages)
    ]
    last = outside[-1] if outside else summary[-1]
    where = f"{last.filename}:{last.lineno} in {last.name}"
    if last.line:
        where += f": {last.line.strip()}"
    return where, "".join(summary.format())
