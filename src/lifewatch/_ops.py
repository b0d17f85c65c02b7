"""The ops listener: the probes, ``/metrics`` and the timeline on a port of their own.

It answers from the first lifespan event on, from a thread and event loop of
its own: under uvicorn the app's port is bound only once startup completed
(Kludex/uvicorn#499), and a phase that blocks the app's loop silences it.
A small HTTP/1.1 server on asyncio streams, bounded whatever the load (DESIGN
§8); the port is shared with this server's own workers only, never a child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import stat
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from http.client import responses
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Message, Scope

from ._http import TEXT, response_headers
from ._records import Notice, RunRecord
from ._sink import Sink
from ._validate import validate_address

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

MAX_REQUEST_LINE = 8 * 1024  # bytes of a request line; 414 beyond
MAX_HEADER_BYTES = 64 * 1024  # bytes of a request's head, request line included; 431 beyond
MAX_HEADER_LINES = 100  # header lines of a request; 431 beyond
MAX_BODY = 4 * 1024  # bytes of a body read and dropped (no endpoint takes one); 413 beyond
MAX_CONNECTIONS = 64  # served at once; the next wait in the kernel's backlog, holding no fd
BACKLOG = 128  # connections the kernel queues before they are accepted
HEAD_TIMEOUT = 5.0  # seconds a request gets to arrive in full from its first byte (slowloris)
KEEP_ALIVE = 5.0  # seconds an idle connection, or an answer its client does not read, is kept
LINGER = 1.0  # seconds a refused request's sender gets to read the refusal, its input dropped
LINGER_BYTES = 256 * 1024  # bytes dropped after a refusal before the connection is cut
CLOSE_WAIT = 1.0  # seconds answers under way get to finish once the listener closes
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_NOT_FOUND = b"not found\n"
_FAILED = b"lifewatch: the endpoint failed (see the log)\n"
_CLOSING = b"lifewatch: no answer: the listener or the app's event loop is closing\n"


# -- the port: bound alone, or shared with the workers of this server only


def _server_sockets() -> set[int]:
    """The inodes of the server sockets (bound, connected to nothing) this process holds:
    a server's workers hold the one it bound before starting them; a single process, none."""
    found: set[int] = set()
    mine = {server.socket.fileno() for server in _live}
    for fd in map(int, os.listdir("/proc/self/fd")):
        with contextlib.suppress(OSError, ValueError):
            if fd in mine or not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as probe:
                if probe.type != socket.SOCK_STREAM:
                    continue
                with contextlib.suppress(OSError):
                    probe.getpeername()
                    continue  # connected: a client's, or a connection accepted
                name = probe.getsockname()
                if name[1] if isinstance(name, tuple) else name:  # a port, or a path
                    found.add(os.fstat(fd).st_ino)
    return found


