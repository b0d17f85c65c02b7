"""Add a status to orders (fails on purpose with ORDERS_MODE=fail)."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op
from examples.realistic.observability import watch

revision = "0002"
down_revision = "0001"


@watch.phase("0002_status")
def upgrade() -> None:
    if os.environ.get("ORDERS_MODE") == "fail":
        raise RuntimeError("column status: duplicate column name")
    op.add_column("orders", sa.Column("status", sa.String(20), server_default="new"))
