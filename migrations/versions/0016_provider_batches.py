"""provider batches: a job's remote batches (OpenAI Batch API) and their stored results

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
MONEY = sa.Numeric(14, 6)


def upgrade() -> None:
    op.create_table(
        "provider_batches",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("job_id", BIGID, nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("remote_status", sa.String(length=16), nullable=True),
        sa.Column("remote_file_id", sa.String(length=255), nullable=True),
        sa.Column("remote_batch_id", sa.String(length=255), nullable=True),
        sa.Column("keys", JSON, nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("reserved_usd", MONEY, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["datagen_jobs.id"],
            name=op.f("fk_provider_batches_job_id_datagen_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_batches")),
    )
    op.create_index(
        "ix_provider_batches_job_status", "provider_batches", ["job_id", "status"], unique=False
    )
    op.create_table(
        "batch_results",
        sa.Column("batch_id", BIGID, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("online_cost_usd", MONEY, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("retryable", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["provider_batches.id"],
            name=op.f("fk_batch_results_batch_id_provider_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "key", name=op.f("pk_batch_results")),
    )


def downgrade() -> None:
    op.drop_table("batch_results")
    op.drop_index("ix_provider_batches_job_status", table_name="provider_batches")
    op.drop_table("provider_batches")
