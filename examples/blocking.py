"""Blocking startup code: what a timeout can and cannot do, and the real cut.

uvicorn examples.blocking:app
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from lifewatch import Lifewatch

watch = Lifewatch(service="blocking")


def load_model() -> None:  # sync code that blocks: nothing can interrupt it
    time.sleep(0.5)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # Blocking in the phase: it runs to its end (0.5 s); at 0.1 s the watchdog
    # logs lifespan.phase.overrun with this line, and the outcome is timeout.
    with watch.phase("model", timeout=0.1, critical=False):
        load_model()
    # A real cut: the blocking call in a daemon thread, the phase awaiting it.
    # At 0.1 s the phase ends with PhaseTimeout (here non-critical: degraded);
    # lifespan.thread.abandoned says where the thread is stuck, and it never
    # holds the process's exit.
    async with watch.phase("model-in-a-thread", timeout=0.1, critical=False):
        await watch.to_thread(load_model)
    yield


app = Starlette(lifespan=lifespan)
watch.instrument(app)
