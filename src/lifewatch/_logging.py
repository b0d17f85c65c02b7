"""Log records where the app's logs go; never configures logging.

Through structlog when the app configured structlog, otherwise through the
stdlib logger ``lifewatch``, so the handlers and formatters the app and its
server (uvicorn) installed apply: the same format, the same destination, the
same level. A record's fields go as ``extra`` (what JSON formatters and
``structlog.stdlib.ProcessorFormatter`` read), its message is readable as is,
and a traceback is passed as ``exc_info`` for the app's formatter to render,
unless it would show URL credentials (see ``EventLog.emit``): lifewatch's own
records never carry a secret, whichever way they go.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import TYPE_CHECKING, Any

from ._errors import scrub
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._types import State

if TYPE_CHECKING:
    from ._checks import CheckResult, HealthCheck
    from ._supervise import Supervised

_NO_IDS: dict[str, str] = {}
MODES = ("auto", "structlog", "stdlib")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# A LogRecord's own attributes: an ``extra`` key among them is an error.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}
# In ``extra`` and on the record, not repeated in the readable message.
_QUIET = frozenset(("service", "trace_id", "span_id"))


def _ids(trace_id: int, span_id: int) -> dict[str, str]:
    if not trace_id:
        return _NO_IDS
    return {"trace_id": format(trace_id, "032x"), "span_id": format(span_id, "016x")}


def is_structlog_logger(obj: Any) -> bool:
    """Looks like a structlog logger: ``bind`` and the level methods."""
    return all(callable(getattr(obj, m, None)) for m in ("bind", "debug", "info", "error"))


_PLAIN = re.compile(r"[^\s'\"=]+").fullmatch


def message(event: str, fields: dict[str, Any]) -> str:
    """``lifespan.phase.end phase=database duration_s=0.31 outcome=ok``; multi-line values after."""
    parts = [event]
    tail: list[str] = []
    for key, value in fields.items():
        if value is None or key in _QUIET:
            continue
        if value.__class__ is not str or _PLAIN(value):
            parts.append(f"{key}={value}")
        elif "\n" in value:
            tail.append(f"{key}:\n{value.rstrip()}")
        else:
            parts.append(f"{key}={value!r}")
    text = " ".join(parts)
    return "\n".join([text, *tail]) if tail else text


class EventLog:
    """lifewatch's logger: ``log.info("lifespan.phase.end", phase=..., ...)``.

    ``choice``: ``"auto"`` (structlog if the app configured it, checked at
    each record since apps configure logging after building their
    ``Lifewatch``), ``"structlog"``, ``"stdlib"``, a ``logging.Logger``, or a
    structlog logger.
    """

    __slots__ = ("_auto", "_configured", "_service", "_stdlib", "_structlog")

    def __init__(self, service: str | None, choice: Any = "auto") -> None:
        self._service = service
        self._auto = choice == "auto"
        self._configured: Any = None
        """``structlog.is_configured``, once structlog is loaded (auto only)."""
        self._stdlib: logging.Logger | None = None
        self._structlog: _Deferred | _Bound | None = None
        if isinstance(choice, logging.Logger):
            self._stdlib = choice
        elif choice == "stdlib":
            self._stdlib = logging.getLogger("lifewatch")
        elif choice in ("auto", "structlog"):
            # A lazy proxy, resolved at each use (or once, with the app's
            # cache_logger_on_first_use): binding now would freeze structlog's
            # configuration before the app made it.
            self._structlog = _Deferred(service)
            if self._auto:
                self._stdlib = logging.getLogger("lifewatch")
        else:  # a structlog logger of the app's
            self._structlog = _Bound(choice, service)

    def _target(self) -> Any:
        """The structlog logger to write to now, or None: the stdlib one."""
        if self._auto:
            configured = self._configured
            if configured is None:
                import structlog  # at the first record, not with lifewatch

                configured = self._configured = structlog.is_configured
            if not configured():
                return None
        elif self._stdlib is not None:
            return None
        assert self._structlog is not None
        return self._structlog.resolve()

    def is_enabled_for(self, level: int) -> bool:
        log = self._target()
        if log is None:
            assert self._stdlib is not None
            return self._stdlib.isEnabledFor(level)
        # structlog's filtering loggers, or its stdlib BoundLogger
        enabled = getattr(log, "is_enabled_for", None) or getattr(log, "isEnabledFor", None)
        return True if enabled is None else bool(enabled(level))

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.emit(level, event, fields)

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """One record; ``fields`` is the record's own (``exc_info`` is taken out of it).

        Scrubbed on both ways out: no string field carries URL credentials,
        and a traceback that would show them goes as plain text, scrubbed
        (``exception``), never as ``exc_info``. With structlog unconfigured
        (its default renderer prints every frame's locals when ``rich`` is
        installed, and a local can hold a password) a traceback always goes
        as plain text.
        """
        log = self._target()
        if log is not None:
            _scrub_fields(fields)
            error = fields.get("exc_info")
            if isinstance(error, BaseException):
                import structlog  # loaded already, by the app or _target

                text, clean = _traceback(error)
                if clean != text or not structlog.is_configured():
                    del fields["exc_info"]
                    fields["exception"] = clean
            getattr(log, level)(event, **fields)
            return
        logger = self._stdlib
        assert logger is not None
        levelno = _LEVELS[level]
        if not logger.isEnabledFor(levelno):
            return
        _scrub_fields(fields)
        error = fields.pop("exc_info", None)
        exc = exc_text = None
        if error is not None:
            text, clean = _traceback(error)
            if clean == text:
                exc = (type(error), error, error.__traceback__)
            else:
                exc_text = clean  # a stdlib formatter prints it after the message
        # Built directly rather than through logger.log(): no caller lookup
        # (it would name this module), and the extra keys are known safe.
        record = logger.makeRecord(
            logger.name, levelno, __file__, 0, _Message(event, fields), (), exc
        )
        attrs = record.__dict__
        attrs["event"] = event
        attrs["service"] = self._service
        for key, value in fields.items():
            attrs["lifewatch_" + key if key in _RESERVED else key] = value
        if exc_text is not None:
            record.exc_text = exc_text
            attrs["exception"] = exc_text  # for JSON formatters, which read no exc_text
        logger.handle(record)

    def debug(self, event: str, **fields: Any) -> None:
        self.emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self.emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self.emit("error", event, fields)


def _scrub_fields(fields: dict[str, Any]) -> None:
    """URL credentials out of every string field, in place."""
    for key, value in fields.items():
        if value.__class__ is str and "@" in value:
            fields[key] = scrub(value)


def _traceback(error: BaseException) -> tuple[str, str]:
    """The plain traceback (never locals), and the same scrubbed."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    text = text.rstrip("\n")
    return text, scrub(text)


