"""The drain channel: how ``python -m lifewatch drain`` reaches every worker.

A ``preStop`` hook must take every worker of the pod out of rotation, and
nobody else may (DESIGN §8). So the drain goes through the file system, where
the kernel checks who asks: each worker makes a private directory
(``mkdtemp``: 0700, random) named ``lifewatch-<uid>-<service>-<random>`` with
a FIFO it reads on its event loop and a state file replaced at each state
change. The hook uses only real 0700 directories of its own uid, writes a
line into each FIFO and reads each state file (bounded, range-checked).
Nothing is bound, so nothing can be squatted; a dead worker's directory (its
FIFO has no reader) is removed by the next start or hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal, TextIO

from ._records import Notice, RunRecord
from ._sink import Sink
from ._types import State

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

FIFO = "drain"
STATE = "state.json"
REQUEST = b"drain\n"
"""What the hook writes: one line, far below ``PIPE_BUF`` (written atomically)."""
MAX_READ = 8192
MAX_STATE = 4096
MAX_AHEAD = 86400.0
"""Seconds: a drain end further away than this (or as far in the past) is not believed."""
MIN_DRAIN = 0.05
"""Seconds of a drain too few to join: over before a probe would see it."""
FRESH = 5.0
"""Seconds a FIFO nobody reads yet is taken for a worker starting, not a dead one."""
BEGIN_TIMEOUT = 2.0
_PID_MAX = 2**22
_STATES = {s.value for s in State}
_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotOurs(OSError):
    """An entry named like a channel that is not one of this user's: skipped."""


def service_token(service: str | None) -> str:
    """The service's name as a path part: no ``-``, so the random suffix stays apart."""
    return re.sub(r"[^A-Za-z0-9._]", "_", service or "")[:64]


def prefix(service: str | None) -> str:
    return f"lifewatch-{os.geteuid()}-{service_token(service)}-"


def _channels(base: str) -> list[tuple[str, str]]:
    """(service token, path) of each entry of ``base`` named like a channel of this user."""
    pattern = re.compile(rf"lifewatch-{os.geteuid()}-([A-Za-z0-9._]*)-[^-]+")
    try:
        names = os.listdir(base)
    except OSError:
        return []
    matches = [(pattern.fullmatch(name), name) for name in names]
    return sorted((match[1], os.path.join(base, name)) for match, name in matches if match)


def candidates(service: str | None, base: str) -> list[str]:
    """Entries of ``base`` named like this user's channels of ``service`` (unchecked)."""
    return [path for token, path in _channels(base) if token == service_token(service)]


@contextlib.contextmanager
def open_private(path: str) -> Iterator[int]:
    """A descriptor of ``path`` if it is a real 0700 directory of this user, else
    ``NotOurs``; checked on the descriptor, so nothing swapped in later is used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EPERM):
            raise NotOurs(f"{path}: {exc.strerror}") from None
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
            raise NotOurs(f"{path}: owner {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}")
        yield fd
    finally:
        os.close(fd)


def reach(path: str, message: bytes = b"") -> Literal["live", "fresh", "dead"]:
    """Write ``message`` into the FIFO of this user's channel at ``path``:
    ``live``; or nobody reads it: ``fresh`` (a worker starting) or ``dead``.
    ``NotOurs`` (or another ``OSError``) if it is no channel of this user."""
    with open_private(path) as dir_fd:
        st = os.stat(FIFO, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid():
            raise NotOurs(f"{path}: not a FIFO of this user")
        try:
            fd = os.open(FIFO, os.O_WRONLY | _NOFOLLOW, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            return "fresh" if time.time() - st.st_mtime < FRESH else "dead"
        try:
            if message:
                os.write(fd, message)
        except BlockingIOError:
            pass  # full of requests already: it is asked
        finally:
            os.close(fd)
    return "live"


def is_live(path: str) -> bool:
    """Whether ``path`` is this user's channel and its worker reads its FIFO."""
    try:
        return reach(path) == "live"
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class WorkerState:
    """A state file, checked: what one worker says of itself."""

    pid: int
    ppid: int
    """The worker's parent: its server (the workers of one server share it)."""
    state: str
    drain_until: float | None
    """Wall-clock end of the drain under way, or None."""

    def left(self, now: float) -> float:
        return 0.0 if self.drain_until is None else max(0.0, self.drain_until - now)


