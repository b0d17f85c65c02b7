"""What a fault row checks besides the answer: the process gets its resources back.

A snapshot of the tasks, threads, file descriptors and resident memory of
this process; ``assert_back`` compares two, allowing what a fault may keep
by design (an abandoned check's one task or one thread) and no growth.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, LifewatchMiddleware
from tests.support.probes import call

MEMORY_SLACK = 8 * 1024 * 1024
"""Resident growth allowed over a 10,000-probe run after a warm-up: a leak of
even 1 KiB per probe (10 MB) shows, allocator noise does not."""


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Resources:
    tasks: int
    threads: int
    fds: int
    rss: int

    @classmethod
    def now(cls) -> Resources:
        gc.collect()
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:
            tasks = 0
        return cls(tasks, threading.active_count(), len(os.listdir("/proc/self/fd")), _rss())


async def settled(before: Resources, *, tasks: int = 0, threads: int = 0) -> Resources:
    """The resources once the loop has had a moment, compared with ``before``.

    ``tasks`` and ``threads``: how many more the fault may hold by design.
    """
    deadline = time.monotonic() + 10
    while True:
        after = Resources.now()
        ok = (
            after.tasks <= before.tasks + tasks
            and after.threads <= before.threads + threads
            and after.fds <= before.fds
        )
        if ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert after.tasks <= before.tasks + tasks, (before, after)
    assert after.threads <= before.threads + threads, (before, after)
    assert after.fds <= before.fds, (before, after)
    assert after.rss - before.rss < MEMORY_SLACK, (before, after)
    return after


def watch_with(registry: CollectorRegistry | None = None, **options: Any) -> Lifewatch:
    return Lifewatch(service="faults", registry=registry or CollectorRegistry(), **options)


def app_of(watch: Lifewatch) -> Any:
    return LifewatchMiddleware(Starlette(), watch=watch)


async def probes(app: Any, path: str, n: int, *, batch: int = 50, **kw: Any) -> list[int]:
    """``n`` probes, ``batch`` at a time; their statuses."""
    statuses: list[int] = []
    for start in range(0, n, batch):
        answers = await asyncio.gather(
            *(call(app, path, **kw) for _ in range(min(batch, n - start)))
        )
        statuses.extend(status for status, _, _ in answers)
    return statuses
