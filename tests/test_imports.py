"""Imports point one way: each module of lifewatch imports only the ones below it.

The order is the order data flows: records, the sink interface, the
lifecycle, the phase and the ways in, the sinks, health, what answers HTTP,
then the facade and the public modules on top. Every import counts, those
inside functions and under ``TYPE_CHECKING`` too: a cycle hidden in a function
is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lifewatch"

LAYERS = [
    # names every part shares
    "_types",
    "_compat",
    "_version",
    "_validate",
    "_scrub",
    "_errors",
    "_process",
    "_build",
    "_http",
    "_client",
    "_records",
    "_watchdog",
    # health as values, then the one event flow
    "_checks",
    "_supervise",
    "_sink",
    # the lifecycle's parts: outcome rules, event bus, readiness, background
    "_outcome",
    "_bus",
    "_readiness",
    "_background",
    "_lifecycle",
    # what times a block, and the ways in
    "_phase",
    "_threads",
    "_lifespan",
    "_middleware",
    "_starlette",
    # the sinks
    "_tracing",
    "_metrics",
    "_logging",
    "_pushgateway",
    "_health",
    "_drain",
    "_channel",
    # what answers HTTP
    "_exposition",
    "_timeline",
    "_waterfall",
    "_ops",
    # the facade and the public modules
    "_options",
    "_lifewatch",
    "__init__",
    "testing",
    "checks",
    "gunicorn",
    "_target",
    "_assets",
    "_k8s",
    "_demo",
    "__main__",
]


def imports_of(path: Path) -> set[str]:
    """The lifewatch modules ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif node.level == 0 and node.module and node.module.split(".")[0] == "lifewatch":
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def test_every_module_has_a_place_in_the_layers() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYERS), (
        f"not in LAYERS: {sorted(modules - set(LAYERS))}; gone: {sorted(set(LAYERS) - modules)}"
    )


def test_imports_point_one_way() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{module} imports {target}"
        for module in LAYERS
        for target in sorted(imports_of(PACKAGE / f"{module}.py"))
        if rank[target] >= rank[module]
    ]
    assert upward == []


def test_import_lifewatch_loads_only_what_every_app_needs() -> None:
    """The Pushgateway, the timeline and its HTML, multiprocess exposition, the
    drain channel, the ops listener, checks, supervised tasks, to_thread, the
    demo, the CLI, structlog and sysconfig load when used, not with what every
    app runs at every start: ``from lifewatch import Lifewatch`` and a default
    ``Lifewatch(...)``."""
    import subprocess
    import sys

    from tests.support.servers import env

    probe = (
        "import sys; from lifewatch import Lifewatch; Lifewatch(service='x'); "
        "print(sorted(m for m in sys.modules if m.startswith(('lifewatch.', 'structlog', "
        "'prometheus_client.multiprocess', 'sysconfig'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env(), check=True
    ).stdout
    loaded = set(ast.literal_eval(out))
    for lazy in (
        "lifewatch._pushgateway",
        "lifewatch._timeline",
        "lifewatch._waterfall",
        "lifewatch._demo",
        "lifewatch.__main__",
        "lifewatch._channel",  # the drain channel, made at the first startup
        "lifewatch._ops",  # the ops listener, only with ops_address
        "lifewatch._checks",  # with the first check
        "lifewatch._supervise",  # with the first supervised task
        "lifewatch._threads",  # with the first watch.to_thread
        "structlog",
        "prometheus_client.multiprocess",
        "sysconfig",  # the watchdog's stdlib paths, read on the first overrun
    ):
        assert lazy not in loaded, lazy
    # ...and still there when asked for.
    check = (
        "import lifewatch; print(lifewatch.Pushgateway.__module__, lifewatch.Timeline, "
        "lifewatch.HealthCheck, lifewatch.CheckResult)"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=env(), check=True
    ).stdout
    assert out.startswith(
        "lifewatch <class 'lifewatch.Timeline'> <class 'lifewatch.HealthCheck'> "
        "<class 'lifewatch.CheckResult'>"
    ), out
