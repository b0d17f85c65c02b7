"""The exceptions lifewatch raises of its own, and the note it adds to others: a
failing phase's exception reaches the server as itself, with a PEP 678 note naming
the phase."""

from __future__ import annotations

import signal

NOTE_PREFIX = "lifewatch: "


class LifewatchError(Exception):
    """Base class of the errors lifewatch raises itself."""


class PhaseTimeout(TimeoutError, LifewatchError):
    """A phase ran past its ``timeout`` (or the run past its bound) and was cut."""

    def __init__(
        self, phase: str, timeout: float, limit: str = "timeout", event: str = "startup"
    ) -> None:
        self.phase = phase
        self.timeout = timeout
        self.limit = limit
        """What cut it: the phase's ``timeout``, or ``startup_timeout``/``shutdown_timeout``."""
        self.event = event
        # Worded like the note on other failures, so one grep finds both.
        super().__init__(
            f"lifewatch: {event} phase {phase!r} failed (timeout): "
            f"still running after {limit}={timeout:g}s"
        )


class StartupInterrupted(LifewatchError):
    """A SIGTERM or SIGINT came while startup ran: startup failed, so a pod deleted
    before it was ever ready exits at once."""

    def __init__(self, phase: str, signum: int) -> None:
        self.phase = phase
        self.signal = signal.Signals(signum)
        super().__init__(f"lifewatch: startup cut by {self.signal.name} in phase {phase!r}")


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, once, through PEP 678's ``__notes__`` (3.10 has no add_note)."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = exc.__notes__ = []  # type: ignore[attr-defined,unused-ignore]  # 3.10
    if isinstance(notes, list) and note not in notes:
        notes.append(note)


def has_note(exc: BaseException) -> bool:
    """Whether lifewatch already named a phase on ``exc`` (the innermost one did)."""
    notes = getattr(exc, "__notes__", None) or ()
    return any(isinstance(n, str) and n.startswith(NOTE_PREFIX) for n in notes)
