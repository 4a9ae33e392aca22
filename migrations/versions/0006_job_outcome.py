"""datagen job outcome: what a finished job produced, and its most common failure reasons

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("datagen_jobs") as batch:
        batch.add_column(sa.Column("outcome", sa.String(32), nullable=True))
        batch.add_column(sa.Column("failure_summary", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datagen_jobs") as batch:
        batch.drop_column("failure_summary")
        batch.drop_column("outcome")
