"""pairs: stored character lengths of chosen and rejected

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # length() counts characters on Postgres and SQLite alike; stored, so that statistics over
    # a million pairs never decompress the essays.
    with op.batch_alter_table("pairs") as batch:
        batch.add_column(
            sa.Column(
                "chosen_chars",
                sa.Integer(),
                sa.Computed("length(chosen)", persisted=True),
                nullable=False,
            )
        )
        batch.add_column(
            sa.Column(
                "rejected_chars",
                sa.Integer(),
                sa.Computed("length(rejected)", persisted=True),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("pairs") as batch:
        batch.drop_column("rejected_chars")
        batch.drop_column("chosen_chars")
