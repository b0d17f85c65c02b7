"""The client side of ``python -m lifewatch probe``: one bounded request with
``http.client`` (so a slim image needs no curl for a Docker ``HEALTHCHECK``),
straight to the address given: a probe asks this container, not a proxy."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


class Failed(Exception):
    """One line saying why the request did not get the answer it wanted."""


def request(url: str, *, method: str = "GET", timeout: float) -> tuple[int, bytes]:
    """Status and body of one request to ``url``, within ``timeout`` seconds in all."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Failed(f"not an http:// or https:// URL: {url!r}")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, target, headers={"User-Agent": "lifewatch"})
        response = connection.getresponse()
        return response.status, response.read()
    except TimeoutError:
        raise Failed(f"{url}: no answer within {timeout:g}s") from None
    except ConnectionRefusedError:
        raise Failed(f"{url}: connection refused") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Failed(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        connection.close()


def probe(url: str, timeout: float) -> str:
    """The first line of a 200 answer; ``Failed`` for anything else."""
    status, body = request(url, timeout=timeout)
    first = body.decode("utf-8", "replace").strip().splitlines()
    if status != 200:
        reasons = [line for line in first if line.startswith("[-]")]
        detail = f" ({'; '.join(reasons)})" if reasons else ""
        raise Failed(f"{url}: {status}{detail}")
    return first[0] if first else "ok"
