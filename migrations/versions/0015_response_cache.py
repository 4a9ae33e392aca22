"""response cache: answers kept under the hash of their request; cache hits on work rows

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
MONEY = sa.Numeric(14, 6)


def upgrade() -> None:
    op.create_table(
        "response_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("logprobs", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_response_cache")),
    )
    for table in ("generations", "judgments"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("cache_hit", sa.Boolean(), server_default=sa.false(), nullable=False)
            )
            batch.add_column(sa.Column("saved_usd", MONEY, server_default="0", nullable=False))


def downgrade() -> None:
    for table in ("judgments", "generations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("saved_usd")
            batch.drop_column("cache_hit")
    op.drop_table("response_cache")
