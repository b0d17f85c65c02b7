"""The one-off startup work as a command, run once before the workers start:

    python -m examples.realistic.prestart

A Kubernetes init container of the Deployment runs it (same image), or the
image's prestart script before ``uvicorn --workers 4``. alembic reads
``alembic.ini`` here, logging setup included, as ``alembic upgrade head``
would; the workers' own ``init_db`` then finds nothing to do.
"""

from __future__ import annotations

import anyio

from .db import HERE, init_db, wait_for_db
from .observability import watch


async def main() -> None:
    async with watch.phase("wait-for-db", timeout=30):
        await watch.to_thread(wait_for_db)
    init_db(HERE / "alembic.ini")


if __name__ == "__main__":
    anyio.run(main)
