"""The records every sink receives: one per run, one per phase, one per notice."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._types import Event, Outcome, Reason

_ids = itertools.count(1)


# eq=False: records are equal only to themselves. The fields that point back
# (a run's phases, a phase's run and parent) stay out of repr, which would recurse.
@dataclass(eq=False, slots=True)
class RunRecord:
    """One whole startup or shutdown: the root of its phases. Only the lifecycle writes it."""

    event: Event
    service: str | None
    started_at: float = field(default_factory=time.time)
    start: float = field(default_factory=time.perf_counter)
    end: float | None = None
    outcome: Outcome | None = None
    failed_phase: str | None = None
    error: BaseException | None = None
    phases: list[PhaseRecord] = field(default_factory=list, repr=False)
    failures: list[BaseException] = field(default_factory=list)
    """Shutdown: the errors of failed phases that shutdown went on past, in order."""
    rollback: bool = False
    """A shutdown undoing a failed startup: the state stays ``failed``."""
    goes_on: bool = False
    """Shutdown goes on past a failed phase and raises its failures at the end."""
    link: RunRecord | None = field(default=None, repr=False)
    """For a shutdown: the startup run it follows (a span link)."""
    boot: float | None = None
    """For the process's first startup: seconds from process start to it
    (interpreter, imports, building the app), which lifespan timing misses."""
    trace_id: int = 0
    span_id: int = 0
    sink_data: dict[str, Any] = field(default_factory=dict, repr=False)
    id: int = field(default_factory=_ids.__next__)

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


@dataclass(eq=False, slots=True)
class PhaseRecord:
    """One run of one phase, filled in as it goes."""

    name: str
    event: Event
    run: RunRecord | None = field(repr=False)
    """None for a phase used outside any lifespan."""
    parent: PhaseRecord | None = field(repr=False)
    critical: bool
    timeout: float | None
    background: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    start: float = field(default_factory=time.perf_counter)
    end: float | None = None
    outcome: Outcome | None = None
    reason: Reason | None = None
    error: BaseException | None = None
    overran: bool = False
    """The watchdog found it still running at its deadline (a stuck thread or loop)."""
    origin: bool = False
    """This phase is where ``error`` came from, not one it passed through:
    the one place its traceback is logged."""
    trace_id: int = 0
    span_id: int = 0
    sink_data: dict[str, Any] = field(default_factory=dict, repr=False)
    id: int = field(default_factory=_ids.__next__)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


Level = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, eq=False, slots=True)
class Notice:
    """Something worth a log line that is neither a run, a phase nor a check
    (a drain step, a probe that broke). Frozen: every sink gets the same one."""

    event: str
    level: Level = "info"
    fields: Mapping[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    phase: PhaseRecord | None = None
    """The phase it is about, if any (its span gets the notice as an event)."""
