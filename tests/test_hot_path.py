"""The shortcuts on the request path change nothing a server or a user can see."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from prometheus_client import CollectorRegistry
from uvicorn.config import Config

from lifewatch import Lifewatch, LifewatchMiddleware


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
