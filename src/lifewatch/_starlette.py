"""``watch.instrument(app)``: the way in for Starlette and FastAPI apps.

It makes the app's router lifespan one ``WatchedLifespan`` (FastAPI's merged
router lifespans taken apart, each a phase) and adds the middleware that
serves the endpoints. The middleware it adds is strict: a Starlette app
speaks the lifespan protocol, so a crash before its first ``receive()`` is a
crash, and reaches the server as one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ._lifespan import LifespanFactory, WatchedLifespan, as_factory, name_of
from ._middleware import LifewatchMiddleware

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

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


def wrap_router_lifespan(lifecycle: Lifecycle, router: Any) -> None:
    """Make ``router.lifespan_context`` one ``WatchedLifespan`` of ``lifecycle``.

    Run by ``instrument()`` and again at startup, so routers included after
    ``instrument()`` (whose lifespans FastAPI nests around the wrapper) are
    taken apart too: each becomes a phase, and their ``on_event`` handlers,
    copied to the app's router, run once, as phases of their own.
    """
    current = router.lifespan_context
    if isinstance(current, WatchedLifespan) and current.lifecycle is lifecycle:
        return
    components: list[tuple[str, LifespanFactory]] = []
    taken: dict[str, int] = {}
    for part in flatten_app_lifespan(current):
        if isinstance(part, WatchedLifespan) and part.lifecycle is lifecycle:
            pairs = list(part.components)
        else:
            pairs = [(name_of(part), as_factory(part, f"the app's lifespan {part!r}"))]
        for name, factory in pairs:
            taken[name] = taken.get(name, 0) + 1
            components.append((name if taken[name] == 1 else f"{name}[{taken[name]}]", factory))
    router.lifespan_context = WatchedLifespan(lifecycle, components)


class InstrumentedMiddleware(LifewatchMiddleware):
    """``LifewatchMiddleware`` as ``instrument()`` adds it: strict, and taking
    apart, at startup, the routers included after ``instrument()``."""

    def __init__(self, app: ASGIApp, *, watch: Any, router: Any) -> None:
        super().__init__(app, watch=watch, strict=True)
        self.router = router

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI nests the lifespans of routers included later around the
        # wrapper: take them apart now, before startup.
        wrap_router_lifespan(self.lifecycle, self.router)
        await super().lifespan(scope, receive, send)


def instrument(watch: Any, lifecycle: Lifecycle, app: Any) -> None:
    """Wrap a Starlette/FastAPI app's lifespan in place and add the middleware."""
    from starlette.applications import Starlette

    if not isinstance(app, Starlette):
        raise TypeError(
            "instrument() takes a Starlette or FastAPI application; got "
            f"{app!r}. For any other ASGI app use LifewatchMiddleware(app, watch=watch)."
        )
    wrap_router_lifespan(lifecycle, app.router)
    if not any(
        m.cls is InstrumentedMiddleware  # type: ignore[comparison-overlap]
        and m.kwargs.get("watch") is watch
        for m in app.user_middleware
    ):
        app.add_middleware(InstrumentedMiddleware, watch=watch, router=app.router)
