"""The ops listener.

``Lifewatch(ops_address="0.0.0.0:9000")`` serves the probes, ``/metrics``
and the timeline on a port of their own, from threads of their own, from the
first lifespan event on. Under uvicorn the app's port is bound only once
startup completed (Kludex/uvicorn#499), and a phase that blocks the event
loop silences it; the ops listener answers all along: ``/startupz`` is 503
naming the running phase, Prometheus sees startup progress.

Two real HTTP servers, neither parsing by hand here. Where uvicorn and
httptools are importable, uvicorn's httptools protocol on an event loop in a
thread of the listener's own: the same C parser the app's port has under
uvicorn, so a probe costs about what it costs on the app's port. Else the
standard library's ``ThreadingHTTPServer``, each connection in a daemon
thread with an event loop of its own (a probe's kept answer needs none).
Both call the very ASGI endpoints the middleware serves, so there is one
renderer for every answer. Checks
still run on the app's loop (``Health`` hands them over, bounded by their
timeouts). ``SO_REUSEPORT`` lets the workers of one pod share the port; the
kernel spreads connections among them, and each answers for its own
process, as on the app's port.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from ._http import TEXT, respond, response_headers
from ._records import Notice, RunRecord
from ._sink import Sink
from ._validate import validate_address

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

MAX_BODY = 65536
"""Bytes of a request body read (and dropped): no endpoint takes one."""
KEEP_ALIVE = 10
"""Seconds an idle keep-alive connection is kept."""
BACKLOG = 128
"""Connections the kernel queues before they are accepted."""
CLOSE_WAIT = 1.0
"""Seconds answers under way get to finish once the listener closes."""
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_NOT_FOUND = b"not found\n"
_FAILED = b"lifewatch: the endpoint failed (see the log)\n"
_CLOSING = b"lifewatch: no answer: the listener or the app's event loop is closing\n"


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, scope["method"], 404, response_headers(TEXT, _NOT_FOUND), _NOT_FOUND)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, shared with this pod's other workers.

    ``SO_REUSEPORT`` lets every worker bind the same port; the kernel spreads
    the connections among them. Bound here, before any server takes it, so a
    port in use is an ``OSError`` in ``start``, whichever server serves it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so,
    # and a probe's answer must not wait on a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # Linux, the BSDs, macOS
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class _Served:
    """What the listener needs of a running server: its port, and a way to close it."""

    port: int
    name: str

    def close(self) -> None:
        raise NotImplementedError


# -- uvicorn's HTTP protocol (httptools) on an event loop of the listener's own


def _uvicorn(
    routes: Mapping[str, ASGIApp], on_error: Callable[[BaseException, str], None]
) -> Callable[[socket.socket], _Served] | None:
    """A way to serve ``routes`` with uvicorn's httptools protocol, or None.

    None unless the process runs under uvicorn (it is imported already) and
    httptools imports: lifewatch depends on neither, and an app served by
    another server gets none of uvicorn's import-time effects (its ``TRACE``
    level name, its import time). The loop is
    uvloop's where it imports, else asyncio's, as uvicorn picks. uvicorn's
    protocol is driven directly, not through ``uvicorn.Server``, which
    would log a second "Started server process" into the app's log; one
    protocol is built here to find out early that this uvicorn's
    constructor is the one known (else the standard library serves).
    """
    if "uvicorn" not in sys.modules:
        return None
    try:
        import httptools  # noqa: F401
        from uvicorn.config import Config
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState

        app = _router(routes, on_error)
        # No logging set up (log_config=None: the app's stays as it is), no
        # lifespan, no proxy headers (the drain's loopback test must see the
        # real peer), no Server header; the Date header is _State's.
        config = Config(
            app,
            http=HttpToolsProtocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE,
        )
        config.load()

        class _State(ServerState):
            """uvicorn's shared state, its default headers a Date made once a second."""

            @property
            def default_headers(self) -> list[tuple[bytes, bytes]]:
                return [(b"date", _date().encode())]

            @default_headers.setter
            def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
                pass

        def protocol(state: ServerState, loop: asyncio.AbstractEventLoop) -> HttpToolsProtocol:
            made = HttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)
            made.access_log = False  # no access log, as with the standard library's server
            return made

        trial = asyncio.new_event_loop()
        try:
            protocol(_State(), trial)
        finally:
            trial.close()
    except Exception:  # not importable, or not the uvicorn this was written for
        return None

    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):  # uvicorn's own choice, as --loop auto makes it
        import uvloop

        new_loop = uvloop.new_event_loop

    def serve(sock: socket.socket) -> _Served:
        return _UvicornServed(sock, protocol, _State(), new_loop(), on_error)

    return serve


