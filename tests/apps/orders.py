"""An app with its own metric prefix and timeouts, for the rendered dashboard and rules.

``Lifewatch(namespace="orders")``: every metric is ``orders_*``, so only a
dashboard and rules rendered for it see anything. Environment as for
``tests.apps.demo``: ``LW_MODE`` (``ok`` or ``fail``), ``LW_PUSHGATEWAY``,
``LW_JOB``, ``LW_INSTANCE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifewatch import Lifewatch, Pushgateway

MODE = os.environ.get("LW_MODE", "ok")
URL = os.environ.get("LW_PUSHGATEWAY")

watch = Lifewatch(
    service="orders",
    namespace="orders",
    startup_timeout=40,
    shutdown_timeout=12,
    drain_delay=1,
    metrics_path="/internal/metrics",
    pushgateway=Pushgateway(
        URL, job=os.environ.get("LW_JOB"), instance=os.environ.get("LW_INSTANCE")
    )
    if URL
    else None,
)
_runs = itertools.count(1)


@watch.check("postgres", interval=0.2)
async def postgres() -> None:
    await asyncio.sleep(0.002)


@watch.check("redis", interval=0.2, critical=False)
async def redis() -> bool:
    """Fails one run in three, so the failure panels have data."""
    return next(_runs) % 3 != 0


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with watch.phase("database", timeout=5):
        await asyncio.sleep(0.03)
    async with watch.phase("cache-warmup", critical=False):
        raise ConnectionError("cache unreachable")
    if MODE == "fail":
        async with watch.phase("migrations"):
            raise RuntimeError("migration 42 failed")
    yield
    async with watch.phase("flush-queue"):
        await asyncio.sleep(0.02)


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("orders\n")


app = watch.instrument(Starlette(routes=[Route("/", home)], lifespan=lifespan))
