"""Draining on SIGTERM: readiness fails at once, the server goes on serving.

Kubernetes sends SIGTERM as it removes the pod from its endpoints, and load
balancers catch up over the next seconds, while uvicorn closes its listeners
at once (Kludex/uvicorn#2414). So lifewatch stands in front of the server's
SIGTERM handler (a Python callable, or a loop's ``add_signal_handler``), sets
``draining`` (``/readyz`` 503), serves on for ``drain_delay``, then hands the
signal on. Where the server takes signals in a supervisor (granian), the
``preStop`` hook (``_channel``, calling ``request()``) drains instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._records import Notice, RunRecord
from ._sink import Sink
from ._types import State

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle


class _WakeupRelay:
    """Holds back the signals an event loop learns of through the wakeup fd
    (``loop.add_signal_handler``, hypercorn's): every other byte passes on at
    once, a held signal's only when lifewatch hands the signal on."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, held: set[int], fds: tuple[int, int], theirs: int
    ) -> None:
        self.loop, self.held, self.theirs = loop, held, theirs
        self.read_fd, self.write_fd = fds
        loop.add_reader(self.read_fd, self._pass_on)

    @classmethod
    def take(cls, loop: asyncio.AbstractEventLoop, held: set[int]) -> _WakeupRelay | None:
        """Put a relay in front of the wakeup fd, if one is set; swapped in one
        call, so no signal falls between the loop's fd and ours."""
        fds = os.pipe()
        for fd in fds:
            os.set_blocking(fd, False)
        theirs = signal.set_wakeup_fd(fds[1])
        relay = None
        try:
            if theirs != -1:
                relay = cls(loop, held, fds, theirs)
        finally:
            if relay is None:  # none to stand in front of, or it failed
                signal.set_wakeup_fd(theirs)
                for fd in fds:
                    os.close(fd)
        return relay

    def _pass_on(self) -> None:
        with contextlib.suppress(OSError):
            data = os.read(self.read_fd, 512)
            self.send(*(b for b in data if b not in self.held))

    def send(self, *signals: int) -> None:
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


class Drainer(Sink):
    """One watch's part in the process's drain; drains its own watch on request
    (preStop). A drain may lose a log line, never the server's signal."""

    def __init__(self, lifecycle: Lifecycle, drain_delay: float) -> None:
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self.installed = False
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._requested = False  # in this lifespan: asking again does nothing
        self._timer: asyncio.TimerHandle | None = None  # the requested drain's end

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            try:
                self._serving_loop = asyncio.get_running_loop()
            except RuntimeError:  # trio: no asyncio loop, no drain
                self._serving_loop = None
            self._requested = False
            # With drain_delay=0 too: a signal during startup still ends the startup.
            if not self.installed:
                self.installed = _PROCESS.join(self)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.installed:
            self.installed = False
            _PROCESS.leave(self)

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

    def request(self, seconds: float | None = None) -> None:
        """Drain now, without a signal (from any thread), if ready and not asked
        before; ``seconds``: the rest of a drain its siblings began."""
        length = self.drain_delay if seconds is None else min(seconds, self.drain_delay)
        loop = self._serving_loop
        with self._lock:
            if (
                not self._requested
                and length > 0
                and self.lifecycle.state is State.READY
                and loop is not None
                and not loop.is_closed()
            ):
                self._requested = True
                loop.call_soon_threadsafe(self._begin_requested, length)

    def _begin_requested(self, length: float) -> None:
        loop = self._serving_loop
        if loop is None or self.lifecycle.state is not State.READY or self._timer is not None:
            return  # a signal (or shutdown) came first
        self._timer = loop.call_later(length, self.end_requested)
        self.lifecycle.readiness.move(State.DRAINING)
        self.tell("lifespan.drain.begin", "info", None)
        if self.installed:
            # One drain per process: the other watches (a mounted app's) go too.
            for other in list(_PROCESS.drainers):
                with contextlib.suppress(Exception):
                    other.request()  # once each: asking again does nothing

    def end_requested(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()  # ended early by the process's drain (a held signal)
        self.tell("lifespan.drain.end", "info", None)


class _ProcessDrain:
    """One drain per process, whatever the number of watches (a mounted app's):
    on SIGTERM every ready watch drains at once, and the signal reaches the
    server after the longest delay, or a requested drain's end if later."""

    def __init__(self) -> None:
        self.drainers: list[Drainer] = []
        self.previous: dict[int, Any] = {}
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
        """Stand in front of the server's SIGTERM handler, if it is a Python
        callable; SIGINT too where the server handles it alike (uvicorn): it
        drains nothing, but like SIGTERM it ends a startup under way."""
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):  # SIG_DFL, SIG_IGN, None (set in C)
            return False
        # uvicorn --reload sends SIGTERM on every file change: no drain wanted there.
        config = getattr(getattr(previous, "__self__", None), "config", None)
        if getattr(config, "reload", False):
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
            for sig, previous in self.previous.items():
                if signal.getsignal(sig) == self._on_signal:
                    signal.signal(sig, previous)
            relay, self.relay = self.relay, None
            if relay is not None:
                relay.give_back()
            self.loop = None

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # Between two bytecodes of the main thread: the work goes to the loop;
        # only a startup under way is noted here (a phase blocking the loop).
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
            self._forward(sig)  # nothing routed here, or SIGINT: a person at a terminal
            return
        assert self.loop is not None
        # The timer first: nothing after it can keep the signal from the server.
        delay = max([d.drain_delay for d in ready] + requested)
        self.timer = self.loop.call_later(delay, self._end, sig)
        self.held = sig if requested else None
        self.draining = ready
        for drainer in ready:
            with contextlib.suppress(Exception):
                drainer.lifecycle.readiness.move(State.DRAINING)
                drainer.tell("lifespan.drain.begin", "info", sig)

    def _cut_startup(self, sig: int) -> bool:
        """A signal during startup: cut what runs now, hand the signal on (no
        drain: it never had traffic); True if so."""
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
