"""Names shared by every part of lifewatch: events, outcomes, reasons, states, probes."""

from __future__ import annotations

import enum
from typing import Literal

Event = Literal["startup", "shutdown"]
"""Which half of the lifespan a phase belongs to."""

Outcome = Literal["ok", "error", "timeout", "cancelled", "signal", "degraded"]
"""How a phase or a whole startup/shutdown ended. ``degraded``: a non-critical
failure, recorded while startup went on; ``signal``: a SIGTERM or SIGINT ended
the startup."""

Reason = Literal["error", "timeout", "cancelled", "signal"]
"""Why a phase failed; the ``reason`` label of the failure counter."""

Probe = Literal["liveness", "readiness", "startup"]
"""Which probe endpoint a check answers on: ``/livez``, ``/readyz``, ``/startupz``."""

PROBES: tuple[Probe, ...] = ("liveness", "readiness", "startup")

RESERVED = "lifespan"
"""The name of the lifecycle entry in ``/readyz`` and ``/startupz``."""


class State(str, enum.Enum):
    """The lifecycle of the process, exported as ``lifespan_state``."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value
