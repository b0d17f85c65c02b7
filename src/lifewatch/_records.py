"""The records every sink receives: one per run, one per phase, one per notice.

Plain classes with ``__slots__``, not dataclasses: ``@dataclass`` builds its
methods with ``exec`` when the module is imported, and ``import lifewatch`` is
part of every start of every app.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from typing import Any, Literal

from ._types import Event, Outcome, Reason

_ids = itertools.count(1)


class RunRecord:
    """One whole startup or shutdown: the root of its phases.

    Only the lifecycle writes it; sinks read it.
    """

    __slots__ = (
        "boot",
        "end",
        "error",
        "event",
        "failed_phase",
        "failures",
        "goes_on",
        "id",
        "link",
        "outcome",
        "phases",
        "rollback",
        "service",
        "sink_data",
        "span_id",
        "start",
        "started_at",
        "trace_id",
    )

    event: Event
    service: str | None
    started_at: float
    start: float
    end: float | None
    outcome: Outcome | None
    failed_phase: str | None
    error: BaseException | None
    phases: list[PhaseRecord]
    failures: list[BaseException]
    """Shutdown: the errors of failed phases that shutdown went on past, in order."""
    rollback: bool
    """A shutdown undoing a failed startup: the state stays ``failed``."""
    goes_on: bool
    """Shutdown goes on past a failed phase and raises its failures at the end."""
    link: RunRecord | None
    """For a shutdown: the startup run it follows (a span link)."""
    boot: float | None
    """For the process's first startup: seconds from process start to it
    (interpreter, imports, building the app), which lifespan timing misses."""
    trace_id: int
    span_id: int
    sink_data: dict[str, Any]
    id: int

    def __init__(
        self,
        event: Event,
        service: str | None,
        started_at: float | None = None,
        start: float | None = None,
        end: float | None = None,
        outcome: Outcome | None = None,
        failed_phase: str | None = None,
        error: BaseException | None = None,
        phases: list[PhaseRecord] | None = None,
        failures: list[BaseException] | None = None,
        rollback: bool = False,
        goes_on: bool = False,
        link: RunRecord | None = None,
        boot: float | None = None,
        trace_id: int = 0,
        span_id: int = 0,
        sink_data: dict[str, Any] | None = None,
        id: int | None = None,
    ) -> None:
        self.event = event
        self.service = service
        self.started_at = time.time() if started_at is None else started_at
        self.start = time.perf_counter() if start is None else start
        self.end = end
        self.outcome = outcome
        self.failed_phase = failed_phase
        self.error = error
        self.phases = [] if phases is None else phases
        self.failures = [] if failures is None else failures
        self.rollback = rollback
        self.goes_on = goes_on
        self.link = link
        self.boot = boot
        self.trace_id = trace_id
        self.span_id = span_id
        self.sink_data = {} if sink_data is None else sink_data
        self.id = next(_ids) if id is None else id

    def __repr__(self) -> str:
        return (
            f"RunRecord(event={self.event!r}, service={self.service!r}, "
            f"outcome={self.outcome!r}, duration={self.duration!r}, "
            f"phases={len(self.phases)}, id={self.id})"
        )

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    @property
    def last(self) -> bool:
        """Ended, the lifespan is over: a startup that failed, or a shutdown
        that undoes no failed startup. What the process holds goes with it."""
        if self.event == "startup":
            return self.outcome not in ("ok", "degraded")
        return not self.rollback


class PhaseRecord:
    """One run of one phase, filled in as it goes."""

    __slots__ = (
        "background",
        "critical",
        "end",
        "error",
        "event",
        "id",
        "name",
        "origin",
        "outcome",
        "overran",
        "parent",
        "reason",
        "run",
        "sink_data",
        "span_id",
        "start",
        "started_at",
        "tags",
        "timeout",
        "trace_id",
    )

    name: str
    event: Event
    run: RunRecord | None
    """None for a phase used outside any lifespan."""
    parent: PhaseRecord | None
    critical: bool
    timeout: float | None
    background: bool
    tags: dict[str, str]
    started_at: float
    start: float
    end: float | None
    outcome: Outcome | None
    reason: Reason | None
    error: BaseException | None
    overran: bool
    """The watchdog found it still running at its deadline (a stuck thread or loop)."""
    origin: bool
    """This phase is where ``error`` came from, not one it passed through:
    the one place its traceback is logged."""
    trace_id: int
    span_id: int
    sink_data: dict[str, Any]
    id: int

    def __init__(
        self,
        name: str,
        event: Event,
        run: RunRecord | None,
        parent: PhaseRecord | None,
        critical: bool,
        timeout: float | None,
        background: bool = False,
        tags: dict[str, str] | None = None,
        started_at: float | None = None,
        start: float | None = None,
        end: float | None = None,
        outcome: Outcome | None = None,
        reason: Reason | None = None,
        error: BaseException | None = None,
        overran: bool = False,
        origin: bool = False,
        trace_id: int = 0,
        span_id: int = 0,
        sink_data: dict[str, Any] | None = None,
        id: int | None = None,
    ) -> None:
        self.name = name
        self.event = event
        self.run = run
        self.parent = parent
        self.critical = critical
        self.timeout = timeout
        self.background = background
        self.tags = {} if tags is None else tags
        self.started_at = time.time() if started_at is None else started_at
        self.start = time.perf_counter() if start is None else start
        self.end = end
        self.outcome = outcome
        self.reason = reason
        self.error = error
        self.overran = overran
        self.origin = origin
        self.trace_id = trace_id
        self.span_id = span_id
        self.sink_data = {} if sink_data is None else sink_data
        self.id = next(_ids) if id is None else id

    def __repr__(self) -> str:
        return (
            f"PhaseRecord(name={self.name!r}, event={self.event!r}, "
            f"outcome={self.outcome!r}, duration={self.duration!r}, id={self.id})"
        )

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


Level = Literal["debug", "info", "warning", "error"]


class Frozen:
    """Assignment raises, as on a frozen dataclass: a value every sink shares.

    Subclasses set their slots once, in ``__init__``, with ``object.__setattr__``.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


class Notice(Frozen):
    """Something worth a log line that is neither a run, a phase nor a check:
    a drain step, a probe that broke, an app that does not speak lifespan.

    Frozen: every sink gets the same one.
    """

    __slots__ = ("error", "event", "fields", "level", "phase")

    event: str
    level: Level
    fields: Mapping[str, Any]
    error: BaseException | None
    phase: PhaseRecord | None
    """The phase it is about, if any (its span gets the notice as an event)."""

    def __init__(
        self,
        event: str,
        level: Level = "info",
        fields: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
        phase: PhaseRecord | None = None,
    ) -> None:
        put = object.__setattr__
        put(self, "event", event)
        put(self, "level", level)
        put(self, "fields", {} if fields is None else fields)
        put(self, "error", error)
        put(self, "phase", phase)

    def __repr__(self) -> str:
        return (
            f"Notice(event={self.event!r}, level={self.level!r}, fields={self.fields!r}, "
            f"error={self.error!r}, phase={self.phase!r})"
        )
