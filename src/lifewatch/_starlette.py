"""``watch.instrument(app)``: the way in for Starlette and FastAPI apps.

It makes the app's router lifespan one ``WatchedLifespan`` (FastAPI's merged
router lifespans taken apart, each a phase) and adds the middleware that
serves the endpoints. Starlette never runs the lifespan of an app mounted
with ``Mount("/v2", app=sub)`` (starlette#649): ``instrument()`` runs each as a
phase ``mount:/v2`` after the app's own, and gives the mounted app's requests
the state its lifespan yielded. The middleware it adds is strict: a Starlette app
speaks the lifespan protocol, so a crash before its first ``receive()`` is a
crash, and reaches the server as one.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ._compat import fastapi_merged_lifespans, mount_base_app, warn_once
from ._lifespan import (
    Composed,
    LifespanFactory,
    WatchedLifespan,
    as_factory,
    event_handlers,
    name_of,
)
from ._middleware import LifewatchMiddleware

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle


def flatten_app_lifespan(context: object) -> list[object]:
    """Split FastAPI's merged router lifespans back into their parts.

    ``include_router`` nests the parent's and the router's lifespans in a
    closure; taking them apart makes each router's lifespan its own phase,
    and lets the default (``on_event``) lifespans go, since their handlers
    were copied to the app's router and lifewatch runs those once itself.
    """
    parts = fastapi_merged_lifespans(context)
    if parts is not None:
        return flatten_app_lifespan(parts[0]) + flatten_app_lifespan(parts[1])
    if _is_default_lifespan(context):
        return []
    return [context]


def _is_default_lifespan(context: object) -> bool:
    """Whether ``context`` is the lifespan a router has when given none (it
    runs the ``on_event`` handlers): Starlette's, or FastAPI's own."""
    from starlette.routing import Router

    fastapi = sys.modules.get("fastapi.routing")
    routers = (Router,) if fastapi is None else (Router, fastapi.APIRouter)
    defaults = tuple(t for t in map(_default_lifespan_type, routers) if t is not None)
    return isinstance(context, defaults)


@functools.cache
def _default_lifespan_type(router: type) -> type | None:
    """The class of a new router's lifespan, read from a router made for it;
    None if that is not a class of the router's package (a plain function)."""
    default = type(router().lifespan_context)
    if default.__module__.startswith(("starlette.", "fastapi.")):
        return default
    warn_once(
        "default_lifespan",
        f"cannot tell {router.__qualname__}'s default lifespan apart: on_event "
        "handlers of included routers may run twice",
    )
    return None


def lifespan_parts(lifecycle: Lifecycle, context: object) -> list[tuple[str, LifespanFactory]]:
    """A router's lifespan as (name, factory) components, taken apart, named uniquely."""
    components: list[tuple[str, LifespanFactory]] = []
    taken: dict[str, int] = {}
    for part in flatten_app_lifespan(context):
        if isinstance(part, WatchedLifespan) and part._lifecycle is lifecycle:
            pairs = list(part.components)
        else:
            pairs = [(name_of(part), as_factory(part, f"the app's lifespan {part!r}"))]
        for name, factory in pairs:
            taken[name] = taken.get(name, 0) + 1
            components.append((name if taken[name] == 1 else f"{name}[{taken[name]}]", factory))
    return components


class Mounts:
    """Which mounted apps ``instrument()`` runs the lifespans of.

    ``skip`` holds mount paths as the phase names show them (``/v2``,
    ``/v2/admin`` for a mount inside ``/v2``): the code that instruments the
    app decides, not a mark on the sub-app, which may be mounted elsewhere too.
    """

    __slots__ = ("enabled", "skip")

    def __init__(self, enabled: bool = True, skip: frozenset[str] = frozenset()) -> None:
        self.enabled = enabled
        self.skip = skip

    @classmethod
    def of(cls, mounts: object, skip_mounts: object) -> Mounts:
        if not isinstance(mounts, bool):
            raise TypeError(f"mounts must be True or False; got {mounts!r}")
        if isinstance(skip_mounts, str) or not isinstance(skip_mounts, Collection):
            raise TypeError(
                "skip_mounts must be a collection of mount paths, e.g. ('/legacy',); "
                f"got {skip_mounts!r}"
            )
        for path in skip_mounts:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(
                    f"skip_mounts holds mount paths starting with '/', e.g. '/v2'; got {path!r}"
                )
        return cls(mounts, frozenset(p.rstrip("/") or "/" for p in skip_mounts))

    def find(self, lifecycle: Lifecycle, app: Any) -> list[tuple[str, LifespanFactory]]:
        """The Starlette/FastAPI apps mounted in ``app``, in mount order, each once."""
        if not self.enabled:
            return []
        return _mounted(lifecycle, app, self, "", set())


def _mounted(
    lifecycle: Lifecycle, app: Any, mounts: Mounts, prefix: str, seen: set[int]
) -> list[tuple[str, LifespanFactory]]:
    from starlette.applications import Starlette
    from starlette.routing import Mount, Router

    found: list[tuple[str, LifespanFactory]] = []
    for route in getattr(app, "routes", ()):
        if not isinstance(route, Mount):
            continue
        path = prefix + route.path
        if path in mounts.skip:
            continue
        base = mount_base_app(route)
        if id(base) in seen:
            continue  # mounted twice: its lifespan runs once
        seen.add(id(base))
        if isinstance(base, Starlette):
            found.append((f"mount:{path}", MountedApp(lifecycle, base, path, mounts, seen)))
        elif isinstance(base, Router):  # Mount(routes=[...]): look inside
            found += _mounted(lifecycle, base, mounts, path, seen)
    return found


