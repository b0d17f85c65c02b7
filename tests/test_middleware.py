"""LifewatchMiddleware: any ASGI app's lifespan timed, the endpoints served,
every other request passed through unchanged."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient
from uvicorn.config import Config

from lifewatch import Lifewatch, LifewatchMiddleware, State
from tests.conftest import Spans


def test_middleware_times_raw_asgi_app_and_passes_requests_through(
    watch: Lifewatch, spans: Spans
) -> None:
    seen: list[dict[str, Any]] = []

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    async with watch.phase("warmup"):
                        await asyncio.sleep(0)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    with TestClient(LifewatchMiddleware(raw_app, watch=watch)) as client:
        assert watch.state is State.READY
        assert client.get("/x?y=1").text == "hi"
    assert seen[0]["path"] == "/x" and seen[0]["query_string"] == b"y=1"
    assert watch.state is State.STOPPED
    warmup = spans.named("lifespan.startup warmup")
    root = spans.named("lifespan.startup")
    assert warmup.parent is not None and warmup.parent.span_id == root.context.span_id
    assert spans.named("lifespan.shutdown").attributes["lifespan.outcome"] == "ok"


def test_middleware_speaks_lifespan_for_an_app_that_does_not(watch: Lifewatch) -> None:
    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "no lifespan here"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with TestClient(LifewatchMiddleware(http_only, watch=watch)) as client:
        assert watch.state is State.READY
        assert client.get("/").status_code == 204
    assert watch.state is State.STOPPED
    assert watch.startup is not None and watch.startup.outcome == "ok"


def test_middleware_reports_a_raw_app_crashing_in_startup(watch: Lifewatch) -> None:
    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        async with watch.phase("migrations"):
            raise RuntimeError("schema locked")

    with (
        pytest.raises(RuntimeError, match="schema locked"),
        TestClient(LifewatchMiddleware(crashing, watch=watch)),
    ):
        pass
    assert watch.state is State.FAILED
    assert watch.startup is not None and watch.startup.failed_phase == "migrations"


async def constant(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"constant"})


class Other:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"other"})


def middleware() -> LifewatchMiddleware:
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=0)
    return LifewatchMiddleware(constant, watch=watch)


def call(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent


def test_servers_see_an_asgi3_app() -> None:
    """uvicorn (asyncio's test) and hypercorn (inspect's test) must not take it for ASGI 2."""
    app = middleware()
    config = Config(app)
    config.load()
    assert config.interface == "asgi3"
    assert inspect.iscoroutinefunction(app.__call__) or inspect.iscoroutinefunction(
        type(app).__call__
    )


def test_passthrough_and_endpoints_answer() -> None:
    app = middleware()
    assert call(app, "/orders")[1]["body"] == b"constant"
    assert call(app, "/livez")[1]["body"] == b"ok"


def test_replacing_the_wrapped_app_takes_effect() -> None:
    app = middleware()
    app.app = Other()
    assert isinstance(app.app, Other)
    assert call(app, "/orders")[0]["status"] == 201
