"""The ops listener: the probes, ``/metrics`` and the timeline on a port of their own.

It answers from the first lifespan event on, from threads of its own: under
uvicorn the app's port is bound only once startup completed
(Kludex/uvicorn#499), and a phase that blocks the event loop silences it;
here ``/startupz`` names the running phase and Prometheus sees progress.

A small HTTP/1.1 server on the standard library, bounded whatever the load
(DESIGN §8): one selector thread accepts, reads and writes; a fixed pool of
``HANDLERS`` threads, each with its own event loop, calls the same ASGI
endpoints the middleware serves. The port is shared with this server's own
workers only (``_strangers``), and never with a forked or exec'd child.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import re
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._http import TEXT, respond, response_headers
from ._records import Notice, RunRecord
from ._sink import Sink
from ._validate import validate_address

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

MAX_REQUEST_LINE = 8 * 1024
"""Bytes of a request line (method, target, version); 414 beyond."""
MAX_HEADER_BYTES = 64 * 1024
"""Bytes of a request's head, request line and headers together; 431 beyond."""
MAX_HEADER_LINES = 100
"""Header lines of a request; 431 beyond."""
MAX_BODY = 4 * 1024
"""Bytes of a request body read (and dropped): no endpoint takes one; 413 beyond."""
MAX_CONNECTIONS = 64
"""Connections served at once; the next ones wait in the kernel's backlog,
holding no file descriptor of the process, until one closes."""
BACKLOG = 128
"""Connections the kernel queues before they are accepted."""
HANDLERS = 4
"""Threads calling the endpoints; with the listener's own, every thread it runs."""
HEAD_TIMEOUT = 5.0
"""Seconds a request gets to arrive in full from its first byte (slowloris)."""
KEEP_ALIVE = 5.0
"""Seconds an idle keep-alive connection, or an answer its client does not read, is kept."""
LINGER = 1.0
"""Seconds a refused request's sender gets to read the refusal (input read and dropped)."""
LINGER_BYTES = 256 * 1024
"""Bytes read and dropped after a refusal before the connection is cut."""
CLOSE_WAIT = 1.0
"""Seconds answers under way get to finish once the listener closes."""
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_NOT_FOUND = b"not found\n"
_FAILED = b"lifewatch: the endpoint failed (see the log)\n"
_CLOSING = b"lifewatch: no answer: the listener or the app's event loop is closing\n"


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, scope["method"], 404, response_headers(TEXT, _NOT_FOUND), _NOT_FOUND)


# -- the port: bound alone, or shared with the workers of this server only


def _tcp_listeners() -> dict[int, int]:
    """Inode -> port of every listening TCP socket (v4 and v6) in this network namespace."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)  # the header
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] != "0A":  # TCP_LISTEN
                    continue
                port, inode = fields[1].rpartition(":")[2], fields[9]
                if inode.isdigit() and len(port) == 4:
                    found[int(inode)] = int(port, 16)
    return found


def _socket_inode(fd_path: str) -> int | None:
    """The inode of the socket a ``/proc/<pid>/fd/<n>`` entry names, or None."""
    with contextlib.suppress(OSError):
        target = os.readlink(fd_path)
        if target.startswith("socket:[") and target[8:-1].isdigit():
            return int(target[8:-1])
    return None


def _server_sockets() -> set[int]:
    """The server sockets this process holds before its ops listener exists.

    A server socket is bound to a port (or a path) and connected to nothing.
    The workers of one server hold the one their server bound before starting
    them (gunicorn and granian fork, uvicorn and hypercorn hand it to spawned
    workers); a single-process app holds none at lifespan startup (uvicorn
    binds its port once startup is over).
    """
    found: set[int] = set()
    mine = {server.socket.fileno() for server in _live}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc/self/fd"):
            inode = _socket_inode(entry.path)
            if inode is None or int(entry.name) in mine:
                continue
            with contextlib.suppress(OSError, ValueError):
                probe = socket.socket(fileno=os.dup(int(entry.name)))
            with probe:
                if probe.type != socket.SOCK_STREAM:
                    continue
                with contextlib.suppress(OSError):
                    probe.getpeername()
                    continue  # connected: a client's, or a connection accepted
                name = probe.getsockname()
                if name[1] if isinstance(name, tuple) else name:  # a port, or a path
                    found.add(inode)
    return found


def _holders() -> dict[int, set[int]]:
    """Pid -> the sockets it holds, for every process this user can read."""
    table: dict[int, set[int]] = {}
    with contextlib.suppress(OSError):
        for proc in os.scandir("/proc"):
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                fds = os.scandir(f"/proc/{proc.name}/fd")
                held = {i for fd in fds if (i := _socket_inode(fd.path)) is not None}
                if held:
                    table[int(proc.name)] = held
    return table


def _describe(pid: int) -> str:
    """``pid 123 (python -m uvicorn other:app)``, the command line cut short."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            command = file.read(4096).replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    command = command if len(command) <= 120 else command[:117] + "..."
    return f"pid {pid} ({command})" if command else f"pid {pid}"


