"""Health checks and a supervised task, as the README's probe examples show.

uvicorn examples.checks:app
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lifewatch import Lifewatch

watch = Lifewatch(service="orders")


@watch.check("postgres", timeout=1.0)  # readiness, critical, run on each probe
async def postgres() -> None:
    await asyncio.sleep(0.001)  # await pool.execute("SELECT 1"): raise when down


@watch.check("redis", critical=False, interval=10)  # refreshed in the background
def redis() -> bool:  # a sync check runs in a worker thread
    return False  # redis is down here: /readyz says warn, not fail


@watch.check("search", interval=10)
async def search() -> None:
    pass


async def loop_lag_ok() -> bool:
    """Liveness that depends on nothing outside the process: the loop still turns."""
    start = asyncio.get_running_loop().time()
    await asyncio.sleep(0)
    return asyncio.get_running_loop().time() - start < 0.1


watch.add_check("event-loop", loop_lag_ok, probes=("liveness",), timeout=0.2)


async def consume() -> None:
    await asyncio.Event().wait()  # a consumer that runs until shutdown


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    consumer = watch.supervise(asyncio.create_task(consume()), name="consumer")
    yield
    consumer.cancel()


app = watch.instrument(FastAPI(lifespan=lifespan))
