"""One ``preStop`` drain for every worker of a pod.

Under ``gunicorn -w N``, ``uvicorn --workers N``, ``hypercorn -w N`` or
``granian --workers N`` the workers share the port (the server's socket, or
``SO_REUSEPORT`` on the ops listener), so the drain request reaches one of
them; the others would stay ready, keep getting traffic, and lose it when
SIGTERM comes. So each worker, from the start of its startup, listens on a
Linux *abstract* unix socket named after its group, and the worker that gets
the drain request asks every other member of the group to drain too, in
parallel, each bounded by ``ASK_TIMEOUT``, and answers once each has begun
draining or failed to.

Why abstract sockets, not files in a temp directory: the kernel removes the
name when the socket closes, killed ``-9`` included, so there is no stale
entry and no recycled pid to guard against; they need no writable directory
(``readOnlyRootFilesystem``); they are scoped to the network namespace, the
same reach as the loopback-only drain endpoint, and a member answers only its
own user (or root), checked with ``SO_PEERCRED``. The group is found by
reading ``/proc/net/unix``. Elsewhere than Linux there is no rendezvous: the
worker the request reaches drains alone.

The group is the set of processes sharing the port the request came to:

- on the ops listener: the user and its port, exactly the processes the
  kernel lets share it (``SO_REUSEPORT`` wants one user, in one namespace);
- on the app's port: the user, the pid namespace and the parent process (a
  server's workers are its children, whatever the server); the port the
  request came to goes along, and a member that does not listen on it
  (another app the same parent started) does not drain.

A worker that becomes ready while its group drains (one the server
restarted during the hook) asks the others how long they have left, and
drains for that long instead of coming back into rotation.

Nothing here writes a metric or a log line: a member drains through the
drain's ``request``, and the outcome is a ``Notice`` to the lifecycle.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from ._records import Notice, RunRecord
from ._sink import Sink
from ._types import State

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

PREFIX = "lifewatch-drain"
ASK_TIMEOUT = 1.0
"""Seconds a member has to answer: its answer needs no event loop, only its thread."""
MAX_ANSWER = 4096
MIN_DRAIN = 0.05
"""Seconds of a sibling's drain too few to join: over before a probe would see it."""

_serial = itertools.count(1)
_ours: set[str] = set()
"""Names bound by this process (one per watch): never asked over a socket."""


def supported() -> bool:
    return sys.platform.startswith("linux")


def group_of(ops_port: int | None) -> str:
    """The group's name: by the ops port, or by the parent process (the app's port)."""
    uid = os.getuid()
    if ops_port is not None:
        return f"{uid}/ops-{ops_port}"
    return f"{uid}/app-{_namespace('pid')}-{os.getppid()}"


def _namespace(kind: str) -> str:
    try:
        link = os.readlink(f"/proc/self/ns/{kind}")  # 'pid:[4026531836]'
    except OSError:
        return "0"
    return link.partition("[")[2].rstrip("]") or "0"


