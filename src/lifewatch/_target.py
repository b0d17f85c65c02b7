"""Find the ``Lifewatch`` of an app named as uvicorn names it (``module:attr``), whose
settings the operator commands read: the attribute itself, or the watch an app
carries in its middleware. Every failure is a ``TargetError`` of one line.
"""

from __future__ import annotations

import importlib
import operator
from types import ModuleType

from ._lifewatch import Lifewatch
from ._middleware import LifewatchMiddleware


class TargetError(Exception):
    """A ``module:app`` that names no single ``Lifewatch``; the message is one line."""


def find_watch(target: str) -> Lifewatch:
    """The ``Lifewatch`` of ``module`` or ``module:attr`` (attr: the watch or an app)."""
    module_name, _, attr = target.partition(":")
    if not module_name or ":" in attr:
        raise TargetError(
            f"expected module or module:attribute, e.g. 'orders.main:app'; got {target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the app's own import-time error, said in one line
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and f"{module_name}.".startswith(f"{missing}."):
            raise TargetError(
                f"no module named {module_name!r}: run from the directory that holds it, "
                "or add that directory to PYTHONPATH"
            ) from None
        text = " ".join(str(exc).split())
        error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise TargetError(f"importing {module_name!r} failed: {error}") from None
    if attr:
        try:
            obj = operator.attrgetter(attr)(module)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}") from None
        carried = _carried(obj)
    else:
        carried = [w for value in vars(module).values() for w in _carried(value, depth=1)]
    found = list({id(w): w for w in carried}.values())  # each watch once, in order
    if not found:
        raise TargetError(
            f"no Lifewatch found in {target!r}: name the Lifewatch itself, or an app wired "
            "with watch.instrument(app) or LifewatchMiddleware(app, watch=watch)"
        )
    if len(found) > 1:
        names = ", ".join(w.options.service or "unnamed" for w in found)
        raise TargetError(
            f"{len(found)} Lifewatch objects found in {target!r} (services: {names}); "
            "name one with module:attribute"
        )
    return found[0]


def _carried(obj: object, depth: int = 8) -> list[Lifewatch]:
    """The watches ``obj`` is or carries: itself, its middleware, the app it wraps."""
    if isinstance(obj, Lifewatch):
        return [obj]
    if isinstance(obj, LifewatchMiddleware):
        return [obj.watch]
    if isinstance(obj, (ModuleType, type)):
        return []
    found: list[Lifewatch] = []
    # Starlette keeps middleware as declarations (cls, args, kwargs) until its first call.
    declared = getattr(obj, "user_middleware", None)
    if isinstance(declared, list):
        for middleware in declared:
            kwargs = getattr(middleware, "kwargs", None)
            if isinstance(kwargs, dict) and isinstance(kwargs.get("watch"), Lifewatch):
                found.append(kwargs["watch"])
    inner = getattr(obj, "app", None) if depth > 0 else None  # ASGI wrappers keep .app
    if inner is not None and inner is not obj:
        found.extend(_carried(inner, depth - 1))
    return found