def _strangers(port: int, own: int | None, ours: set[int]) -> list[str]:
    """The other listeners on ``port`` that are no worker of this server, described.

    Why: ``SO_REUSEPORT`` lets any process of the same user bind a port
    listened on already, and the kernel then spreads connections between
    them: ``/readyz`` would answer for one app, then for the other. A sibling
    holds a socket of ``ours`` (``_server_sockets``); a listener whose holder
    holds none, or cannot be seen, is a stranger. One exiting is looked at twice.
    """
    strangers: list[str] = []
    for attempt in range(2):
        others = {i for i, p in _tcp_listeners().items() if p == port and i != own}
        if not others:
            return []
        table = _holders()
        me = os.getpid()  # another Lifewatch of this process is no worker
        siblings = {pid for pid, held in table.items() if held & ours and pid != me}
        strangers = []
        for inode in sorted(others):
            pids = sorted(pid for pid, held in table.items() if inode in held)
            if not any(pid in siblings for pid in pids):
                strangers.append(
                    ", ".join(map(_describe, pids))
                    or "a process this user cannot see (another user or pid namespace)"
                )
        if not strangers or attempt:
            break
        time.sleep(0.05)  # only when the port is contested, once
    return strangers


class PortTaken(OSError):
    """The ops port is listened on by a process that is no worker of this server."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, alone or shared with this server's workers.

    A worker (it holds its server's socket) binds with ``SO_REUSEPORT`` for
    its siblings, then checks for ``_strangers``; a process holding none
    binds without, so the kernel refuses the port to anyone else.
    """
    ours = _server_sockets()
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
            strangers = _strangers(int(sock.getsockname()[1]), own, ours)
            if strangers:
                raise PortTaken(
                    f"port {port} is listened on by {'; '.join(strangers)}, "
                    "which is no worker of this server: not shared"
                )
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _held_by(port: int) -> str:
    """Who listens on ``port`` (``pid 123 (...)``), for an error line; "" if unknown."""
    inodes = {i for i, p in _tcp_listeners().items() if p == port}
    if not inodes:
        return ""
    pids = sorted(pid for pid, held in _holders().items() if held & inodes)
    return ", ".join(map(_describe, pids))


# -- HTTP/1.1: a request's head read in full, within bounds


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}


