"""``watch.lifespan(...)``: wrap or compose lifespans, each one a phase.

Composed as nested ``async with`` blocks, except that every exit runs even after
one failed (the errors are raised at the end, chained), and a failed startup
shuts down what started before its error goes on.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from ._phase import Phase
from ._validate import validate_name

if TYPE_CHECKING:
    import anyio

    from ._lifecycle import Lifecycle

LifespanFactory = Callable[[Any], AbstractAsyncContextManager[Any]]
Handlers = Sequence[tuple[str, Callable[[], Any]]]
T = TypeVar("T")

ACCEPTED = (
    "an async context manager factory (e.g. an @asynccontextmanager function), "
    "an async generator function, or a generator function taking the app"
)


def as_factory(lifespan: object, what: str) -> LifespanFactory:
    """Turn any accepted kind of lifespan into ``app -> async CM``."""
    if inspect.isasyncgenfunction(lifespan):
        return contextlib.asynccontextmanager(lifespan)
    if inspect.isgeneratorfunction(lifespan):
        sync = contextlib.contextmanager(lifespan)

        @contextlib.asynccontextmanager
        async def lifted(app: Any) -> AsyncIterator[Any]:
            with sync(app) as value:  # run as an async one, as Starlette does
                yield value

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


def name_of(obj: object) -> str:
    name = getattr(obj, "__name__", None)
    return name if isinstance(name, str) and name else type(obj).__name__


def numbered(pairs: Iterable[tuple[str, T]]) -> list[tuple[str, T]]:
    """The pairs with each repeat of a name numbered: ``name``, ``name[2]``, ..."""
    counts: dict[str, int] = {}
    named = []
    for name, value in pairs:
        counts[name] = counts.get(name, 0) + 1
        named.append((name if counts[name] == 1 else f"{name}[{counts[name]}]", value))
    return named


class WatchedLifespan:
    """What ``watch.lifespan(...)`` returns: a lifespan factory (``app -> CM``) that
    also runs the app's ``on_event`` handlers, which FastAPI skips with ``lifespan=``."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        components: Sequence[tuple[str, LifespanFactory]],
        *,
        mounts: Callable[[Any], Sequence[tuple[str, LifespanFactory]]] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self.components = tuple(components)
        self.mounts = mounts  # app -> its mounted apps' lifespans (set by instrument())
        names = [name for name, _ in self.components]
        for i, name in enumerate(names):
            validate_name(name, "lifespan name")
            if name in names[:i]:
                raise ValueError(
                    f"two lifespans in one composition are named {name!r}; phase names "
                    "must be unique: pass one as a keyword argument, e.g. "
                    f"watch.lifespan(..., other_{name}=...)"
                )

    @contextlib.asynccontextmanager
    async def __call__(self, app: Any) -> AsyncIterator[Any]:
        lc = self._lifecycle
        mounts = self.mounts(app) if self.mounts is not None else ()
        composed = Composed(lc, self.components, app, mounts)
        run = lc.begin_run("startup")
        try:
            state = await composed.start()
        except BaseException as exc:
            lc.end_run(run, exc)
            rollback = lc.begin_run("shutdown", rollback=True, goes_on=True)
            try:
                await composed.rollback()
            finally:
                lc.end_run(rollback)
            raise
        lc.end_run(run)
        app_error: BaseException | None = None
        try:
            yield state
        except BaseException as exc:
            app_error = exc
            raise
        finally:
            stopping = lc.begin_run("shutdown", goes_on=True)
            error: BaseException | None = None
            try:
                await lc.background.stop()
                failures = stopping.failures
                if not await composed.stop(app_error) and app_error is None and failures:
                    # The last error shutdown went on past, chained as AsyncExitStack does.
                    for earlier, later in itertools.pairwise(failures):
                        if later.__context__ is None and later is not earlier:
                            later.__context__ = earlier
                    raise failures[-1]
            except BaseException as exc:
                error = exc
                raise
            finally:
                lc.end_run(stopping, None if error is app_error else error)


class Composed:
    """One app's lifespans, ``on_event`` handlers and mounted apps, started nested, in
    that order (cancel scopes held across ``yield`` nest, as anyio requires)."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        components: Sequence[tuple[str, LifespanFactory]],
        app: Any,
        mounts: Sequence[tuple[str, LifespanFactory]] = (),
    ) -> None:
        self.lifecycle = lifecycle
        self.components = components
        self.app = app
        self.mounts = mounts
        # FastAPI's on_event handlers, each once, by identity (need not be hashable).
        router = getattr(app, "router", None)
        self.startup_handlers = _named(getattr(router, "on_startup", None))
        self.shutdown_handlers = _named(getattr(router, "on_shutdown", None))
        self.stack = contextlib.AsyncExitStack()
        self.mounted = contextlib.AsyncExitStack()

    async def start(self) -> dict[str, Any] | None:
        """Start everything; the merged state, or None when no lifespan yielded any."""
        lc, app = self.lifecycle, self.app
        state: dict[str, Any] = {}
        any_state = False
        for name, factory in self.components:
            value = await self.stack.enter_async_context(component(lc, name, factory, app))
            if value is not None:
                any_state = True
                for key, item in dict(value).items():
                    state.setdefault(key, item)  # first wins, as FastAPI merges
        await run_handlers(lc, self.startup_handlers)
        for name, factory in self.mounts:
            await self.mounted.enter_async_context(component(lc, name, factory, app))
        return state if any_state else None

    async def rollback(self) -> None:
        """After a failed start: shut down what started (no shutdown handlers), in reverse."""
        await self.mounted.aclose()
        await self.stack.aclose()

    async def stop(self, error: BaseException | None) -> bool:
        """Shut everything down, in reverse; whether an exit suppressed the app's ``error``."""
        exc_info = (
            (None, None, None) if error is None else (type(error), error, error.__traceback__)
        )
        suppressed = await self.mounted.__aexit__(*exc_info)
        await run_handlers(self.lifecycle, self.shutdown_handlers)
        return bool(await self.stack.__aexit__(*exc_info)) or bool(suppressed)


@contextlib.asynccontextmanager
async def component(
    lc: Lifecycle, name: str, factory: LifespanFactory, app: Any
) -> AsyncIterator[Any]:
    """One lifespan: a startup phase, its life inside the run's bound, a shutdown phase."""
    with lc.bound() as scope:
        async with Phase(lc, name):
            cm = factory(app)
            if not hasattr(cm, "__aenter__") or not hasattr(cm, "__aexit__"):
                raise TypeError(
                    f"lifespan {name!r} returned {cm!r}, which is not an async context "
                    f"manager; a lifespan must be {ACCEPTED}"
                )
            value = await cm.__aenter__()
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
    check_cut(lc, scope, name)


async def run_handlers(lc: Lifecycle, handlers: Handlers) -> None:
    """``on_event`` handlers, each a phase, inside the run's bound."""
    if not handlers:
        return
    with lc.bound() as scope:
        for name, handler in handlers:
            async with Phase(lc, name):
                result = handler()
                if inspect.isawaitable(result):
                    await result
    check_cut(lc, scope, "startup")


def check_cut(lc: Lifecycle, scope: anyio.CancelScope, name: str) -> None:
    # The bound cut (deadline or signal): a startup fails; a shutdown goes on to its end.
    if scope.cancelled_caught:
        run = lc.current
        if run is not None and run.event == "startup":
            raise lc.cut(run, name)


def _named(handlers: Sequence[Callable[[], Any]] | None) -> Handlers:
    return numbered((name_of(h), h) for h in {id(h): h for h in handlers or ()}.values())
