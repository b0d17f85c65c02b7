"""The outcome rules: how a phase or a run ended, and what becomes of its error.
Pure functions that write nothing, so a table tests them (tests/test_outcome.py).
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import anyio

from ._errors import LifewatchError, PhaseTimeout, StartupInterrupted, has_note
from ._records import PhaseRecord, RunRecord
from ._types import Outcome, Reason


class Facts(NamedTuple):
    """What the lifecycle knows, beyond the records, when something ends."""

    signal: int | None = None
    """A SIGTERM/SIGINT that came while the startup this belongs to was open."""
    bound_hit: bool = False
    """The run's bound (``startup_timeout``/``shutdown_timeout``) has fired."""
    bound: tuple[float, str] = (0.0, "startup_timeout")
    """The run's bound in seconds and its option's name, for the error it raises."""
    stopping_background: bool = False
    """Shutdown is cancelling the background phases."""


class PhaseVerdict(NamedTuple):
    outcome: Outcome
    reason: Reason | None
    error: BaseException | None
    """What the phase records: a ``PhaseTimeout`` or ``StartupInterrupted`` in
    place of the cancellation that cut it."""
    goes_on: bool
    """The error propagates; False: suppressed (it degrades, or shutdown goes on)."""
    note: str | None
    """The PEP 678 note for the app's own exception (the innermost phase's, once)."""
    origin: bool
    """The error came from this phase (its traceback is logged here)."""


def reason_of(error: BaseException, facts: Facts) -> Reason:
    if isinstance(error, PhaseTimeout):
        return "timeout"
    if isinstance(error, StartupInterrupted):
        return "signal"
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except Exception:  # no async library running: only asyncio's can be about
        cancelled = asyncio.CancelledError
    if isinstance(error, cancelled):
        if facts.signal is not None:
            return "signal"
        return "timeout" if facts.bound_hit else "cancelled"
    return "error"


def phase_outcome(
    phase: PhaseRecord, error: BaseException | None, run: RunRecord | None, facts: Facts
) -> PhaseVerdict:
    """How ``phase`` (its ``end`` set) ended with ``error`` in ``run``.

    Suppressed (``goes_on`` False): a non-critical phase's failure (startup
    goes on, degraded), and any phase's failure in a shutdown that raises its
    failures at its end (``run.goes_on``). Cancellations always go on.
    """
    assert phase.end is not None
    # Past its timeout without being cut by it (blocking code, or a loop too
    # blocked to fire its scope): never ok, but a timeout caused by what it
    # raised. A cancellation, or a timeout already raised, stays itself.
    if (
        phase.timeout is not None
        and (phase.overran or phase.end - phase.start > phase.timeout)
        and (
            error is None or (isinstance(error, Exception) and not isinstance(error, PhaseTimeout))
        )
    ):
        timeout = PhaseTimeout(phase.name, phase.timeout, "timeout", phase.event)
        timeout.__cause__ = error
        error = timeout
    if error is None and not phase.background and facts.signal is not None:
        # A signal came while it ran, and nothing could cut it: startup ends here.
        error = StartupInterrupted(phase.name, facts.signal)
    if error is None:
        return PhaseVerdict("ok", None, None, True, None, False)
    reason = reason_of(error, facts)
    if phase.background and reason == "cancelled" and facts.stopping_background:
        # Shutdown came before it finished: a cancellation, not a failure.
        return PhaseVerdict("cancelled", None, None, True, None, False)

    recorded = error
    if reason == "timeout" and not isinstance(error, PhaseTimeout):
        # Cut by the run's bound: say so, rather than "CancelledError".
        recorded = PhaseTimeout(phase.name, *facts.bound, phase.event)
    elif reason == "signal" and not isinstance(error, StartupInterrupted):
        # Cut by the signal: the innermost phase's error, which names it.
        assert facts.signal is not None
        inner = run.error if run is not None else None
        if isinstance(inner, StartupInterrupted):
            recorded = inner
        else:
            recorded = StartupInterrupted(phase.name, facts.signal)

    note = None
    if isinstance(error, Exception) and not isinstance(error, LifewatchError):
        origin = not has_note(error)  # the innermost phase names itself, once
        if origin:
            note = f"lifewatch: {phase.event} phase {phase.name!r} failed ({reason})"
    elif run is None:
        origin = True
    elif run.event == "shutdown":
        origin = not any(isinstance(f, PhaseTimeout) for f in run.failures)
    else:
        origin = run.failed_phase is None

    if not phase.critical and isinstance(error, Exception) and reason != "signal":
        return PhaseVerdict("degraded", reason, recorded, False, note, origin)
    # Shutdown goes on past a failed phase; the run raises at its end.
    goes_on = not (
        run is not None and run.event == "shutdown" and run.goes_on and isinstance(error, Exception)
    )
    return PhaseVerdict(reason, reason, recorded, goes_on, note, origin)


def run_outcome(
    run: RunRecord, error: BaseException | None, failed: bool, facts: Facts
) -> tuple[Outcome, str | None, BaseException | None]:
    """How ``run`` ended (its outcome, failed phase and error): ``error`` is what it raised;
    ``failed``, that it failed without one (a raw app answered ``lifespan.startup.failed``)."""
    outcome: Outcome
    if error is not None:
        outcome = reason_of(error, facts)
    elif failed:
        outcome = "error"
    elif run.failures:
        outcome = reason_of(run.failures[0], facts)
    elif any(p.outcome == "degraded" for p in run.phases):
        outcome = "degraded"
    else:
        outcome = "ok"
    if outcome in ("ok", "degraded"):
        if facts.signal is None:
            return outcome, run.failed_phase, run.error
        # The signal came as the startup was ending: it is never ready, nor drained.
        outcome = "signal"
    failed_phase = run.failed_phase or run.event
    recorded = run.error if run.error is not None else error
    if recorded is None and outcome == "signal" and facts.signal is not None:
        recorded = StartupInterrupted(failed_phase, facts.signal)
    return outcome, failed_phase, recorded


def cut_error(run: RunRecord, name: str, facts: Facts) -> LifewatchError:
    """The error a run raises when its bound (or a signal) cut it, naming the phase it cut."""
    if isinstance(run.error, StartupInterrupted):
        return run.error  # the one its innermost phase recorded
    if facts.signal is not None:
        return StartupInterrupted(run.failed_phase or name, facts.signal)
    return PhaseTimeout(run.failed_phase or name, *facts.bound, run.event)
