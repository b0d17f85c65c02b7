"""A small app with several phases, run under real servers by the tests.

Environment: ``LW_MODE`` (``ok``, or ``fail`` for a critical startup failure),
``LW_PUSHGATEWAY`` (URL), ``LW_JOB``, ``LW_INSTANCE``, ``LW_PUSH_TIMEOUT``,
``LW_DRAIN_DELAY``, ``LW_SLOWER`` (seconds more in a startup phase: a slower
version); ``APP_VERSION`` and ``GIT_COMMIT`` as lifewatch reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifewatch import Lifewatch, Pushgateway

MODE = os.environ.get("LW_MODE", "ok")
URL = os.environ.get("LW_PUSHGATEWAY")

watch = Lifewatch(
    service="demo",
    shutdown_timeout=10,
    drain_delay=float(os.environ.get("LW_DRAIN_DELAY", "5")),
    pushgateway=Pushgateway(
        URL,
        job=os.environ.get("LW_JOB"),
        instance=os.environ.get("LW_INSTANCE"),
        timeout=float(os.environ.get("LW_PUSH_TIMEOUT", "2")),
    )
    if URL
    else None,
)


_redis_runs = itertools.count(1)


@watch.check("postgres", interval=0.2)
async def postgres() -> None:
    await asyncio.sleep(random.uniform(0.001, 0.05))


@watch.check("redis", interval=0.2, critical=False)
async def redis() -> bool:
    """Fails one run in four, so the failure and flapping panels have data."""
    await asyncio.sleep(random.uniform(0.001, 0.02))
    return next(_redis_runs) % 4 != 0


@watch.check("event-loop", probes=("liveness",), interval=0.2)
def event_loop() -> None:
    """A sync check, run in a thread."""


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with watch.phase("config"):
        await asyncio.sleep(0.01)
    async with watch.phase("database", timeout=5):
        await asyncio.sleep(0.05)
    async with watch.phase("cache-warmup", critical=False):
        await asyncio.sleep(0.02)
        raise ConnectionError("cache unreachable")
    if MODE == "fail":
        async with watch.phase("migrations"):
            await asyncio.sleep(0.03)
            raise RuntimeError("migration 42 failed")
    async with watch.phase("search-index"):
        await asyncio.sleep(0.1 + float(os.environ.get("LW_SLOWER", "0")))
    yield
    async with watch.phase("flush-queue"):
        await asyncio.sleep(0.05)
    async with watch.phase("database"):
        await asyncio.sleep(0.02)


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"pid {os.getpid()}\n")


app = watch.instrument(Starlette(routes=[Route("/", home)], lifespan=lifespan))
