"""``LifewatchMiddleware``: times the ASGI lifespan messages of any app and serves
lifewatch's endpoints. An app that raises before its first lifespan ``receive()``
does not speak the protocol (as uvicorn's ``--lifespan auto`` judges): lifewatch
logs it and speaks it for the app, unless ``strict=True``, where the error goes on.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._lifecycle import Lifecycle
from ._records import Notice
from ._validate import validate_bool


class LifewatchMiddleware:
    """Times the lifespan of ``app`` and serves the endpoints of ``watch``."""

    def __init__(self, app: ASGIApp, *, watch: Any, strict: bool = False) -> None:
        # A Lifewatch (typed Any: this module sits below the facade).
        lifecycle = getattr(watch, "_lifecycle", None)
        if not isinstance(lifecycle, Lifecycle):
            raise TypeError(f"watch must be a lifewatch.Lifewatch; got {watch!r}")
        if not callable(app):
            raise TypeError(f"app must be an ASGI application (a callable); got {app!r}")
        self.app = app
        self.watch = watch
        self.strict = validate_bool(strict, "strict")
        self._lifecycle = lifecycle
        # The watch's own dict, so endpoints added later are served too.
        self._endpoints: Mapping[str, ASGIApp] = watch._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self._lifecycle.readiness.closing and scope.get("http_version") in _KEEP_ALIVE:
                send = _closing(send)
            await self._endpoints.get(scope["path"], self.app)(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        lc = self._lifecycle
        received: list[str] = []
        sent: list[str] = []

        async def watched_receive() -> Message:
            message = await receive()
            kind = message["type"]
            received.append(kind)
            if kind == "lifespan.startup":
                lc.begin_run("startup")
            elif kind == "lifespan.shutdown":
                lc.begin_run("shutdown")
            return message

        async def watched_send(message: Message) -> None:
            kind = message["type"]
            sent.append(kind)
            run = lc.current
            if run is not None:
                if kind in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
                    lc.end_run(run)
                elif kind in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
                    lc.end_run(run, failed=True)
            await send(message)

        try:
            await self.app(scope, watched_receive, watched_send)
        except BaseException as exc:
            if not received and not sent and not self.strict and isinstance(exc, Exception):
                detail = (
                    "the app raised before receiving a lifespan message; "
                    "lifewatch speaks the lifespan protocol for it"
                )
                lc.notify(Notice("lifespan.unsupported", "warning", {"detail": detail}, exc))
                await self._speak_for_app(receive, send)
                return
            run = lc.current
            if run is None and not received:
                run = lc.begin_run("startup")  # crashed before it even heard of startup
            if run is not None:
                lc.end_run(run, exc)
            if not self.strict and received and received[-1] == "lifespan.startup" and not sent:
                # A raw app crashed in startup without a word: tell the server, so it exits.
                failed = lc.startup.failed_phase if lc.startup else None
                await send(
                    {
                        "type": "lifespan.startup.failed",
                        "message": f"lifewatch: startup phase {failed or 'startup'!r} failed\n"
                        + "".join(traceback.format_exception(exc)),
                    }
                )
            raise

    async def _speak_for_app(self, receive: Receive, send: Send) -> None:
        lc = self._lifecycle
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "lifespan.startup":
                lc.end_run(lc.begin_run("startup"))
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                run = lc.begin_run("shutdown")
                await lc.background.stop()
                lc.end_run(run)
                await send({"type": "lifespan.shutdown.complete"})
                return


# HTTP/2 and 3 forbid a ``Connection`` header (the server sends GOAWAY there).
_KEEP_ALIVE = ("1.1", "1.0")


def _closing(send: Send) -> Send:
    """``send`` adding ``Connection: close`` while draining: a keep-alive client then
    reconnects to a pod in rotation (as under Envoy and nginx), rather than send a
    request on this one just as the server closes the connection."""

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(k.lower() == b"connection" for k, _ in headers):
                headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await send(message)

    return closing_send
