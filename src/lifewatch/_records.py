"""The one record per phase and per run that every sink receives."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from ._types import Event, Outcome, Reason

_ids = itertools.count(1)


@dataclass(eq=False)
class RunRecord:
    """One whole startup or shutdown: the root of its phases."""

    event: Event
    service: str | None
    started_at: float = field(default_factory=time.time)
    start: float = field(default_factory=time.perf_counter)
    end: float | None = None
    outcome: Outcome | None = None
    failed_phase: str | None = None
    error: BaseException | None = None
    phases: list[PhaseRecord] = field(default_factory=list)
    link: RunRecord | None = None
    """For a shutdown: the startup run it follows (a span link)."""
    trace_id: int = 0
    span_id: int = 0
    sink_data: dict[str, Any] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(eq=False)
class PhaseRecord:
    """One run of one phase, filled in as it goes."""

    name: str
    event: Event
    run: RunRecord | None
    """None for a phase used outside any lifespan."""
    parent: PhaseRecord | None
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
    trace_id: int = 0
    span_id: int = 0
    sink_data: dict[str, Any] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start
