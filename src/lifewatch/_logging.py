"""Log records where the app's logs go, through structlog if the app configured it,
else the stdlib logger ``lifewatch`` (fields as ``extra``); never configures logging,
never writes a secret (``_scrub``), and is not silenced by the app's ``logging.config``.
"""

from __future__ import annotations

import contextlib
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

MODES = ("auto", "structlog", "stdlib")
_LEVELS = {name: getattr(logging, name.upper()) for name in ("debug", "info", "warning", "error")}
# A LogRecord's own attributes: an ``extra`` key among them is an error.
_RESERVED = {*logging.makeLogRecord({}).__dict__, "message", "asctime"}
# Fields on the record but not in its message (``exception`` follows as ``exc_text``).
_QUIET = frozenset(("service", "trace_id", "span_id", "exception"))
_PLAIN = re.compile(r"[^\s'\"=]+").fullmatch


def _ids(trace_id: int, span_id: int) -> dict[str, str]:
    if not trace_id:
        return {}
    return {"trace_id": format(trace_id, "032x"), "span_id": format(span_id, "016x")}


def is_structlog_logger(obj: Any) -> bool:
    """Looks like a structlog logger: ``bind`` and the level methods."""
    return all(callable(getattr(obj, m, None)) for m in ("bind", "debug", "info", "error"))


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
    return "\n".join([" ".join(parts), *tail])


class EventLog:
    """lifewatch's logger. ``choice``: ``"auto"`` (structlog if the app configured it,
    checked at each record: apps configure logging after building their ``Lifewatch``),
    ``"structlog"``, ``"stdlib"``, a ``logging.Logger``, or a structlog logger."""

    def __init__(self, service: str | None, choice: Any = "auto") -> None:
        self._service = service
        own = logging.getLogger("lifewatch")
        stdlib = isinstance(choice, logging.Logger)
        self._stdlib = choice if stdlib else own
        # One of MODES, or "app": the app's structlog logger, ``self._structlog``.
        self._mode = "stdlib" if stdlib else choice if choice in MODES else "app"
        self._structlog: Any = choice if self._mode == "app" else None
        # Whose ``disabled`` is undone: ours, and ``lifewatch`` (structlog's may write there).
        self._watched = (own,) if self._stdlib is own else (own, self._stdlib)

    def _target(self) -> Any:
        """The structlog logger to write to now, or None: the stdlib one."""
        if self._mode in ("stdlib", "app"):
            return self._structlog
        import structlog  # at the first record, not with lifewatch

        if self._mode == "auto" and not structlog.is_configured():
            return None
        if self._structlog is None:
            # Bound at each use, as the app's are; or once for good, as structlog's
            # own proxy does under cache_logger_on_first_use.
            log = structlog.get_logger("lifewatch", service=self._service)
            cached = structlog.get_config()["cache_logger_on_first_use"]
            self._structlog = log.bind() if cached else log
        return self._structlog

    def is_enabled_for(self, level: int) -> bool:
        log = self._target()
        if log is None:
            return self._stdlib.isEnabledFor(level)
        # structlog's filtering loggers, or its stdlib BoundLogger
        enabled = getattr(log, "is_enabled_for", None) or getattr(log, "isEnabledFor", None)
        return True if enabled is None else bool(enabled(level))

    def log(self, level: str, event: str, /, **fields: Any) -> None:
        """One record, scrubbed. A traceback goes as text, ``exception``, never as
        ``exc_info``: rich's handler and structlog's ``dict_tracebacks`` print locals."""
        self._enable()
        error = fields.pop("exc_info", None)
        log = self._target()
        logger = self._stdlib
        fallback = False
        if log is None:
            fallback = _unhandled(logger, _LEVELS[level])
            if not fallback and not logger.isEnabledFor(_LEVELS[level]):
                return
        for key, value in fields.items():  # no secret in any string, or list of them
            if value.__class__ is str:
                fields[key] = scrub(value)
            elif isinstance(value, (list, tuple)) and any(v.__class__ is str for v in value):
                fields[key] = [scrub(v) if v.__class__ is str else v for v in value]
        if error is not None:  # plain text: no locals, notes and causes included
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            fields["exception"] = scrub(text.rstrip("\n"))
        if log is not None:
            if self._mode == "app" and self._service is not None:  # ours have it bound
                fields = {"service": self._service, **fields}
            getattr(log, level)(event, **fields)
            return
        # Made here rather than by logger.log(): no caller lookup (it would name
        # this module), and a field named like a record attribute is renamed.
        record = logger.makeRecord(
            logger.name, _LEVELS[level], __file__, 0, message(event, fields), (), None
        )
        record.event, record.service = event, self._service
        for key, value in fields.items():
            setattr(record, "lifewatch_" + key if key in _RESERVED else key, value)
        # A stdlib formatter prints exc_text after the message; a JSON one reads the field.
        record.exc_text = fields.get("exception")
        if not fallback:
            logger.handle(record)
        elif logger.filter(record):
            # uvicorn's format, without colours, to ``sys.stderr`` as it is now (a
            # test or an app may replace it); if that fails, there is no one to tell.
            text = f"{record.levelname + ':':<9} {record.getMessage()}"
            if record.exc_text:
                text += "\n" + record.exc_text
            with contextlib.suppress(Exception):
                print(text, file=sys.stderr, flush=True)

    def _enable(self) -> None:
        """Turn back on, with a warning, a logger ``logging.config`` disabled: it
        disables every logger it does not name (alembic's ``env.py`` runs
        ``fileConfig`` mid-lifespan); a level is how one silences a library."""
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

    def debug(self, event: str, /, **fields: Any) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self.log("error", event, **fields)


