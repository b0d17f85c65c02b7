"""Background phases (``watch.background``): startup phases that run while the server serves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any


class BackgroundPhases:
    """The background phases of one lifecycle. ``on_end`` is told when one ends
    (the instance may now be ready), ``on_failure`` when one failed."""

    def __init__(self, on_end: Callable[[], None], on_failure: Callable[[], None]) -> None:
        self._on_end = on_end
        self._on_failure = on_failure
        self.tasks: set[asyncio.Task[None]] = set()
        self.failed = False
        self.stopping = False
        """Shutdown is cancelling them: their end is no failure."""

    def start(
        self, name: str, phase: AbstractAsyncContextManager[Any], func: Callable[[], Awaitable[Any]]
    ) -> asyncio.Task[None]:
        """Run ``func`` inside ``phase`` in a task of its own."""

        async def run() -> None:
            try:
                async with phase:
                    await func()
            except Exception:
                self.failed = True
                self._on_failure()

        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            self._on_end()

        task = asyncio.get_running_loop().create_task(run(), name=f"lifewatch:{name}")
        self.tasks.add(task)
        task.add_done_callback(done)
        return task

    def names(self) -> list[str]:
        return sorted(t.get_name().removeprefix("lifewatch:") for t in self.tasks)

    async def stop(self) -> None:
        """Cancel the ones still running, and wait for them."""
        tasks = list(self.tasks)
        self.stopping = True
        try:
            for task in tasks:
                task.cancel()
            if tasks:  # under trio there is no asyncio loop to gather on
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.stopping = False
