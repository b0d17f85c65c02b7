"""A raw ASGI app behind ``LifewatchMiddleware``: startup and shutdown timed
from the ASGI lifespan messages, inner phases still recorded.

    uvicorn examples.raw_asgi:app
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from lifewatch import Lifewatch, LifewatchMiddleware

watch = Lifewatch(service="raw")


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                async with watch.phase("warm-up"):
                    pass
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"raw hello"})


app = LifewatchMiddleware(raw_app, watch=watch)
