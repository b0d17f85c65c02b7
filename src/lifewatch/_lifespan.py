"""``watch.lifespan(...)``: wrap or compose lifespans, each one a phase.

Composition follows the ``AsyncExitStack`` pattern: entered in order, exited
in reverse, only those that were entered. Two things differ from a bare
``AsyncExitStack``, both on purpose: every exit runs even when an earlier one
failed (each gets the app's own exception, if any, not the previous exit's;
the errors are raised at the end, chained), and after a failed startup the
lifespans already started are shut down as usual before the error goes on.
The whole shutdown is bounded by ``shutdown_timeout``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._phase import Phase
from ._validate import validate_name

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

LifespanFactory = Callable[[Any], AbstractAsyncContextManager[Any]]

ACCEPTED = (
    "an async context manager factory (e.g. an @asynccontextmanager function), "
    "an async generator function, or a generator function taking the app"
)


def as_factory(lifespan: object, what: str) -> LifespanFactory:
    """Turn any accepted kind of lifespan into ``app -> async CM``."""
    if inspect.isasyncgenfunction(lifespan):
        return contextlib.asynccontextmanager(lifespan)
    if inspect.isgeneratorfunction(lifespan):
        cm = contextlib.contextmanager(lifespan)

        def lifted(app: Any) -> AbstractAsyncContextManager[Any]:
            return _Lifted(cm(app))

        return lifted
    if (
        not isinstance(lifespan, type)
        and hasattr(lifespan, "__aenter__")
        # an @asynccontextmanager *call* is callable too, as a decorator
        and (not callable(lifespan) or isinstance(lifespan, contextlib.AsyncContextDecorator))
    ):
        raise TypeError(
            f"{what} is an async context manager instance ({lifespan!r}); pass the "
            f"factory that makes one per app instead, i.e. {ACCEPTED}"
        )
    if inspect.iscoroutinefunction(lifespan) or not callable(lifespan):
        raise TypeError(f"{what} must be {ACCEPTED}; got {lifespan!r}")
    return lifespan


class _Lifted:
    """A sync context manager run as an async one (what Starlette does too)."""

    def __init__(self, cm: contextlib.AbstractContextManager[Any]) -> None:
        self._cm = cm

    async def __aenter__(self) -> Any:
        return self._cm.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return self._cm.__exit__(et, e, tb)


def name_of(obj: object) -> str:
    name = getattr(obj, "__name__", None)
    return name if isinstance(name, str) and name else type(obj).__name__


def _enter(cm: object, name: str) -> Any:
    if not hasattr(cm, "__aenter__") or not hasattr(cm, "__aexit__"):
        raise TypeError(
            f"lifespan {name!r} returned {cm!r}, which is not an async context manager; "
            f"a lifespan must be {ACCEPTED}"
        )
    return cm.__aenter__()


class WatchedLifespan:
    """What ``watch.lifespan(...)`` returns: a lifespan factory (``app -> CM``).

    At startup it also picks up FastAPI ``on_event`` handlers from the app,
    so they run even though ``lifespan=`` is set.
    """

    def __init__(
        self, lifecycle: Lifecycle, components: Sequence[tuple[str, LifespanFactory]]
    ) -> None:
        self.lifecycle = lifecycle
        self.components = tuple(components)
        seen: set[str] = set()
        for name, _ in self.components:
            validate_name(name, "lifespan name")
            if name in seen:
                raise ValueError(
                    f"two lifespans in one composition are named {name!r}; phase names "
                    "must be unique: pass one as a keyword argument, e.g. "
                    f"watch.lifespan(..., other_{name}=...)"
                )
            seen.add(name)

    def __call__(self, app: Any) -> AbstractAsyncContextManager[Any]:
        # Typed Any, not ``Mapping | None``: FastAPI and Starlette accept a
        # factory of either, and a union here would match neither under mypy.
        return self._run(app)

    @contextlib.asynccontextmanager
    async def _run(self, app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        lc = self.lifecycle
        startup_handlers, shutdown_handlers = event_handlers(app)
        state: dict[str, Any] = {}
        any_state = False
        # Entered as ``async with a: async with b:`` would be, so the cancel
        # scopes the lifespans hold across ``yield`` nest as anyio requires.
        stack = contextlib.AsyncExitStack()
        run = lc.begin_run("startup")
        try:
            for name, factory in self.components:
                value = await stack.enter_async_context(self._component(name, factory, app))
                if value is not None:
                    any_state = True
                    for key, item in dict(value).items():
                        state.setdefault(key, item)  # first wins, as FastAPI merges
            await self._handlers(startup_handlers)
        except BaseException as exc:
            lc.end_run(run, exc)
            # Roll back: every lifespan that started is shut down, in reverse,
            # as in a normal shutdown; then the startup's error goes on.
            rollback = lc.begin_run("shutdown", rollback=True, goes_on=True)
            try:
                await stack.__aexit__(None, None, None)
            finally:
                lc.end_run(rollback)
            raise
        lc.end_run(run)

        exc_info: tuple[Any, Any, Any] = (None, None, None)
        try:
            yield state if any_state else None
        except BaseException as exc:
            exc_info = (type(exc), exc, exc.__traceback__)
            raise
        finally:
            stopping = lc.begin_run("shutdown", goes_on=True)
            error: BaseException | None = None
            try:
                await lc.stop_background()
                await self._handlers(shutdown_handlers)
                if not await stack.__aexit__(*exc_info) and exc_info[1] is None:
                    raise_failures(stopping.failures)
            except BaseException as exc:
                error = exc
                raise
            finally:
                lc.end_run(stopping, None if error is exc_info[1] else error)

    @contextlib.asynccontextmanager
    async def _component(self, name: str, factory: LifespanFactory, app: Any) -> AsyncIterator[Any]:
        """One lifespan: a startup phase, its life inside the run's bound, a shutdown phase."""
        lc = self.lifecycle
        with lc.bound() as scope:
            async with Phase(lc, name):
                cm = factory(app)
                value = await _enter(cm, name)
            try:
                yield value
            except BaseException as exc:
                # The app's own error (or a cancellation): passed in, as nesting would.
                async with Phase(lc, name):
                    try:
                        suppressed = await cm.__aexit__(type(exc), exc, exc.__traceback__)
                    except BaseException as again:
                        if again is not exc:
                            raise
                        suppressed = False
                if not suppressed:
                    raise
            else:
                async with Phase(lc, name):
                    await cm.__aexit__(None, None, None)
        self._check_cut(scope, name)

    async def _handlers(self, handlers: Sequence[tuple[str, Callable[[], Any]]]) -> None:
        if not handlers:
            return
        lc = self.lifecycle
        with lc.bound() as scope:
            for name, handler in handlers:
                async with Phase(lc, name):
                    await _call_handler(handler)
        self._check_cut(scope, "startup")

    def _check_cut(self, scope: anyio.CancelScope | None, name: str) -> None:
        # The bound swallowed its own cancellation: a startup cut is a failure
        # (a shutdown one was recorded, and shutdown goes on to its end).
        if scope is not None and scope.cancelled_caught:
            run = self.lifecycle.current
            if run is not None and run.event == "startup":
                raise self.lifecycle.cut(run, name)


def raise_failures(failures: Sequence[BaseException]) -> None:
    """Raise what shutdown went on past: the one error, or the last one chained
    to the earlier ones as ``__context__``, as ``AsyncExitStack`` would."""
    if not failures:
        return
    for earlier, later in itertools.pairwise(failures):
        if later.__context__ is None and later is not earlier:
            later.__context__ = earlier
    raise failures[-1]


async def _call_handler(handler: Callable[[], Any]) -> None:
    result = handler()
    if inspect.isawaitable(result):
        await result


def event_handlers(
    app: Any,
) -> tuple[list[tuple[str, Callable[[], Any]]], list[tuple[str, Callable[[], Any]]]]:
    """FastAPI ``on_event`` handlers: each once, in registration order, named uniquely."""
    router = getattr(app, "router", None)
    result = []
    for attr in ("on_startup", "on_shutdown"):
        handlers = getattr(router, attr, None) or []
        seen: set[int] = set()
        names: dict[str, int] = {}
        phases = []
        for handler in handlers:
            if id(handler) in seen:
                continue
            seen.add(id(handler))
            name = name_of(handler)
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = f"{name}[{names[name]}]"
            phases.append((name, handler))
        result.append(phases)
    return result[0], result[1]
