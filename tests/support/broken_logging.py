"""A structlog configuration whose every record raises: a broken stdout pipe,
a processor with a bug. Observability that breaks must change nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog


class LoggingBroke(Exception):
    pass


def _explode(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    raise LoggingBroke(f"cannot write {event.get('event')!r}")


@contextmanager
def broken_logging() -> Iterator[list[str]]:
    """Every structlog record raises; yields the events that were attempted."""
    attempted: list[str] = []

    def note(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        attempted.append(str(event.get("event")))
        return event

    saved = structlog.get_config()
    structlog.configure(processors=[note, _explode], cache_logger_on_first_use=False)
    try:
        yield attempted
    finally:
        structlog.configure(**saved)
