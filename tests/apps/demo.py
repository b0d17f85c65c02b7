"""A small app with several phases, run under real servers by the tests.

Environment: ``LW_MODE`` (``ok``, or ``fail`` for a critical startup failure),
``LW_PUSHGATEWAY`` (URL), ``LW_JOB``, ``LW_INSTANCE``, ``LW_PUSH_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    pushgateway=Pushgateway(
        URL,
        job=os.environ.get("LW_JOB"),
        instance=os.environ.get("LW_INSTANCE"),
        timeout=float(os.environ.get("LW_PUSH_TIMEOUT", "2")),
    )
    if URL
    else None,
)


async def fake_checks() -> None:
    """Stand-in for the probes work: it will run real checks into these families.

    Until then this writes ``lifespan_check_*`` the way the checks will, so the
    dashboard's check panels have data to prove themselves against.
    """
    m = watch.metrics
    n = 0
    while True:
        n += 1
        for check, probe, ok in (
            ("postgres", "readiness", True),
            ("redis", "readiness", n % 4 != 0),
            ("event-loop", "liveness", True),
        ):
            m.check_duration.labels(check).observe(random.uniform(0.001, 0.05))
            m.check_status.labels(check, probe).set(1 if ok else 0)
            if not ok:
                m.check_failures.labels(check, "error").inc()
        await asyncio.sleep(0.2)


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
        await asyncio.sleep(0.1)
    checks = asyncio.get_running_loop().create_task(fake_checks())
    yield
    checks.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await checks
    async with watch.phase("flush-queue"):
        await asyncio.sleep(0.05)
    async with watch.phase("database"):
        await asyncio.sleep(0.02)


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"pid {os.getpid()}\n")


app = watch.instrument(Starlette(routes=[Route("/", home)], lifespan=lifespan))
