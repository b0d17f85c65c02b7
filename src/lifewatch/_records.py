"""The records every sink receives: one per run, one per phase, one per notice.

Compared by identity and shown without their links (a run holds its phases,
a phase its run), so a record never recurses in ``repr``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from typing import Any, Literal

from ._types import Event, Outcome, Reason

_ids = itertools.count(1)


def _next_id() -> int:
    return next(_ids)


@dataclasses.dataclass(eq=False, repr=False, slots=True)
class RunRecord:
    """One whole startup or shutdown: the root of its phases.

    Only the lifecycle writes it; sinks read it.
    """

    event: Event
    service: str | None
    started_at: float = dataclasses.field(default_factory=time.time)
    start: float = dataclasses.field(default_factory=time.perf_counter)
    end: float | None = None
    outcome: Outcome | None = None
    failed_phase: str | None = None
    error: BaseException | None = None
    phases: list[PhaseRecord] = dataclasses.field(default_factory=list)
    failures: list[BaseException] = dataclasses.field(default_factory=list)
    """Shutdown: the errors of failed phases that shutdown went on past, in order."""
    rollback: bool = False
    """A shutdown undoing a failed startup: the state stays ``failed``."""
    goes_on: bool = False
    """Shutdown goes on past a failed phase and raises its failures at the end."""
    link: RunRecord | None = None
    """For a shutdown: the startup run it follows (a span link)."""
    boot: float | None = None
    """For the process's first startup: seconds from process start to it
    (interpreter, imports, building the app), which lifespan timing misses."""
    trace_id: int = 0
    span_id: int = 0
    sink_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: int = dataclasses.field(default_factory=_next_id)

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


@dataclasses.dataclass(eq=False, repr=False, slots=True)
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
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    started_at: float = dataclasses.field(default_factory=time.time)
    start: float = dataclasses.field(default_factory=time.perf_counter)
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
    sink_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: int = dataclasses.field(default_factory=_next_id)

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


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class Notice:
    """Something worth a log line that is neither a run, a phase nor a check:
    a drain step, a probe that broke, an app that does not speak lifespan.

    Frozen: every sink gets the same one.
    """

    event: str
    level: Level = "info"
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    error: BaseException | None = None
    phase: PhaseRecord | None = None
    """The phase it is about, if any (its span gets the notice as an event)."""
