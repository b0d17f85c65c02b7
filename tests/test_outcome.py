"""The outcome rules, as a table: how a phase or a run ended, and what becomes of its error."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any

import pytest

from lifewatch import PhaseRecord, PhaseTimeout, RunRecord
from lifewatch._errors import StartupInterrupted, add_note
from lifewatch._outcome import Facts, cut_error, phase_outcome, run_outcome

TERM = int(signal.SIGTERM)
BOUND = Facts(bound_hit=True, bound=(5.0, "startup_timeout"))
SHUTDOWN_BOUND = Facts(bound_hit=True, bound=(20.0, "shutdown_timeout"))
SIGNAL = Facts(signal=TERM)
NO_FACTS = Facts()


class Boom(Exception):
    pass


@dataclass
class Row:
    """One phase ending: what it was, what it raised, in which run; what follows."""

    error: BaseException | None = None
    critical: bool = True
    background: bool = False
    timeout: float | None = None
    took: float = 0.001
    event: str = "startup"
    goes_on_run: bool = False
    run_error: BaseException | None = None
    failures: list[BaseException] = field(default_factory=list)
    failed_phase: str | None = None
    facts: Facts = NO_FACTS
    # expected
    outcome: str = "ok"
    reason: str | None = None
    goes_on: bool = True
    recorded: Any = None
    """The recorded error: ``"same"`` (the one raised), a type, or None."""
    note: bool = False
    origin: bool = False


def _noted() -> Boom:
    inner = Boom("inner")
    add_note(inner, "lifewatch: startup phase 'inner' failed (error)")
    return inner


def _inner_signal() -> StartupInterrupted:
    return StartupInterrupted("inner", TERM)


_SIGNALLED = _inner_signal()
PHASES = {
    "a phase that raised nothing is ok": Row(),
    "a critical phase's error goes on, noted, and is where it came from": Row(
        Boom(), outcome="error", reason="error", recorded="same", note=True, origin=True
    ),
    "a non-critical phase's error degrades and is suppressed": Row(
        Boom(),
        critical=False,
        outcome="degraded",
        reason="error",
        goes_on=False,
        recorded="same",
        note=True,
        origin=True,
    ),
    "an error an inner phase noted is not this phase's own": Row(
        _noted(), failed_phase="inner", outcome="error", reason="error", recorded="same"
    ),
    "a phase cut by its own timeout is a timeout": Row(
        PhaseTimeout("db", 1.0),
        timeout=1.0,
        took=1.0,
        outcome="timeout",
        reason="timeout",
        recorded="same",
        origin=True,
    ),
    "a phase cut by the run's bound is a timeout naming startup_timeout": Row(
        asyncio.CancelledError(),
        facts=BOUND,
        outcome="timeout",
        reason="timeout",
        recorded=PhaseTimeout,
        origin=True,
    ),
    "a phase cancelled from outside is cancelled, and the cancellation goes on": Row(
        asyncio.CancelledError(),
        outcome="cancelled",
        reason="cancelled",
        recorded="same",
        origin=True,
    ),
    "a non-critical phase cancelled from outside is not degraded": Row(
        asyncio.CancelledError(),
        critical=False,
        outcome="cancelled",
        reason="cancelled",
        recorded="same",
        origin=True,
    ),
    "a KeyboardInterrupt in a non-critical phase goes on": Row(
        KeyboardInterrupt(),
        critical=False,
        outcome="error",
        reason="error",
        recorded="same",
        origin=True,
    ),
    "a startup phase cut by a signal names the signal": Row(
        asyncio.CancelledError(),
        facts=SIGNAL,
        outcome="signal",
        reason="signal",
        recorded=StartupInterrupted,
        origin=True,
    ),
    "a signal beats the run's bound": Row(
        asyncio.CancelledError(),
        facts=Facts(signal=TERM, bound_hit=True),
        outcome="signal",
        reason="signal",
        recorded=StartupInterrupted,
        origin=True,
    ),
    "a sync phase that ran through a signal ends the startup": Row(
        facts=SIGNAL, outcome="signal", reason="signal", recorded=StartupInterrupted, origin=True
    ),
    "a non-critical phase cut by a signal is not degraded: the startup ends": Row(
        asyncio.CancelledError(),
        critical=False,
        facts=SIGNAL,
        outcome="signal",
        reason="signal",
        recorded=StartupInterrupted,
        origin=True,
    ),
    "a phase around the one a signal cut records the inner one's error": Row(
        asyncio.CancelledError(),
        facts=SIGNAL,
        run_error=_inner_signal(),
        failed_phase="inner",
        outcome="signal",
        reason="signal",
        recorded="run",
    ),
    "a non-critical phase around the one a signal cut is not degraded: the signal goes on": Row(
        _SIGNALLED,
        critical=False,
        run_error=_SIGNALLED,
        failed_phase="inner",
        outcome="signal",
        reason="signal",
        recorded="same",
    ),
    "a background phase ending as a signal comes is ok": Row(background=True, facts=SIGNAL),
    "a sync phase past its timeout is a timeout, never ok": Row(
        timeout=0.5,
        took=0.6,
        outcome="timeout",
        reason="timeout",
        recorded=PhaseTimeout,
        origin=True,
    ),
    "a block that raised past its timeout is a timeout caused by its error": Row(
        Boom(),
        timeout=0.5,
        took=0.6,
        outcome="timeout",
        reason="timeout",
        recorded=PhaseTimeout,
        origin=True,
    ),
    "a non-critical sync phase past its timeout degrades": Row(
        timeout=0.5,
        took=0.6,
        critical=False,
        outcome="degraded",
        reason="timeout",
        goes_on=False,
        recorded=PhaseTimeout,
        origin=True,
    ),
    "a shutdown phase's error is suppressed when the run raises at its end": Row(
        Boom(),
        event="shutdown",
        goes_on_run=True,
        outcome="error",
        reason="error",
        goes_on=False,
        recorded="same",
        note=True,
        origin=True,
    ),
    "a shutdown phase's error goes on under the middleware alone": Row(
        Boom(),
        event="shutdown",
        outcome="error",
        reason="error",
        recorded="same",
        note=True,
        origin=True,
    ),
    "a shutdown phase's cancellation always goes on": Row(
        asyncio.CancelledError(),
        event="shutdown",
        goes_on_run=True,
        outcome="cancelled",
        reason="cancelled",
        recorded="same",
        origin=True,
    ),
    "a shutdown phase cut by the bound is a timeout naming shutdown_timeout": Row(
        asyncio.CancelledError(),
        event="shutdown",
        goes_on_run=True,
        facts=SHUTDOWN_BOUND,
        outcome="timeout",
        reason="timeout",
        recorded=PhaseTimeout,
        origin=True,
    ),
    "a shutdown phase the bound cut after another is not where the timeout came from": Row(
        asyncio.CancelledError(),
        event="shutdown",
        goes_on_run=True,
        failures=[PhaseTimeout("first", 20.0, "shutdown_timeout", "shutdown")],
        facts=SHUTDOWN_BOUND,
        outcome="timeout",
        reason="timeout",
        recorded=PhaseTimeout,
    ),
    "a non-critical shutdown phase degrades": Row(
        Boom(),
        event="shutdown",
        critical=False,
        outcome="degraded",
        reason="error",
        goes_on=False,
        recorded="same",
        note=True,
        origin=True,
    ),
    "a background phase cancelled by shutdown is cancelled, not failed": Row(
        asyncio.CancelledError(),
        background=True,
        facts=Facts(stopping_background=True),
        outcome="cancelled",
    ),
    "a background phase cancelled otherwise is a cancelled failure": Row(
        asyncio.CancelledError(),
        background=True,
        outcome="cancelled",
        reason="cancelled",
        recorded="same",
        origin=True,
    ),
}


@pytest.mark.parametrize("row", PHASES.values(), ids=PHASES.keys())
def test_how_a_phase_ended(row: Row) -> None:
    run = RunRecord(
        row.event,  # type: ignore[arg-type]
        "svc",
        goes_on=row.goes_on_run,
        failures=list(row.failures),
        failed_phase=row.failed_phase,
        error=row.run_error,
    )
    phase = PhaseRecord(
        "db",
        run.event,
        run,
        None,
        row.critical,
        row.timeout,
        background=row.background,
        start=0.0,
        end=row.took,
    )
    verdict = phase_outcome(phase, row.error, run, row.facts)
    assert (verdict.outcome, verdict.reason, verdict.goes_on, verdict.origin) == (
        row.outcome,
        row.reason,
        row.goes_on,
        row.origin,
    )
    if row.recorded == "same":
        assert verdict.error is row.error
    elif row.recorded == "run":
        assert verdict.error is row.run_error
    elif row.recorded is None:
        assert verdict.error is None
    else:
        assert type(verdict.error) is row.recorded
    if isinstance(verdict.error, PhaseTimeout):
        assert verdict.error.phase == "db" and verdict.error.event == row.event
        if row.facts.bound_hit:
            assert verdict.error.limit == row.facts.bound[1]
        elif isinstance(row.error, Boom):
            assert verdict.error.__cause__ is row.error
    if isinstance(verdict.error, StartupInterrupted) and row.recorded is StartupInterrupted:
        assert verdict.error.phase == "db" and verdict.error.signal == signal.SIGTERM
    if row.note:
        assert verdict.note == f"lifewatch: {row.event} phase 'db' failed ({row.reason})"
    else:
        assert verdict.note is None
    # Pure: the records are as they were.
    assert run.failed_phase == row.failed_phase and run.failures == row.failures
    assert phase.outcome is None and getattr(row.error, "__notes__", None) in (
        None,
        ["lifewatch: startup phase 'inner' failed (error)"],
    )


def _run(event: str = "startup", **kw: Any) -> RunRecord:
    return RunRecord(event, "svc", **kw)  # type: ignore[arg-type]


def _degraded() -> RunRecord:
    run = _run()
    run.phases.append(PhaseRecord("cache", "startup", run, None, False, None, outcome="degraded"))
    return run


BOOM = Boom()
RUNS = {
    "a run with nothing wrong is ok": (_run(), None, False, Facts(), "ok", None, None),
    "a run with a degraded phase is degraded": (
        _degraded(),
        None,
        False,
        Facts(),
        "degraded",
        None,
        None,
    ),
    "a run that raised failed, at the startup itself when no phase did": (
        _run(),
        BOOM,
        False,
        Facts(),
        "error",
        "startup",
        BOOM,
    ),
    "a run that raised keeps the phase that failed": (
        _run(failed_phase="db", error=BOOM),
        BOOM,
        False,
        Facts(),
        "error",
        "db",
        BOOM,
    ),
    "a raw app that answered startup.failed failed": (
        _run(),
        None,
        True,
        Facts(),
        "error",
        "startup",
        None,
    ),
    "a shutdown that went on past a timeout is a timeout": (
        _run("shutdown", failures=[PhaseTimeout("db", 1.0)]),
        None,
        False,
        Facts(),
        "timeout",
        "shutdown",
        None,
    ),
    "a run cancelled by its bound is a timeout": (
        _run(),
        asyncio.CancelledError(),
        False,
        BOUND,
        "timeout",
        "startup",
        "raised",
    ),
    "a run cancelled from outside is cancelled": (
        _run(),
        asyncio.CancelledError(),
        False,
        Facts(),
        "cancelled",
        "startup",
        "raised",
    ),
    "a startup that ended ok as a signal came ends by the signal": (
        _run(),
        None,
        False,
        SIGNAL,
        "signal",
        "startup",
        StartupInterrupted,
    ),
    "a degraded startup as a signal came ends by the signal too": (
        _degraded(),
        None,
        False,
        SIGNAL,
        "signal",
        "startup",
        StartupInterrupted,
    ),
}


@pytest.mark.parametrize(
    ("run", "error", "failed", "facts", "outcome", "failed_phase", "recorded"),
    RUNS.values(),
    ids=RUNS.keys(),
)
def test_how_a_run_ended(
    run: RunRecord,
    error: BaseException | None,
    failed: bool,
    facts: Facts,
    outcome: str,
    failed_phase: str | None,
    recorded: Any,
) -> None:
    got_outcome, got_failed_phase, got_error = run_outcome(run, error, failed, facts)
    assert (got_outcome, got_failed_phase) == (outcome, failed_phase)
    if recorded == "raised":
        assert got_error is error
    elif isinstance(recorded, type):
        assert type(got_error) is recorded
    else:
        assert got_error is recorded


def test_a_cut_run_raises_a_timeout_or_the_signal_naming_the_phase() -> None:
    run = _run(failed_phase="db")
    timeout = cut_error(run, "lifespan", BOUND)
    assert isinstance(timeout, PhaseTimeout)
    assert (timeout.phase, timeout.limit, timeout.timeout) == ("db", "startup_timeout", 5.0)
    cut = cut_error(_run(), "lifespan", SIGNAL)
    assert isinstance(cut, StartupInterrupted) and cut.phase == "lifespan"
    inner = _inner_signal()
    assert cut_error(_run(error=inner), "lifespan", SIGNAL) is inner