def _router(
    routes: Mapping[str, ASGIApp], on_error: Callable[[BaseException, str], None]
) -> ASGIApp:
    """The ASGI app of the ops listener: each path to its endpoint."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        try:
            await routes.get(path, _not_found)(scope, receive, send)
        except asyncio.CancelledError:
            # The listener closing (CLOSE_WAIT over) or the app's loop gone
            # under a check: no answer is coming, which is no error to log.
            with contextlib.suppress(Exception):  # unless it had begun its answer
                await respond(send, "GET", 503, response_headers(TEXT, _CLOSING), _CLOSING)
        except Exception as exc:  # an endpoint never raises; if one does, say so
            on_error(exc, path)
            with contextlib.suppress(Exception):
                await respond(send, "GET", 503, response_headers(TEXT, _FAILED), _FAILED)

    return app


class _UvicornServed(_Served):
    """uvicorn's protocol serving a socket from an event loop in a daemon thread."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: Callable[[Any, asyncio.AbstractEventLoop], asyncio.Protocol],
        state: Any,
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        self.port = int(sock.getsockname()[1])
        self.name = "uvicorn/" + type(loop).__module__.partition(".")[0]
        self._loop = loop
        self._closing = asyncio.Event()

        async def serve() -> None:
            server = await loop.create_server(
                lambda: protocol(state, loop), sock=sock, backlog=BACKLOG
            )
            await self._closing.wait()
            server.close()  # no new connection from now on
            for connection in list(state.connections):
                connection.shutdown()  # closed at once, or once its answer is sent
            deadline = loop.time() + CLOSE_WAIT
            while state.connections and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            answering = list(state.tasks)
            for task in answering:  # still waiting (on a check): they answer 503
                task.cancel()
            if answering:
                await asyncio.wait(answering, timeout=0.1)
            for connection in list(state.connections):  # still open: cut off
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
            await asyncio.sleep(0)  # their connection_lost

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except Exception as exc:  # the socket could not be served: say so
                on_error(exc, "")
            finally:
                sock.close()
                left = asyncio.all_tasks(loop)
                for task in left:  # answers still under way after CLOSE_WAIT
                    task.cancel()
                if left:
                    loop.run_until_complete(asyncio.wait(left, timeout=CLOSE_WAIT))
                loop.close()

        threading.Thread(target=run, name="lifewatch-ops", daemon=True).start()

    def close(self) -> None:
        """Stop accepting at once; answers under way get at most ``CLOSE_WAIT`` to finish."""
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self._loop.call_soon_threadsafe(self._closing.set)


# -- the standard library's http.server, a thread per connection


_dates: tuple[int, str] = (0, "")


def _date() -> str:
    """The ``Date`` header's value, made once a second."""
    global _dates
    now = int(time.time())
    if _dates[0] != now:
        _dates = (now, formatdate(now, usegmt=True))
    return _dates[1]


_targets: dict[str, tuple[str, bytes, bytes]] = {}
"""Request targets split once: a probe asks for the same one every time."""