class _Message:
    """A record's message, made readable only when a handler formats it."""

    __slots__ = ("_event", "_fields", "_text")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self._event = event
        self._fields = fields
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = message(self._event, self._fields)
        return self._text


class _Bound:
    """An app's structlog logger, with ``service`` on every record, bound at each use."""

    __slots__ = ("_logger", "_service")

    def __init__(self, logger: Any, service: str | None) -> None:
        self._logger = logger
        self._service = service

    def resolve(self) -> Any:
        return self if self._service is not None else self._logger

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._logger, name)
        if name not in _LEVELS:
            return method
        return lambda event, **kw: method(event, service=self._service, **kw)


def logger(service: str | None, choice: Any = "auto") -> EventLog:
    """The log lifewatch writes to (see ``EventLog``)."""
    return EventLog(service, choice)


class _Deferred:
    """structlog's logger, looked up (and structlog imported) at first use.

    Bound at each use, as structlog's own lazy proxy does; when the app's
    configuration caches the bound logger (``cache_logger_on_first_use``),
    the proxy hands out that one logger for good, so it is kept here too:
    one lookup per record, not three.
    """

    __slots__ = ("_cached", "_probed", "_proxy", "_service")

    def __init__(self, service: str | None) -> None:
        self._service = service
        self._proxy: Any = None
        self._cached: Any = None
        self._probed = False

    def resolve(self) -> Any:
        cached = self._cached
        if cached is not None:
            return cached
        proxy = self._proxy
        if proxy is None:
            import structlog

            proxy = self._proxy = structlog.get_logger("lifewatch", service=self._service)
        bound = proxy.bind()
        if not self._probed:
            # Cached by structlog: the same logger at every bind, for good.
            self._probed = True
            if proxy.bind() is bound:
                self._cached = bound
        return bound


class LoggingSink(Sink):
    """One record per event, bound to ``service`` and the span it happened in."""

    def __init__(self, log: EventLog, *, slow_check_threshold: float) -> None:
        self._log = log
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
        if run.event == "startup" and run.outcome in ("error", "timeout", "cancelled", "signal"):
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
        self._log.log(level, f"lifespan.{run.event}.complete", **fields, **ids)

    def phase_begin(self, phase: PhaseRecord) -> None:
        # Usually filtered out: then skip building the record's fields too.
        if not self._log.is_enabled_for(logging.DEBUG):
            return
        self._log.debug(
            "lifespan.phase.begin",
            phase=phase.name,
            lifespan_event=phase.event,
            critical=phase.critical,
            **_ids(phase.trace_id, phase.span_id),
        )

    def phase_end(self, phase: PhaseRecord) -> None:
        if phase.reason is not None:
            ids = _ids(phase.trace_id, phase.span_id)
            # The traceback once, where the error came from, not again at
            # every enclosing phase; a non-critical failure is a warning.
            level = "warning" if phase.outcome == "degraded" else "error"
            self._log.log(
                level,
                "lifespan.phase.failed",
                phase=phase.name,
                lifespan_event=phase.event,
                reason=phase.reason,
                critical=phase.critical,
                exc_info=phase.error if phase.reason == "error" and phase.origin else None,
                error=_describe(phase.error),
                **ids,
            )
        # The record of every phase: its fields made once, in one dict.
        end = phase.end
        fields: dict[str, Any] = {
            "phase": phase.name,
            "lifespan_event": phase.event,
            "duration_s": round(end - phase.start, 6) if end is not None else 0.0,
            "outcome": phase.outcome,
        }
        if phase.trace_id:
            fields["trace_id"] = format(phase.trace_id, "032x")
            fields["span_id"] = format(phase.span_id, "016x")
        self._log.emit("info", "lifespan.phase.end", fields)

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
            log.log(
                "error" if check.critical else "warning",
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
        self._log.log(notice.level, notice.event, **fields)


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"
