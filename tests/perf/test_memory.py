"""Nothing is kept per request: a leak on the request path fails here.

Counts, not times (the machine is shared): after a warm-up, 20,000 requests
of each kind may leave a few objects of the event loop's own bookkeeping
behind, never one per request. ``benchmarks/memory.py`` shows the same over
100,000 requests with resident memory.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch, LifewatchMiddleware

REQUESTS = 20_000
SLACK_OBJECTS = 50
SLACK_BLOCKS = 1_000  # a per-request leak of one small object would be 20,000


async def constant(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def counts() -> tuple[int, int]:
    gc.collect()
    return len(gc.get_objects()), sys.getallocatedblocks()


@pytest.mark.parametrize(
    ("path", "query"),
    [("/orders", b""), ("/readyz", b""), ("/readyz", b"verbose"), ("/livez", b"")],
    ids=["passthrough", "readyz", "readyz-verbose", "livez"],
)
def test_requests_leave_memory_flat(path: str, query: bytes) -> None:
    async def ok() -> bool:
        return True

    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=0)
    watch.add_check("db", ok, interval=60)
    app = LifewatchMiddleware(constant, watch=watch)
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async def burst(n: int) -> None:
        for _ in range(n):
            scope = {
                "type": "http",
                "method": "GET",
                "path": path,
                "query_string": query,
                "headers": [(b"host", b"pod"), (b"accept", b"*/*")],
            }
            await app(scope, receive, send)

    async def main() -> tuple[tuple[int, int], tuple[int, int]]:
        async with LifespanManager(app):
            while watch._health.runners["db"].result is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await burst(1_000)
            before = counts()
            await burst(REQUESTS)
            return before, counts()

    (objects0, blocks0), (objects1, blocks1) = asyncio.run(main())
    assert statuses == {200}
    assert objects1 - objects0 < SLACK_OBJECTS, (objects0, objects1)
    assert blocks1 - blocks0 < SLACK_BLOCKS, (blocks0, blocks1)
