"""Log records where the app's logs go; never configures logging.

Through structlog when the app configured structlog, else the stdlib logger
``lifewatch``, so the app's and its server's handlers apply: same format,
destination and level. Fields go as ``extra`` (what JSON formatters read).
Nothing carries a secret (``_scrub``): a traceback goes as scrubbed text,
never as ``exc_info``, which a formatter would render with frame locals.

Two guards keep records from vanishing: a logger an app's ``logging.config``
disabled (``disable_existing_loggers``, as alembic's ``env.py`` does) is
turned back on with one warning; and when no handler would take a record (no
logging configured under uvicorn), it goes to stderr in uvicorn's format.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import TYPE_CHECKING, Any

from ._compat import logging_disabled_level
from ._records import Notice, PhaseRecord, RunRecord
from ._scrub import scrub
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

    __slots__ = ("_auto", "_configured", "_service", "_stdlib", "_structlog", "_watched")

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
        # Whose ``disabled`` is undone: ``lifewatch`` (structlog's stdlib
        # factory writes there too) and the logger lifewatch writes to.
        own = logging.getLogger("lifewatch")
        self._watched = (own,) if self._stdlib in (None, own) else (own, self._stdlib)

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

        Scrubbed on both ways out (``_scrub``): every string field, and the
        traceback, which goes as plain text lifewatch rendered (no locals),
        ``exception``, never as ``exc_info``: rich's handler and structlog's
        ``dict_tracebacks`` print every frame's locals, and a formatter
        renders the message of the app's exception as it is.
        """
        self._enable()
        error = fields.pop("exc_info", None)
        log = self._target()
        if log is not None:
            _scrub_fields(fields)
            if error is not None:
                fields["exception"] = _traceback(error)
            getattr(log, level)(event, **fields)
            return
        logger = self._stdlib
        assert logger is not None
        levelno = _LEVELS[level]
        fallback = _unhandled(logger, levelno)
        if not fallback and not logger.isEnabledFor(levelno):
            return
        _scrub_fields(fields)
        # Built directly rather than through logger.log(): no caller lookup
        # (it would name this module), and the extra keys are known safe.
        record = logger.makeRecord(
            logger.name, levelno, __file__, 0, _Message(event, fields), (), None
        )
        attrs = record.__dict__
        attrs["event"] = event
        attrs["service"] = self._service
        for key, value in fields.items():
            attrs["lifewatch_" + key if key in _RESERVED else key] = value
        if error is not None:
            # A stdlib formatter prints exc_text after the message; JSON
            # formatters read no exc_text, but the field.
            record.exc_text = attrs["exception"] = _traceback(error)
        if not fallback:
            logger.handle(record)
        elif logger.filter(record):
            _FALLBACK.handle(record)

    def _enable(self) -> None:
        """Turn back on a logger of lifewatch's that ``logging.config`` disabled, and say so.

        ``fileConfig`` and ``dictConfig`` disable every existing logger their
        configuration does not name (alembic's ``env.py`` runs ``fileConfig``
        in the middle of a lifespan): from then on lifewatch's records,
        ERROR ones included, would vanish without a word. Nobody silences a
        library that way on purpose (a level does it, and is kept), so it is
        undone, once per time it happens, with a WARNING naming the way.
        """
        for logger in self._watched:
            if logger.disabled:
                logger.disabled = False
                self.warning(
                    "lifespan.logger.enabled",
                    logger=logger.name,
                    cause="disabled by the app's logging.config "
                    "(fileConfig, or dictConfig with disable_existing_loggers=True)",
                    silence=f"set a level instead: logging.getLogger({logger.name!r})"
                    ".setLevel('ERROR'), or name the logger in the configuration",
                )

    def debug(self, event: str, **fields: Any) -> None:
        self.emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self.emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self.emit("error", event, fields)


def _scrub_fields(fields: dict[str, Any]) -> None:
    """No secret in any string field, in place (lists of strings too)."""
    for key, value in fields.items():
        if value.__class__ is str:
            fields[key] = scrub(value)
        elif isinstance(value, (list, tuple)) and any(v.__class__ is str for v in value):
            fields[key] = [scrub(v) if v.__class__ is str else v for v in value]


