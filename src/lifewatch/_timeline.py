"""The last startup and shutdown as a timeline, and its JSON (Spring Boot's
``/actuator/startup``), with the spans' ids (or lifewatch's record numbers)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._http import iso_utc
from ._records import PhaseRecord, RunRecord
from ._types import Event, Outcome, Reason

Kind = Literal["boot", "run", "phase"]


@dataclass(frozen=True)
class TimelineEntry:
    """One bar of the waterfall: a whole startup/shutdown run, or one phase in it.

    The first startup of a process is preceded by ``boot`` (kind ``boot``):
    process start to the first lifespan event, at a negative offset.
    """

    id: str
    """The span id (16 hex digits) when a span was recorded, else lifewatch's record number."""
    parent_id: str | None
    """The enclosing phase, or the run for a top-level phase; ``None`` for a run."""
    name: str
    """The phase name; ``lifespan.startup`` / ``lifespan.shutdown`` for a run (as its span)."""
    event: Event
    kind: Kind
    start: float
    """Seconds from the start of its run (0 for the run itself; minus its duration for boot)."""
    duration: float | None
    """Seconds; ``None`` while it still runs (a background phase, say)."""
    outcome: Outcome | None
    """``None`` while it still runs."""
    elapsed: float = 0.0
    """Seconds so far: the duration once finished, the time it has run while running."""
    reason: Reason | None = None
    critical: bool = True
    background: bool = False
    depth: int = 0
    """0 for a run, 1 for a top-level phase, 2 for a phase inside it, and so on."""
    started_at: float = 0.0
    """Wall-clock start (Unix seconds)."""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def end(self) -> float | None:
        """Seconds from the start of its run to its end; ``None`` while running."""
        return None if self.duration is None else self.start + self.duration

    @property
    def failed(self) -> bool:
        """Anything but a clean finish: error, timeout, cancelled or degraded."""
        return self.outcome not in (None, "ok")


@dataclass(frozen=True)
class Timeline:
    """The last startup and shutdown, as a flat list of entries in start order:
    each run, then its phases (children after their parent)."""

    service: str | None
    entries: tuple[TimelineEntry, ...]
    process_started_at: float | None = None

    def run(self, event: Event) -> tuple[TimelineEntry, ...]:
        """The entries of the startup or of the shutdown (empty if it has not happened)."""
        return tuple(e for e in self.entries if e.event == event)

    def find(self, name: str, event: Event = "startup") -> TimelineEntry:
        """The one entry with this name in that run; ``KeyError`` if none or ambiguous."""
        found = [e for e in self.entries if e.name == name and e.event == event]
        if len(found) != 1:
            raise KeyError(f"{len(found)} {event} entries named {name!r} in the timeline")
        return found[0]

    def to_dict(self) -> dict[str, Any]:
        """Spring Boot's ``/actuator/startup`` shape, lifewatch's fields beside
        each ``startupStep`` and the same facts as tags named like the span attributes."""
        from ._version import __version__

        return {
            "lifewatchVersion": __version__,
            "service": self.service,
            "processStartTime": _instant(self.process_started_at),
            "timeline": {
                "startTime": _instant(self.entries[0].started_at if self.entries else None),
                "events": [_event_json(e) for e in self.entries],
            },
        }


def _event_json(e: TimelineEntry) -> dict[str, Any]:
    tags: dict[str, str] = {"lifespan.event": e.event, "lifespan.outcome": e.outcome or "running"}
    if e.kind == "phase":
        tags["lifespan.phase.critical"] = str(e.critical).lower()
        if e.background:
            tags["lifespan.phase.background"] = "true"
    if e.reason is not None:
        tags["lifespan.phase.reason"] = e.reason
    for key, value in e.tags.items():
        tags[f"lifespan.tag.{key}"] = value
    return {
        "startTime": _instant(e.started_at),
        "endTime": None if e.duration is None else _instant(e.started_at + e.duration),
        "duration": None if e.duration is None else iso_duration(e.duration),
        "startupStep": {
            "id": e.id,
            "parentId": e.parent_id,
            "name": e.name,
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        },
        "event": e.event,
        "kind": e.kind,
        "outcome": e.outcome,
        "reason": e.reason,
        "critical": e.critical,
        "background": e.background,
        "offsetSeconds": round(e.start, 6),
        "durationSeconds": None if e.duration is None else round(e.duration, 6),
    }


def _instant(t: float | None) -> str | None:
    """Like Java's ``Instant.toString()``: ``2026-01-01T12:00:00.123456Z``."""
    return None if t is None else iso_utc(t, "microseconds")


def iso_duration(seconds: float) -> str:
    """Like Java's ``Duration.toString()``: ``PT0.012S``, ``PT1M30S``, ``PT0S``."""
    micros = max(0, round(seconds * 1_000_000))
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    secs, frac = divmod(micros, 1_000_000)
    out = "PT"
    if hours:
        out += f"{hours}H"
    if minutes:
        out += f"{minutes}M"
    if secs or frac or out == "PT":
        out += f"{secs}.{frac:06d}".rstrip("0").rstrip(".") + "S"
    return out


def _id(record: RunRecord | PhaseRecord) -> str:
    return format(record.span_id, "016x") if record.span_id else str(record.id)


def _phase_entries(
    run: RunRecord, parent: PhaseRecord | None, depth: int, now: float
) -> Iterator[TimelineEntry]:
    """The phases under ``parent`` (the run's top level for ``None``), each
    followed by its own, in start order."""
    children = [p for p in run.phases if p.parent is parent]
    for phase in sorted(children, key=lambda p: p.start):
        offset = phase.start - run.start
        yield TimelineEntry(
            id=_id(phase),
            parent_id=_id(parent or run),
            name=phase.name,
            event=phase.event,
            kind="phase",
            start=offset,
            duration=phase.duration,
            outcome=phase.outcome if phase.end is not None else None,
            elapsed=(phase.end or now) - phase.start,
            reason=phase.reason,
            critical=phase.critical,
            background=phase.background,
            depth=depth,
            # One clock for the whole run, so the JSON instants line up with the offsets.
            started_at=run.started_at + offset,
            tags=dict(phase.tags),
        )
        yield from _phase_entries(run, phase, depth + 1, now)


def build_timeline(
    service: str | None,
    startup: RunRecord | None,
    shutdown: RunRecord | None,
    process_started_at: float | None = None,
) -> Timeline:
    """A snapshot of the given runs; cheap, taken fresh on every request."""
    entries: list[TimelineEntry] = []
    if startup is not None and startup.boot is not None:
        entries.append(
            TimelineEntry(
                id="boot",
                parent_id=None,
                name="boot",
                event="startup",
                kind="boot",
                start=-startup.boot,
                duration=startup.boot,
                outcome="ok",
                elapsed=startup.boot,
                started_at=startup.started_at - startup.boot,
            )
        )
    now = time.perf_counter()
    for run in (startup, shutdown):
        if run is None:
            continue
        entries.append(
            TimelineEntry(
                id=_id(run),
                parent_id=None,
                name=f"lifespan.{run.event}",
                event=run.event,
                kind="run",
                start=0.0,
                duration=run.duration,
                outcome=run.outcome if run.end is not None else None,
                elapsed=(run.end or now) - run.start,
                started_at=run.started_at,
            )
        )
        entries += _phase_entries(run, None, 1, now)
    return Timeline(service, tuple(entries), process_started_at)
