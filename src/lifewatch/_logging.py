"""Structured log events, from one logger; never configures logging."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

import structlog

from ._errors import scrub
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._types import State

if TYPE_CHECKING:
    from ._checks import CheckResult, HealthCheck
    from ._supervise import Supervised

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
    return Scrubbed(structlog.get_logger("lifewatch", service=service))


class Scrubbed:
    """A logger whose records never carry URL credentials nor local variables.

    Every string field is scrubbed. An exception is logged as its traceback,
    rendered here in the plain format and scrubbed (``exception``, what
    structlog's ``format_exc_info`` would have made), instead of as
    ``exc_info``, when that traceback would show credentials, or when the app
    has not configured structlog: its default renderer prints every frame's
    local variables when ``rich`` is installed, and a local can hold a
    password. An app that configured structlog gets ``exc_info`` for its own
    processors to render.
    """

    __slots__ = ("_log",)

    def __init__(self, log: Any) -> None:
        self._log = log

    def is_enabled_for(self, level: int) -> bool:
        enabled = getattr(self._log, "is_enabled_for", None)
        return True if enabled is None else bool(enabled(level))

    def __getattr__(self, level: str) -> Any:
        method = getattr(self._log, level)

        def log(event: str, **fields: Any) -> Any:
            for key, value in fields.items():
                if isinstance(value, str) and "@" in value:
                    fields[key] = scrub(value)
            error = fields.get("exc_info")
            if isinstance(error, BaseException):
                text = "".join(traceback.format_exception(error))
                clean = scrub(text)
                if clean != text or not structlog.is_configured():
                    del fields["exc_info"]
                    fields["exception"] = clean.rstrip("\n")
            return method(event, **fields)

        return log


class LoggingSink(Sink):
    """One record per event, bound to ``service`` and the span it happened in."""

    def __init__(self, log: Any, *, slow_check_threshold: float) -> None:
        self._log = log if isinstance(log, Scrubbed) else Scrubbed(log)
        self._slow = slow_check_threshold

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
            # The traceback once, where the error came from, not again at
            # every enclosing phase; a non-critical failure is a warning.
            level = "warning" if phase.outcome == "degraded" else "error"
            getattr(self._log, level)(
                "lifespan.phase.failed",
                phase=phase.name,
                lifespan_event=phase.event,
                reason=phase.reason,
                critical=phase.critical,
                exc_info=phase.error if phase.reason == "error" and phase.origin else None,
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

    def check_result(
        self, check: HealthCheck, result: CheckResult, previous: CheckResult | None
    ) -> None:
        log = self._log
        if not result.ok and (previous is None or previous.ok):
            getattr(log, "error" if check.critical else "warning")(
                "lifespan.check.failed",
                check=check.name,
                reason=result.reason,
                error=result.detail,
                critical=check.critical,
                probes=sorted(check.probes),
                duration_s=round(result.duration, 6),
            )
        elif result.ok and previous is not None and not previous.ok:
            log.info(
                "lifespan.check.recovered",
                check=check.name,
                failed_for_s=round(result.monotonic - previous.monotonic, 3),
                duration_s=round(result.duration, 6),
            )
        if result.reason != "timeout" and result.duration > self._slow:
            log.warning(
                "lifespan.check.slow",
                check=check.name,
                duration_s=round(result.duration, 6),
                threshold_s=self._slow,
            )

    def task_died(self, task: Supervised) -> None:
        self._log.error(
            "lifespan.task.died",
            task=task.name,
            check=task.entry,
            reason=task.reason,
            error=task.detail,
            exc_info=task.error,
        )

    def notice(self, notice: Notice) -> None:
        fields = dict(notice.fields)
        if notice.error is not None:
            fields["exc_info"] = notice.error
        getattr(self._log, notice.level)(notice.event, **fields)


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"
