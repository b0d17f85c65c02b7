"""The lifecycle: whoever sees something happen (a phase, a lifespan wrapper, the
middleware, a signal) tells it. It owns each run (its deadline, its outcome, every
write to its record) and holds the parts: the event bus, the readiness state, the
background phases, and the watchdog's reports of phases past their timeout.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio

from ._background import BackgroundPhases
from ._bus import EventBus
from ._errors import LifewatchError, add_note
from ._outcome import Facts, PhaseVerdict, cut_error, phase_outcome, run_outcome
from ._readiness import Readiness
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._types import Event, State
from ._watchdog import WATCHDOG, Watch, describe

if TYPE_CHECKING:
    from types import FrameType

ASYNC_GRACE = 0.25
"""The watchdog looks this long after an async phase's deadline, so that it only
speaks when the event loop could not fire the phase's own cancel scope."""


class Overruns:
    """Reports a phase still running past its timeout, with where its thread is
    stuck: nothing cancels a sync block, and a blocked loop fires no scope."""

    def __init__(self, notify: Callable[[Notice], None]) -> None:
        self._notify = notify
        self._watches: dict[int, Watch] = {}
        self._lock = threading.Lock()

    def watch(self, phase: PhaseRecord, sync: bool) -> None:
        """Watch the calling thread (a sync block's, or an event loop's)."""
        deadline = phase.start + (phase.timeout or 0.0) + (0.0 if sync else ASYNC_GRACE)
        self._watches[phase.id] = WATCHDOG.watch(
            deadline, threading.get_ident(), lambda frame: self._overrun(phase, frame)
        )

    def end(self, phase: PhaseRecord) -> None:
        """Set the phase's end, under the lock if watched: the watchdog reports before or never."""
        watch = self._watches.pop(phase.id, None)
        if watch is None:
            phase.end = time.perf_counter()
            return
        with self._lock:
            phase.end = time.perf_counter()
            watch.cancel()

    def _overrun(self, phase: PhaseRecord, frame: FrameType | None) -> None:
        """In the watchdog's thread: ``phase`` is still running past its timeout."""
        where, stack = describe(frame)  # reads source lines: here, not on the loop
        with self._lock:  # the phase cannot end (and its span close) meanwhile
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
            self._notify(Notice("lifespan.phase.overrun", "warning", fields, phase=phase))


