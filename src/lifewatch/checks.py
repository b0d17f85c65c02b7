"""Ready-made health checks for what real services depend on.

Each returns a function to register as it is::

    watch.add_check("database", checks.sqlalchemy(engine))
    watch.add_check("payments", checks.http("http://payments:8080/healthz"))
    watch.add_check("disk", checks.disk_free("/var/lib/orders", min_bytes=1 << 30))
    watch.add_check("redis", checks.redis(client))

Their libraries are imported when a check is built (a missing one names the
extra to install). Checks fail by raising; ``add_check(timeout=...)`` bounds them.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Awaitable, Callable, Container
from pathlib import Path
from typing import Any

__all__ = ["disk_free", "http", "redis", "sqlalchemy"]


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this check needs {module.split('.')[0]}: pip install 'lifewatch[{extra}]'"
        ) from exc


def sqlalchemy(engine: Any, *, query: str = "SELECT 1") -> Callable[[], Any]:
    """A SQLAlchemy ``Engine`` (checked in a thread) or ``AsyncEngine``: one
    ``query`` on a connection from the engine's pool."""
    sa = _need("sqlalchemy", "sqlalchemy")
    statement = sa.text(query)
    if hasattr(engine, "sync_engine"):  # sqlalchemy.ext.asyncio.AsyncEngine

        async def check_async_engine() -> None:
            async with engine.connect() as conn:
                await conn.execute(statement)

        return check_async_engine
    if not isinstance(engine, sa.engine.Engine):
        raise TypeError(f"checks.sqlalchemy takes an Engine or an AsyncEngine; got {engine!r}")

    def check_engine() -> None:
        with engine.connect() as conn:
            conn.execute(statement)

    return check_engine


def http(
    url: str,
    *,
    client: Any = None,
    ok: Container[int] = range(200, 400),
    headers: dict[str, str] | None = None,
) -> Callable[[], Awaitable[None]]:
    """An HTTP dependency: ``GET url`` answers a status in ``ok`` (2xx and 3xx by default).

    ``client``: your ``httpx.AsyncClient`` (else one per run). A 3xx is an
    answer, not followed.
    """
    httpx = _need("httpx", "httpx")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"checks.http takes an http:// or https:// URL; got {url!r}")

    async def check_http() -> None:
        session = httpx.AsyncClient() if client is None else contextlib.nullcontext(client)
        async with session as http_client:
            response = await http_client.get(url, headers=headers)
        if response.status_code not in ok:
            raise ConnectionError(f"GET {url} answered {response.status_code}")

    return check_http


def disk_free(
    path: str | Path, *, min_bytes: int | None = None, min_ratio: float | None = None
) -> Callable[[], None]:
    """Free space on the file system holding ``path``: ``min_bytes`` and/or ``min_ratio``."""
    if min_bytes is None and min_ratio is None:
        raise ValueError("checks.disk_free needs min_bytes=, min_ratio= or both")
    if min_bytes is not None and (isinstance(min_bytes, bool) or min_bytes < 0):
        raise ValueError(f"min_bytes must be a number of bytes >= 0; got {min_bytes!r}")
    if min_ratio is not None and not 0 <= min_ratio <= 1:
        raise ValueError(f"min_ratio must be between 0 and 1; got {min_ratio!r}")
    where = str(path)

    def check_disk_free() -> None:
        usage = shutil.disk_usage(where)
        if min_bytes is not None and usage.free < min_bytes:
            raise OSError(f"{where}: {usage.free} bytes free, below {min_bytes}")
        if min_ratio is not None and usage.free < min_ratio * usage.total:
            raise OSError(f"{where}: {usage.free / usage.total:.1%} free, below {min_ratio:.1%}")

    return check_disk_free


def redis(client: Any) -> Callable[[], Awaitable[None]]:
    """A ``redis.asyncio.Redis`` client (redis-py): ``PING`` answers."""
    _need("redis.asyncio", "redis")
    if not callable(getattr(client, "ping", None)):
        raise TypeError(f"checks.redis takes a redis.asyncio.Redis client; got {client!r}")

    async def check_redis() -> None:
        if not await client.ping():
            raise ConnectionError("redis did not answer PING")

    return check_redis
