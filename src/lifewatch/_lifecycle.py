"""The lifecycle: the one event flow of lifewatch.

Whoever sees something happen (a ``phase`` block, a lifespan wrapper, the
middleware reading lifespan messages, a health check, a signal) tells the
lifecycle; the lifecycle decides what it means (the outcome of a phase or a
run, the state) and hands one record to every sink. It alone writes run and
phase records, owns each run's bound (its deadline) and the state.

A sink that raises is reported and skipped: observability must never change
what the app or the server sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import LifewatchError, PhaseTimeout, StartupInterrupted, add_note, has_note
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._types import Event, Outcome, Reason, State
from ._watchdog import WATCHDOG, Watch, describe

if TYPE_CHECKING:
    from types import FrameType

    from ._checks import CheckResult, HealthCheck
    from ._supervise import Supervised

ASYNC_GRACE = 0.25
"""An async phase's own cancel scope fires at its deadline; the watchdog looks
this much later, so it only speaks when the event loop could not."""

_END_HOOKS = ("run_end", "phase_end")
_HOOKS = (
    "run_begin",
    "run_end",
    "phase_begin",
    "phase_end",
    "state_changed",
    "check_result",
    "task_started",
    "task_died",
    "notice",
)


def _cancelled_class() -> type[BaseException]:
    try:
        return anyio.get_cancelled_exc_class()
    except Exception:  # no async library running: only asyncio's can be about
        return asyncio.CancelledError


class Lifecycle:
    """Runs, phases, state and background phases of one ``Lifewatch``."""

    def __init__(
        self,
        *,
        service: str | None,
        startup_timeout: float | None,
        shutdown_timeout: float | None,
        log: Any,
        process_start: float | None = None,
    ) -> None:
        self.service = service
        self.process_start = process_start
        """Wall-clock start of the process: the first startup measures its boot from it."""
        self.boot: float | None = None
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self._log = log
        self.sinks: tuple[Sink, ...] = ()
        self._hooks: dict[str, tuple[Callable[..., None], ...]] = dict.fromkeys(_HOOKS, ())
        self._phase_begin: tuple[Callable[[PhaseRecord], None], ...] = ()
        self._phase_end: tuple[Callable[[PhaseRecord], None], ...] = ()
        self.state: State = State.STARTING
        self.closing = False
        """Draining or stopping: responses ask keep-alive clients to go (one
        attribute for the request path to read)."""
        self.current: RunRecord | None = None
        self.startup: RunRecord | None = None
        self.shutdown: RunRecord | None = None
        self.startup_complete = False
        self.background: set[asyncio.Task[None]] = set()
        self.background_failed = False
        self._deadline = math.inf
        self._scopes: list[anyio.CancelScope] = []
        self.refusal: str | None = None
        """Why traffic is refused by hand (``refuse_traffic``), or None."""
        self._refusal_drains = False
        self._watches: dict[int, Watch] = {}
        self._overrun_lock = threading.Lock()
        self._stopping_background = False
        """Shutdown is cancelling the background phases: their end is no failure."""
        self.signalled: int | None = None
        """A SIGTERM or SIGINT that came while the startup run was open: it ends it."""

    def connect(self, sinks: tuple[Sink, ...]) -> None:
        """Subscribe the sinks, once; the facade builds them after the lifecycle."""
        if self.sinks:
            raise RuntimeError("the sinks of a lifecycle are connected once")
        self.sinks = sinks
        for hook in _HOOKS:
            order = reversed(sinks) if hook in _END_HOOKS else sinks
            # Only the hooks a sink overrides: the base ones do nothing.
            self._hooks[hook] = tuple(
                getattr(s, hook) for s in order if getattr(type(s), hook) is not getattr(Sink, hook)
            )
        self._phase_begin = self._hooks["phase_begin"]
        self._phase_end = self._hooks["phase_end"]
        self._emit("state_changed", None, self.state)

    # -- fan-out --------------------------------------------------------------

    def _emit(self, hook: str, *args: Any) -> None:
        for call in self._hooks[hook]:
            try:
                call(*args)
            except Exception as exc:
                self._sink_failed(call, exc)

    def _sink_failed(self, call: Callable[..., None], exc: Exception) -> None:
        # When the logging itself is what broke, there is nothing more to do.
        with contextlib.suppress(Exception):
            self._log.error("lifespan.sink.failed", hook=call.__qualname__, exc_info=exc)

    def set_state(self, new: State) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        self.closing = new is State.DRAINING or new is State.STOPPING
        self._emit("state_changed", old, new)

    def notify(self, notice: Notice) -> None:
        self._emit("notice", notice)

    def check_result(
        self, check: HealthCheck, result: CheckResult, previous: CheckResult | None
    ) -> None:
        # _emit, inlined: paid on every run of every uncached check.
        for call in self._hooks["check_result"]:
            try:
                call(check, result, previous)
            except Exception as exc:
                self._sink_failed(call, exc)

    def task_started(self, task: Supervised) -> None:
        self._emit("task_started", task)

    def task_died(self, task: Supervised) -> None:
        self._emit("task_died", task)

    # -- runs and their bound -------------------------------------------------

    def begin_run(
        self, event: Event, *, rollback: bool = False, goes_on: bool = False
    ) -> RunRecord:
        """Open a startup or shutdown run, or join the one already open.

        ``goes_on``: the caller (the lifespan wrapper) raises a shutdown's
        failures at its end, so a failed shutdown phase may let the next one
        run. Without it (the middleware alone) a failure goes on as it would
        without lifewatch.
        """
        current = self.current
        if current is not None and current.event == event:
            current.goes_on = current.goes_on or goes_on
            return current
        run = RunRecord(event=event, service=self.service, rollback=rollback, goes_on=goes_on)
        if event == "startup":
            if self.boot is None and self.process_start is not None:
                self.boot = run.boot = max(0.0, run.started_at - self.process_start)
            self.startup = run
            self.startup_complete = False
            # One app serving test after test: each startup starts afresh.
            self.background_failed = False
            self.signalled = None
            self.set_state(State.STARTING)
            self._set_deadline(self.startup_timeout)
        else:
            run.link = self.startup
            self.shutdown = run
            if not rollback:
                self.set_state(State.STOPPING)
            self._set_deadline(self.shutdown_timeout)
        self.current = run
        self._emit("run_begin", run)
        return run

    def end_run(
        self, run: RunRecord, error: BaseException | None = None, *, failed: bool = False
    ) -> None:
        """Close a run once (the middleware's later call does nothing) and decide its outcome.

        ``error`` is what the run raised; ``failed`` says it failed without one
        lifewatch saw (a raw app that answered ``lifespan.startup.failed``).
        """
        if run.end is not None:
            return
        run.end = time.perf_counter()
        outcome: Outcome
        if error is not None:
            outcome = self._reason(error)
        elif failed:
            outcome = "error"
        elif run.failures:
            outcome = self._reason(run.failures[0])
        elif any(p.outcome == "degraded" for p in run.phases):
            outcome = "degraded"
        else:
            outcome = "ok"
        if outcome in ("ok", "degraded") and self._interrupted(run):
            # The signal came as the startup was ending (or where nothing could
            # cut it): it does not become ready, so it is not drained either.
            outcome = "signal"
        run.outcome = outcome
        if outcome not in ("ok", "degraded"):
            if run.failed_phase is None:
                run.failed_phase = run.event
            if run.error is None:
                run.error = error
            if run.error is None and outcome == "signal" and self.signalled is not None:
                run.error = StartupInterrupted(run.failed_phase, self.signalled)
        if self.current is run:
            self.current = None
        self._set_deadline(None)
        self._emit("run_end", run)
        if run.event == "startup":
            if outcome in ("ok", "degraded"):
                self.startup_complete = True
                self.maybe_ready()
            elif outcome == "signal":
                # Asked to stop, not broken: a pod deleted while starting is
                # no failed startup to page anyone about.
                self.set_state(State.STOPPING)
            else:
                self.set_state(State.FAILED)
        elif not run.rollback or self.state is State.STOPPING:
            self.set_state(State.STOPPED)

    @contextlib.contextmanager
    def bound(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that follows the open run's bound, and that a signal during
        startup cancels.

        The lifespan wrapper opens one around each lifespan it enters, and
        keeps it open for that lifespan's whole life (startup, serving,
        shutdown), so the scopes the lifespan opens nest inside it, as anyio
        and trio require. Only the innermost open scope carries the deadline:
        a timeout (or a signal) cuts what runs now, and the lifespans around
        it still get their turn (a shutdown's later phases, a rollback after
        a failed startup), each cut at once if the deadline has passed.
        """
        scope = anyio.CancelScope()
        self._scopes.append(scope)
        self._retarget()
        try:
            with scope:
                yield scope
        finally:
            self._scopes.remove(scope)
            self._retarget()

    def _set_deadline(self, timeout: float | None) -> None:
        self._deadline = math.inf if timeout is None else anyio.current_time() + timeout
        self._retarget()

    def _retarget(self) -> None:
        # Only where it changes: setting a scope's deadline reschedules its timer.
        scopes = self._scopes
        for scope in scopes[:-1]:
            if scope.deadline != math.inf:
                scope.deadline = math.inf
        if scopes and scopes[-1].deadline != self._deadline:
            scopes[-1].deadline = self._deadline

    # -- a signal during startup ----------------------------------------------

    def startup_signalled(self, signum: int) -> bool:
        """Note a SIGTERM/SIGINT that came while the startup run is open; True if so.

        Called from the signal handler itself (between two bytecodes of the
        main thread, which may be blocked in a sync phase): plain attribute
        reads and one write, so that a phase ending later sees it even before
        the event loop runs again.
        """
        run = self.startup
        if run is None or run.end is not None or self.current is not run:
            return False
        if self.signalled is None:
            self.signalled = signum
        return True

    def cut_startup(self) -> None:
        """On the event loop: cancel what the startup runs now (the innermost bound)."""
        if self.signalled is not None and self._scopes and self._interrupted(self.current):
            self._scopes[-1].cancel()

    def _interrupted(self, run: RunRecord | None) -> bool:
        return run is not None and run is self.startup and self.signalled is not None

    def bound_hit(self) -> bool:
        """Whether the open run's bound has cut it (so a cancellation is a timeout)."""
        return any(scope.cancel_called for scope in self._scopes)

    def _reason(self, error: BaseException) -> Reason:
        if isinstance(error, PhaseTimeout):
            return "timeout"
        if isinstance(error, StartupInterrupted):
            return "signal"
        if isinstance(error, _cancelled_class()):
            if self._interrupted(self.current):
                return "signal"
            return "timeout" if self.bound_hit() else "cancelled"
        return "error"

    def _limit(self, event: Event) -> tuple[float, str]:
        if event == "startup":
            return self.startup_timeout or 0.0, "startup_timeout"
        return self.shutdown_timeout or 0.0, "shutdown_timeout"

    # -- phases ---------------------------------------------------------------

    def open_phase(
        self,
        name: str,
        *,
        parent: PhaseRecord | None,
        critical: bool,
        timeout: float | None,
        tags: dict[str, str],
        background: bool = False,
        sync: bool = False,
    ) -> PhaseRecord:
        """Start a phase record in the open run (the startup one for a background phase).

        Called in the thread that runs the phase: with a ``timeout``, the
        watchdog watches that thread (``sync``: a plain ``with`` block, which
        nothing can cancel; otherwise an event loop, which its own cancel
        scope cuts unless the loop is blocked).
        """
        run = self.startup if background and self.startup is not None else self.current
        if parent is not None and parent.run is not run:
            parent = None
        event: Event
        if run is not None:
            event = run.event
        else:
            event = "shutdown" if self.state in (State.STOPPING, State.STOPPED) else "startup"
        phase = PhaseRecord(
            name=name,
            event=event,
            run=run,
            parent=parent,
            critical=critical,
            timeout=timeout,
            background=background,
            tags=tags,
        )
        if run is not None:
            run.phases.append(phase)
        # The fan-out of _emit, inline: this and phase_end run for every phase.
        for call in self._phase_begin:
            try:
                call(phase)
            except Exception as exc:
                self._sink_failed(call, exc)
        if timeout is not None:
            deadline = phase.start + timeout + (0.0 if sync else ASYNC_GRACE)
            self._watches[phase.id] = WATCHDOG.watch(
                deadline, threading.get_ident(), lambda frame: self._overrun(phase, frame)
            )
        return phase

    def _overrun(self, phase: PhaseRecord, frame: FrameType | None) -> None:
        """The watchdog's report (in its thread): ``phase`` is still running past its timeout."""
        where, stack = describe(frame)  # reads source lines: here, not on the loop
        with self._overrun_lock:
            if phase.end is not None:
                return
            phase.overran = True
            fields: dict[str, Any] = {
                "phase": phase.name,
                "lifespan_event": phase.event,
                "timeout_s": phase.timeout,
                "stuck_at": where,
                "stack": stack,
            }
            if phase.trace_id:
                fields["trace_id"] = format(phase.trace_id, "032x")
                fields["span_id"] = format(phase.span_id, "016x")
            # Under the lock: the phase cannot end (and its span close) meanwhile.
            self.notify(Notice("lifespan.phase.overrun", "warning", fields, phase=phase))

    def close_phase(self, phase: PhaseRecord, error: BaseException | None) -> bool:
        """Record how a phase ended; True when its error is to be suppressed.

        Suppressed: a non-critical phase's failure (it degrades, startup goes
        on) and, during shutdown, any phase's failure (every shutdown phase
        runs; the errors are raised at the end of the run). Cancellation and
        ``KeyboardInterrupt`` and the like are never suppressed.
        """
        watch = self._watches.pop(phase.id, None) if self._watches else None
        if watch is None:
            phase.end = time.perf_counter()
        else:
            with self._overrun_lock:
                phase.end = time.perf_counter()
                watch.cancel()
        run = phase.run
        if phase.timeout is not None and (phase.overran or phase.end - phase.start > phase.timeout):
            error = self._overran(phase, error)
        if error is None and not phase.background and self._interrupted(run):
            # A signal came while it ran (a sync block the loop could not cut,
            # or a block that never awaited): the startup ends here.
            assert self.signalled is not None
            error = StartupInterrupted(phase.name, self.signalled)
        if error is None:
            phase.outcome = "ok"
            for call in self._phase_end:
                try:
                    call(phase)
                except Exception as exc:
                    self._sink_failed(call, exc)
            return False
        reason = self._reason(error)
        if phase.background and reason == "cancelled" and self._stopping_background:
            # Shutdown came before it finished: a cancellation, not a failure.
            phase.outcome = "cancelled"
            self._emit("phase_end", phase)
            return False
        if reason == "timeout" and not isinstance(error, PhaseTimeout):
            # Cut by the run's bound: say so, rather than "CancelledError".
            bound, limit = self._limit(phase.event)
            recorded: BaseException = PhaseTimeout(phase.name, bound, limit, phase.event)
        elif reason == "signal" and not isinstance(error, StartupInterrupted):
            # Cut by the signal: the innermost phase's error, which names it.
            assert self.signalled is not None
            inner = run.error if run is not None else None
            if isinstance(inner, StartupInterrupted):
                recorded = inner
            else:
                recorded = StartupInterrupted(phase.name, self.signalled)
        else:
            recorded = error
        if isinstance(error, Exception) and not isinstance(error, LifewatchError):
            # The innermost phase names itself on the exception, once.
            origin = not has_note(error)
            if origin:
                add_note(error, f"lifewatch: {phase.event} phase {phase.name!r} failed ({reason})")
        elif run is None:
            origin = True
        elif run.event == "shutdown":
            origin = not any(isinstance(f, PhaseTimeout) for f in run.failures)
        else:
            origin = run.failed_phase is None
        phase.reason, phase.error, phase.origin = reason, recorded, origin
        suppress = False
        if not phase.critical and isinstance(error, Exception) and reason != "signal":
            phase.outcome = "degraded"
            suppress = True
            if run is not None and run.error is error:
                # A critical child failed inside this non-critical phase: the
                # failure stops here, so the run did not fail.
                run.failed_phase = run.error = None
            if run is not None and run.end is not None and run.outcome == "ok":
                run.outcome = "degraded"  # a background phase, after startup ended
        else:
            phase.outcome = reason
            if run is not None:
                if origin and run.failed_phase is None:
                    run.failed_phase, run.error = phase.name, recorded
                if run.event == "shutdown":
                    # Shutdown goes on past a failed phase; the run raises at the end.
                    suppress = run.goes_on and isinstance(error, Exception)
                    if origin and (suppress or not run.failures):
                        run.failures.append(recorded)
        self._emit("phase_end", phase)
        return suppress

    def _overran(self, phase: PhaseRecord, error: BaseException | None) -> BaseException | None:
        """A phase that ended past its timeout without being cut by it: a timeout.

        Blocking code, or an event loop too blocked to fire the phase's own
        cancel scope. Never ``ok``: the error becomes a ``PhaseTimeout`` with
        what the block raised, if anything, as its cause. A cancellation, or a
        timeout already raised, stays what it is.
        """
        if error is not None and (
            not isinstance(error, Exception) or isinstance(error, PhaseTimeout)
        ):
            return error
        timeout = PhaseTimeout(phase.name, phase.timeout or 0.0, "timeout", phase.event)
        timeout.__cause__ = error
        return timeout

    def cut(self, run: RunRecord, name: str) -> LifewatchError:
        """The error a run raises when its bound (or a signal) cut it, naming the phase it cut."""
        if isinstance(run.error, StartupInterrupted):
            return run.error  # the one its innermost phase recorded
        if self._interrupted(run) and self.signalled is not None:
            return StartupInterrupted(run.failed_phase or name, self.signalled)
        bound, limit = self._limit(run.event)
        return PhaseTimeout(run.failed_phase or name, bound, limit, run.event)

    # -- readiness and background phases --------------------------------------

    def maybe_ready(self) -> None:
        """Ready once startup completed and no background phase is pending.

        Traffic refused by hand: ``draining`` instead, until it is accepted.
        """
        if (
            self.state is State.STARTING
            and self.startup_complete
            and not self.background
            and not self.background_failed
        ):
            self.set_state(State.READY if self.refusal is None else State.DRAINING)

    def refuse_traffic(self, reason: str) -> None:
        """Out of rotation by hand: readiness fails (state ``draining``) with ``reason``.

        Spring's ``REFUSING_TRAFFIC``: the process goes on serving what still
        comes, and ``accept_traffic`` puts it back. Only a ready (or starting)
        instance moves; one stopping or failed stays as it is.
        """
        if self.refusal is None:
            # The drain is the refusal's own only if it made it.
            self._refusal_drains = self.state in (State.READY, State.STARTING)
        self.refusal = reason
        self.notify(Notice("lifespan.traffic.refused", "warning", {"reason": reason}))
        if self.state is State.READY:
            self.set_state(State.DRAINING)

    def accept_traffic(self) -> None:
        """Back into rotation after ``refuse_traffic``; nothing else changes."""
        if self.refusal is None:
            return
        self.refusal = None
        self.notify(Notice("lifespan.traffic.accepted", "info", {}))
        if self.state is State.DRAINING and self._refusal_drains:
            self.set_state(State.READY)

    def start_background(
        self,
        name: str,
        phase: AbstractAsyncContextManager[Any],
        func: Callable[[], Awaitable[Any]],
    ) -> asyncio.Task[None]:
        """Run ``func`` inside ``phase`` while the server already serves."""

        async def run() -> None:
            try:
                async with phase:
                    await func()
            except Exception:
                self.background_failed = True
                self.set_state(State.FAILED)

        task = asyncio.get_running_loop().create_task(run(), name=f"lifewatch:{name}")
        self.background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.background.discard(t)
            self.maybe_ready()

        task.add_done_callback(done)
        return task

    def background_names(self) -> list[str]:
        return sorted(t.get_name().removeprefix("lifewatch:") for t in self.background)

    async def stop_background(self) -> None:
        """Cancel the background phases still running, and wait for them."""
        tasks = list(self.background)
        self._stopping_background = True
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._stopping_background = False
