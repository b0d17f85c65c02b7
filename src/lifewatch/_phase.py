"""``watch.phase(...)``: one timed, traced, logged step of startup or shutdown."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._errors import PhaseTimeout
from ._records import PhaseRecord
from ._types import Event, Reason, State
from ._validate import validate_bool, validate_name, validate_seconds

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

current_phase: ContextVar[PhaseRecord | None] = ContextVar("lifewatch_phase", default=None)


class Phase:
    """An async context manager, and a decorator for async functions.

    Each ``async with`` (or each call of a decorated function) is one run of
    the phase. The event (startup or shutdown) and the parent come from where
    it runs: the open run of the lifespan, and the enclosing phase.
    """

    __slots__ = (
        "_lifecycle",
        "_record",
        "_scope",
        "_token",
        "background",
        "critical",
        "name",
        "tags",
        "timeout",
    )

    def __init__(
        self,
        lifecycle: Lifecycle,
        name: str,
        *,
        timeout: float | None = None,
        critical: bool = True,
        tags: dict[str, str] | None = None,
        background: bool = False,
    ) -> None:
        self._lifecycle = lifecycle
        self.name = validate_name(name)
        self.timeout = validate_seconds(timeout, "timeout")
        self.critical = validate_bool(critical, "critical")
        self.tags = dict(tags or {})
        self.background = background
        self._record: PhaseRecord | None = None
        self._scope: anyio.CancelScope | None = None
        self._token: Token[PhaseRecord | None] | None = None

    def _copy(self) -> Phase:
        return Phase(
            self._lifecycle,
            self.name,
            timeout=self.timeout,
            critical=self.critical,
            tags=self.tags,
            background=self.background,
        )

    def __call__(self, func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@watch.phase({self.name!r}) decorates async functions; got {func!r}")

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            async with self._copy():
                return await func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    async def __aenter__(self) -> PhaseRecord:
        if self._record is not None:
            raise RuntimeError(f"phase {self.name!r} is already running; use a new watch.phase()")
        lc = self._lifecycle
        run = lc.current
        parent = current_phase.get()
        if self.background and lc.startup is not None:
            run = lc.startup
        if parent is not None and parent.run is not run:
            parent = None
        event: Event
        if run is not None:
            event = run.event
        else:
            event = "shutdown" if lc.state in (State.STOPPING, State.STOPPED) else "startup"
        record = PhaseRecord(
            name=self.name,
            event=event,
            run=run,
            parent=parent,
            critical=self.critical,
            timeout=self.timeout,
            background=self.background,
            tags=self.tags,
        )
        self._record = record
        lc.phase_begin(record)
        self._token = current_phase.set(record)
        if self.timeout is not None:
            self._scope = anyio.CancelScope(deadline=anyio.current_time() + self.timeout)
            self._scope.__enter__()
        return record

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        record = self._record
        assert record is not None
        timed_out = False
        if self._scope is not None:
            swallowed = self._scope.__exit__(exc_type, exc, tb)
            if swallowed and self._scope.cancelled_caught:
                timed_out = True
                exc_type, exc = PhaseTimeout, PhaseTimeout(self.name, self.timeout or 0.0)
        record.end = time.perf_counter()
        if self._token is not None:
            current_phase.reset(self._token)

        reason: Reason | None = None
        if timed_out:
            reason = "timeout"
        elif exc_type is not None:
            if issubclass(exc_type, anyio.get_cancelled_exc_class()):
                scope = self._lifecycle.deadline_scope
                reason = "timeout" if scope is not None and scope.cancel_called else "cancelled"
            else:
                reason = "error"
        record.reason = reason
        record.error = exc

        suppress = False
        run = record.run
        if reason is None:
            record.outcome = "ok"
        elif not record.critical and (timed_out or issubclass(exc_type, Exception)):  # type: ignore[arg-type]
            record.outcome = "degraded"
            suppress = True
            if run is not None and run.error is exc:
                # A critical child failed inside this non-critical phase: the
                # failure stops here, so the run did not fail.
                run.failed_phase = None
                run.error = None
        else:
            record.outcome = reason
            if run is not None and run.failed_phase is None:
                run.failed_phase = self.name  # the innermost phase sees it first
                run.error = exc
            # Shutdown goes on past a failed phase (the run reports it at the end);
            # cancellation, KeyboardInterrupt and the like are never swallowed.
            suppress = (
                run is not None
                and run.event == "shutdown"
                and (timed_out or issubclass(exc_type, Exception))  # type: ignore[arg-type]
            )
        self._lifecycle.phase_end(record)
        if timed_out and not suppress:
            raise exc from None  # type: ignore[misc]
        return suppress
