"""The lifecycle: runs, phases and state, fanned out to the sinks.

This is the single event flow of DESIGN section 7: whoever sees a run or a
phase begin or end (the lifespan wrapper, a ``phase`` block, the middleware)
tells the lifecycle, which updates the state and hands one record to every
sink. A sink that raises is logged and skipped: observability must never take
the application down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from ._records import PhaseRecord, RunRecord
from ._sink import Sink
from ._types import Event, Outcome, State

_log = logging.getLogger("lifewatch")


class Lifecycle:
    """State of one ``Lifewatch``: current run, past runs, state, background work."""

    def __init__(self, service: str | None, sinks: Sequence[Sink]) -> None:
        self.service = service
        self.sinks = tuple(sinks)
        self._reversed = tuple(reversed(self.sinks))
        # The per-phase path calls only the hooks a sink overrides (the base
        # ones do nothing), bound once here.
        self._phase_begins = tuple(
            s.phase_begin for s in self.sinks if type(s).phase_begin is not Sink.phase_begin
        )
        self._phase_ends = tuple(
            s.phase_end for s in self._reversed if type(s).phase_end is not Sink.phase_end
        )
        self.state: State | None = None
        self.current: RunRecord | None = None
        self.startup: RunRecord | None = None
        self.shutdown: RunRecord | None = None
        self.startup_complete = False
        self.background: set[asyncio.Task[Any]] = set()
        self.background_failed = False
        self.deadline_scope: Any = None
        """The cancel scope bounding the open run, so phases can tell a timeout."""
        self.set_state(State.STARTING)

    # -- fan-out --------------------------------------------------------------

    def _call(self, sinks: tuple[Sink, ...], hook: str, *args: Any) -> None:
        for sink in sinks:
            try:
                getattr(sink, hook)(*args)
            except Exception:
                _log.exception("lifewatch: sink %s.%s failed", type(sink).__name__, hook)

    def _phase_hook(self, hooks: tuple[Any, ...], phase: PhaseRecord) -> None:
        # The per-phase path: bound methods resolved once, at construction.
        for hook in hooks:
            try:
                hook(phase)
            except Exception:
                _log.exception("lifewatch: sink hook %s failed", hook.__qualname__)

    def set_state(self, new: State) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        self._call(self.sinks, "state_changed", old, new)

    # -- runs -----------------------------------------------------------------

    def begin_run(self, event: Event, *, rollback: bool = False) -> RunRecord:
        """Open a startup or shutdown run, or join the one already open."""
        current = self.current
        if current is not None and current.event == event:
            return current
        run = RunRecord(event=event, service=self.service)
        if event == "startup":
            self.startup = run
            self.startup_complete = False
            # A second lifespan in one process (one app serving test after
            # test) starts afresh instead of staying "stopped" while serving.
            self.background_failed = False
            self.set_state(State.STARTING)
        else:
            run.link = self.startup
            self.shutdown = run
            if not rollback:
                self.set_state(State.STOPPING)
        self.current = run
        self._call(self.sinks, "run_begin", run)
        return run

    def end_run(
        self,
        run: RunRecord,
        outcome: Outcome,
        *,
        failed_phase: str | None = None,
        error: BaseException | None = None,
        rollback: bool = False,
    ) -> None:
        """Close a run once; later calls (the middleware after the wrapper) do nothing."""
        if run.end is not None:
            return
        run.end = time.perf_counter()
        if run.outcome is None or outcome != "ok":
            run.outcome = outcome
        if failed_phase is not None and run.failed_phase is None:
            run.failed_phase = failed_phase
            run.error = error
        if self.current is run:
            self.current = None
        self._call(self._reversed, "run_end", run)
        if run.event == "startup":
            if run.outcome in ("ok", "degraded"):
                self.startup_complete = True
                self.maybe_ready()
            else:
                self.set_state(State.FAILED)
        elif not rollback:
            self.set_state(State.STOPPED)

    def maybe_ready(self) -> None:
        """Ready once startup completed and no background phase is pending."""
        if (
            self.state is State.STARTING
            and self.startup_complete
            and not self.background
            and not self.background_failed
        ):
            self.set_state(State.READY)

    # -- phases ---------------------------------------------------------------

    def phase_begin(self, phase: PhaseRecord) -> None:
        if phase.run is not None:
            phase.run.phases.append(phase)
        self._phase_hook(self._phase_begins, phase)

    def phase_end(self, phase: PhaseRecord) -> None:
        run = phase.run
        if run is not None and phase.outcome == "degraded" and run.outcome in (None, "ok"):
            run.outcome = "degraded"
        self._phase_hook(self._phase_ends, phase)