def _target(target: str) -> tuple[str, bytes, bytes]:
    """The ASGI ``path``, ``raw_path`` and ``query_string`` of a request target."""
    split = _targets.get(target)
    if split is None:
        parts = urlsplit(target)
        split = (
            unquote(parts.path) or "/",
            parts.path.encode("latin-1", "replace"),
            parts.query.encode("latin-1", "replace"),
        )
        if len(_targets) >= 64:  # bounded: any client can send any target
            _targets.clear()
        _targets[target] = split
    return split


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never holds up the process's exit
    block_on_close = False
    routes: Mapping[str, ASGIApp] = {}
    """The endpoints, asked first for a kept answer."""
    app: ASGIApp = staticmethod(_not_found)
    """``_router`` over them: an answer made on this thread's loop."""
    on_error: Callable[[BaseException, str], None] = staticmethod(lambda exc, path: None)
    written: tuple[object, tuple[str, bool, bool], bytes] | None = None
    """The last kept answer written, the date, close and HEAD flags it was written
    with, and its bytes."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not an error worth a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        if error is not None:
            self.on_error(error, "")


class _StdlibServed(_Served):
    """``ThreadingHTTPServer`` serving a socket, ``serve_forever`` in a daemon thread."""

    def __init__(
        self,
        sock: socket.socket,
        routes: Mapping[str, ASGIApp],
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        server = _Server(sock.getsockname(), _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.routes = routes
        server.app = _router(routes, on_error)
        server.on_error = on_error
        self.port = int(sock.getsockname()[1])
        self.name = "http.server"
        self._server = server
        threading.Thread(target=server.serve_forever, name="lifewatch-ops", daemon=True).start()

    def close(self) -> None:
        server = self._server

        def close() -> None:
            server.shutdown()  # returns within serve_forever's 0.5 s poll
            server.server_close()

        threading.Thread(target=close, name="lifewatch-ops-close", daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    """One connection: each request becomes an ASGI call on this thread's loop."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as a scraper or wrk uses it
    server_version = "lifewatch"
    sys_version = ""
    timeout = KEEP_ALIVE  # an idle keep-alive connection gives its thread back
    _loop: asyncio.AbstractEventLoop | None = None

    def setup(self) -> None:
        super().setup()
        # One answer is one write, sent at once: no wait on a delayed ACK.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        path, raw_path, query = _target(self.path)
        headers = self.headers
        declared = headers.get("content-length", "")
        length = min(int(declared), MAX_BODY) if declared.isdigit() else 0
        body = self.rfile.read(length) if length else b""
        scope: Scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": self.request_version[5:],  # after "HTTP/"
            "method": self.command,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            # Raw: as read, with none of email's header fetching on top.
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1", "replace"))
                for k, v in headers.raw_items()
            ],
            "client": self.client_address[:2],
            "server": self.server.server_address[:2],
        }
        app = self.server.routes.get(path, _not_found)
        kept = getattr(app, "kept", None)
        answer = kept(scope) if kept is not None else None
        if answer is not None:  # a probe's kept answer: no event loop needed
            self._write_kept(answer)
            return
        status, answer_headers, content = self._call(scope, body)
        if self.command == "HEAD":
            content = b""
        self.wfile.write(self._head(status, answer_headers) + content)

    def _write_kept(self, answer: tuple[int, Iterable[tuple[bytes, bytes]], bytes]) -> None:
        """A kept answer, its bytes made once a second (the Date), not on every probe."""
        key = (_date(), self.close_connection, self.command == "HEAD")
        written = self.server.written  # shared: the kubelet's every probe is a new connection
        if written is None or written[0] is not answer or written[1] != key:
            status, headers, content = answer
            data = self._head(status, headers) + (b"" if key[2] else content)
            written = self.server.written = (answer, key, data)
        self.wfile.write(written[2])

    def _call(self, scope: Scope, body: bytes) -> tuple[int, Iterable[tuple[bytes, bytes]], bytes]:
        """Run the ops router on this thread's own event loop; its whole answer."""
        messages: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            messages.append(message)

        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.new_event_loop()
        # The router answers for an endpoint that raised or was cut off.
        loop.run_until_complete(self.server.app(scope, receive, send))
        if not messages:  # not even that answer could be sent
            return 503, response_headers(TEXT, _FAILED), _FAILED
        start = messages[0]
        content = b"".join(m.get("body", b"") for m in messages[1:])
        return int(start["status"]), start.get("headers", ()), content

    def _head(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        """Status line and headers: with the body, the whole answer in one write."""
        reason = self.responses.get(status, ("",))[0]
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())]
        head.append(b"date: %s\r\n" % _date().encode())
        head.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
        if self.close_connection:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        return b"".join(head)

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
        self._served: _Served | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The port listened on (the one picked, for port 0), or None when not listening."""
        served = self._served
        return None if served is None else served.port

    @property
    def served_by(self) -> str | None:
        """``"uvicorn/uvloop"`` or ``"uvicorn/asyncio"`` (its httptools protocol on
        that loop), or ``"http.server"``; None when not listening."""
        served = self._served
        return None if served is None else served.name

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            self.start()

    def run_end(self, run: RunRecord) -> None:
        if run.last:
            self.stop()

    def start(self) -> None:
        with self._lock:
            if self._served is not None:
                return
            try:
                sock = _listen(self.host, self.requested_port)
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
            serve = _uvicorn(self.routes, self._failed)
            if serve is not None:
                self._served = serve(sock)
            else:
                self._served = _StdlibServed(sock, self.routes, self._failed)

    def stop(self) -> None:
        """Closes the listener; returns at once (the closing is the server thread's)."""
        with self._lock:
            served, self._served = self._served, None
        if served is not None:
            served.close()

    def _failed(self, exc: BaseException, path: str) -> None:
        with contextlib.suppress(Exception):
            self.lifecycle.notify(
                Notice("lifespan.probe.error", "error", {"path": path, "listener": "ops"}, exc)
            )
