"""The only place lifewatch reads another package's (or Python's) internals.

Each function reads one internal for which no public way exists, says what
and why, and falls back to doing without it, with one warning per process:
a feature lifewatch gives up is never lost in silence. tests/test_compat.py
lists each function with the releases it was checked on and fails when the
internal changes on the installed (newest) release.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is met in this process."""
    if key not in _warned:
        _warned.add(key)
        logging.getLogger("lifewatch").warning("lifewatch: %s", message)


def fastapi_merged_lifespans(context: object) -> tuple[object, object] | None:
    """The two lifespans FastAPI's ``include_router`` nested, or None if not such.

    Reads the closure cells ``original_context`` and ``nested_context`` of
    FastAPI's ``_merge_lifespan_context.<locals>.merged_lifespan``: FastAPI
    keeps no public reference to the parts, and each router's lifespan is a
    phase of its own only if lifewatch can take them apart. Fallback: the
    merged lifespan is one phase.
    """
    wrapped = getattr(context, "__wrapped__", None)
    if getattr(wrapped, "__qualname__", "") != "_merge_lifespan_context.<locals>.merged_lifespan":
        return None
    code, closure = getattr(wrapped, "__code__", None), getattr(wrapped, "__closure__", None)
    cells = dict(zip(getattr(code, "co_freevars", ()), closure or (), strict=False))
    try:
        return cells["original_context"].cell_contents, cells["nested_context"].cell_contents
    except (KeyError, ValueError):
        warn_once(
            "fastapi_merged_lifespans",
            "this FastAPI release's merged router lifespans cannot be taken apart: "
            "they run as one phase",
        )
        return None


def mount_base_app(route: Any) -> Any:
    """The app a Starlette ``Mount`` was given, under the mount's own middleware.

    Reads ``Mount._base_app``: ``Mount.app`` is the app wrapped in the
    ``middleware=`` given to the mount, and Starlette exposes the app itself
    only through ``Mount.routes``, which loses the app (and its lifespan).
    Fallback: ``Mount.app``; a mount with middleware then runs no lifespan.
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

    Reads ``logging.root.manager.disable``, the value ``logging.disable()``
    writes and ``Logger.isEnabledFor`` reads: the standard library has no
    getter. Fallback: 0 (lifewatch's stderr fallback may then write a line
    that ``logging.disable`` would have silenced).
    """
    level = getattr(getattr(logging.root, "manager", None), "disable", None)
    if not isinstance(level, int):
        warn_once("logging_disabled_level", "cannot read logging.disable()'s level")
        return 0
    return level


def is_loop_signal_stub(handler: object) -> bool:
    """Whether ``handler`` is the Python handler an event loop's
    ``add_signal_handler`` installs, not the server's own.

    Reads the name of asyncio's no-op, ``_sighandler_noop`` (uvloop's is a
    method of the loop, which is public to see): the loop learns of the
    signal through the wakeup fd, so replacing this handler would not stand
    in front of the server, and nothing public tells asyncio's apart.
    """
    if isinstance(getattr(handler, "__self__", None), asyncio.AbstractEventLoop):
        return True
    return getattr(handler, "__name__", "") == "_sighandler_noop"


def loop_signal_handler(
    loop: asyncio.AbstractEventLoop, sig: int
) -> tuple[Callable[..., object], Callable[[], None]] | None:
    """The callback ``loop.add_signal_handler(sig, ...)`` set, and a way to run it.

    Reads ``loop._signal_handlers`` (CPython's selector loops) and the
    handle's ``_callback`` and ``_run``: asyncio has no public way to read or
    call a signal handler set on the loop, and hypercorn takes SIGTERM that
    way. Fallback: None (the caller warns: no drain on SIGTERM, the
    ``preStop`` drain still works).
    """
    handlers = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(sig) if isinstance(handlers, dict) else None
    if not isinstance(handle, asyncio.Handle) or handle.cancelled():
        return None
    callback, run = getattr(handle, "_callback", None), getattr(handle, "_run", None)
    if not callable(callback) or not callable(run):
        return None
    return callback, run
