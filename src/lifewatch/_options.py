"""The options of a ``Lifewatch``: validated once, then never changed.

Every part is built from them once; a setting changed afterwards would be
read by some parts and not others, so there is no changing them (a frozen
dataclass: ``watch.options.drain_delay = 1`` raises). To change one, build a
new ``Lifewatch``, or ``dataclasses.replace(watch.options, ...)`` and pass its
fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from ._logging import MODES, is_structlog_logger
from ._sink import Sink
from ._validate import (
    validate_address,
    validate_bool,
    validate_namespace,
    validate_path,
    validate_seconds,
)

if TYPE_CHECKING:
    from ._pushgateway import Pushgateway


@dataclass(frozen=True, init=False, repr=False, eq=False)
class Options:
    """What a ``Lifewatch`` was built with; see ``Lifewatch`` for each one.

    A frozen dataclass (``dataclasses.replace`` and ``fields`` work) whose
    ``__init__``, ``__eq__``, ``__hash__`` and ``__repr__`` are written out:
    ``@dataclass`` would build them with ``exec`` when the module is imported
    (about 1 ms of every app's start).
    """

    service: str | None
    registry: CollectorRegistry | None
    namespace: str
    tracer_provider: TracerProvider | None
    startup_timeout: float | None
    shutdown_timeout: float
    sinks: tuple[Sink, ...]
    timeline_path: str | None
    livez_path: str | None
    readyz_path: str | None
    startupz_path: str | None
    expose_details: bool
    slow_check_threshold: float
    drain_delay: float
    metrics_path: str | None
    pushgateway: Pushgateway | None
    ops_address: str | None
    ops_only: bool
    logger: Any
    version: str | None
    revision: str | None

    def __init__(
        self,
        service: str | None = None,
        registry: CollectorRegistry | None = None,
        namespace: str = "lifespan",
        tracer_provider: TracerProvider | None = None,
        startup_timeout: float | None = None,
        shutdown_timeout: float = 20.0,
        sinks: tuple[Sink, ...] = (),
        timeline_path: str | None = "/lifewatch/timeline",
        livez_path: str | None = "/livez",
        readyz_path: str | None = "/readyz",
        startupz_path: str | None = "/startupz",
        expose_details: bool = False,
        slow_check_threshold: float = 0.5,
        drain_delay: float = 5.0,
        metrics_path: str | None = "/metrics",
        pushgateway: Pushgateway | None = None,
        ops_address: str | None = None,
        ops_only: bool = False,
        logger: Any = "auto",
        version: str | None = None,
        revision: str | None = None,
    ) -> None:
        put = object.__setattr__
        put(self, "service", service)
        put(self, "registry", registry)
        put(self, "namespace", namespace)
        put(self, "tracer_provider", tracer_provider)
        put(self, "startup_timeout", startup_timeout)
        put(self, "shutdown_timeout", shutdown_timeout)
        put(self, "sinks", sinks)
        put(self, "timeline_path", timeline_path)
        put(self, "livez_path", livez_path)
        put(self, "readyz_path", readyz_path)
        put(self, "startupz_path", startupz_path)
        put(self, "expose_details", expose_details)
        put(self, "slow_check_threshold", slow_check_threshold)
        put(self, "drain_delay", drain_delay)
        put(self, "metrics_path", metrics_path)
        put(self, "pushgateway", pushgateway)
        put(self, "ops_address", ops_address)
        put(self, "ops_only", ops_only)
        put(self, "logger", logger)
        put(self, "version", version)
        put(self, "revision", revision)
        self._validate()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Options) and other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__qualname__}({shown})"

    def _validate(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.service is not None and not isinstance(self.service, str):
            raise TypeError(f"service must be a string or None; got {self.service!r}")
        if self.registry is not None and not isinstance(self.registry, CollectorRegistry):
            raise TypeError(
                "registry must be a prometheus_client.CollectorRegistry or None; "
                f"got {self.registry!r}"
            )
        for name in ("version", "revision"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise TypeError(
                    f"{name} must be a non-empty string, or None to read it from the "
                    f"environment; got {value!r}"
                )
        put("namespace", validate_namespace(self.namespace))
        put("startup_timeout", validate_seconds(self.startup_timeout, "startup_timeout"))
        put(
            "shutdown_timeout",
            validate_seconds(self.shutdown_timeout, "shutdown_timeout", optional=False),
        )
        sinks = tuple(self.sinks)
        for sink in sinks:
            if not isinstance(sink, Sink):
                raise TypeError(f"sinks must be lifewatch.Sink instances; got {sink!r}")
        put("sinks", sinks)
        put(
            "timeline_path",
            validate_path(self.timeline_path, "timeline_path", "/lifewatch/timeline"),
        )
        put("livez_path", validate_path(self.livez_path, "livez_path", "/livez"))
        put("readyz_path", validate_path(self.readyz_path, "readyz_path", "/readyz"))
        put("startupz_path", validate_path(self.startupz_path, "startupz_path", "/startupz"))
        put("metrics_path", validate_path(self.metrics_path, "metrics_path", "/metrics"))
        put("expose_details", validate_bool(self.expose_details, "expose_details"))
        put(
            "slow_check_threshold",
            validate_seconds(self.slow_check_threshold, "slow_check_threshold", optional=False),
        )
        put(
            "drain_delay",
            validate_seconds(
                self.drain_delay, "drain_delay (0 turns draining off)", optional=False, zero_ok=True
            ),
        )
        if self.ops_address is not None:
            validate_address(self.ops_address, "ops_address")
        put("ops_only", validate_bool(self.ops_only, "ops_only"))
        if self.ops_only and self.ops_address is None:
            raise ValueError(
                "ops_only=True moves /metrics and the timeline to the ops listener, which "
                "needs ops_address (e.g. ops_address='0.0.0.0:9000'); got ops_address=None"
            )
        if self.logger is None:
            put("logger", "auto")
        elif not (
            (isinstance(self.logger, str) and self.logger in MODES)
            or isinstance(self.logger, logging.Logger)
            or (not isinstance(self.logger, str) and is_structlog_logger(self.logger))
        ):
            raise TypeError(
                "logger must be 'auto', 'structlog', 'stdlib', a logging.Logger or a "
                f"structlog logger; got {self.logger!r}"
            )
        if self.pushgateway is not None:
            from ._pushgateway import Pushgateway

            put("pushgateway", Pushgateway.coerce(self.pushgateway))
        served = [
            p
            for p in (
                self.livez_path,
                self.readyz_path,
                self.startupz_path,
                self.metrics_path,
                self.timeline_path,
            )
            if p is not None
        ]
        if len(set(served)) != len(served):
            raise ValueError(f"endpoint paths must differ from each other; got {served!r}")
