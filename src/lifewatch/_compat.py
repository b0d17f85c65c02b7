"""The only place lifewatch reads another package's (or Python's) internals: each
function reads one no public way gives, says why, and falls back to doing without,
with one warning. tests/test_compat.py lists each with the releases checked on.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is met in this process."""
    if key not in _warned:
        _warned.add(key)
        logging.getLogger("lifewatch").warning("lifewatch: %s", message)


def fastapi_merged_lifespans(context: object) -> tuple[object, object] | None:
    """The two lifespans FastAPI's ``include_router`` nested, or None if not such.

    Reads the closure cells ``original_context`` and ``nested_context`` of FastAPI's
    ``_merge_lifespan_context.<locals>.merged_lifespan``: FastAPI keeps no public
    reference to them. Fallback: the merged lifespan is one phase, not one per router.
    """
    wrapped: Any = getattr(context, "__wrapped__", None)
    if getattr(wrapped, "__qualname__", "") != "_merge_lifespan_context.<locals>.merged_lifespan":
        return None
    try:
        cells = inspect.getclosurevars(wrapped).nonlocals
        return cells["original_context"], cells["nested_context"]
    except (KeyError, ValueError, TypeError):
        warn_once(
            "fastapi_merged_lifespans",
            "this FastAPI release's merged router lifespans cannot be taken apart: "
            "they run as one phase",
        )
        return None


def mount_base_app(route: Any) -> Any:
    """The app a Starlette ``Mount`` was given, under the mount's own middleware.

    Reads ``Mount._base_app``: ``Mount.app`` is the app wrapped in the mount's
    ``middleware=``. Fallback: ``Mount.app``; a mount with middleware runs no lifespan.
    """
    base = getattr(route, "_base_app", None)
    if base is None:
        warn_once(
            "mount_base_app",
            "this Starlette release hides the app under a Mount's middleware: "
            "a mounted app with middleware of its own runs no lifespan",
        )
        return route.app
    return base


def logging_disabled_level() -> int:
    """The level ``logging.disable()`` set (0: none).

    Reads ``logging.root.manager.disable``, which ``logging.disable()`` writes: there
    is no getter. Fallback: 0 (the stderr fallback may write a line it would silence).
    """
    level = getattr(getattr(logging.root, "manager", None), "disable", None)
    if not isinstance(level, int):
        warn_once("logging_disabled_level", "cannot read logging.disable()'s level")
        return 0
    return level
