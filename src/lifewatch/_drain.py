"""Draining on SIGTERM: readiness fails at once, the server goes on serving.

Kubernetes removes a pod from its Service endpoints at the same time as it
sends SIGTERM, not before; kube-proxies and load balancers catch up over the
next seconds. uvicorn closes its listeners as soon as it sees the signal
(Kludex/uvicorn#2414), so requests still routed to the pod in those seconds
fail. lifewatch stands between the signal and uvicorn: on SIGTERM it sets the
state to ``draining`` (``/readyz`` answers 503), keeps serving for
``drain_delay`` seconds, then hands the signal to the handler it replaced, and
uvicorn's own graceful shutdown and the lifespan shutdown follow.

The hook is installed when startup begins, in the server process, only where
it can work: in the main thread, when the SIGTERM handler in place is a Python
callable that lifewatch can call later (uvicorn's ``Server.handle_exit``), or
the stand-in of an event loop that runs the server's (hypercorn's
``loop.add_signal_handler``): there ``_WakeupRelay`` holds the signal back
from the loop until the drain ends.
A server that takes the signal in a supervisor of its own (granian, hypercorn
with worker processes) leaves nothing to hook, so there lifewatch stays out;
readiness then flips when ``lifespan.shutdown`` arrives.

Under any server the drain can come first instead: ``request()`` (called
through the drain channel, ``_channel``, which ``python -m lifewatch drain``
writes to from a Kubernetes ``preStop`` hook) starts the same drain without
a signal. A SIGTERM that
arrives while it runs waits for its end, then goes on to the server.

There is one drain per process, whatever the number of ``Lifewatch`` objects
(an app mounted in another has a watch of its own): one hook stands in front
of the server's handler, every watch that is ready flips to ``draining`` at
once, and the signal reaches the server once, after the longest delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._records import Notice, RunRecord
from ._sink import Sink
from ._types import State

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

Handler = Any  # what signal.getsignal returns


def _hookable(handler: Handler) -> bool:
    """A Python handler lifewatch can stand in front of and call later."""
    return callable(handler) and handler not in (signal.SIG_DFL, signal.SIG_IGN)


class _WakeupRelay:
    """Holds back the signals an event loop learns of through the wakeup fd.

    ``loop.add_signal_handler`` (hypercorn's way, asyncio's or uvloop's loop)
    installs a do-nothing Python handler and reads each signal's number from
    the fd given to ``signal.set_wakeup_fd``, so replacing the Python handler
    alone would not stand in front of the server. The relay becomes the wakeup
    fd: it passes every other signal's byte on to the loop's fd at once, and a
    held signal's when lifewatch hands it on, as the C handler would have
    written it (the documented protocol: one byte, the signal's number).
    Public APIs only: nothing of the loop is read.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, held: set[int], fds: tuple[int, int], theirs: int
    ) -> None:
        self.loop, self.held, self.theirs = loop, held, theirs
        self.read_fd, self.write_fd = fds
        loop.add_reader(self.read_fd, self._pass_on)

    @classmethod
    def take(cls, loop: asyncio.AbstractEventLoop, held: set[int]) -> _WakeupRelay | None:
        """Put a relay in front of the wakeup fd, if one is set (None if not).

        Swapped in one call: no signal falls between the loop's fd and ours.
        """
        fds = os.pipe()
        for fd in fds:
            os.set_blocking(fd, False)
        theirs = signal.set_wakeup_fd(fds[1])
        try:
            if theirs != -1:
                return cls(loop, held, fds, theirs)
        except BaseException:
            signal.set_wakeup_fd(theirs)
            for fd in fds:
                os.close(fd)
            raise
        signal.set_wakeup_fd(-1)
        for fd in fds:
            os.close(fd)
        return None

    def _pass_on(self) -> None:
        with contextlib.suppress(OSError):
            data = os.read(self.read_fd, 512)
            self.send(*(b for b in data if b not in self.held))

    def send(self, *signals: int) -> None:
        """Write these signals' numbers to the loop's wakeup fd."""
        if signals:
            with contextlib.suppress(OSError):  # full: the loop would have lost it too
                os.write(self.theirs, bytes(signals))

    def give_back(self) -> None:
        """The loop's wakeup fd back in place (unless someone else's took over)."""
        self._pass_on()
        current = signal.set_wakeup_fd(self.theirs)
        if current != self.write_fd:
            signal.set_wakeup_fd(current)
        with contextlib.suppress(Exception):
            if not self.loop.is_closed():
                self.loop.remove_reader(self.read_fd)
        os.close(self.read_fd)
        os.close(self.write_fd)


def _under_reload(handler: Handler) -> bool:
    """uvicorn --reload sends SIGTERM on every file change: no drain wanted there."""
    config = getattr(getattr(handler, "__self__", None), "config", None)
    return bool(getattr(config, "reload", False))


class Drainer(Sink):
    """Joins the process's drain for the life of the server, on the event flow;
    drains its own watch on request (preStop).

    Whatever fails on the way (a log record, a sink), the signal it took from
    the server is handed on: a drain may lose a log line, never the shutdown.
    """

    def __init__(self, lifecycle: Lifecycle, drain_delay: float) -> None:
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self.installed = False
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._until: float | None = None
        """``time.monotonic()`` at which a requested drain ends."""
        self._timer: asyncio.TimerHandle | None = None
        """The end of the requested drain running now."""
        self._length = drain_delay
        """Seconds the requested drain lasts."""

    # -- on the lifecycle's event flow ---------------------------------------

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            try:
                self._serving_loop = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - lifespans run on a loop
                self._serving_loop = None
            self._until = None
            self.install()
        else:
            self.uninstall()

    def install(self) -> None:
        # With drain_delay=0 too: a signal during startup still ends the startup.
        if not self.installed:
            self.installed = _PROCESS.join(self)

    def uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.installed:
            self.installed = False
            _PROCESS.leave(self)

    # -- told by the process's drain -----------------------------------------

    def begin(self, sig: int) -> bool:
        """Drain if ready (nobody routes to an instance that is not); True if so."""
        if self.lifecycle.state is not State.READY or self.drain_delay <= 0:
            return False
        self.lifecycle.set_state(State.DRAINING)
        self.tell("lifespan.drain.begin", "info", sig)
        return True

    def requested_left(self) -> float | None:
        """Seconds left of the requested drain running now, or None."""
        timer, loop = self._timer, self._serving_loop
        if timer is None or loop is None:
            return None
        return max(0.0, timer.when() - loop.time())

    def tell(self, event: str, level: str, sig: int | None) -> None:
        cause = "request" if sig is None else signal.Signals(sig).name
        fields = {"signal": cause, "drain_delay_s": self.drain_delay}
        with contextlib.suppress(Exception):  # the signal goes on regardless
            self.lifecycle.notify(Notice(event, level, fields))  # type: ignore[arg-type]

    # -- on request (preStop), from any thread --------------------------------

    def request(self, seconds: float | None = None) -> float:
        """Drain now, without a signal; the seconds the drain has left (0: none).

        Only a ready instance drains (a starting or failed one gets no
        traffic); asking again during the drain returns what is left of it.
        ``seconds``: a shorter drain, the rest of the one its sibling workers
        began before this one was ready.
        """
        length = self.drain_delay if seconds is None else min(seconds, self.drain_delay)
        loop = self._serving_loop
        with self._lock:
            if (
                self._until is None
                and length > 0
                and self.lifecycle.state is State.READY
                and loop is not None
                and not loop.is_closed()
            ):
                self._until = time.monotonic() + length
                self._length = length
                loop.call_soon_threadsafe(self._begin_requested)
            until = self._until
        return 0.0 if until is None else max(0.0, until - time.monotonic())

    def _begin_requested(self) -> None:
        if not self._drain_requested():
            return
        if self.installed:
            # One drain per process: the other watches (a mounted app's) go too.
            for other in list(_PROCESS.drainers):
                if other is not self:
                    with contextlib.suppress(Exception):
                        other.follow()

    def follow(self) -> None:
        """Drain on request because another watch of this process was asked to."""
        with self._lock:
            if self._until is not None or self.drain_delay <= 0:
                return
            self._until = time.monotonic() + self.drain_delay
            self._length = self.drain_delay
        self._drain_requested()

    def _drain_requested(self) -> bool:
        loop = self._serving_loop
        if loop is None or self.lifecycle.state is not State.READY or self._timer is not None:
            return False  # a signal (or shutdown) came first
        self._timer = loop.call_later(self._length, self.end_requested)
        self.lifecycle.set_state(State.DRAINING)
        self.tell("lifespan.drain.begin", "info", None)
        return True

    def end_requested(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()  # ended early by the process's drain (a held signal)
        self.tell("lifespan.drain.end", "info", None)


class _ProcessDrain:
    """One drain per process, whatever the number of ``Lifewatch`` objects.

    An app mounted in another has a watch of its own; chaining a hook per
    watch drained them one after the other (the delays added up) and left the
    outer one ready meanwhile. One hook stands in front of the server's
    handler: on SIGTERM every watch that is ready flips to ``draining`` at
    once, and the signal reaches the server after the longest delay (or the
    end of a drain requested before it, whichever is later).
    """

    def __init__(self) -> None:
        self.drainers: list[Drainer] = []
        self.previous: dict[int, Handler] = {}
        """The server's handler of each signal lifewatch stands in front of."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.draining: list[Drainer] = []
        self.held: int | None = None
        """A signal that came during a requested drain: handed on at its end."""
        self.relay: _WakeupRelay | None = None

    def join(self, drainer: Drainer) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # signal handlers can only be set from the main thread
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if not self.drainers:
            if not self._hook(loop):
                return False
        elif loop is not self.loop:
            return False  # another event loop (a test's): it has a server of its own
        self.drainers.append(drainer)
        return True

    def _hook(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Stand in front of the server's SIGTERM handler; False where none can be.

        SIGINT too where the server handles it with the same handler
        (uvicorn): it drains nothing, but like SIGTERM it ends a startup under way.
        """
        previous = signal.getsignal(signal.SIGTERM)
        if not _hookable(previous) or _under_reload(previous):
            return False
        held: set[int] = {signal.SIGTERM}
        if signal.getsignal(signal.SIGINT) == previous:
            held.add(signal.SIGINT)
        self.relay = _WakeupRelay.take(loop, held)
        self.loop = loop
        self.previous = dict.fromkeys(held, previous)
        for sig in held:
            signal.signal(sig, self._on_signal)
        return True

    def leave(self, drainer: Drainer) -> None:
        with contextlib.suppress(ValueError):
            self.drainers.remove(drainer)
        if self.drainers:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.draining = []
        held, self.held = self.held, None
        if held is not None:
            self._forward(held)  # shutdown began anyway: never sit on a signal
        if threading.current_thread() is threading.main_thread():
            ours = [sig for sig in self.previous if signal.getsignal(sig) == self._on_signal]
            for sig in ours:
                signal.signal(sig, self.previous[sig])
            relay, self.relay = self.relay, None
            if relay is not None:
                relay.give_back()
            self.loop = None

    # -- the signal -----------------------------------------------------------

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of whatever the main thread was doing:
        # do the work on the loop, not here. Only note a startup under way, so
        # that a phase blocking the loop fails as it ends (see _begin).
        for drainer in self.drainers:
            with contextlib.suppress(Exception):
                drainer.lifecycle.startup_signalled(sig)
        loop = self.loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("no loop to drain on")
            loop.call_soon_threadsafe(self._begin, sig)
        except Exception:
            self._forward(sig)

    def _begin(self, sig: int) -> None:
        if self._cut_startup(sig):
            return
        if self.timer is not None:
            # A second SIGTERM: the operator means it, stop waiting.
            self.timer.cancel()
            self.timer = None
            self.held = None
            for drainer in self.draining:
                drainer.tell("lifespan.drain.cut", "warning", sig)
            self._forward(sig)
            return
        ready = [d for d in self.drainers if d.lifecycle.state is State.READY and d.drain_delay > 0]
        requested = [
            left for left in (d.requested_left() for d in self.drainers) if left is not None
        ]
        if sig != signal.SIGTERM or (not ready and not requested):
            # Not ready, so nobody routes here: nothing to drain. SIGINT (a
            # person at a terminal) is never drained.
            self._forward(sig)
            return
        assert self.loop is not None
        # The timer first: nothing after it can keep the signal from the server.
        # Drained on request (preStop) already: the signal waits for that end.
        delay = max([d.drain_delay for d in ready] + requested)
        self.timer = self.loop.call_later(delay, self._end, sig)
        self.held = sig if requested else None
        self.draining = ready
        for drainer in ready:
            with contextlib.suppress(Exception):
                drainer.begin(sig)

    def _cut_startup(self, sig: int) -> bool:
        """A signal during startup: cut what runs now, hand the signal on; True if so.

        No drain: an instance that was never ready gets no traffic. The
        server (uvicorn) exits once the startup, now failing, has rolled back.
        """
        starting = []
        for drainer in self.drainers:
            with contextlib.suppress(Exception):
                if drainer.lifecycle.startup_signalled(sig):
                    starting.append(drainer)
        if not starting:
            return False
        try:
            for drainer in starting:
                with contextlib.suppress(Exception):
                    drainer.lifecycle.cut_startup()
        finally:
            self._forward(sig)
        return True

    def _end(self, sig: int) -> None:
        self.timer = None
        self.held = None
        try:
            for drainer in self.drainers:
                if drainer.requested_left() is not None:
                    drainer.end_requested()  # due now too: its end before the signal
            for drainer in self.draining:
                drainer.tell("lifespan.drain.end", "info", sig)
        finally:
            self._forward(sig)

    def _forward(self, sig: int) -> None:
        previous = self.previous.get(sig)
        try:
            if callable(previous):
                previous(sig, None)
        finally:
            if self.relay is not None:
                self.relay.send(sig)  # a loop's handler (hypercorn's) learns of it now


_PROCESS = _ProcessDrain()