class _Refused(Exception):
    """A request not served: its status and a line saying why."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


class _Request(NamedTuple):
    """A request read in full: what the ASGI scope and the answer need."""

    method: str
    target: str
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


def _parse(buffer: bytearray) -> tuple[_Request, int] | None:
    """The request at the start of ``buffer`` and its size, or None until it is whole.

    Raises ``_Refused`` as soon as the bytes received show the request is out
    of bounds or malformed, so no more than the bounds is ever kept.
    """
    line_end = buffer.find(b"\r\n", 0, MAX_REQUEST_LINE + 2)
    if line_end < 0:
        if len(buffer) > MAX_REQUEST_LINE:
            raise _Refused(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
        return None
    end = buffer.find(b"\r\n\r\n", line_end, MAX_HEADER_BYTES + 4)
    if end < 0:
        if len(buffer) >= MAX_HEADER_BYTES + 4:
            raise _Refused(431, f"request head longer than {MAX_HEADER_BYTES} bytes")
        if buffer.count(b"\r\n") > MAX_HEADER_LINES + 1:
            raise _Refused(431, f"more than {MAX_HEADER_LINES} header lines")
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise _Refused(431, f"more than {MAX_HEADER_LINES} header lines")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _Refused(400, "malformed request line")
    method, target, version = parts
    if version not in _VERSIONS:
        raise _Refused(505, "HTTP/1.0 and HTTP/1.1 only")
    if any(b < 0x21 or b == 0x7F for b in target):
        raise _Refused(400, "malformed request target")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Refused(400, "malformed header line")
        headers.append((name.lower(), value.strip(b" \t")))
    length = 0
    connection = b""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit() or (length and int(value) != length):
                raise _Refused(400, "malformed content-length")
            length = int(value)
            if length > MAX_BODY:
                raise _Refused(413, f"no endpoint takes a body of more than {MAX_BODY} bytes")
        elif name == b"transfer-encoding":
            raise _Refused(501, "no endpoint takes a body: transfer-encoding not accepted")
        elif name == b"connection":
            connection = value.lower()
    size = end + 4 + length
    if len(buffer) < size:
        return None
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection
    request = _Request(
        method.decode("ascii"),
        target.decode("latin-1"),
        _VERSIONS[version],
        headers,
        bytes(buffer[end + 4 : size]),
        keep_alive,
    )
    return request, size


def _target(target: str) -> tuple[str, bytes, bytes]:
    """The ASGI ``path``, ``raw_path`` and ``query_string`` of a request target."""
    parts = urlsplit(target)
    return (
        unquote(parts.path) or "/",
        parts.path.encode("latin-1", "replace"),
        parts.query.encode("latin-1", "replace"),
    )


def _encode(
    status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, close: bool, method: str
) -> bytes:
    """The whole answer, for one write (a HEAD's without its body)."""
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    head.append(b"date: %s\r\n" % formatdate(usegmt=True).encode())
    head.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    if close:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + (b"" if method == "HEAD" else body)


def _failed(close: bool, method: str) -> bytes:
    return _encode(503, response_headers(TEXT, _FAILED), _FAILED, close, method)


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


# -- the server: one thread for the sockets, a fixed pool for the endpoints

_READING, _BUSY, _WRITING, _LINGERING, _CLOSED = range(5)


class _Connection:
    """One client: what it sent and not yet served, what it is owed, until when."""

    def __init__(self, sock: socket.socket, client: tuple[Any, ...] | None, deadline: float):
        self.sock = sock
        self.client = client
        self.deadline = deadline
        self.buffer = bytearray()
        self.out = memoryview(b"")
        self.state = _READING
        self.events = 0
        """What the selector watches it for (0: not registered)."""
        self.close_after = False
        self.linger = False
        self.dropped = 0


class _Caller:
    """A pool thread: calls the ops router for one request at a time on its own loop."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None

    def run(self) -> None:
        self.loop = loop = asyncio.new_event_loop()
        try:
            while (job := self.server.jobs.get()) is not None:
                connection, scope, body, close = job
                try:
                    answer = self._answer(loop, scope, body, close)
                except Exception as exc:  # an answer that cannot be written (bad headers)
                    self.server.on_error(exc, scope["path"])
                    answer = _failed(close, scope["method"])
                self.server.answered(connection, answer, close)
        finally:
            loop.close()

    def _answer(
        self, loop: asyncio.AbstractEventLoop, scope: Scope, body: bytes, close: bool
    ) -> bytes:
        messages: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            messages.append(message)

        # The router answers for an endpoint that raised or was cut off.
        self.task = loop.create_task(self._call(scope, receive, send))
        try:
            loop.run_until_complete(self.task)
        except BaseException:  # cancelled past the router: no answer came
            messages.clear()
        finally:
            self.task = None
        if not messages:  # not even the router's answer could be sent
            return _failed(close, scope["method"])
        status, headers = int(messages[0]["status"]), messages[0].get("headers", ())
        content = b"".join(m.get("body", b"") for m in messages[1:])
        return _encode(status, headers, content, close, scope["method"])

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.server.app(scope, receive, send)

    def cancel(self) -> None:
        """Cut off the answer under way, if any (from another thread)."""
        loop, task = self.loop, self.task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                loop.call_soon_threadsafe(task.cancel)


_live: weakref.WeakSet[_Server] = weakref.WeakSet()
"""Servers of this process, for ``_close_in_child``."""


def _close_in_child() -> None:
    """After a fork: the child holds none of the listeners' sockets.

    A process forked in a phase (a process pool, multiprocessing with fork)
    would else keep the port listening after the app exits, and probes would
    hang instead of being refused. The child's copies only: the parent serves on.
    """
    for server in list(_live):
        server.forget()


os.register_at_fork(after_in_child=_close_in_child)


class _Server:
    """Serves ``routes`` on a listening socket, bounded in threads, fds and memory.

    One thread (``serve``) does all socket work and answers a probe from its
    kept answer; any other request goes to one of ``HANDLERS`` pool threads.
    A connection is read again only once answered, so the pool's queue holds
    at most ``MAX_CONNECTIONS`` requests.
    """

    def __init__(
        self,
        sock: socket.socket,
        routes: Mapping[str, ASGIApp],
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        self.socket = sock
        self.port = int(sock.getsockname()[1])
        self.server = tuple(sock.getsockname()[:2])
        self.routes = routes
        self.app = _router(routes, on_error)
        self.on_error = on_error
        self.jobs: queue.SimpleQueue[tuple[_Connection, Scope, bytes, bool] | None]
        self.jobs = queue.SimpleQueue()
        self._answers: collections.deque[tuple[_Connection, bytes, bool]] = collections.deque()
        self._connections: set[_Connection] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._accepting = False
        self._resume_at = 0.0  # accept again after EMFILE
        self._closing = False
        self._closing_since = self._cancelled_at = 0.0
        self._callers = [_Caller(self) for _ in range(HANDLERS)]
        _live.add(self)
        name = f"lifewatch-ops:{self.port}"
        for caller in self._callers:
            threading.Thread(target=caller.run, name=name, daemon=True).start()
        threading.Thread(target=self.serve, name=name, daemon=True).start()

    # -- from other threads

    def close(self) -> None:
        """Stop accepting at once; answers under way get at most ``CLOSE_WAIT`` to finish."""
        self._closing = True
        self._wake()

    def answered(self, connection: _Connection, data: bytes, close: bool) -> None:
        """A pool thread's answer, to be written by the serving thread."""
        self._answers.append((connection, data, close))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (woken already) or closed
            self._wake_out.send(b"\0")

    def forget(self) -> None:
        """In a forked child: close this process's copies of every socket, serve nothing."""
        for connection in self._connections:
            connection.sock.close()
        for sock in (self.socket, self._wake_in, self._wake_out):
            sock.close()
        with contextlib.suppress(Exception):
            self._selector.close()

    # -- the serving thread

    def serve(self) -> None:
        """The serving thread: every socket, until closed and each answer owed is sent."""
        try:
            self._selector.register(self._wake_in, selectors.EVENT_READ, None)
            self._accept_again(True)
            while True:
                self._poll()
                while self._answers:
                    connection, data, close = self._answers.popleft()
                    if connection.state == _BUSY and self._send(connection, data, close):
                        self._serve(connection)
                now = time.monotonic()
                for connection in list(self._connections):
                    if connection.state != _BUSY and now >= connection.deadline:
                        self._close(connection)  # idle, too slow, or not reading
                if not self._accepting and not self._closing and now >= self._resume_at:
                    self._accept_again(len(self._connections) < MAX_CONNECTIONS)
                if self._closing and self._wound_down(now):
                    break
        except Exception as exc:  # the socket could not be served: say so
            self.on_error(exc, "")
        finally:
            for connection in list(self._connections):
                self._close(connection)
            for _ in self._callers:
                self.jobs.put(None)
            for closable in (self.socket, self._selector, self._wake_in, self._wake_out):
                closable.close()

    def _poll(self) -> None:
        """Wait for the sockets (until the next deadline at most), then serve them."""
        now = time.monotonic()
        waiting = (c.deadline for c in self._connections if c.state != _BUSY)
        timeout = min(min(waiting, default=now + 1) - now, 1.0)
        if self._closing or now < self._resume_at:
            timeout = min(timeout, 0.02)
        for key, mask in self._selector.select(max(0.0, timeout)):
            if key.data is None:
                with contextlib.suppress(OSError):
                    self._wake_in.recv(4096)
            elif key.data is self.socket:
                self._accept()
            elif mask & selectors.EVENT_READ:
                self._read(key.data)
            elif self._flush(key.data):
                self._serve(key.data)

    def _wound_down(self, now: float) -> bool:
        """Closing: refuse new connections, drop idle ones, give answers under way
        ``CLOSE_WAIT``, then cut them off (they answer 503); True when done."""
        if not self._closing_since:
            self._closing_since = now
            self._accept_again(False)
            self.socket.close()  # refused from now on
        for connection in list(self._connections):
            if connection.state in (_READING, _LINGERING):
                self._close(connection)  # nothing owed to it
        if not self._connections:
            return True
        if not self._cancelled_at and now >= self._closing_since + CLOSE_WAIT:
            self._cancelled_at = now
            for caller in self._callers:
                caller.cancel()
        return bool(self._cancelled_at) and now >= self._cancelled_at + 0.1

    def _accept_again(self, accepting: bool) -> None:
        """Watch the listening socket, or leave new connections in the backlog."""
        if accepting != self._accepting and self.socket.fileno() >= 0:
            if accepting:
                self._selector.register(self.socket, selectors.EVENT_READ, self.socket)
            else:
                self._selector.unregister(self.socket)
            self._accepting = accepting

    def _accept(self) -> None:
        while len(self._connections) < MAX_CONNECTIONS:
            try:
                sock, client = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of fds (EMFILE): the backlog waits a moment
                self._resume_at = time.monotonic() + 0.1
                self._accept_again(False)
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # one answer, one write, sent at once
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = tuple(client[:2]) if isinstance(client, tuple) else None
            connection = _Connection(sock, peer, time.monotonic() + KEEP_ALIVE)
            self._connections.add(connection)
            self._watch(connection, selectors.EVENT_READ)
        self._accept_again(False)  # at the cap: the rest wait in the backlog

    def _watch(self, connection: _Connection, events: int) -> None:
        if events == connection.events:
            return
        if not events:
            self._selector.unregister(connection.sock)
        elif not connection.events:
            self._selector.register(connection.sock, events, connection)
        else:
            self._selector.modify(connection.sock, events, connection)
        connection.events = events

    def _close(self, connection: _Connection) -> None:
        if connection.state == _CLOSED:
            return
        self._watch(connection, 0)
        connection.sock.close()
        connection.state = _CLOSED
        connection.buffer.clear()
        self._connections.discard(connection)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
        elif connection.state == _LINGERING:
            connection.dropped += len(data)
            if connection.dropped > LINGER_BYTES:
                self._close(connection)
        else:
            if not connection.buffer:  # a request begins: it gets HEAD_TIMEOUT
                connection.deadline = time.monotonic() + HEAD_TIMEOUT
            connection.buffer += data
            self._serve(connection)

    def _serve(self, connection: _Connection) -> None:
        """Serve the requests whole in the connection's buffer, one at a time."""
        while connection.state == _READING and connection.buffer:
            if connection.buffer.startswith(b"\r\n"):  # after a body, as RFC 9112 §2.2 allows
                del connection.buffer[:2]
                continue
            try:
                parsed = _parse(connection.buffer)
            except _Refused as refused:
                self._refuse(connection, refused)
                return
            if parsed is None:
                return  # more to come, by the deadline
            request, size = parsed
            del connection.buffer[:size]
            scope = self._scope(request, connection)
            close = not request.keep_alive or self._closing
            answer = self._kept(scope, close)
            if answer is None:
                connection.state = _BUSY
                self._watch(connection, 0)  # read again once answered
                self.jobs.put((connection, scope, request.body, close))
                return
            if not self._send(connection, answer, close):
                return

    def _scope(self, request: _Request, connection: _Connection) -> Scope:
        path, raw_path, query = _target(request.target)
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": request.version,
            "method": request.method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": connection.client,
            "server": self.server,
        }

    def _kept(self, scope: Scope, close: bool) -> bytes | None:
        """A probe's kept answer, written by this thread (no pool thread, no event
        loop, so probes answer while the pool waits on checks), or None."""
        kept = getattr(self.routes.get(scope["path"]), "kept", None)
        try:
            answer = None if kept is None else kept(scope)
        except Exception:  # the pool's router calls it, and reports what it raises
            return None
        if answer is None:
            return None
        status, headers, content = answer
        return _encode(status, headers, content, close, scope["method"])

    def _refuse(self, connection: _Connection, refused: _Refused) -> None:
        """Answer ``refused`` and close; its sender gets ``LINGER`` to read it."""
        body = f"lifewatch: {refused.why}\n".encode()
        connection.buffer.clear()
        connection.linger = True
        headers = response_headers(TEXT, body)
        self._send(connection, _encode(refused.status, headers, body, True, "GET"), True)

    def _send(self, connection: _Connection, data: bytes, close: bool) -> bool:
        """Write an answer; True when written and the connection reads on."""
        connection.out = memoryview(data)
        connection.close_after = close or self._closing
        connection.state = _WRITING
        return self._flush(connection)

    def _flush(self, connection: _Connection) -> bool:
        """Write what the connection is owed; True when written and it reads on."""
        try:
            sent = connection.sock.send(connection.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(connection)
            return False
        connection.out = connection.out[sent:]
        now = time.monotonic()
        if connection.out:  # the rest when the client reads, by the deadline
            connection.deadline = now + KEEP_ALIVE
            self._watch(connection, selectors.EVENT_WRITE)
            return False
        if connection.linger:  # what it still sends is read and dropped, for a while
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_WR)
            connection.state = _LINGERING
            connection.deadline = now + LINGER
            self._watch(connection, selectors.EVENT_READ)
            return False
        if connection.close_after:
            self._close(connection)
            return False
        connection.state = _READING
        connection.deadline = now + (HEAD_TIMEOUT if connection.buffer else KEEP_ALIVE)
        self._watch(connection, selectors.EVENT_READ)
        return True


