"""Structured log events (DESIGN section 5); never configures structlog."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from ._records import PhaseRecord, RunRecord
from ._sink import Sink
from ._types import State

_NO_IDS: dict[str, str] = {}


def _ids(trace_id: int, span_id: int) -> dict[str, str]:
    if not trace_id:
        return _NO_IDS
    return {"trace_id": format(trace_id, "032x"), "span_id": format(span_id, "016x")}


def logger(service: str | None) -> Any:
    """The ``lifewatch`` logger, bound to ``service``, resolved at each use.

    A lazy proxy, not ``get_logger().bind()``: binding resolves structlog's
    configuration there and then, and a ``Lifewatch`` is usually made at
    import, before the app configures structlog. (With the app's
    ``cache_logger_on_first_use=True`` it resolves once, at the first record.)
    """
    return structlog.get_logger("lifewatch", service=service)


class LoggingSink(Sink):
    """One record per event, bound to ``service`` and the span it happened in."""

    def __init__(self, service: str | None) -> None:
        self._log = logger(service)

    def run_begin(self, run: RunRecord) -> None:
        self._log.info(f"lifespan.{run.event}.begin", **_ids(run.trace_id, run.span_id))

    def run_end(self, run: RunRecord) -> None:
        ids = _ids(run.trace_id, run.span_id)
        fields: dict[str, Any] = {
            "duration_s": round(run.duration or 0.0, 6),
            "phase_count": len(run.phases),
            "outcome": run.outcome,
        }
        if run.event == "startup" and run.outcome in ("error", "timeout", "cancelled"):
            self._log.error(
                "lifespan.startup.failed",
                phase=run.failed_phase,
                reason=run.outcome,
                error=_describe(run.error),
                **fields,
                **ids,
            )
            return
        level = "info" if run.outcome in ("ok", None) else "warning"
        getattr(self._log, level)(f"lifespan.{run.event}.complete", **fields, **ids)

    def phase_begin(self, phase: PhaseRecord) -> None:
        # Usually filtered out: then skip building the record's fields too.
        enabled = getattr(self._log, "is_enabled_for", None)
        if enabled is not None and not enabled(logging.DEBUG):
            return
        self._log.debug(
            "lifespan.phase.begin",
            phase=phase.name,
            lifespan_event=phase.event,
            critical=phase.critical,
            **_ids(phase.trace_id, phase.span_id),
        )

    def phase_end(self, phase: PhaseRecord) -> None:
        ids = _ids(phase.trace_id, phase.span_id)
        if phase.reason is not None:
            self._log.error(
                "lifespan.phase.failed",
                phase=phase.name,
                lifespan_event=phase.event,
                reason=phase.reason,
                critical=phase.critical,
                exc_info=phase.error if phase.reason == "error" else None,
                error=_describe(phase.error),
                **ids,
            )
        self._log.info(
            "lifespan.phase.end",
            phase=phase.name,
            lifespan_event=phase.event,
            duration_s=round(phase.duration or 0.0, 6),
            outcome=phase.outcome,
            **ids,
        )

    def state_changed(self, old: State | None, new: State) -> None:
        # Not the initial state, set when the Lifewatch is made: that is often
        # at import, before the app has configured structlog.
        if old is not None:
            self._log.info("lifespan.state", **{"from": old.value, "to": new.value})


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"
