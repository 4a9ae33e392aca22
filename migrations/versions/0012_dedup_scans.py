"""near-duplicate scans: a leased run per POST /pairs/dedup, executed by a datagen worker

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "dedup_scans",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_ids", _json(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("progress", _json(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dedup_scans")),
    )
    op.create_index("ix_dedup_scans_status_id", "dedup_scans", ["status", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dedup_scans_status_id", table_name="dedup_scans")
    op.drop_table("dedup_scans")
