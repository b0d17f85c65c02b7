"""``/metrics``: prometheus-client's own exposition (``choose_encoder``: text or
OpenMetrics, escaping and format details are its job), served as plain ASGI."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from starlette.types import Receive, Scope, Send

from ._http import (
    TEXT,
    Header,
    coding_accepted,
    header_values,
    not_allowed,
    ranked,
    respond,
    response_headers,
)
from ._records import Notice

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What ``generate_latest`` writes (prometheus-client names it only from 0.23.1 on).
_PLAIN_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
_BROKEN = b"lifewatch: the metrics could not be collected (see the log)\n"
_FORMATS = (b"application/openmetrics-text", b"text/plain", b"text/*", b"*/*")
# prometheus-client echoes the version the scraper asked for: anything else
# in its content type came from a hostile header.
_SAFE_TYPE = r"[a-z/.-]+(?:; (?:version=\d{1,3}(?:\.\d{1,3}){0,2}|[a-z]+=[a-z0-9_-]+))*"


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if it is on."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class MetricsEndpoint:
    """A small ASGI app answering ``GET``/``HEAD`` with the exposition: rendered
    inline for one process, in a worker thread when a ``MultiProcessCollector``
    reads every worker's files (``inline``: always here, the ops listener's thread)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        inline: bool = False,
        notify: Callable[[Notice], None] | None = None,
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.inline = inline
        self._notify = notify

    def render(self, accept: str, accept_encoding: str = "") -> tuple[bytes, tuple[Header, ...]]:
        """Body and headers for one scrape, in the calling thread; a format
        version prometheus-client cannot parse, or would echo oddly, gets classic text."""
        try:
            wanted = ""
            for element in ranked(accept.encode("latin-1")):
                if element.partition(b";")[0].strip().lower() in _FORMATS:
                    wanted = element.decode("latin-1")
                    break
            encoder, content_type = choose_encoder(wanted)
            if not re.fullmatch(_SAFE_TYPE, content_type):
                raise ValueError(f"unexpected content type {content_type!r}")
            body = self._encode(encoder)
        except Exception:
            encoder, content_type = generate_latest, _PLAIN_0_0_4
            body = self._encode(encoder)
        extra: tuple[Header, ...] = ()
        if coding_accepted(accept_encoding.encode("latin-1"), b"gzip"):
            body = gzip.compress(body, compresslevel=6)
            extra = ((b"content-encoding", b"gzip"),)
        return body, response_headers(content_type.encode("latin-1"), body, *extra)

    def _encode(self, encoder: Callable[[CollectorRegistry], bytes]) -> bytes:
        directory = multiprocess_dir()
        if directory is None:
            return encoder(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return encoder(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method != "GET" and method != "HEAD":
            await not_allowed(send)
            return
        headers = scope.get("headers", ())
        # Sent more than once, a header's values make one comma-separated list.
        accept = b",".join(header_values(headers, b"accept")).decode("latin-1")
        accept_encoding = b",".join(header_values(headers, b"accept-encoding")).decode("latin-1")
        try:
            if self.inline or multiprocess_dir() is None:
                body, response = self.render(accept, accept_encoding)
            else:
                import anyio.to_thread

                body, response = await anyio.to_thread.run_sync(
                    self.render, accept, accept_encoding
                )
        except Exception as exc:
            # A multiprocess directory deleted under a running pod, a collector
            # that raises: the scrape says so, never a 500.
            if self._notify is not None:
                with contextlib.suppress(Exception):
                    self._notify(
                        Notice("lifespan.metrics.error", "error", {"path": scope.get("path")}, exc)
                    )
            await respond(send, method, 503, response_headers(TEXT, _BROKEN), _BROKEN)
            return
        await respond(send, method, 200, response, body)
