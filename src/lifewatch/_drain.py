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
one asyncio's loop runs (hypercorn's ``loop.add_signal_handler``): lifewatch
puts its own in the loop's place and runs the server's when the drain ends.
A server that takes the signal in a supervisor of its own (granian, hypercorn
with worker processes) leaves nothing to hook, so there lifewatch stays out;
readiness then flips when ``lifespan.shutdown`` arrives.

Under any server the drain can come first instead: ``request()`` (the drain
endpoint, which ``python -m lifewatch drain`` calls from a Kubernetes
``preStop`` hook) starts the same drain without a signal. A SIGTERM that
arrives while it runs waits for its end, then goes on to the server.
"""

from __future__ import annotations

import asyncio
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
    """A Python handler that can be called later, and would not see the signal itself."""
    if not callable(handler) or handler in (signal.SIG_DFL, signal.SIG_IGN):
        return False
    # asyncio's add_signal_handler installs this no-op and learns of the signal
    # through the wakeup fd, which replacing the Python handler does not stop.
    return getattr(handler, "__name__", "") != "_sighandler_noop"


def _loop_handler(loop: asyncio.AbstractEventLoop) -> asyncio.Handle | None:
    """The SIGTERM handler set with ``loop.add_signal_handler`` (hypercorn's), if any.

    asyncio offers no public way to read or run it: ``_signal_handlers`` and
    ``Handle._run`` are CPython's own, looked up defensively. uvloop keeps no
    such table, and there lifewatch stays out.
    """
    handlers = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(signal.SIGTERM) if isinstance(handlers, dict) else None
    if not isinstance(handle, asyncio.Handle) or handle.cancelled():
        return None
    if not callable(getattr(handle, "_run", None)):
        return None
    return handle


def _under_reload(handler: Handler) -> bool:
    """uvicorn --reload sends SIGTERM on every file change: no drain wanted there."""
    config = getattr(getattr(handler, "__self__", None), "config", None)
    return bool(getattr(config, "reload", False))


class Drainer(Sink):
    """Installs the SIGTERM hook for the life of the server, on the event flow.

    Whatever fails on the way (a log record, a sink), the signal it took from
    the server is handed on: a drain may lose a log line, never the shutdown.
    """

    def __init__(self, lifecycle: Lifecycle, drain_delay: float) -> None:
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self.installed = False
        self._previous: Handler = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._until: float | None = None
        """``time.monotonic()`` at which a requested drain ends."""
        self._held: int | None = None
        """A signal that came during a requested drain: handed on at its end."""
        self._by_request = False
        """The drain running now (``_timer``) was requested, not signalled."""

    # -- on the lifecycle's event flow ---------------------------------------

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            try:
                self._serving_loop = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - lifespans run on a loop
                self._serving_loop = None
            self._until = self._held = None
            self._by_request = False
            self.install()
        else:
            self.uninstall()

    def install(self) -> None:
        if self.installed or self.drain_delay <= 0:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not _hookable(previous):
            self._install_on_loop(loop)
            return
        if _under_reload(previous):
            return
        self._loop = loop
        self._previous = previous
        signal.signal(signal.SIGTERM, self._on_signal)
        self.installed = True

    def _install_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        handle = _loop_handler(loop)
        if handle is None or getattr(handle, "_callback", None) == self._begin:
            return
        self._loop = loop
        self._previous = lambda sig, frame: handle._run()
        # Run on the loop from its wakeup fd, as the server's was; it stays
        # after shutdown begins and hands any later signal on at once.
        loop.add_signal_handler(signal.SIGTERM, self._begin, signal.SIGTERM)
        self.installed = True

    def uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, None
        if held is not None:
            self._forward(held)  # shutdown began anyway: never sit on a signal
        if not self.installed:
            return
        self.installed = False
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == self._on_signal
        ):
            signal.signal(signal.SIGTERM, self._previous)

    # -- the signal -----------------------------------------------------------

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of whatever the main thread was doing:
        # do the work on the loop, not here.
        loop = self._loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("no loop to drain on")
            loop.call_soon_threadsafe(self._begin, sig)
        except Exception:
            self._forward(sig)

    def _begin(self, sig: int) -> None:
        if self._timer is not None and self._by_request and self._held is None:
            # Drained on request (preStop): the signal waits for the drain's end.
            self._held = sig
            return
        if self._timer is not None:
            # A second SIGTERM: the operator means it, stop waiting.
            self._timer.cancel()
            self._timer = None
            self._tell("lifespan.drain.cut", "warning", sig)
            self._forward(sig)
            return
        lc = self.lifecycle
        if lc.state is not State.READY:
            # Not ready, so nobody routes here: nothing to drain.
            self._forward(sig)
            return
        assert self._loop is not None
        # The timer first: nothing after it can keep the signal from the server.
        self._timer = self._loop.call_later(self.drain_delay, self._end, sig)
        lc.set_state(State.DRAINING)
        self._tell("lifespan.drain.begin", "info", sig)

    def _end(self, sig: int) -> None:
        self._timer = None
        try:
            self._tell("lifespan.drain.end", "info", sig)
        finally:
            self._forward(sig)

    def _tell(self, event: str, level: str, sig: int | None) -> None:
        cause = "request" if sig is None else signal.Signals(sig).name
        fields = {"signal": cause, "drain_delay_s": self.drain_delay}
        self.lifecycle.notify(Notice(event, level, fields))  # type: ignore[arg-type]

    # -- on request (preStop), from any thread --------------------------------

    def request(self) -> float:
        """Drain now, without a signal; the seconds the drain has left (0: none).

        Only a ready instance drains (a starting or failed one gets no
        traffic); asking again during the drain returns what is left of it.
        """
        loop = self._serving_loop
        with self._lock:
            if (
                self._until is None
                and self.drain_delay > 0
                and self.lifecycle.state is State.READY
                and loop is not None
                and not loop.is_closed()
            ):
                self._until = time.monotonic() + self.drain_delay
                loop.call_soon_threadsafe(self._begin_requested)
            until = self._until
        return 0.0 if until is None else max(0.0, until - time.monotonic())

    def _begin_requested(self) -> None:
        assert self._serving_loop is not None
        if self.lifecycle.state is not State.READY or self._timer is not None:
            return  # a signal (or shutdown) came first
        self._timer = self._serving_loop.call_later(self.drain_delay, self._end_requested)
        self._by_request = True
        self.lifecycle.set_state(State.DRAINING)
        self._tell("lifespan.drain.begin", "info", None)

    def _end_requested(self) -> None:
        self._timer = None
        self._by_request = False
        held, self._held = self._held, None
        try:
            self._tell("lifespan.drain.end", "info", None)
        finally:
            if held is not None:
                self._forward(held)

    def _forward(self, sig: int) -> None:
        previous = self._previous
        if callable(previous):
            previous(sig, None)