def parse_state(data: bytes, service: str | None, now: float) -> WorkerState:
    """``data`` as a state file, every value type- and range-checked; ``ValueError`` says which."""
    if len(data) > MAX_STATE:
        raise ValueError(f"over {MAX_STATE} bytes")
    try:
        fields = json.loads(data)
    except ValueError:
        raise ValueError(f"not JSON: {data[:40]!r}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"not a JSON object: {data[:40]!r}")
    pid, ppid, state = fields.get("pid"), fields.get("ppid"), fields.get("state")
    named, until = fields.get("service"), fields.get("drain_until")
    if type(pid) is not int or not 0 < pid <= _PID_MAX:
        raise ValueError(f"pid {pid!r} is not a process id (1 to {_PID_MAX})")
    if type(ppid) is not int or not 0 <= ppid <= _PID_MAX:  # 0: the parent of pid 1
        raise ValueError(f"ppid {ppid!r} is not a process id (0 to {_PID_MAX})")
    if not isinstance(state, str) or state not in _STATES:
        raise ValueError(f"state {state!r} is not one of {sorted(_STATES)}")
    if not isinstance(named, str) or service_token(named) != service_token(service):
        raise ValueError(f"service {named!r} is not {service or ''!r}")
    if until is not None:
        if type(until) not in (int, float) or not math.isfinite(until):
            raise ValueError(f"drain_until {until!r} is not a time")
        if not now - MAX_AHEAD <= until <= now + MAX_AHEAD:
            raise ValueError(f"drain_until {until!r} is not within a day of now ({now:.0f})")
        until = float(until)
    return WorkerState(pid, ppid, state, until)


def read_state(path: str, service: str | None) -> WorkerState:
    """The state file of the channel at ``path`` (checked as ``open_private`` does)."""
    with open_private(path) as dir_fd:
        fd = os.open(STATE, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise NotOurs("its state file is not a file of this user")
            data = os.read(fd, MAX_STATE + 1)
        finally:
            os.close(fd)
    return parse_state(data, service, time.time())


_open: weakref.WeakSet[DrainChannel] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (a process pool in a phase) owns neither the FIFO nor the directory."""
    for channel in list(_open):
        channel.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


class DrainChannel(Sink):
    """This worker's channel, from the start of its startup to the end of its lifespan.

    ``request(seconds)`` drains this worker (the drain's own path); ``left()``
    is the seconds left of a requested drain, None when none runs.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        service: str | None,
        drain_delay: float,
        request: Callable[[float | None], None],
        left: Callable[[], float | None],
    ) -> None:
        self.lifecycle = lifecycle
        self.service = service
        self.drain_delay = drain_delay
        self.request = request
        self.left = left
        self.path: str | None = None
        """The channel's directory while open."""
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._asked_at: float | None = None
        """``time.monotonic()`` of a request that came while starting."""

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup" and self.path is None:
            self.open()

    def run_end(self, run: RunRecord) -> None:
        if run.last:
            self.close()

    def state_changed(self, old: State | None, new: State) -> None:
        if self.path is None:
            return
        self._write_state(new)
        if new is State.READY and old is State.STARTING:
            self._catch_up()

    def open(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._off("no asyncio event loop runs the lifespan")
            return
        path = fd = None
        try:
            base = tempfile.gettempdir()
            for old in candidates(self.service, base):  # left by dead workers
                with contextlib.suppress(OSError):
                    if reach(old) == "dead":
                        shutil.rmtree(old, ignore_errors=True)
            path = tempfile.mkdtemp(prefix=prefix(self.service), dir=base)
            os.chmod(path, 0o700)  # exactly, whatever the umask
            os.mkfifo(os.path.join(path, FIFO), 0o600)
            # Read and write: a writer closing never leaves the FIFO at EOF.
            fd = os.open(os.path.join(path, FIFO), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            loop.add_reader(fd, self._on_readable)
        except (OSError, NotImplementedError) as exc:
            if fd is not None:
                os.close(fd)
            if path is None:
                self._off(f"no private directory can be made in the temp dir: {exc}")
                return
            shutil.rmtree(path, ignore_errors=True)
            why = (
                "its event loop cannot watch a file"
                if isinstance(exc, NotImplementedError)
                else exc
            )
            self._off(f"the drain channel in {base} cannot be opened: {why}")
            return
        self.path, self._fd, self._loop = path, fd, loop
        _open.add(self)
        self._write_state(self.lifecycle.state)

    def close(self) -> None:
        fd, loop, path = self._fd, self._loop, self.path
        if fd is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
        self.forget()
        self._asked_at = None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def forget(self) -> None:
        """Close the FIFO, leave the directory (a forked child's is its parent's)."""
        fd, self._fd, self._loop, self.path = self._fd, None, None, None
        _open.discard(self)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _off(self, detail: str) -> None:
        detail += "; python -m lifewatch drain cannot reach this worker (SIGTERM still drains it)"
        self.lifecycle.notify(Notice("lifespan.drain.channel.off", "warning", {"detail": detail}))

    def _on_readable(self) -> None:
        # Bounded: what is left is read on the loop's next turn.
        try:
            data = b"" if self._fd is None else os.read(self._fd, MAX_READ)
        except OSError:
            return
        if REQUEST.strip() not in data.split(b"\n"):
            return
        # A ready worker drains; a starting one drains for the rest once ready.
        if self.lifecycle.state is State.READY:
            self.request(None)
        elif self.lifecycle.state is State.STARTING:
            self._asked_at = time.monotonic()

    def _catch_up(self) -> None:
        """Ready now: drain for what is left of a drain asked for while starting,
        or of one its siblings run (this worker restarted during the hook)."""
        left = 0.0
        asked_at, self._asked_at = self._asked_at, None
        if asked_at is not None:
            left = asked_at + self.drain_delay - time.monotonic()
        left = max(left, self._siblings_left())
        if left > MIN_DRAIN:
            self.request(left)

    def _siblings_left(self) -> float:
        """The longest drain left among the live workers of the same server (the
        same parent): not another instance of the service, nor a dead worker."""
        now, left = time.time(), 0.0
        for path in candidates(self.service, os.path.dirname(self.path or "")):
            if path == self.path:
                continue
            try:
                sibling = read_state(path, self.service)
            except (OSError, ValueError):
                continue
            if (
                sibling.state == State.DRAINING.value
                and sibling.pid != os.getpid()
                and sibling.ppid == os.getppid()
                and is_live(path)
            ):
                left = max(left, sibling.left(now))
        return left

    def _write_state(self, state: State) -> None:
        """Replace the state file at once (a temp file, then ``os.replace``)."""
        until = None
        if state is State.DRAINING:
            left = self.left()
            until = round(time.time() + (self.drain_delay if left is None else left), 3)
        fields = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "service": self.service or "",
            "state": state.value,
            "drain_until": until,
        }
        with self._lock:
            if self.path is None:
                return
            temp = os.path.join(self.path, f".{STATE}.tmp")
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o600)
            try:
                os.write(fd, json.dumps(fields).encode())
            finally:
                os.close(fd)
            os.replace(temp, os.path.join(self.path, STATE))


# -- the hook's side: python -m lifewatch drain ---------------------------------


@dataclasses.dataclass
class _Worker:
    """One worker as the hook sees it."""

    path: str
    status: Literal["asked", "draining", "not ready", "failed"] = "asked"
    reason: str = ""
    pid: int | None = None
    state: str = ""
    """What its state file said last."""
    left: float = 0.0


def ask_all(service: str | None, base: str) -> tuple[list[_Worker], int]:
    """Write a drain request into every channel of this user and ``service``
    in ``base``; the workers asked, and how many dead ones were removed."""
    workers: list[_Worker] = []
    dead = 0
    for path in candidates(service, base):
        try:
            reached = reach(path, REQUEST)
        except NotOurs:
            continue  # another user's look-alike, or not a channel: not ours to use
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: made or removed just now
                workers.append(_Worker(path, status="failed", reason=f"{exc.strerror}"))
            continue
        if reached == "dead":
            shutil.rmtree(path, ignore_errors=True)
            dead += 1
        else:  # fresh: made a moment ago, a worker starting, no traffic yet
            workers.append(_Worker(path, status="asked" if reached == "live" else "not ready"))
    return workers, dead


def drain(service: str | None, timeout: float = BEGIN_TIMEOUT, out: TextIO | None = None) -> int:
    """Ask every worker of ``service`` run by this user to drain, say how many
    do, wait the drain out; 0 when each was reached, 1 otherwise."""

    def say(line: str) -> None:
        print(f"lifewatch drain: {line}", file=out or sys.stderr, flush=True)

    try:
        base = tempfile.gettempdir()
    except OSError as exc:
        say(f"no temp directory to look in: {exc}")
        return 1
    workers, dead = ask_all(service, base)
    where = os.path.join(base, prefix(service) + "*")
    if not workers:
        gone = f" ({dead} left by dead workers, removed)" if dead else ""
        others = _other_services(base, service)
        hint = f"; this user runs --service {', '.join(others)}" if others else ""
        say(f"no lifewatch worker of this user found: looked for {where}{gone}{hint}")
        return 1
    _wait_for_begin(workers, service, timeout)
    draining = [w for w in workers if w.status == "draining"]
    not_ready = sum(1 for w in workers if w.status == "not ready")
    failed = [w for w in workers if w.status == "failed"]
    remaining = max((w.left for w in draining), default=0.0)
    processes = len({w.pid for w in draining})  # two watches of one process: one worker
    who = f" {processes} workers" if processes != 1 else ""
    idle = f" ({not_ready} not ready)" if not_ready else ""
    say(f"draining{who}{idle}, {remaining:.1f}s to go ({where})")
    for worker in failed:
        name = f"worker {worker.pid}" if worker.pid else f"the worker at {worker.path}"
        say(f"{name} did not drain: {worker.reason}")
    time.sleep(remaining)
    # Still waited out: the others drained. Non-zero tells the kubelet (FailedPreStopHook).
    return 1 if failed else 0


def _other_services(base: str, service: str | None) -> list[str]:
    """The services of this user's other live channels in ``base``: a hint."""
    own = service_token(service)
    return sorted({token for token, path in _channels(base) if token != own and is_live(path)})[:5]


def _wait_for_begin(workers: list[_Worker], service: str | None, timeout: float) -> None:
    """Read each worker's state file until each drains, or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        asked = [w for w in workers if w.status == "asked"]
        for worker in asked:
            try:
                state = read_state(worker.path, service)
            except ValueError as exc:
                worker.status, worker.reason = "failed", f"its state file is wrong: {exc}"
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    worker.status = "not ready"  # its directory went: it exited
                else:
                    worker.status, worker.reason = "failed", f"its state file: {exc}"
                continue
            worker.pid, worker.state = state.pid, state.state
            if state.state == State.DRAINING.value:
                worker.status, worker.left = "draining", state.left(time.time())
            elif state.state not in (State.READY.value, State.STARTING.value):
                worker.status = "not ready"  # stopping or failed: no traffic
        asked = [w for w in asked if w.status == "asked"]
        if not asked or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for worker in asked:
        if worker.state == State.STARTING.value:
            worker.status = "not ready"  # it drains for what is left once ready
        else:
            worker.status = "failed"
            worker.reason = f"ready, but did not begin draining within {timeout:g}s"
