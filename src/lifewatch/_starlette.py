"""``watch.instrument(app)``: the way in for Starlette and FastAPI apps.

It makes the app's router lifespan one ``WatchedLifespan`` and adds the
middleware that serves the endpoints. Starlette never runs a mounted app's
lifespan (starlette#649): ``instrument()`` runs each as a phase ``mount:/v2``.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import weakref
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ._compat import fastapi_merged_lifespans, mount_base_app, warn_once
from ._lifespan import (
    Composed,
    LifespanFactory,
    WatchedLifespan,
    as_factory,
    name_of,
    numbered,
)
from ._middleware import LifewatchMiddleware
from ._validate import validate_bool

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

Skip = frozenset[str] | None  # the mount paths left alone; None: all of them


def _is_default_lifespan(context: object) -> bool:
    """Whether ``context`` is a router's lifespan when given none (it runs ``on_event``)."""
    from starlette.routing import Router

    fastapi = sys.modules.get("fastapi.routing")
    routers = (Router,) if fastapi is None else (Router, fastapi.APIRouter)
    return isinstance(context, tuple(filter(None, map(_default_lifespan_type, routers))))


@functools.cache
def _default_lifespan_type(router: type) -> type | None:
    """The class of a new router's lifespan; None if not one of the router's package."""
    default = type(router().lifespan_context)
    if default.__module__.startswith(("starlette.", "fastapi.")):
        return default
    message = f"cannot tell {router.__qualname__}'s default lifespan apart: on_event "
    warn_once("default_lifespan", message + "handlers of included routers may run twice")
    return None


def lifespan_parts(lifecycle: Lifecycle, context: object) -> list[tuple[str, LifespanFactory]]:
    """A router's lifespan as named components: FastAPI's merged router lifespans apart,
    the default ones out (lifewatch runs their ``on_event`` handlers itself)."""

    def parts(context: object) -> list[tuple[str, LifespanFactory]]:
        merged = fastapi_merged_lifespans(context)
        if merged is not None:
            return parts(merged[0]) + parts(merged[1])
        if _is_default_lifespan(context):
            return []
        if isinstance(context, WatchedLifespan) and context._lifecycle is lifecycle:
            return list(context.components)
        return [(name_of(context), as_factory(context, f"the app's lifespan {context!r}"))]

    return numbered(parts(context))


def _mounted(
    lifecycle: Lifecycle, app: Any, skip: frozenset[str], prefix: str, seen: set[int]
) -> list[tuple[str, LifespanFactory]]:
    """The Starlette/FastAPI apps mounted in ``app``, in mount order, each once."""
    from starlette.applications import Starlette
    from starlette.routing import Mount, Router

    found: list[tuple[str, LifespanFactory]] = []
    for route in app.routes:
        if not isinstance(route, Mount) or prefix + route.path in skip:
            continue
        path = prefix + route.path
        base = mount_base_app(route)
        if id(base) in seen:
            continue  # mounted twice: its lifespan runs once
        seen.add(id(base))
        if isinstance(base, Starlette):
            found.append((f"mount:{path}", _mounted_lifespan(lifecycle, base, path, skip, seen)))
        elif isinstance(base, Router):  # Mount(routes=[...]): look inside
            found += _mounted(lifecycle, base, skip, path, seen)
    return found


def _mounted_lifespan(
    lc: Lifecycle, app: Any, path: str, skip: frozenset[str], seen: set[int]
) -> LifespanFactory:
    """A mounted app's lifespans, handlers and mounts, as child phases of ``mount:<path>``."""

    @contextlib.asynccontextmanager
    async def lifespan(parent: Any) -> AsyncIterator[None]:
        state = _MOUNT_STATES.get(app)
        if state is None:  # the middleware that puts it on requests, added once
            state = _MOUNT_STATES[app] = {}
            if app.middleware_stack is None:
                app.add_middleware(MountState, state=state)
            else:  # it already served a request: too late for add_middleware
                app.middleware_stack = MountState(app.middleware_stack, state)
        parts = lifespan_parts(lc, app.router.lifespan_context)
        composed = Composed(lc, parts, app, _mounted(lc, app, skip, path, seen))
        try:
            started = await composed.start()
        except BaseException:
            # Inside this mount's phase: their cancel scopes close before the mount's.
            await composed.rollback()
            raise
        state.update(started or {})
        app_error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            app_error = exc
            raise
        finally:
            state.clear()
            await composed.stop(app_error)

    return lifespan


class MountState:
    """A mounted app's lifespan state on its requests' (the top app's) ``scope["state"]``."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.state and scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": {**scope.get("state", {}), **self.state}}
        await self.app(scope, receive, send)


_MOUNT_STATES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def wrap_router_lifespan(lifecycle: Lifecycle, router: Any, skip: Skip) -> None:
    """Make ``router.lifespan_context`` one ``WatchedLifespan``; again at startup, so
    routers included later (FastAPI nests them around the wrapper) are taken apart."""
    current = router.lifespan_context
    if (
        isinstance(current, WatchedLifespan)
        and current._lifecycle is lifecycle
        and current.mounts is not None
    ):
        return

    def mounted(app: Any) -> list[tuple[str, LifespanFactory]]:
        return [] if skip is None else _mounted(lifecycle, app, skip, "", set())

    router.lifespan_context = WatchedLifespan(
        lifecycle, lifespan_parts(lifecycle, current), mounts=mounted
    )


class InstrumentedMiddleware(LifewatchMiddleware):
    """Strict (Starlette speaks the lifespan protocol); rewraps the lifespan at startup."""

    def __init__(self, app: ASGIApp, *, watch: Any, router: Any, skip: Skip) -> None:
        super().__init__(app, watch=watch, strict=True)
        self.router = router
        self.skip = skip

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        wrap_router_lifespan(self._lifecycle, self.router, self.skip)
        await super().lifespan(scope, receive, send)


def instrument(
    watch: Any, lifecycle: Lifecycle, app: Any, mounts: object, skip_mounts: object
) -> None:
    """Wrap a Starlette/FastAPI app's lifespan in place and add the middleware."""
    from starlette.applications import Starlette

    validate_bool(mounts, "mounts")
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
    # As phase names show them (``/v2/admin`` in ``/v2``); None: mounts left alone.
    skip = frozenset(p.rstrip("/") or "/" for p in skip_mounts) if mounts else None
    if not isinstance(app, Starlette):
        raise TypeError(
            "instrument() takes a Starlette or FastAPI application; got "
            f"{app!r}. For any other ASGI app use LifewatchMiddleware(app, watch=watch)."
        )
    wrap_router_lifespan(lifecycle, app.router, skip)
    if not any(
        m.cls is InstrumentedMiddleware  # type: ignore[comparison-overlap]
        and m.kwargs.get("watch") is watch
        for m in app.user_middleware
    ):
        app.add_middleware(InstrumentedMiddleware, watch=watch, router=app.router, skip=skip)
