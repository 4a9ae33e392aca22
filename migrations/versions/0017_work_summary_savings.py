"""job work summaries: cache hits and dollars saved (response cache, provider batches)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 17:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("generations", "judgments")


def upgrade() -> None:
    with op.batch_alter_table("job_work_summaries") as batch:
        for stage in COLUMNS:
            batch.add_column(
                sa.Column(
                    f"{stage}_cache_hits", sa.BigInteger(), server_default="0", nullable=False
                )
            )
            batch.add_column(
                sa.Column(
                    f"{stage}_saved_usd", sa.Numeric(14, 6), server_default="0", nullable=False
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("job_work_summaries") as batch:
        for stage in reversed(COLUMNS):
            batch.drop_column(f"{stage}_saved_usd")
            batch.drop_column(f"{stage}_cache_hits")
