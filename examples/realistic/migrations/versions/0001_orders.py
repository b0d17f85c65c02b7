"""Create the orders table."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from examples.realistic.observability import watch

revision = "0001"
down_revision = None


@watch.phase("0001_orders")  # each revision a phase, nested under "migrations"
def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item", sa.String(100), nullable=False),
    )
