"""Small apps and readers the unit tests share."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from lifewatch import Lifewatch


def raw_app() -> Any:
    """A raw ASGI app that speaks lifespan and answers every request ``app``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    return app


def phase_names(watch: Lifewatch, event: str = "startup") -> list[str]:
    run = watch.startup if event == "startup" else watch.shutdown
    assert run is not None
    return [p.name for p in run.phases]


async def state_endpoint(request: Request) -> JSONResponse:
    return JSONResponse({"db": request.state.db, "extra": getattr(request.state, "extra", None)})