def _traceback(error: BaseException) -> str:
    """The plain traceback (never locals; notes and causes included), scrubbed."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return scrub(text.rstrip("\n"))


def _unhandled(logger: logging.Logger, levelno: int) -> bool:
    """No handler anywhere would take this INFO-or-above record: lifewatch writes it.

    The case of an app that configured no logging under uvicorn, which sets
    up its own loggers only: Python would print WARNING and above bare
    (``logging.lastResort``) and drop the startup, phase and drain lines.
    Not when a level was set on ``lifewatch`` (or a logger above it, the
    root's default aside), or ``logging.disable`` covers the level; under
    uvicorn, not below its own level (``--log-level warning``).
    """
    if levelno < logging.INFO or logger.disabled or logging_disabled_level() >= levelno:
        return False
    # Under uvicorn, the level it set on its logger is the server's --log-level.
    if "uvicorn" in sys.modules and levelno < logging.getLogger("uvicorn.error").level:
        return False
    node: logging.Logger | None = logger
    explicit = False
    while node is not None:
        if node.handlers:
            return False
        explicit = explicit or (node.level != logging.NOTSET and node.parent is not None)
        if not node.propagate:
            break
        node = node.parent
    return not explicit or logger.isEnabledFor(levelno)


class _UvicornStyle(logging.Formatter):
    """``INFO:     message``, as uvicorn's default format (without colours)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"{record.levelname + ':':<9} {record.message}"


class _Stderr(logging.Handler):
    """To ``sys.stderr`` as it is at each record (a test or an app may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_FALLBACK = _Stderr()
_FALLBACK.setFormatter(_UvicornStyle())


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
        self._origin: tuple[BaseException | None, str] | None = None
        """The last failed phase an error came from, and that error."""

    def run_begin(self, run: RunRecord) -> None:
        self._log.info(f"lifespan.{run.event}.begin", **_ids(run.trace_id, run.span_id))

    def run_end(self, run: RunRecord) -> None:
        ids = _ids(run.trace_id, run.span_id)
        fields: dict[str, Any] = {
            "duration_s": round(run.duration or 0.0, 6),
            "phase_count": len(run.phases),
            "outcome": run.outcome,
        }
        origin, self._origin = self._origin, None  # told; keep no error alive
        if run.event == "startup" and run.outcome in ("error", "timeout", "cancelled", "signal"):
            # The failed phase's record stated the error; this one names the
            # phase. A failure no phase recorded (an app under the plain
            # middleware raising) is stated here.
            failed: dict[str, Any] = {"phase": run.failed_phase, "reason": run.outcome}
            if origin is None or origin[0] is not run.error:
                if run.outcome == "error" and run.error is not None:
                    failed["exc_info"] = run.error
                else:
                    failed["error"] = _describe(run.error)
            self._log.emit("error", "lifespan.startup.failed", {**failed, **fields, **ids})
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
            self._failed(phase)
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

    def _failed(self, phase: PhaseRecord) -> None:
        """``lifespan.phase.failed``: the error stated once, where it came from.

        The phase it came from carries the error (its traceback, which ends
        with the error and lifewatch's note, when it raised); each enclosing
        phase names that phase (``failed_phase``) and repeats nothing: one
        failed migration is one error in the log, not one per phase.
        A non-critical failure is a warning.
        """
        fields: dict[str, Any] = {
            "phase": phase.name,
            "lifespan_event": phase.event,
            "reason": phase.reason,
            "critical": phase.critical,
        }
        inner = None if phase.origin else self._inner(phase)
        if inner is not None:
            fields["failed_phase"] = inner
        elif phase.reason == "error" and phase.error is not None:
            fields["exc_info"] = phase.error
        else:
            fields["error"] = _describe(phase.error)
        if phase.origin:
            self._origin = (phase.error, phase.name)
        if phase.trace_id:
            fields.update(_ids(phase.trace_id, phase.span_id))
        self._log.emit(
            "warning" if phase.outcome == "degraded" else "error", "lifespan.phase.failed", fields
        )

    def _inner(self, phase: PhaseRecord) -> str | None:
        """The phase that ``phase``'s error came from: the last origin of that
        very error, else the run's failed phase (a run's bound cut every phase
        with an error of its own)."""
        origin = self._origin
        if origin is not None and origin[0] is phase.error:
            return origin[1]
        return phase.run.failed_phase if phase.run is not None else None

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
        fields: dict[str, Any] = {"task": task.name, "check": task.entry, "reason": task.reason}
        if task.error is not None:
            fields["exc_info"] = task.error  # the traceback states the error
        else:
            fields["error"] = task.detail
        self._log.emit("error", "lifespan.task.died", fields)

    def notice(self, notice: Notice) -> None:
        fields = dict(notice.fields)
        if notice.error is not None:
            fields["exc_info"] = notice.error
        self._log.log(notice.level, notice.event, **fields)


def _describe(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__name__}: {exc}"