def members(group: str, table: str = "/proc/net/unix") -> list[str]:
    """The names listening in ``group`` now (this network namespace's table)."""
    prefix = f"@{PREFIX}/{group}/"
    found: set[str] = set()
    try:
        with open(table, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON: listening
        if len(fields) == 8 and fields[3] == "00010000" and fields[7].startswith(prefix):
            found.add(fields[7][1:])
    return sorted(found)


def listens_on(port: int) -> bool | None:
    """Whether this process holds a listening TCP socket on ``port``; None if it cannot tell."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for entry in fds:
        try:
            fd = int(entry)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):
            continue
        with sock:  # a duplicate: closing it leaves the server's socket alone
            try:
                if (
                    sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and sock.getsockname()[1] == port
                ):
                    return True
            except OSError:
                continue
    return False


def _pid_of(name: str) -> str:
    return name.rsplit("/", 1)[-1].partition("-")[0]


def ask(
    name: str,
    port: int | None,
    timeout: float = ASK_TIMEOUT,
    *,
    drain: bool = True,
    left: float | None = None,
) -> dict[str, Any] | None:
    """One member's answer to "drain" (or, ``drain=False``, to "how long is
    your requested drain still"); None when it is gone (nothing listens there).
    ``left``: seconds the asker's own drain has left, which a member still
    starting keeps, to drain for what is left of it once ready.

    Raises ``OSError`` (``TimeoutError`` included) or ``ValueError`` when it is
    there but did not answer as a member does.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect("\0" + name)
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # closed between the listing and now: it is going away
        data = b""
        try:
            asked = {"port": port, "drain": drain, "left": left}
            sock.sendall(json.dumps(asked).encode() + b"\n")
            while not data.endswith(b"\n") and len(data) < MAX_ANSWER:
                chunk = sock.recv(MAX_ANSWER)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            data = b""  # hung up on us: another user's ask, or a member going away
    if not data:
        group = name.removeprefix(f"{PREFIX}/").rsplit("/", 1)[0]
        if name not in members(group):
            return None  # it died while asked: gone, not failed
        raise ValueError("closed the connection without an answer")
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ValueError(f"not a member's answer: {data[:80]!r}")
    return answer


def ask_all(
    names: Iterable[str],
    port: int | None,
    timeout: float = ASK_TIMEOUT,
    *,
    drain: bool = True,
    left: float | None = None,
) -> dict[str, dict[str, Any] | str | None]:
    """Every member's answer (or why it failed, a string), asked in parallel.

    Each ask is bounded by ``timeout``; threads, so a member that hangs holds
    only its own.
    """
    results: dict[str, dict[str, Any] | str | None] = {}

    def one(name: str) -> None:
        try:
            results[name] = ask(name, port, timeout, drain=drain, left=left)
        except TimeoutError:
            results[name] = f"no answer within {timeout:g}s"
        except ValueError as exc:
            results[name] = str(exc)
        except OSError as exc:
            results[name] = f"{type(exc).__name__}: {exc}"

    threads = [
        threading.Thread(target=one, args=(name,), name="lifewatch-drain-ask", daemon=True)
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 1)  # each ask is bounded; this is a backstop
    return {name: results.get(name, f"no answer within {timeout:g}s") for name in names}


class _Member:
    """This worker's place in its group: a listening socket its siblings ask "drain"."""

    def __init__(
        self, name: str, answer: Callable[[int | None, bool, float | None], dict[str, Any]]
    ) -> None:
        self.name = name
        self.group = name.removeprefix(f"{PREFIX}/").rsplit("/", 1)[0]
        self.answer = answer
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind("\0" + name)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def serve(self) -> None:
        """Answers its siblings until closed; asks made before this runs wait
        in the socket's backlog."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed: the worker left its group
            with conn, contextlib.suppress(Exception):
                conn.settimeout(ASK_TIMEOUT)
                if not _same_user(conn):
                    continue
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_ANSWER:
                    chunk = conn.recv(MAX_ANSWER)
                    if not chunk:
                        break
                    data += chunk
                asked = json.loads(data)
                if not isinstance(asked, dict):
                    continue
                port, left = asked.get("port"), asked.get("left")
                reply = self.answer(
                    port if isinstance(port, int) else None,
                    asked.get("drain") is not False,
                    float(left) if isinstance(left, (int, float)) else None,
                )
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.sock.close()


def _same_user(conn: socket.socket) -> bool:
    """Only this user (or root) may drain this worker: abstract names have no permissions."""
    peer = getattr(socket, "SO_PEERCRED", None)
    if peer is None:  # pragma: no cover - Linux has it
        return True
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peer, 12))
    return uid in (os.getuid(), 0)


class Rendezvous(Sink):
    """Joins this worker's group while it runs; forwards a drain to the group.

    Joined when startup begins: a bind, and one thread that looks for a
    drain of the group already under way, then answers the siblings (asks
    made before it runs wait in the socket's backlog). Left when shutdown
    completes or startup failed; the kernel drops the name anyway when the
    process dies.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        request: Callable[[float | None], float],
        left: Callable[[], float | None],
        ops_port: Callable[[], int | None] | None,
    ) -> None:
        self.lifecycle = lifecycle
        self.request = request
        """Drain this worker (for so many seconds, or its ``drain_delay``)."""
        self.left = left
        """Seconds left of this worker's requested drain, None when none runs."""
        self.ops_port = ops_port
        """The ops listener's port when the drain endpoint is there; None: the app's port."""
        self._member: _Member | None = None
        self._lock = threading.Lock()
        self._group_until: float | None = None
        """``time.monotonic()`` at which the drain of the group, seen while
        this worker started, ends."""

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            self.join()

    def run_end(self, run: RunRecord) -> None:
        if run.last:
            self.leave()

    def state_changed(self, old: State | None, new: State) -> None:
        if old is not State.STARTING or new is not State.READY or self._member is None:
            return
        # Ready while its siblings drain (a worker the server restarted during
        # the preStop hook): drain with them, for what they have left, at once,
        # before a probe sees it ready. Known from the look when it joined, or
        # from a sibling that asked while this worker was starting; a look
        # still under way drains it when it ends (``_look``).
        self._drain_with_group()

    def _drain_with_group(self) -> None:
        """Drain for what the group has left; only a ready worker drains."""
        until = self._group_until
        if until is not None and until - time.monotonic() > MIN_DRAIN:
            self.request(until - time.monotonic())

    def _keep_group_drain(self, left: float) -> None:
        if left > MIN_DRAIN:
            until = time.monotonic() + left
            with self._lock:
                if self._group_until is None or until > self._group_until:
                    self._group_until = until

    def _run_member(self, member: _Member) -> None:
        """The member's thread: the look, then its siblings' asks until it leaves."""
        with contextlib.suppress(Exception):  # a look that fails leaves the answers
            self._look(member)
        member.serve()

    def _look(self, member: _Member) -> None:
        """A drain of the group under way since before this worker joined: how
        long it runs on; drained for that long if this worker is ready by now."""
        others = [n for n in members(member.group) if n not in _ours]
        if not others:
            return
        answers = ask_all(others, None, drain=False).values()
        left = max(
            (float(a.get("left") or 0.0) for a in answers if isinstance(a, dict)), default=0.0
        )
        self._keep_group_drain(left)
        self._drain_with_group()  # ready before the look ended (else a no-op)

    def join(self) -> None:
        if not supported():
            return
        port = None
        if self.ops_port is not None:
            port = self.ops_port()
            if port is None:
                return  # the ops listener is not listening: nothing reaches this drain
        name = f"{PREFIX}/{group_of(port)}/{os.getpid()}-{next(_serial)}"
        with self._lock:
            if self._member is not None:
                return
            try:
                member = self._member = _Member(name, self._answer)
            except OSError as exc:
                detail = f"{exc.strerror or exc}; a preStop drain will reach this worker alone"
                self.lifecycle.notify(
                    Notice("lifespan.drain.rendezvous.failed", "warning", {"detail": detail})
                )
                return
            _ours.add(name)
            self._group_until = None
        threading.Thread(
            target=self._run_member, args=(member,), name="lifewatch-drain-member", daemon=True
        ).start()

    def leave(self) -> None:
        with self._lock:
            member, self._member = self._member, None
        if member is not None:
            _ours.discard(member.name)
            member.close()

    def _answer(
        self, port: int | None, drain: bool = True, left: float | None = None
    ) -> dict[str, Any]:
        """A sibling asks: drain (if this worker serves the port it was asked
        on), or how long its requested drain still runs. ``left``: the
        sibling's own drain, kept by a worker still starting for when it is ready."""
        if port is not None and listens_on(port) is False:
            return {"pid": os.getpid(), "member": False}
        if not drain:
            return {"pid": os.getpid(), "left": round(self.left() or 0.0, 3)}
        if left is not None and self.lifecycle.state is State.STARTING:
            self._keep_group_drain(left)
            self._drain_with_group()  # ready meanwhile: now is when (else a no-op)
        remaining = self.request(None)
        # The state flips on the app's loop: answer once it has (the drain has
        # begun), or half the asker's patience later (a loop blocked for now).
        deadline = time.monotonic() + ASK_TIMEOUT / 2
        while remaining > 0 and self.lifecycle.state is State.READY and time.monotonic() < deadline:
            time.sleep(0.002)
        return {"pid": os.getpid(), "draining": remaining > 0, "remaining": round(remaining, 3)}

    async def forward(self, answer: Mapping[str, Any], server: Any) -> dict[str, Any]:
        """``answer`` (this worker's own) with every sibling's drain added in.

        ``server``: the ASGI scope's ``server``, the address the request came
        to; on the app's port, siblings drain only if they listen on its port.
        """
        combined = dict(answer)
        member = self._member
        if member is None:
            return combined
        port = None
        if self.ops_port is None and isinstance(server, (tuple, list)) and len(server) == 2:
            port = server[1] if isinstance(server[1], int) else None
        others = [n for n in members(member.group) if n not in _ours]
        if not others:
            return combined
        left = float(combined.get("remaining") or 0.0)
        results = await anyio.to_thread.run_sync(
            functools.partial(ask_all, others, port, left=left)
        )
        failed: dict[str, str] = dict(combined.get("failed", {}))
        workers, not_ready, remaining = combined["workers"], combined["not_ready"], 0.0
        for name, result in results.items():
            if isinstance(result, str):
                failed[_pid_of(name)] = result
            elif result is None or result.get("member") is False:
                continue
            elif result.get("draining"):
                workers += 1
                remaining = max(remaining, float(result.get("remaining", 0.0)))
            else:
                not_ready += 1
        combined["remaining"] = round(max(float(combined["remaining"]), remaining), 3)
        combined["draining"] = combined["draining"] or workers > 0
        combined["workers"], combined["not_ready"], combined["failed"] = workers, not_ready, failed
        fields = {"workers": workers, "not_ready": not_ready, "failed": failed}
        with contextlib.suppress(Exception):  # the drain goes on regardless
            self.lifecycle.notify(
                Notice("lifespan.drain.workers", "warning" if failed else "info", fields)
            )
        return combined
