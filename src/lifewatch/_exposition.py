"""``/metrics``: prometheus-client's own exposition, served as plain ASGI.

No text is written by hand: the format (Prometheus text, or OpenMetrics when
the scraper's ``Accept`` asks for it) comes from ``choose_encoder``, so
escaping of odd label values and format details stay prometheus-client's job.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable

import anyio.to_thread
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Receive, Scope, Send

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

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = REGISTRY if registry is None else registry

    def render(
        self, accept: str, accept_encoding: str = ""
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Body and headers for one scrape, in the calling thread."""
        encoder, content_type = choose_encoder(accept)
        directory = multiprocess_dir()
        if directory is None:
            body = encoder(self.registry)
        else:
            body = _render_multiprocess(encoder, directory)
        headers = [(b"content-type", content_type.encode("latin-1"))]
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body, compresslevel=6)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        headers.append((b"cache-control", b"no-store"))
        return body, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        accept = accept_encoding = ""
        for key, value in scope.get("headers", ()):
            if key == b"accept":
                accept = value.decode("latin-1")
            elif key == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
        if multiprocess_dir() is None:
            body, headers = self.render(accept, accept_encoding)
        else:
            body, headers = await anyio.to_thread.run_sync(self.render, accept, accept_encoding)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _render_multiprocess(encoder: Callable[[CollectorRegistry], bytes], directory: str) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return encoder(registry)


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("latin-1")),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
