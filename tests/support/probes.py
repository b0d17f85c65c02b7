"""Talking to probe endpoints in tests: over httpx, or as bare ASGI calls."""

from __future__ import annotations

from typing import Any

import httpx


async def get(app: Any, path: str, *, method: str = "GET", **headers: str) -> httpx.Response:
    """One request through httpx's ASGI transport (no lifespan: drive that apart)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        return await client.request(method, path, headers=headers)


async def call(
    app: Any,
    path: str,
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    http_version: str = "1.1",
    client: tuple[str, int] = ("127.0.0.1", 1234),
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One bare ASGI request: what a server hands over, without HTTP's limits."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers if headers is not None else [(b"host", b"probe")],
        "client": client,
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])
