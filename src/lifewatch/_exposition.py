"""``/metrics``: prometheus-client's own exposition, served as plain ASGI.

No text is written by hand: the format (Prometheus text, or OpenMetrics when
the scraper's ``Accept`` asks for it) comes from ``choose_encoder``, so
escaping of odd label values and format details stay prometheus-client's job.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from starlette.types import Receive, Scope, Send

from ._http import Header, header_values, not_allowed, respond, response_headers

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if it is on."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class MetricsEndpoint:
    """A small ASGI app answering ``GET``/``HEAD`` with the exposition.

    One process: the registry the ``Lifewatch`` uses, rendered inline (a few
    dozen series take microseconds; a thread hop would cost more than it
    saves). Many processes (``PROMETHEUS_MULTIPROC_DIR`` set): a fresh
    registry with a ``MultiProcessCollector`` per scrape, as prometheus-client
    requires, rendered in a worker thread because it reads every worker's
    files and must not stall the event loop that serves requests.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, inline: bool = False) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.inline = inline
        """Always render in the calling thread: on the ops listener, whose
        threads stall no app."""

    def render(self, accept: str, accept_encoding: str = "") -> tuple[bytes, tuple[Header, ...]]:
        """Body and headers for one scrape, in the calling thread."""
        encoder, content_type = choose_encoder(accept)
        directory = multiprocess_dir()
        if directory is None:
            body = encoder(self.registry)
        else:
            body = _render_multiprocess(encoder, directory)
        extra: tuple[Header, ...] = ()
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body, compresslevel=6)
            extra = ((b"content-encoding", b"gzip"),)
        return body, response_headers(content_type.encode("latin-1"), body, *extra)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method != "GET" and method != "HEAD":
            await not_allowed(send)
            return
        headers = scope.get("headers", ())
        # Sent more than once, a header's values make one comma-separated list.
        accept = b",".join(header_values(headers, b"accept")).decode("latin-1")
        accept_encoding = b",".join(header_values(headers, b"accept-encoding")).decode("latin-1")
        if self.inline or multiprocess_dir() is None:
            body, response = self.render(accept, accept_encoding)
        else:
            import anyio.to_thread

            body, response = await anyio.to_thread.run_sync(self.render, accept, accept_encoding)
        await respond(send, method, 200, response, body)


def _render_multiprocess(encoder: Callable[[CollectorRegistry], bytes], directory: str) -> bytes:
    registry = CollectorRegistry()
    from prometheus_client.multiprocess import MultiProcessCollector

    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return encoder(registry)
