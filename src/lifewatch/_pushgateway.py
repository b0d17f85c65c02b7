"""Last words: push the lifespan metrics of a failed startup or of a shutdown,
which no scrape sees, to a Pushgateway. Each push runs in a daemon thread bounded
by ``timeout``; an ``atexit`` hook waits for it, and the sink itself after a
shutdown (uvicorn re-raises SIGTERM, which skips ``atexit`` hooks)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.metrics_core import Metric

from ._metrics import Metrics
from ._records import RunRecord
from ._scrub import scrub
from ._sink import Sink
from ._types import State
from ._validate import validate_seconds


@dataclass(frozen=True)
class Pushgateway:
    """Where and how to push: ``Lifewatch(pushgateway=Pushgateway(url, ...))``.

    ``job`` and ``instance`` should be the labels Prometheus scrapes the app
    under, so dashboards join pushed and scraped series (scrape the gateway
    with ``honor_labels: true``).
    """

    url: str
    job: str | None = None
    """Default: the watch's ``service``, else ``"lifewatch"``."""
    instance: str | None = None
    """Default: ``socket.gethostname()``."""
    timeout: float = 2.0
    """Seconds a push may take, and so the most an exit is delayed."""
    username: str | None = None
    """Basic auth; credentials in the URL (``http://user:pass@host``) are used
    the same way, and never logged."""
    password: str | None = field(default=None, repr=False)
    handler: Callable[..., Callable[[], None]] | None = field(default=None, repr=False)
    """A prometheus-client push handler (a bearer token, TLS client
    certificates, say); it replaces the basic auth above."""

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.strip():
            raise ValueError(
                f"pushgateway url must be a non-empty string such as "
                f"'http://pushgateway:9091'; got {self.url!r}"
            )
        for name in ("job", "instance"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"Pushgateway {name} must be a non-empty string or None; got {value!r}"
                )
        for name in ("username", "password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Pushgateway {name} must be a string or None; got a {type(value)}")
        if self.handler is not None and not callable(self.handler):
            raise TypeError(
                "Pushgateway handler must be a prometheus-client push handler (a callable), "
                f"e.g. prometheus_client.exposition.basic_auth_handler; got {self.handler!r}"
            )
        validate_seconds(self.timeout, "Pushgateway timeout", optional=False)

    def __repr__(self) -> str:
        # Options get logged and printed: never with the URL's password.
        return (
            f"Pushgateway(url={scrub(self.url)!r}, job={self.job!r}, instance={self.instance!r}, "
            f"timeout={self.timeout!r}, username={self.username!r})"
        )

    def target(self) -> tuple[str, Callable[..., Callable[[], None]]]:
        """The URL to push to (credentials taken out) and the handler to push with."""
        parts = urlsplit(self.url if "://" in self.url else "http://" + self.url)
        url = self.url
        username, password = self.username, self.password
        if parts.username is not None or parts.password is not None:
            netloc = parts.netloc.rpartition("@")[2]
            url = urlunsplit(parts._replace(netloc=netloc))
            username = unquote(parts.username or "") if username is None else username
            password = unquote(parts.password or "") if password is None else password
        if self.handler is not None:
            return url, self.handler
        if username is None and password is None:
            return url, default_handler
        return url, functools.partial(basic_auth_handler, username=username, password=password)

    @classmethod
    def coerce(cls, value: object) -> Pushgateway | None:
        """``None``, a URL string or a ``Pushgateway``; anything else is an error."""
        if value is None or isinstance(value, Pushgateway):
            return value
        if isinstance(value, str):
            return cls(value)
        raise TypeError(
            f"pushgateway must be a URL string, a lifewatch.Pushgateway or None; got {value!r}"
        )


class _Snapshot:
    """A collector returning families collected earlier: what the push sends."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


_pending: list[tuple[threading.Thread, float]] = []
_pending_lock = threading.Lock()


def _wait(pushes: list[tuple[threading.Thread, float]]) -> bool:
    """Join each push until its deadline; False if one is still running then
    (its sink logs why)."""
    for thread, deadline in pushes:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread, _ in pushes)


@atexit.register
def _wait_at_exit() -> None:
    with _pending_lock:
        pending = list(_pending)
    _wait(pending)


class PushgatewaySink(Sink):
    """Pushes lifewatch's own families (the gateway keeps what it is given forever)
    when startup fails or shutdown ends, replacing (``PUT``) the group of
    ``job``, ``instance``, ``service``."""

    def __init__(
        self, config: Pushgateway, metrics: Metrics, service: str | None, log: Any
    ) -> None:
        self.config = config
        self._log = log
        self.metrics = metrics
        self.job = config.job or service or "lifewatch"
        self.grouping_key = {"instance": config.instance or socket.gethostname()}
        if service:
            self.grouping_key["service"] = service
        self._state: State | None = None
        self._threads: list[tuple[threading.Thread, float]] = []
        self._lock = threading.Lock()
        self._taken = 0  # snapshots taken, and the newest sent: never overwrite a newer one
        self._sent = 0

    def state_changed(self, old: State | None, new: State) -> None:
        self._state = new
        if new is State.FAILED:
            self.push("startup failed")
        elif new is State.STOPPED:
            self.push("shutdown complete")
            self.wait()

    def run_end(self, run: RunRecord) -> None:
        # The rollback after a failed startup: push again with its durations,
        # once the metrics sink (an ``*_end`` hook after this one) set them.
        if run.event == "shutdown" and self._state is State.FAILED:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.push("failed, rolled back")
            else:
                loop.call_soon(self.push, "failed, rolled back")

    def push(self, why: str) -> threading.Thread:
        """Start one push in the background; returns the thread doing it."""
        families = [f for metric in self.metrics.all() for f in metric.collect()]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(families))
        self._taken += 1
        deadline = time.monotonic() + self.config.timeout
        thread = threading.Thread(
            target=self._push,
            args=(registry, why, self._taken, deadline),
            name="lifewatch-push",
            daemon=True,
        )
        entry = (thread, deadline)
        with _pending_lock:
            _pending[:] = [p for p in _pending if p[0].is_alive()]
            _pending.append(entry)
        self._threads.append(entry)
        thread.start()
        return thread

    def _push(self, registry: CollectorRegistry, why: str, seq: int, deadline: float) -> None:
        # One at a time and in order; a push queued behind a hung one only
        # gets what is left of its own deadline.
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._warn(why, "an earlier push to the gateway is still hanging")
            return
        try:
            if seq < self._sent:
                return
            self._sent = seq
            left = deadline - time.monotonic()
            if left <= 0.01:
                self._warn(why, "no time left before the deadline")
                return
            url, handler = self.config.target()
            push_to_gateway(
                url,
                handler=handler,
                job=self.job,
                registry=registry,
                grouping_key=self.grouping_key,
                # Per socket operation, so a bit less than what is left: it
                # ends, and says why, before the deadline that exit waits for.
                timeout=left * 0.8,
            )
        except Exception as exc:
            self._warn(why, f"{type(exc).__name__}: {exc}")
        finally:
            self._lock.release()

    def _warn(self, why: str, error: str) -> None:
        # A push thread has no one to tell that logging broke.
        with contextlib.suppress(Exception):
            self._log.warning(
                "lifespan.pushgateway.failed",
                url=scrub(self.config.url),
                job=self.job,
                why=why,
                timeout_s=self.config.timeout,
                error=scrub(error),
            )

    def wait(self) -> bool:
        """Wait for this sink's pushes, each up to its deadline; True if all ended."""
        entries, self._threads = self._threads, []
        return _wait(entries)
