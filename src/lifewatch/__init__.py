"""lifewatch: make the lifespan of an ASGI application observable: spans, metrics
and logs for every startup and shutdown phase, and Kubernetes probes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import LifewatchError, PhaseTimeout, StartupInterrupted
from ._lifespan import WatchedLifespan
from ._lifewatch import Lifewatch
from ._middleware import LifewatchMiddleware
from ._options import Options
from ._phase import Phase
from ._records import Notice, PhaseRecord, RunRecord
from ._sink import Sink
from ._types import Event, Outcome, Probe, Reason, State
from ._version import __version__

__all__ = [
    "CheckResult",
    "Event",
    "HealthCheck",
    "Lifewatch",
    "LifewatchError",
    "LifewatchMiddleware",
    "Notice",
    "Options",
    "Outcome",
    "Phase",
    "PhaseRecord",
    "PhaseTimeout",
    "Probe",
    "Pushgateway",
    "Reason",
    "RunRecord",
    "Sink",
    "StartupInterrupted",
    "State",
    "Timeline",
    "TimelineEntry",
    "WatchedLifespan",
    "__version__",
]

# Tracebacks and reprs name the public path (lifewatch.StartupFailed), not the module.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj


def __getattr__(name: str) -> Any:
    """Loaded on first use: most apps never touch them (or register a check only
    later), and every start imports lifewatch."""
    module: Any
    if name in ("CheckResult", "HealthCheck"):
        from . import _checks as module
    elif name == "Pushgateway":
        from . import _pushgateway as module
    elif name in ("Timeline", "TimelineEntry"):
        from . import _timeline as module
    else:
        raise AttributeError(f"module 'lifewatch' has no attribute {name!r}")
    found = getattr(module, name)
    found.__module__ = __name__
    globals()[name] = found
    return found


if TYPE_CHECKING:
    from ._checks import CheckResult, HealthCheck
    from ._pushgateway import Pushgateway
    from ._timeline import Timeline, TimelineEntry