class Lifecycle:
    """Runs and phases of one ``Lifewatch``: decides what they mean, writes their
    records, and tells its parts."""

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
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.bus = EventBus(log)
        self.readiness = Readiness(self.bus)
        self.background = BackgroundPhases(self.maybe_ready, self._background_failed)
        self.current: RunRecord | None = None
        self.startup: RunRecord | None = None
        self.shutdown: RunRecord | None = None
        self.startup_complete = False
        self._deadline = math.inf
        self._scopes: list[anyio.CancelScope] = []
        self._overruns = Overruns(self.notify)
        self.signalled: int | None = None
        """A SIGTERM or SIGINT that came while the startup run was open: it ends it."""

    def connect(self, sinks: tuple[Sink, ...]) -> None:
        """Subscribe the sinks, once, and tell them the state."""
        self.bus.connect(sinks)
        self.bus.emit("state_changed", None, self.state)

    @property
    def state(self) -> State:
        return self.readiness.state

    def notify(self, notice: Notice) -> None:
        self.bus.emit("notice", notice)

    # -- runs and their bound -------------------------------------------------

    def begin_run(
        self, event: Event, *, rollback: bool = False, goes_on: bool = False
    ) -> RunRecord:
        """Open a startup or shutdown run, or join the one already open. ``goes_on``:
        the caller raises a shutdown's failures at its end, so later phases still run."""
        current = self.current
        if current is not None and current.event == event:
            current.goes_on = current.goes_on or goes_on
            return current
        run = RunRecord(event=event, service=self.service, rollback=rollback, goes_on=goes_on)
        if event == "startup":
            if self.startup is None and self.process_start is not None:  # the process's first
                run.boot = max(0.0, run.started_at - self.process_start)
            self.startup = run
            # One app serving test after test: each startup starts afresh.
            self.startup_complete = False
            self.background.failed = False
            self.signalled = None
            self.readiness.move(State.STARTING)
            self._set_deadline(self.startup_timeout)
        else:
            run.link = self.startup
            self.shutdown = run
            if not rollback:
                self.readiness.move(State.STOPPING)
            self._set_deadline(self.shutdown_timeout)
        self.current = run
        self.bus.emit("run_begin", run)
        return run

    def end_run(
        self, run: RunRecord, error: BaseException | None = None, *, failed: bool = False
    ) -> None:
        """Close a run, once, with what it raised (``failed``: it failed without an
        error lifewatch saw, a raw app's ``lifespan.startup.failed``)."""
        if run.end is not None:
            return
        run.end = time.perf_counter()
        run.outcome, run.failed_phase, run.error = run_outcome(
            run, error, failed, self._facts(run, run.event, self.bound_hit())
        )
        if self.current is run:
            self.current = None
        self._set_deadline(None)
        self.bus.emit("run_end", run)
        if run.event == "startup":
            if run.outcome in ("ok", "degraded"):
                self.startup_complete = True
                self.maybe_ready()
            elif run.outcome == "signal":
                # Asked to stop, not broken: no failed startup to page anyone about.
                self.readiness.move(State.STOPPING)
            else:
                self.readiness.move(State.FAILED)
        elif not run.rollback or self.state is State.STOPPING:
            self.readiness.move(State.STOPPED)

    @contextlib.contextmanager
    def bound(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope for the open run's bound, which a signal during startup cancels.

        Held open for each lifespan's whole life, so its own scopes nest inside (as
        anyio and trio require). Only the innermost carries the deadline: a timeout
        cuts what runs now; the lifespans around it still get their turn.
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
        for scope in self._scopes[:-1]:
            if scope.deadline != math.inf:
                scope.deadline = math.inf
        if self._scopes and self._scopes[-1].deadline != self._deadline:
            self._scopes[-1].deadline = self._deadline

    def bound_hit(self) -> bool:
        """Whether the open run's bound has cut it (so a cancellation is a timeout)."""
        return any(scope.cancel_called for scope in self._scopes)

    def cut(self, run: RunRecord, name: str) -> LifewatchError:
        """The error a run raises when its bound (or a signal) cut it."""
        return cut_error(run, name, self._facts(run, run.event, self.bound_hit()))

    def _facts(self, run: RunRecord | None, event: Event, bound_hit: bool) -> Facts:
        interrupted = run is not None and run is self.startup and self.signalled is not None
        return Facts(
            signal=self.signalled if interrupted else None,
            bound_hit=bound_hit,
            bound=(self.startup_timeout or 0.0, "startup_timeout")
            if event == "startup"
            else (self.shutdown_timeout or 0.0, "shutdown_timeout"),
            stopping_background=self.background.stopping,
        )

    # -- a signal during startup ----------------------------------------------

    def startup_signalled(self, signum: int) -> bool:
        """Note a SIGTERM/SIGINT that came while the startup run is open; True if so.
        In the signal handler (the loop may be blocked): plain reads and one write."""
        run = self.startup
        if run is None or run.end is not None or self.current is not run:
            return False
        if self.signalled is None:
            self.signalled = signum
        return True

    def cut_startup(self) -> None:
        """On the event loop: cancel what the startup runs now (the innermost bound)."""
        run = self.current
        if self.signalled is not None and self._scopes and run is not None and run is self.startup:
            self._scopes[-1].cancel()

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
        """Start a phase record in the open run (a background one: the startup run), in the
        thread that runs it, which the watchdog watches if it has a timeout."""
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
        self.bus.emit("phase_begin", phase)
        if timeout is not None:
            self._overruns.watch(phase, sync)
        return phase

    def close_phase(self, phase: PhaseRecord, error: BaseException | None) -> bool:
        """Record how a phase ended; True when its error is to be suppressed."""
        self._overruns.end(phase)
        run = phase.run
        # A background phase runs on after its startup: only a signal that cuts
        # the run open now concerns it. Only an error asks if the bound fired.
        signal_run = self.current if phase.background else run
        facts = self._facts(signal_run, phase.event, error is not None and self.bound_hit())
        verdict = phase_outcome(phase, error, run, facts)
        if verdict.note is not None and error is not None:
            add_note(error, verdict.note)
        phase.outcome, phase.reason = verdict.outcome, verdict.reason
        phase.error, phase.origin = verdict.error, verdict.origin
        if run is not None and verdict.reason is not None:
            self._record_failure(run, phase, verdict)
        self.bus.emit("phase_end", phase)
        return not verdict.goes_on

    def _record_failure(self, run: RunRecord, phase: PhaseRecord, verdict: PhaseVerdict) -> None:
        """Write a failed phase into its run: which phase failed, what shutdown went on past."""
        if verdict.outcome == "degraded":
            if run.error is verdict.error:
                # A critical child failed inside this non-critical phase: the run did not fail.
                run.failed_phase = run.error = None
            if run.end is not None and run.outcome == "ok":
                run.outcome = "degraded"  # a background phase, after startup ended
            return
        if verdict.origin and run.failed_phase is None:
            run.failed_phase, run.error = phase.name, verdict.error
        # Shutdown raises at its end every failure it went on past; of the
        # others, the first (a bound that cut it) is enough.
        shutdown = run.event == "shutdown" and verdict.origin and verdict.error is not None
        if shutdown and (not verdict.goes_on or not run.failures):
            assert verdict.error is not None
            run.failures.append(verdict.error)

    # -- readiness and background phases --------------------------------------

    def maybe_ready(self) -> None:
        """Ready once startup completed and no background phase is pending or failed."""
        if self.startup_complete and not self.background.tasks and not self.background.failed:
            self.readiness.ready()

    def _background_failed(self) -> None:
        if self.state is not State.STOPPED:  # over already: nothing to be ready for
            self.readiness.move(State.FAILED)
