"""``watch.phase(...)``: one timed, traced, logged step of startup or shutdown. It
reports what happened to its block; the lifecycle decides what that means."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._errors import PhaseTimeout, StartupInterrupted
from ._records import PhaseRecord
from ._validate import validate_bool, validate_name, validate_seconds

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

F = TypeVar("F", bound=Callable[..., Any])

current_phase: ContextVar[PhaseRecord | None] = ContextVar("lifewatch_phase", default=None)
"""The enclosing phase: code called from a phase, or run in a thread from one, nests under it."""


class Phase:
    """A context manager (sync and async), and a decorator (sync and async functions).

    Each ``with`` (or call) is one run, in the lifespan's open run. A
    ``timeout`` cancels an async block; nothing can cancel a sync block, so
    there the watchdog reports it and its outcome is ``timeout`` when it ends.
    """

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
        if tags is not None and (
            not isinstance(tags, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise TypeError(f"tags must be a dict of str to str; got {tags!r}")
        self.tags = dict(tags or {})
        self.background = background
        self._record: PhaseRecord | None = None
        self._scope: anyio.CancelScope | None = None
        self._token: Token[PhaseRecord | None] | None = None

    def __call__(self, func: F) -> F:
        if (
            not callable(func)
            or inspect.isgeneratorfunction(func)
            or inspect.isasyncgenfunction(func)
        ):
            raise TypeError(
                f"@watch.phase({self.name!r}) decorates functions and async functions "
                f"(not generator functions); got {func!r}"
            )
        # Each call runs a fresh copy of a template never entered: calls may overlap.
        template = copy.copy(self)
        template._record = template._scope = template._token = None
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                async with copy.copy(template):
                    return await func(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            with copy.copy(template):
                return func(*args, **kwargs)

        return sync_wrapper  # type: ignore[return-value]

    def _open(self, sync: bool) -> PhaseRecord:
        if self._record is not None:
            raise RuntimeError(f"phase {self.name!r} is already running; use a new watch.phase()")
        self._record = self._lifecycle.open_phase(
            self.name,
            parent=current_phase.get(),
            critical=self.critical,
            timeout=self.timeout,
            tags=dict(self.tags),  # each record its own
            background=self.background,
            sync=sync,
        )
        self._token = current_phase.set(self._record)
        return self._record

    def _close(self, exc: BaseException | None, cut: bool) -> bool:
        record, self._record = self._record, None
        assert record is not None and self._token is not None
        current_phase.reset(self._token)
        self._token = None
        if self._lifecycle.close_phase(record, exc):
            return True  # suppressed
        error = record.error
        if cut and error is not None and error is exc:
            raise error from None  # cut by its own scope: not "CancelledError"
        if error is not exc and isinstance(error, PhaseTimeout) and error.limit == "timeout":
            raise error  # ran past its timeout without being cut
        if exc is None and isinstance(error, StartupInterrupted):
            raise error  # a signal came while it ran: the startup ends here
        return False

    def __enter__(self) -> PhaseRecord:
        return self._open(sync=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._close(exc, cut=False)

    async def __aenter__(self) -> PhaseRecord:
        record = self._open(sync=False)
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
        scope, self._scope = self._scope, None
        cut = False
        if scope is not None and scope.__exit__(exc_type, exc, tb) and scope.cancelled_caught:
            assert self._record is not None and self.timeout is not None
            exc = PhaseTimeout(self.name, self.timeout, "timeout", self._record.event)
            cut = True
        return self._close(exc, cut)
