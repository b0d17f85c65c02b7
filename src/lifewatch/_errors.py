"""Exceptions lifewatch raises, each naming the phase it concerns."""

from __future__ import annotations


class LifewatchError(Exception):
    """Base class of the errors lifewatch raises itself."""


class StartupFailed(LifewatchError):
    """A critical startup phase failed; the message names it.

    Raised out of the lifespan so that the ASGI server's
    ``lifespan.startup.failed`` message (and so its log line) says which phase.
    """

    def __init__(self, phase: str, reason: str, cause: BaseException | None) -> None:
        self.phase = phase
        self.reason = reason
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"lifewatch: startup phase {phase!r} failed ({reason}){detail}")


class ShutdownFailed(LifewatchError):
    """One or more shutdown phases failed; every one of them still ran."""

    def __init__(self, phases: list[str]) -> None:
        self.phases = phases
        names = ", ".join(repr(p) for p in phases)
        super().__init__(f"lifewatch: shutdown phase(s) {names} failed")


class PhaseTimeout(TimeoutError, LifewatchError):
    """A phase ran past its ``timeout`` and was cancelled."""

    def __init__(self, phase: str, timeout: float) -> None:
        self.phase = phase
        self.timeout = timeout
        super().__init__(f"lifewatch: phase {phase!r} timed out after {timeout:g}s")
