"""Finding the ``Lifewatch`` behind ``module:app``: what every command starting from an app uses.

``python -m lifewatch k8s`` reads its settings from it; a command that
renders assets from an app's settings (a dashboard, say) starts the same way.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

from ._lifewatch import Lifewatch


class NotFound(Exception):
    """One line saying why no single ``Lifewatch`` was found (exit status 2)."""


@dataclass(frozen=True)
class Found:
    """The app a ``module:app`` names, and the ``Lifewatch`` behind it."""

    module: str
    app: Any
    watch: Lifewatch


def _watches_of(app: Any) -> list[Lifewatch]:
    """The watches an app carries: ``LifewatchMiddleware`` or ``instrument()``'s middleware."""
    found: list[Lifewatch] = []
    seen: set[int] = set()
    todo = [app]
    while todo and len(seen) < 100:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        watch = getattr(obj, "watch", None)
        if isinstance(watch, Lifewatch):
            found.append(watch)
        for middleware in getattr(obj, "user_middleware", None) or ():
            watch = getattr(middleware, "kwargs", {}).get("watch")
            if isinstance(watch, Lifewatch):
                found.append(watch)
        inner = getattr(obj, "app", None)
        if inner is not None:
            todo.append(inner)
    return found


def find_watch(target: str) -> Found:
    """Import ``module:attr`` (``attr`` defaults to ``app``) and find its one ``Lifewatch``.

    Looked for in the app (its middleware) and in the module's globals; the
    same object found twice counts once. ``NotFound`` says what went wrong
    in one line: no such module or attribute, no ``Lifewatch``, or several.
    """
    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise NotFound(f"expected module:app (e.g. orders.main:app); got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: the app is found from here
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotFound(f"no module named {module_name!r} (from {os.getcwd()})") from None
        raise NotFound(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise NotFound(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise NotFound(f"module {module_name!r} has no attribute {attr!r}") from None
    candidates = _watches_of(app) + [v for v in vars(module).values() if isinstance(v, Lifewatch)]
    unique = list({id(w): w for w in candidates}.values())
    if not unique:
        raise NotFound(f"no Lifewatch found in {module_name!r} nor behind {target!r}")
    if len(unique) > 1:
        names = ", ".join(repr(w) for w in unique)
        raise NotFound(f"{len(unique)} Lifewatch objects found for {target!r} ({names}); keep one")
    return Found(module_name, app, unique[0])