class MountedApp:
    """A mounted app's lifespan, as one more lifespan of the app it is mounted in.

    Its own lifespans, ``on_event`` handlers and mounted apps are child
    phases of ``mount:<path>``. The state they yield reaches the mounted
    app's requests through ``MountState``.
    """

    def __init__(
        self, lifecycle: Lifecycle, app: Any, path: str, mounts: Mounts, seen: set[int]
    ) -> None:
        self.lifecycle = lifecycle
        self.app = app
        self.path = path
        self.mounts = mounts
        self.seen = seen

    def __call__(self, parent: Any) -> contextlib.AbstractAsyncContextManager[None]:
        return self._run()

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        lc, app = self.lifecycle, self.app
        holder = state_holder(app)
        composed = Composed(
            lc,
            lifespan_parts(lc, app.router.lifespan_context),
            event_handlers(app),
            _mounted(lc, app, self.mounts, self.path, self.seen),
        )
        try:
            state = await composed.start(app)
        except BaseException:
            # Shut down, inside this mount's phase, what of it started: the
            # cancel scopes they hold must close before the mount's own.
            await composed.rollback()
            raise
        holder.state = dict(state or {})
        exc_info: tuple[Any, Any, Any] = (None, None, None)
        try:
            yield None
        except BaseException as exc:
            exc_info = (type(exc), exc, exc.__traceback__)
            raise
        finally:
            holder.state = {}
            await composed.stop(exc_info)


class StateHolder:
    """The state a mounted app's lifespan yielded, while it runs."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}


class MountState:
    """Gives a mounted app's requests the state its own lifespan yielded.

    Starlette hands every request a copy of the *server's* lifespan state
    (``scope["state"]``), which only the top app's lifespan fills; a mounted
    app's requests get a copy of it with the mounted app's state on top.
    """

    def __init__(self, app: ASGIApp, holder: StateHolder) -> None:
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.holder.state
        if state and scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope["state"] = {**scope.get("state", {}), **state}
        await self.app(scope, receive, send)


def state_holder(app: Any) -> StateHolder:
    """The mounted app's ``StateHolder``, its ``MountState`` added once."""
    for m in app.user_middleware:
        if m.cls is MountState:
            holder: StateHolder = m.kwargs["holder"]
            return holder
    if isinstance(app.middleware_stack, MountState):
        return app.middleware_stack.holder
    holder = StateHolder()
    if app.middleware_stack is None:
        app.add_middleware(MountState, holder=holder)
    else:  # it already served a request: too late for add_middleware
        app.middleware_stack = MountState(app.middleware_stack, holder)
    return holder


def wrap_router_lifespan(lifecycle: Lifecycle, router: Any, mounts: Mounts | None = None) -> None:
    """Make ``router.lifespan_context`` one ``WatchedLifespan`` of ``lifecycle``.

    Run by ``instrument()`` and again at startup, so routers included after
    ``instrument()`` (whose lifespans FastAPI nests around the wrapper) are
    taken apart too: each becomes a phase, and their ``on_event`` handlers,
    copied to the app's router, run once, as phases of their own.
    """
    current = router.lifespan_context
    find = None if mounts is None else lambda app: mounts.find(lifecycle, app)
    if (
        isinstance(current, WatchedLifespan)
        and current._lifecycle is lifecycle
        and (mounts is None or current.mounts is not None)
    ):
        return
    router.lifespan_context = WatchedLifespan(
        lifecycle, lifespan_parts(lifecycle, current), mounts=find
    )


class InstrumentedMiddleware(LifewatchMiddleware):
    """``LifewatchMiddleware`` as ``instrument()`` adds it: strict, and taking
    apart, at startup, the routers included after ``instrument()``."""

    def __init__(self, app: ASGIApp, *, watch: Any, router: Any, mounts: Mounts) -> None:
        super().__init__(app, watch=watch, strict=True)
        self.router = router
        self.mounts = mounts

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI nests the lifespans of routers included later around the
        # wrapper: take them apart now, before startup.
        wrap_router_lifespan(self._lifecycle, self.router, self.mounts)
        await super().lifespan(scope, receive, send)


def instrument(watch: Any, lifecycle: Lifecycle, app: Any, mounts: Mounts) -> None:
    """Wrap a Starlette/FastAPI app's lifespan in place and add the middleware."""
    from starlette.applications import Starlette

    if not isinstance(app, Starlette):
        raise TypeError(
            "instrument() takes a Starlette or FastAPI application; got "
            f"{app!r}. For any other ASGI app use LifewatchMiddleware(app, watch=watch)."
        )
    wrap_router_lifespan(lifecycle, app.router, mounts)
    if not any(
        m.cls is InstrumentedMiddleware  # type: ignore[comparison-overlap]
        and m.kwargs.get("watch") is watch
        for m in app.user_middleware
    ):
        app.add_middleware(InstrumentedMiddleware, watch=watch, router=app.router, mounts=mounts)