def _unhandled(logger: logging.Logger, levelno: int) -> bool:
    """No handler would take this INFO-or-above record (no logging configured
    under uvicorn: Python prints WARNING and above bare), and no level set on
    the way up, ``logging.disable`` or uvicorn's ``--log-level`` silences it."""
    if levelno < logging.INFO or logger.disabled or logging_disabled_level() >= levelno:
        return False
    if "uvicorn" in sys.modules and levelno < logging.getLogger("uvicorn.error").level:
        return False
    if logger.hasHandlers():
        return False
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:  # the root's default level aside
        if node.level != logging.NOTSET:
            return logger.isEnabledFor(levelno)
        node = node.parent if node.propagate else None
    return True


class LoggingSink(Sink):
    """One record per event, bound to ``service`` and the span it happened in."""

    def __init__(self, log: EventLog, *, slow_check_threshold: float) -> None:
        self._log = log
        self._slow = slow_check_threshold
        # The error the last failed phase raised, and that phase.
        self._origin: tuple[BaseException | None, str] | None = None

    def run_begin(self, run: RunRecord) -> None:
        self._log.info(f"lifespan.{run.event}.begin", **_ids(run.trace_id, run.span_id))

    def run_end(self, run: RunRecord) -> None:
        fields: dict[str, Any] = {
            "duration_s": round(run.duration or 0.0, 6),
            "phase_count": len(run.phases),
            "outcome": run.outcome,
            **_ids(run.trace_id, run.span_id),
        }
        origin, self._origin = self._origin, None  # told; keep no error alive
        if run.event == "startup" and run.outcome in ("error", "timeout", "cancelled", "signal"):
            # Names the failed phase, whose record stated the error (if one did).
            failed: dict[str, Any] = {"phase": run.failed_phase, "reason": run.outcome}
            if origin is None or origin[0] is not run.error:
                failed.update(_error(run.outcome, run.error))
            self._log.log("error", "lifespan.startup.failed", **failed, **fields)
            return
        level = "info" if run.outcome in ("ok", None) else "warning"
        self._log.log(level, f"lifespan.{run.event}.complete", **fields)

    def phase_begin(self, phase: PhaseRecord) -> None:
        if self._log.is_enabled_for(logging.DEBUG):  # usually not: skip the fields too
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
        end = phase.end
        self._log.info(
            "lifespan.phase.end",
            phase=phase.name,
            lifespan_event=phase.event,
            duration_s=round(end - phase.start, 6) if end is not None else 0.0,
            outcome=phase.outcome,
            **_ids(phase.trace_id, phase.span_id),
        )

    def _failed(self, phase: PhaseRecord) -> None:
        """``lifespan.phase.failed``: the error stated by the phase it came from; each
        enclosing phase names that one (``failed_phase``): one failure, one error logged."""
        fields: dict[str, Any] = {
            "phase": phase.name,
            "lifespan_event": phase.event,
            "reason": phase.reason,
            "critical": phase.critical,
        }
        origin = self._origin
        if phase.origin:
            self._origin = (phase.error, phase.name)
            inner = None
        elif origin is not None and origin[0] is phase.error:
            inner = origin[1]
        else:  # the run's bound cut every phase with an error of its own
            inner = phase.run.failed_phase if phase.run is not None else None
        fields.update(
            {"failed_phase": inner} if inner is not None else _error(phase.reason, phase.error)
        )
        fields.update(_ids(phase.trace_id, phase.span_id))
        level = "warning" if phase.outcome == "degraded" else "error"
        self._log.log(level, "lifespan.phase.failed", **fields)

    def state_changed(self, old: State | None, new: State) -> None:
        # Not the initial state: set at import, often before structlog is configured.
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
        # The traceback, if there is one, states the error.
        error = {"error": task.detail} if task.error is None else {"exc_info": task.error}
        fields = {"task": task.name, "check": task.entry, "reason": task.reason, **error}
        self._log.log("error", "lifespan.task.died", **fields)

    def notice(self, notice: Notice) -> None:
        error = {} if notice.error is None else {"exc_info": notice.error}
        self._log.log(notice.level, notice.event, **{**notice.fields, **error})


def _error(reason: str | None, error: BaseException | None) -> dict[str, Any]:
    """A raised error as its traceback, else described in a line (or None)."""
    if reason == "error" and error is not None:
        return {"exc_info": error}
    return {"error": None if error is None else f"{type(error).__name__}: {error}"}