def _describe(pid: int) -> str:
    """``pid 123 (python -m uvicorn other:app)``, the command line cut short."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as file:
        command = file.read(4096).replace(b"\0", b" ").decode(errors="replace").strip()
        if command:
            return f"pid {pid} ({command if len(command) <= 120 else command[:117] + '...'})"
    return f"pid {pid}"


def _held_by(port: int, own: int = 0, ours: frozenset[int] = frozenset()) -> str:
    """Who else listens on ``port`` (``own`` apart), described; "" if none. A worker
    of this server holds a socket of ``ours``: no stranger; any other holder, or none seen, is."""
    others: set[int] = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError, ValueError, IndexError), open(path) as lines:
            next(lines, None)  # the header
            for fields in map(str.split, lines):  # local address, ..., state, ..., inode
                if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                    others.add(int(fields[9]))  # 0A: TCP_LISTEN
    others.discard(own)
    if not others:
        return ""
    table: dict[int, set[int]] = {}  # pid -> the sockets it holds, if this user may see
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError, ValueError):
                    if (target := os.readlink(fd.path)).startswith("socket:["):
                        table.setdefault(int(pid), set()).add(int(target[8:-1]))
    me = os.getpid()  # another Lifewatch of this process is no worker
    workers = {pid for pid, held in table.items() if held & ours and pid != me}
    strangers: dict[str, None] = {}  # in order, once each
    for inode in sorted(others):
        pids = sorted(pid for pid, held in table.items() if inode in held)
        if not workers.intersection(pids):
            unseen = "a process this user cannot see (another user or pid namespace)"
            strangers[", ".join(map(_describe, pids)) or unseen] = None
    return "; ".join(strangers)


class PortTaken(OSError):
    """The ops port is listened on by a process that is no worker of this server."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``. A worker (it holds its server's socket) binds
    with ``SO_REUSEPORT`` for its siblings, then checks the kernel spreads connections
    between them only; anyone else binds without, so the port is its alone."""
    ours = frozenset(_server_sockets())
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: a probe's answer must not wait on a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ours and hasattr(socket, "SO_REUSEPORT"):  # Linux, the BSDs, macOS
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        if ours:
            own = os.fstat(sock.fileno()).st_ino
            strangers = _held_by(port, own, ours)
            if strangers:  # one exiting meanwhile is looked at twice
                time.sleep(0.05)
                strangers = _held_by(port, own, ours)
            if strangers:
                raise PortTaken(
                    f"port {port} is listened on by {strangers}, "
                    "which is no worker of this server: not shared"
                )
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# -- HTTP/1.1, read line by line within bounds; one connection, one task


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class _Refused(Exception):
    """A request not served: ``(status, why)``."""


async def _read_request(
    reader: asyncio.StreamReader, first: bytes, scope: Scope
) -> tuple[Scope, bytes, bool]:
    """The next request: ``scope`` completed, its body, and whether the connection is kept;
    ``_Refused`` as soon as a line passes a bound (the reader's limit bounds one line)."""
    lines: list[bytes] = []
    size = 0
    while not lines or lines[-1]:
        try:
            line = first + await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:  # no line's end within the limit
            line, size = b"", MAX_HEADER_BYTES + 1
        first = b""
        size += len(line)
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        if not lines and (size > MAX_HEADER_BYTES or len(line) > MAX_REQUEST_LINE):
            raise _Refused(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
        if size > MAX_HEADER_BYTES:
            raise _Refused(431, f"request head longer than {MAX_HEADER_BYTES} bytes")
        if line and len(lines) > MAX_HEADER_LINES:
            raise _Refused(431, f"more than {MAX_HEADER_LINES} header lines")
        if line or lines:  # a blank line before a request is skipped (RFC 9112 §2.2)
            lines.append(line)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _Refused(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _Refused(505, "HTTP/1.0 and HTTP/1.1 only")
    if any(b < 0x21 or b == 0x7F for b in target):
        raise _Refused(400, "malformed request target")
    headers: list[tuple[bytes, bytes]] = []
    for field in lines[1:-1]:
        name, colon, value = field.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Refused(400, "malformed header line")
        headers.append((name.lower(), value.strip(b" \t")))
    lengths = {int(v) if v.isdigit() else -1 for n, v in headers if n == b"content-length"}
    if len(lengths) > 1 or -1 in lengths:  # differing lengths: a smuggling attempt
        raise _Refused(400, "malformed content-length")
    length = lengths.pop() if lengths else 0
    if length > MAX_BODY:
        raise _Refused(413, f"no endpoint takes a body of more than {MAX_BODY} bytes")
    named = dict(headers)
    if b"transfer-encoding" in named:
        raise _Refused(501, "no endpoint takes a body: transfer-encoding not accepted")
    tokens = named.get(b"connection", b"").lower()
    path = urlsplit(target.decode("latin-1"))
    scope.update(
        http_version=version[5:].decode(),
        method=method.decode("ascii"),
        path=unquote(path.path) or "/",
        raw_path=path.path.encode("latin-1", "replace"),
        query_string=path.query.encode("latin-1", "replace"),
        headers=headers,
    )
    keep_alive = b"keep-alive" in tokens if version == b"HTTP/1.0" else b"close" not in tokens
    return scope, await reader.readexactly(length), keep_alive


def _encode(
    status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, close: bool, method: str
) -> bytes:
    """The whole answer, for one write (a HEAD's without its body)."""
    head = [b"HTTP/1.1 %d %s" % (status, responses.get(status, "").encode())]
    head.append(b"date: %s" % formatdate(usegmt=True).encode())
    head.extend(b"%s: %s" % (name, value) for name, value in headers)
    head.extend([b"connection: close"] if close else [])
    return b"\r\n".join([*head, b"", b""]) + (b"" if method == "HEAD" else body)


_live: weakref.WeakSet[_Server] = weakref.WeakSet()  # this process's, for _close_in_child


def _close_in_child() -> None:
    """A child forked in a phase (a process pool) must not keep the port after the app exits."""
    for server in list(_live):
        for sock in (server.socket, *server.tasks):
            sock.close()


os.register_at_fork(after_in_child=_close_in_child)


class _Server:
    """Serves a listening socket from one thread running asyncio's own loop (whatever
    loop the app runs): a task per connection, at most ``MAX_CONNECTIONS``, which
    awaits the endpoint too, so a probe waiting on a check holds up no other."""

    def __init__(self, sock: socket.socket, listener: OpsListener) -> None:
        self.socket = sock
        self.server = tuple(sock.getsockname()[:2])
        self.listener = listener
        self.tasks: dict[socket.socket, asyncio.Task[None]] = {}  # each connection's
        self.reading: set[socket.socket] = set()  # owed nothing: closed at once on close
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.closing = False
        self.loop = asyncio.SelectorEventLoop()
        self.main = self.loop.create_task(self.serve())
        _live.add(self)
        name = f"lifewatch-ops:{self.server[1]}"
        threading.Thread(target=self.run, name=name, daemon=True).start()

    def close(self) -> None:
        """Stop accepting at once; answers under way get at most ``CLOSE_WAIT`` to finish."""
        self.loop.call_soon_threadsafe(self.main.cancel)

    def run(self) -> None:
        self.loop.run_until_complete(self.main)
        self.loop.close()

    async def serve(self) -> None:
        """Accept while a slot is free (the rest wait in the kernel's backlog); once closed,
        drop connections owed nothing, give answers ``CLOSE_WAIT``, then cut them off (503)."""
        with contextlib.suppress(asyncio.CancelledError):  # closed
            while True:
                await self.slots.acquire()
                try:
                    sock, client = await self.loop.sock_accept(self.socket)
                except OSError:  # out of fds (EMFILE): the backlog waits a moment
                    self.slots.release()
                    await asyncio.sleep(0.1)
                    continue
                self.tasks[sock] = self.loop.create_task(self._serve(sock, client))
        self.closing = True
        self.socket.close()  # refused from now on
        for sock in self.reading:  # each task begun, so its finally runs
            self.tasks[sock].cancel()
        if self.tasks:
            await asyncio.wait(self.tasks.values(), timeout=CLOSE_WAIT)
        while self.tasks:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.wait(self.tasks.values(), timeout=0.1)

    async def _serve(self, sock: socket.socket, client: Any) -> None:
        """One connection's requests, one at a time, until it closes, idles or is refused."""
        base: Scope = {"type": "http", "asgi": _ASGI, "scheme": "http", "root_path": ""}
        base.update(client=client[:2] if isinstance(client, tuple) else None, server=self.server)
        # A deadline cancels this task (as wait_for, less a task per wait); never in an answer.
        cut = self.tasks[sock].cancel
        timer = self.loop.call_later(KEEP_ALIVE, cut)  # idle
        self.reading.add(sock)
        writer = None
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEADER_BYTES)
            writer.transport.set_write_buffer_limits(0)  # drain() waits until all is sent
            while first := await reader.read(1):
                timer.cancel()
                timer = self.loop.call_later(HEAD_TIMEOUT, cut)
                try:
                    scope, body, keep_alive = await _read_request(reader, first, dict(base))
                except _Refused as refused:
                    status, why = refused.args
                    text = f"lifewatch: {why}\n".encode()
                    writer.write(_encode(status, response_headers(TEXT, text), text, True, "GET"))
                    writer.write_eof()
                    timer.cancel()
                    timer = self.loop.call_later(LINGER, cut)
                    dropped = 0  # what it still sends: closed unread, the kernel would reset it
                    while dropped <= LINGER_BYTES and (data := await reader.read(65536)):
                        dropped += len(data)
                    return
                timer.cancel()
                self.reading.discard(sock)
                close = not keep_alive or self.closing
                writer.write(await self._answer(scope, body, close))
                timer = self.loop.call_later(KEEP_ALIVE, cut)  # unread, then idle
                await writer.drain()
                if close or self.closing:
                    return
                self.reading.add(sock)
        except (OSError, EOFError):
            pass  # gone, or cut off
        finally:
            timer.cancel()
            self.reading.discard(sock)
            if writer is not None:
                writer.transport.abort()
            sock.close()
            del self.tasks[sock]
            self.slots.release()

    async def _answer(self, scope: Scope, body: bytes, close: bool) -> bytes:
        """The endpoint's answer, or a 503 saying why there is none."""
        messages: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            messages.append(message)

        method, path = scope["method"], scope["path"]
        route = self.listener.routes.get(path)
        if route is None:
            return _encode(404, response_headers(TEXT, _NOT_FOUND), _NOT_FOUND, close, method)
        try:
            await route(scope, receive, send)
            status, headers = int(messages[0]["status"]), messages[0].get("headers", ())
            content = b"".join(m.get("body", b"") for m in messages[1:])
            return _encode(status, headers, content, close, method)
        except asyncio.CancelledError:
            # The listener closing (CLOSE_WAIT over) or the app's loop gone
            # under a check: no answer is coming, which is no error to log.
            headers, content = response_headers(TEXT, _CLOSING), _CLOSING
        except Exception as exc:  # an endpoint never raises; if one does, say so
            self.listener.failed(exc, path)
            headers, content = response_headers(TEXT, _FAILED), _FAILED
        return _encode(503, headers, content, close, method)


class OpsListener(Sink):
    """Serves ``routes`` on ``address`` from the first lifespan event to the last (closed by
    its own thread, so no exit waits on it). A port that cannot be bound, or that an
    unrelated process listens on, is one logged line naming it; the app starts all the same."""

    def __init__(self, lifecycle: Lifecycle, address: str, routes: Mapping[str, ASGIApp]) -> None:
        self.lifecycle = lifecycle
        self.address = address
        self.host, self.requested_port = validate_address(address, "ops_address")
        self.routes = routes
        self._served: _Server | None = None

    @property
    def port(self) -> int | None:
        """The port listened on (the one picked, for port 0), or None when not listening."""
        served = self._served
        return None if served is None else int(served.server[1])

    def run_begin(self, run: RunRecord) -> None:
        if run.event != "startup" or self._served is not None:
            return
        try:
            sock = _listen(self.host, self.requested_port)
        except OSError as exc:
            why = str(exc) if isinstance(exc, PortTaken) else exc.strerror or str(exc)
            holder = "" if isinstance(exc, PortTaken) else _held_by(self.requested_port)
            if holder:
                why += f" (port {self.requested_port} is listened on by {holder})"
            detail = f"cannot listen on {self.address}: {why}; the probes there will not answer"
            fields = {"address": self.address, "detail": detail}
            self.lifecycle.notify(Notice("lifespan.ops.failed", "error", fields))
            return
        self._served = _Server(sock, self)

    def run_end(self, run: RunRecord) -> None:
        served = self._served
        if run.last and served is not None:
            self._served = None
            served.close()  # returns at once: the closing is the server thread's

    def failed(self, exc: BaseException, path: str) -> None:  # an endpoint raised
        with contextlib.suppress(Exception):
            self.lifecycle.notify(
                Notice("lifespan.probe.error", "error", {"path": path, "listener": "ops"}, exc)
            )
