"""evaluation: runs, and the essay-level split stored on SFT runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("training_runs", sa.Column("essay_split", _json(), nullable=True))
    op.create_table(
        "eval_runs",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("request", _json(), nullable=False),
        sa.Column("models", _json(), nullable=False),
        sa.Column("heldout", _json(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("progress", _json(), nullable=False),
        sa.Column("results", _json(), nullable=False),
        sa.Column("artifacts", _json(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_runs")),
    )
    op.create_index("ix_eval_runs_status_id", "eval_runs", ["status", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_eval_runs_status_id", table_name="eval_runs")
    op.drop_table("eval_runs")
    op.drop_column("training_runs", "essay_split")
