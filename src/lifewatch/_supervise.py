"""``watch.supervise(task)``: a task whose death breaks liveness.

A consumer loop or a cache refresher that dies leaves a process that answers
HTTP but no longer does its job; the kubelet can only restart it if
``/livez`` says so (Kludex/uvicorn#2308). A supervised task is expected to run
until shutdown: ending before it, by an exception, a cancellation or a plain
return, is a death. Ending once shutdown began is not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

SUPERVISED_PREFIX = "supervised/"
"""Supervised tasks show up in ``/livez`` as ``supervised/<name>``, like the
kube-apiserver's ``poststarthook/<name>`` entries."""


class Supervised:
    """One supervised task and how it ended, if it did.

    A plain class, not a dataclass: ``@dataclass`` runs ``exec`` at import.
    """

    __slots__ = (
        "changed_at",
        "changed_monotonic",
        "detail",
        "died",
        "error",
        "name",
        "reason",
        "task",
    )

    name: str
    task: asyncio.Task[Any]
    died: bool
    reason: str | None
    """``error``, ``cancelled`` or ``exited``."""
    detail: str | None
    error: BaseException | None
    changed_at: float
    changed_monotonic: float

    def __init__(self, name: str, task: asyncio.Task[Any]) -> None:
        self.name = name
        self.task = task
        self.died = False
        self.reason = self.detail = self.error = None
        self.changed_at = time.time()
        self.changed_monotonic = time.monotonic()

    def __repr__(self) -> str:
        return f"Supervised(name={self.name!r}, died={self.died!r}, reason={self.reason!r})"

    @property
    def entry(self) -> str:
        return SUPERVISED_PREFIX + self.name


def watch_task(
    record: Supervised,
    shutting_down: Callable[[], bool],
    on_death: Callable[[Supervised], None],
) -> None:
    """Call ``on_death(record)`` if the task ends before shutdown."""

    def done(task: asyncio.Task[Any]) -> None:
        if shutting_down():
            return
        if task.cancelled():
            record.reason, record.detail = "cancelled", "cancelled"
        else:
            exc = task.exception()
            if exc is None:
                record.reason, record.detail = "exited", "returned before shutdown"
            else:
                record.reason, record.detail = "error", f"{type(exc).__name__}: {exc}"
                record.error = exc
        record.died = True
        record.changed_at, record.changed_monotonic = time.time(), time.monotonic()
        on_death(record)

    record.task.add_done_callback(done)
