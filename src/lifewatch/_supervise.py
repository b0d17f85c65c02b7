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
from dataclasses import dataclass, field
from typing import Any

SUPERVISED_PREFIX = "supervised/"
"""Supervised tasks show up in ``/livez`` as ``supervised/<name>``, like the
kube-apiserver's ``poststarthook/<name>`` entries."""


@dataclass(eq=False)
class Supervised:
    """One supervised task and how it ended, if it did."""

    name: str
    task: asyncio.Task[Any]
    died: bool = False
    reason: str | None = None
    """``error``, ``cancelled`` or ``exited``."""
    detail: str | None = None
    error: BaseException | None = None
    changed_at: float = field(default_factory=time.time)
    changed_monotonic: float = field(default_factory=time.monotonic)

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
