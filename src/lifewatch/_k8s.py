"""``python -m lifewatch k8s module:app``: the Kubernetes wiring, from the app's own settings.

``find_watch`` imports an app and finds the one ``Lifewatch`` behind it (any
command that starts from ``module:app`` uses it); ``deployment`` turns its
settings into a Deployment whose probes, ``preStop`` drain and grace period
agree with them; ``to_yaml`` prints it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from ._lifewatch import Lifewatch
from ._validate import validate_address

MARGIN_S = 5
"""Seconds of grace beyond drain + shutdown: the server finishing requests in flight."""


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


def _timeout_s(watch: Lifewatch, probe: str) -> int:
    """The probe's timeout: above its slowest check's, never under the kubelet's 1 s."""
    slowest = max((c.timeout for c in watch.checks.values() if probe in c.probes), default=0.0)
    return max(1, math.ceil(slowest + 0.5))


def deployment(
    watch: Lifewatch,
    *,
    name: str,
    image: str,
    command: list[str],
    port: int = 8000,
    replicas: int = 3,
) -> dict[str, Any]:
    """A Deployment whose probes, ``preStop`` drain and grace period follow ``watch``."""
    options = watch.options
    ports: list[dict[str, Any]] = [{"name": "http", "containerPort": port}]
    probe_port: str = "http"
    local_port = port
    if options.ops_address is not None:
        _, ops_port = validate_address(options.ops_address, "ops_address")
        ports.append({"name": "ops", "containerPort": ops_port})
        probe_port, local_port = "ops", ops_port
    metrics_port = local_port if options.ops_only else port

    def http_get(path: str | None) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": probe_port}}

    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "ports": ports,
    }
    # Startup: as long as startup may take (startup_timeout, else 5 minutes).
    startup_budget = (options.startup_timeout or 300.0) + 10.0
    if options.startupz_path is not None:
        container["startupProbe"] = {
            **http_get(options.startupz_path),
            "periodSeconds": 2,
            "timeoutSeconds": _timeout_s(watch, "startup"),
            "failureThreshold": math.ceil(startup_budget / 2),
        }
    # Readiness: the first 503 takes the pod out, seen within the drain.
    if options.readyz_path is not None:
        container["readinessProbe"] = {
            **http_get(options.readyz_path),
            "periodSeconds": max(1, min(5, math.floor(options.drain_delay) or 5)),
            "timeoutSeconds": _timeout_s(watch, "readiness"),
            "failureThreshold": 1,
        }
    if options.livez_path is not None:
        container["livenessProbe"] = {
            **http_get(options.livez_path),
            "periodSeconds": 10,
            "timeoutSeconds": _timeout_s(watch, "liveness"),
            "failureThreshold": 3,
        }
    if options.drain_delay > 0:
        if options.drain_path is not None:
            drain = ["python", "-m", "lifewatch", "drain"]
            drain.append(f"http://127.0.0.1:{local_port}{options.drain_path}")
        else:
            drain = ["sleep", f"{options.drain_delay:g}"]
        container["lifecycle"] = {"preStop": {"exec": {"command": drain}}}
    grace = math.ceil(options.drain_delay + options.shutdown_timeout + MARGIN_S)
    labels = {"app": name}
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port)}
    if options.metrics_path is not None:
        annotations["prometheus.io/path"] = options.metrics_path
    else:
        annotations["prometheus.io/scrape"] = "false"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "containers": [container],
                },
            },
        },
    }


def header(watch: Lifewatch, arguments: str) -> list[str]:
    """The comment lines that say where each number comes from (``arguments``: the command's)."""
    o = watch.options
    grace = math.ceil(o.drain_delay + o.shutdown_timeout + MARGIN_S)
    return [
        f"Generated by: python -m lifewatch {arguments}",
        f"From its Lifewatch: drain_delay={o.drain_delay:g}s, "
        f"shutdown_timeout={o.shutdown_timeout:g}s, "
        f"ops_address={o.ops_address or 'off'}.",
        f"terminationGracePeriodSeconds {grace} = drain_delay + shutdown_timeout "
        f"+ {MARGIN_S} s for the server to finish requests in flight.",
        "preStop drains (readiness 503, the app still serving) before SIGTERM, under any server.",
    ]


def to_yaml(data: Any, comments: list[str] | None = None) -> str:
    """Block-style YAML; every string JSON-quoted (valid YAML, never misread)."""
    lines = [f"# {c}" for c in comments or ()]

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return json.dumps(value)
        return json.dumps(str(value))

    def emit(value: Any, indent: int) -> None:
        pad = " " * indent
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, (dict, list)) and item:
                    lines.append(f"{pad}{key}:")
                    emit(item, indent + 2)
                else:
                    lines.append(f"{pad}{key}: {scalar(item) if item != [] else '[]'}")
        else:
            for item in value:
                if isinstance(item, dict) and item:
                    first = True
                    for key, sub in item.items():
                        lead = f"{pad}- " if first else f"{pad}  "
                        first = False
                        if isinstance(sub, (dict, list)) and sub:
                            lines.append(f"{lead}{key}:")
                            emit(sub, indent + 4)
                        else:
                            lines.append(f"{lead}{key}: {scalar(sub)}")
                else:
                    lines.append(f"{pad}- {scalar(item)}")

    emit(data, 0)
    return "\n".join(lines) + "\n"
