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
callable that lifewatch can call later (uvicorn's ``Server.handle_exit``).
A server that learns of signals through the event loop's wakeup fd
(hypercorn's ``loop.add_signal_handler``) would still see the signal at once,
and one that takes it in a supervisor of its own (granian) leaves nothing to
hook, so there lifewatch stays out; readiness then flips when
``lifespan.shutdown`` arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
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


def _under_reload(handler: Handler) -> bool:
    """uvicorn --reload sends SIGTERM on every file change: no drain wanted there."""
    config = getattr(getattr(handler, "__self__", None), "config", None)
    return bool(getattr(config, "reload", False))


class Drainer(Sink):
    """Joins the process's drain for the life of the server, on the event flow.

    Whatever fails on the way (a log record, a sink), the signal it took from
    the server is handed on: a drain may lose a log line, never the shutdown.
    """

    def __init__(self, lifecycle: Lifecycle, drain_delay: float) -> None:
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self.installed = False

    # -- on the lifecycle's event flow ---------------------------------------

    def run_begin(self, run: RunRecord) -> None:
        if run.event == "startup":
            self.install()
        else:
            self.uninstall()

    def install(self) -> None:
        if not self.installed and self.drain_delay > 0:
            self.installed = _PROCESS.join(self)

    def uninstall(self) -> None:
        if self.installed:
            self.installed = False
            _PROCESS.leave(self)

    # -- told by the process's drain -----------------------------------------

    def begin(self, sig: int) -> bool:
        """Drain if ready (nobody routes to an instance that is not); True if so."""
        if self.lifecycle.state is not State.READY:
            return False
        self.lifecycle.set_state(State.DRAINING)
        self.tell("lifespan.drain.begin", "info", sig)
        return True

    def tell(self, event: str, level: str, sig: int) -> None:
        fields = {"signal": signal.Signals(sig).name, "drain_delay_s": self.drain_delay}
        with contextlib.suppress(Exception):  # the signal goes on regardless
            self.lifecycle.notify(Notice(event, level, fields))  # type: ignore[arg-type]


class _ProcessDrain:
    """One drain per process, whatever the number of ``Lifewatch`` objects.

    An app mounted in another has a watch of its own; chaining a hook per
    watch drained them one after the other (the delays added up) and left the
    outer one ready meanwhile. One hook stands in front of the server's
    handler: on SIGTERM every watch that is ready flips to ``draining`` at
    once, and the signal reaches the server after the longest delay.
    """

    def __init__(self) -> None:
        self.drainers: list[Drainer] = []
        self.previous: Handler = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.draining: list[Drainer] = []

    def join(self, drainer: Drainer) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # signal handlers can only be set from the main thread
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if not self.drainers:
            previous = signal.getsignal(signal.SIGTERM)
            if not _hookable(previous) or _under_reload(previous):
                return False
            self.previous, self.loop = previous, loop
            signal.signal(signal.SIGTERM, self._on_signal)
        elif loop is not self.loop:
            return False  # another event loop (a test's): it has a server of its own
        self.drainers.append(drainer)
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
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == self._on_signal
        ):
            signal.signal(signal.SIGTERM, self.previous)
        self.loop = None

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of whatever the main thread was doing:
        # do the work on the loop, not here.
        loop = self.loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("no loop to drain on")
            loop.call_soon_threadsafe(self._begin, sig)
        except Exception:
            self._forward(sig)

    def _begin(self, sig: int) -> None:
        if self.timer is not None:
            # A second SIGTERM: the operator means it, stop waiting.
            self.timer.cancel()
            self.timer = None
            for drainer in self.draining:
                drainer.tell("lifespan.drain.cut", "warning", sig)
            self._forward(sig)
            return
        assert self.loop is not None
        ready = [d for d in self.drainers if d.lifecycle.state is State.READY]
        if not ready:
            # Not ready, so nobody routes here: nothing to drain.
            self._forward(sig)
            return
        # The timer first: nothing after it can keep the signal from the server.
        delay = max(d.drain_delay for d in ready)
        self.timer = self.loop.call_later(delay, self._end, sig)
        self.draining = ready
        for drainer in ready:
            with contextlib.suppress(Exception):
                drainer.begin(sig)

    def _end(self, sig: int) -> None:
        self.timer = None
        try:
            for drainer in self.draining:
                drainer.tell("lifespan.drain.end", "info", sig)
        finally:
            self._forward(sig)

    def _forward(self, sig: int) -> None:
        previous = self.previous
        if callable(previous):
            previous(sig, None)


_PROCESS = _ProcessDrain()
