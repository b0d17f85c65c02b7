"""``watch.lifespan(...)``: wrap or compose lifespans, each one a phase.

Composition follows the ``AsyncExitStack`` pattern: entered in order, exited
in reverse, only those that were entered, each exit run even when an earlier
one failed, the whole shutdown bounded by ``shutdown_timeout``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import ShutdownFailed, StartupFailed
from ._phase import Phase
from ._types import Outcome
from ._validate import validate_name

if TYPE_CHECKING:
    from ._watch import Lifewatch

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

    ``handlers`` picks up FastAPI ``on_event`` handlers from the app at
    startup, so they run even though ``lifespan=`` is set.
    """

    def __init__(self, watch: Lifewatch, components: Sequence[tuple[str, LifespanFactory]]) -> None:
        self.watch = watch
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
        watch = self.watch
        lc = watch._lifecycle
        startup_handlers, shutdown_handlers = _event_handlers(app)
        entered: list[tuple[str, AbstractAsyncContextManager[Any]]] = []
        state: dict[str, Any] = {}
        any_state = False

        run = lc.begin_run("startup")
        try:
            with _bounded(watch.startup_timeout) as scope:
                lc.deadline_scope = scope
                for name, factory in self.components:
                    async with Phase(lc, name):
                        cm = factory(app)
                        value = await _enter(cm, name)
                    entered.append((name, cm))
                    if value is not None:
                        any_state = True
                        for key, item in dict(value).items():
                            state.setdefault(key, item)  # first wins, as FastAPI merges
                for name, handler in startup_handlers:
                    async with Phase(lc, name):
                        await _call_handler(handler)
            lc.deadline_scope = None
            if scope.cancelled_caught:
                raise TimeoutError(f"startup exceeded startup_timeout={watch.startup_timeout:g}s")
        except BaseException as exc:
            lc.deadline_scope = None
            failed = run.failed_phase or "startup"
            outcome: Outcome = "error"
            if isinstance(exc, TimeoutError):
                outcome = "timeout"
            elif isinstance(exc, anyio.get_cancelled_exc_class()):
                outcome = "cancelled"
            lc.end_run(run, outcome, failed_phase=failed, error=exc)
            await self._shutdown(entered, [], None, rollback=True)
            if isinstance(exc, Exception):
                raise StartupFailed(failed, outcome, run.error or exc) from exc
            raise
        lc.end_run(run, "ok")

        exc_info: tuple[Any, Any, Any] = (None, None, None)
        try:
            yield state if any_state else None
        except BaseException as exc:
            exc_info = (type(exc), exc, exc.__traceback__)
            raise
        finally:
            await self._shutdown(entered, shutdown_handlers, exc_info)

    async def _shutdown(
        self,
        entered: list[tuple[str, AbstractAsyncContextManager[Any]]],
        handlers: Sequence[tuple[str, Callable[[], Any]]],
        exc_info: tuple[Any, Any, Any] | None,
        *,
        rollback: bool = False,
    ) -> None:
        lc = self.watch._lifecycle
        run = lc.begin_run("shutdown", rollback=rollback)
        cancelled = anyio.get_cancelled_exc_class()
        with _bounded(self.watch.shutdown_timeout) as scope:
            lc.deadline_scope = scope
            await self.watch._stop_background()
            steps: list[tuple[str, Callable[[], Any]]] = list(handlers)
            for name, cm in reversed(entered):
                steps.append((name, _exit_step(cm, exc_info)))
            for name, step in steps:
                try:
                    async with Phase(lc, name):
                        await _call_handler(step)
                except cancelled:
                    if not scope.cancel_called:
                        raise
        lc.deadline_scope = None
        failed = [p.name for p in run.phases if p.outcome in ("error", "timeout", "cancelled")]
        lc.end_run(
            run,
            "error" if failed else "ok",
            failed_phase=failed[0] if failed else None,
            rollback=rollback,
        )
        if failed and not rollback:
            raise ShutdownFailed(failed)


def _exit_step(
    cm: AbstractAsyncContextManager[Any], exc_info: tuple[Any, Any, Any] | None
) -> Callable[[], Any]:
    et, e, tb = exc_info or (None, None, None)

    def step() -> Any:
        return cm.__aexit__(et, e, tb)

    return step


@contextlib.contextmanager
def _bounded(timeout: float | None) -> Iterator[anyio.CancelScope]:
    deadline = float("inf") if timeout is None else anyio.current_time() + timeout
    with anyio.CancelScope(deadline=deadline) as scope:
        yield scope


async def _call_handler(handler: Callable[[], Any]) -> None:
    result = handler()
    if inspect.isawaitable(result):
        await result


def _event_handlers(
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


_FASTAPI_MERGED = "_merge_lifespan_context.<locals>.merged_lifespan"


def flatten_app_lifespan(context: object) -> list[object]:
    """Split FastAPI's merged router lifespans back into their parts.

    ``include_router`` nests the parent's and the router's lifespans in a
    closure; taking them apart makes each router's lifespan its own phase,
    and lets the default (``on_event``) lifespans go, since their handlers
    were copied to the app's router and lifewatch runs those once itself.
    """
    wrapped = getattr(context, "__wrapped__", None)
    if (
        wrapped is not None
        and getattr(wrapped, "__qualname__", "") == _FASTAPI_MERGED
        and wrapped.__closure__ is not None
    ):
        cells = dict(zip(wrapped.__code__.co_freevars, wrapped.__closure__, strict=True))
        if "original_context" in cells and "nested_context" in cells:
            return flatten_app_lifespan(cells["original_context"].cell_contents) + (
                flatten_app_lifespan(cells["nested_context"].cell_contents)
            )
    if type(context).__name__ == "_DefaultLifespan":
        return []
    return [context]


def wrap_router_lifespan(watch: Lifewatch, router: Any) -> None:
    """Make ``router.lifespan_context`` one ``WatchedLifespan`` of ``watch``.

    Run by ``instrument()`` and again at startup, so routers included after
    ``instrument()`` (whose lifespans FastAPI nests around the wrapper) are
    taken apart too: each becomes a phase, and their ``on_event`` handlers,
    copied to the app's router, run once, as phases of their own.
    """
    current = router.lifespan_context
    if isinstance(current, WatchedLifespan) and current.watch is watch:
        return
    components: list[tuple[str, LifespanFactory]] = []
    taken: dict[str, int] = {}
    for part in flatten_app_lifespan(current):
        if isinstance(part, WatchedLifespan) and part.watch is watch:
            pairs = list(part.components)
        else:
            pairs = [(name_of(part), as_factory(part, f"the app's lifespan {part!r}"))]
        for name, factory in pairs:
            taken[name] = taken.get(name, 0) + 1
            components.append((name if taken[name] == 1 else f"{name}[{taken[name]}]", factory))
    router.lifespan_context = WatchedLifespan(watch, components)
