"""``watch.supervise(task)``: a task whose death breaks liveness.

A consumer loop that dies leaves a process that answers HTTP but no longer
does its job; the kubelet restarts it only if ``/livez`` says so
(Kludex/uvicorn#2308). A supervised task ending before shutdown (an exception,
a cancellation or a plain return) is a death; ending once shutdown began is not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

SUPERVISED_PREFIX = "supervised/"
"""``/livez`` entries: ``supervised/<name>``, as the kube-apiserver's ``poststarthook/<name>``."""


@dataclasses.dataclass(eq=False)  # one record per task: compared by identity
class Supervised:
    """One supervised task and how it ended, if it did."""

    name: str
    task: asyncio.Task[Any] = dataclasses.field(repr=False)
    died: bool = False
    reason: str | None = None
    """``error``, ``cancelled`` or ``exited``."""
    detail: str | None = dataclasses.field(default=None, repr=False)
    error: BaseException | None = dataclasses.field(default=None, repr=False)
    changed_at: float = dataclasses.field(default_factory=time.time, repr=False)

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
        elif (exc := task.exception()) is None:
            record.reason, record.detail = "exited", "returned before shutdown"
        else:
            record.reason, record.detail = "error", f"{type(exc).__name__}: {exc}"
            record.error = exc
        record.died = True
        record.changed_at = time.time()
        on_death(record)

    record.task.add_done_callback(done)