class OpsListener(Sink):
    """Serves ``routes`` on ``address`` from the first lifespan event to the last.

    Started when startup begins; closed when shutdown completes or startup
    failed (the process is going away), by its own thread, so no exit waits
    on it. A port that cannot be bound, or that an unrelated process listens
    on, is one logged line naming the port (and that process), and the app
    starts without the listener.
    """

    def __init__(self, lifecycle: Lifecycle, address: str, routes: Mapping[str, ASGIApp]) -> None:
        self.lifecycle = lifecycle
        self.address = address
        self.host, self.requested_port = validate_address(address, "ops_address")
        self.routes = routes
        self._served: _Server | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The port listened on (the one picked, for port 0), or None when not listening."""
        served = self._served
        return None if served is None else served.port

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
                why = str(exc) if isinstance(exc, PortTaken) else exc.strerror or str(exc)
                holder = "" if isinstance(exc, PortTaken) else _held_by(self.requested_port)
                if holder:
                    why += f" (port {self.requested_port} is listened on by {holder})"
                self.lifecycle.notify(
                    Notice(
                        "lifespan.ops.failed",
                        "error",
                        {
                            "address": self.address,
                            "detail": f"cannot listen on {self.address}: {why}; "
                            "the probes there will not answer",
                        },
                    )
                )
                return
            self._served = _Server(sock, self.routes, self._failed)

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
