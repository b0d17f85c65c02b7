"""The ops listener, and the drain endpoint.

``Lifewatch(ops_address="0.0.0.0:9000")`` serves the probes, ``/metrics``
and the timeline on a port of their own, from threads of their own, from the
first lifespan event on. Under uvicorn the app's port is bound only once
startup completed (Kludex/uvicorn#499), and a phase that blocks the event
loop silences it; the ops listener answers all along: ``/startupz`` is 503
naming the running phase, Prometheus sees startup progress.

It is the standard library's ``ThreadingHTTPServer`` (HTTP parsed by it, not
here), each connection in a daemon thread with an event loop of its own,
calling the very ASGI endpoints the middleware serves, so there is one
renderer for every answer. Checks still run on the app's loop (``Health``
hands them over, bounded by their timeouts). ``SO_REUSEPORT`` lets the
workers of one pod share the port; the kernel spreads connections among
them, and each answers for its own process, as on the app's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._http import TEXT, not_allowed, respond, response_headers
from ._records import Notice, RunRecord
from ._sink import Sink
from ._validate import validate_address

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle
    from ._rendezvous import Rendezvous

MAX_BODY = 65536
"""Bytes of a request body read (and dropped): no endpoint takes one."""
_NOT_FOUND = b"not found\n"


def is_loopback(client: Any) -> bool:
    """Whether an ASGI ``client`` is this host (``127.0.0.0/8``, ``::1``, mapped v4)."""
    if not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class DrainEndpoint:
    """``POST`` from this host: drain now (a ``preStop`` hook's request).

    Readiness fails at once and the app goes on serving; the answer says how
    many seconds the drain has left, which ``python -m lifewatch drain``
    waits out. Anyone else gets 403: a drain takes the instance out of rotation.
    With a ``rendezvous``, the other workers sharing the port drain too, and
    the answer counts them (``workers``, ``not_ready``, ``failed``).
    """

    def __init__(
        self,
        request: Callable[[], float],
        drain_delay: float,
        rendezvous: Rendezvous | None = None,
    ) -> None:
        self.request = request
        self.drain_delay = drain_delay
        self.rendezvous = rendezvous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method != "POST":
            await not_allowed(send, b"POST")
            return
        if not is_loopback(scope.get("client")):
            body = b"forbidden: the drain is asked for from this host only\n"
            await respond(send, method, 403, response_headers(TEXT, body), body)
            return
        remaining = self.request()
        answer: dict[str, Any] = {
            "draining": remaining > 0,
            "remaining": round(remaining, 3),
            "drain_delay": self.drain_delay,
            "workers": int(remaining > 0),
            "not_ready": int(remaining <= 0),
            "failed": {},
        }
        if self.rendezvous is not None:
            answer = await self.rendezvous.forward(answer, scope.get("server"))
        body = json.dumps(answer).encode() + b"\n"
        await respond(send, method, 202, response_headers(b"application/json", body), body)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, scope["method"], 404, response_headers(TEXT, _NOT_FOUND), _NOT_FOUND)


_dates: tuple[int, str] = (0, "")


def _date() -> str:
    """The ``Date`` header's value, made once a second."""
    global _dates
    now = int(time.time())
    if _dates[0] != now:
        _dates = (now, formatdate(now, usegmt=True))
    return _dates[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never holds up the process's exit
    block_on_close = False
    allow_reuse_address = True
    routes: Mapping[str, ASGIApp] = {}
    on_error: Callable[[BaseException, str], None] = staticmethod(lambda exc, path: None)

    def server_bind(self) -> None:
        if hasattr(socket, "SO_REUSEPORT"):  # Linux, the BSDs, macOS
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not an error worth a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        if error is not None:
            self.on_error(error, "")


class _Handler(BaseHTTPRequestHandler):
    """One connection: each request becomes an ASGI call on this thread's loop."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as a scraper or wrk uses it
    server_version = "lifewatch"
    sys_version = ""
    timeout = 10  # an idle keep-alive connection gives its thread back
    _loop: asyncio.AbstractEventLoop | None = None

    def setup(self) -> None:
        super().setup()
        # One answer is one write, sent at once: no wait on a delayed ACK.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path) or "/"
        declared = self.headers.get("content-length", "")
        length = min(int(declared), MAX_BODY) if declared.isdigit() else 0
        body = self.rfile.read(length) if length else b""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.request_version.removeprefix("HTTP/"),
            "method": self.command,
            "scheme": "http",
            "path": path,
            "raw_path": parts.path.encode("latin-1", "replace"),
            "query_string": parts.query.encode("latin-1", "replace"),
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1", "replace"))
                for k, v in self.headers.items()
            ],
            "client": self.client_address[:2],
            "server": self.server.server_address[:2],
        }
        app = self.server.routes.get(path, _not_found)
        kept = getattr(app, "kept", None)
        answer = kept(scope) if kept is not None else None
        if answer is not None:  # a probe's kept answer: no event loop needed
            status, headers, content = answer
        else:
            status, headers, content = self._call(app, scope, body, path)
        if self.command == "HEAD":
            content = b""
        self._write(status, headers, content)

    def _call(
        self, app: ASGIApp, scope: Scope, body: bytes, path: str
    ) -> tuple[int, Iterable[tuple[bytes, bytes]], bytes]:
        """Run the ASGI endpoint on this thread's own event loop; its whole answer."""
        messages: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            messages.append(message)

        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(app(scope, receive, send))
            start = messages[0]
            content = b"".join(m.get("body", b"") for m in messages[1:])
            return int(start["status"]), start.get("headers", ()), content
        except Exception as exc:  # an endpoint never raises; if one does, say so
            self.server.on_error(exc, path)
            content = b"lifewatch: the endpoint failed (see the log)\n"
            return 503, response_headers(TEXT, content), content

    def _write(self, status: int, headers: Iterable[tuple[bytes, bytes]], content: bytes) -> None:
        """The whole answer in one write: one segment on the wire for a probe."""
        reason = self.responses.get(status, ("",))[0]
        head = [b"%s %d %s\r\n" % (self.protocol_version.encode(), status, reason.encode())]
        head.append(b"date: %s\r\n" % _date().encode())
        head.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
        if self.close_connection:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(content)
        self.wfile.write(b"".join(head))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            loop, self._loop = self._loop, None
            if loop is not None:
                loop.close()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: a probe every few seconds is not news."""


class OpsListener(Sink):
    """Serves ``routes`` on ``address`` from the first lifespan event to the last.

    Started when startup begins; closed when shutdown completes or startup
    failed (the process is going away), in a thread, so no exit waits on it.
    A port that cannot be bound is one logged line naming the address, and
    the app starts without the listener.
    """

    def __init__(self, lifecycle: Lifecycle, address: str, routes: Mapping[str, ASGIApp]) -> None:
        self.lifecycle = lifecycle
        self.address = address
        self.host, self.requested_port = validate_address(address, "ops_address")
        self.routes = routes
        self._server: _Server | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The port listened on (the one picked, for port 0), or None when not listening."""
        server = self._server
        return None if server is None else int(server.server_address[1])

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            self.start()

    def run_end(self, run: RunRecord) -> None:
        failed_startup = run.event == "startup" and run.outcome not in ("ok", "degraded")
        if failed_startup or (run.event == "shutdown" and not run.rollback):
            self.stop()

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            server_class = type("_OpsServer", (_Server,), {"address_family": family})
            try:
                server = server_class((self.host, self.requested_port), _Handler)
            except OSError as exc:
                self.lifecycle.notify(
                    Notice(
                        "lifespan.ops.failed",
                        "error",
                        {
                            "address": self.address,
                            "detail": f"cannot listen on {self.address}: "
                            f"{exc.strerror or exc}; the probes there will not answer",
                        },
                    )
                )
                return
            server.routes = self.routes
            server.on_error = self._failed
            self._server = server
        threading.Thread(target=server.serve_forever, name="lifewatch-ops", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return

        def close() -> None:
            server.shutdown()  # returns within serve_forever's 0.5 s poll
            server.server_close()

        threading.Thread(target=close, name="lifewatch-ops-close", daemon=True).start()

    def _failed(self, exc: BaseException, path: str) -> None:
        with contextlib.suppress(Exception):
            self.lifecycle.notify(
                Notice("lifespan.probe.error", "error", {"path": path, "listener": "ops"}, exc)
            )
