"""pair statistics: a covering index over pairs and per-job summaries of finished jobs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def upgrade() -> None:
    # GET /pairs/stats reads only these columns: an index-only scan instead of the heap.
    op.create_index(
        "ix_pairs_stats",
        "pairs",
        ["confidence"],
        postgresql_include=[
            "job_id",
            "source",
            "chosen_model",
            "rejected_model",
            "chosen_chars",
            "rejected_chars",
        ],
    )
    op.create_table(
        "job_work_summaries",
        sa.Column("job_id", BIGID, nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("matchups", sa.BigInteger(), nullable=False),
        sa.Column("flips", sa.BigInteger(), nullable=False),
        sa.Column("generations", sa.BigInteger(), nullable=False),
        sa.Column("generations_cost_usd", sa.Numeric(14, 6), nullable=False),
        sa.Column("generations_prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("generations_completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("judgments", sa.BigInteger(), nullable=False),
        sa.Column("judgments_cost_usd", sa.Numeric(14, 6), nullable=False),
        sa.Column("judgments_prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("judgments_completion_tokens", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["datagen_jobs.id"],
            name=op.f("fk_job_work_summaries_job_id_datagen_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_work_summaries")),
    )


def downgrade() -> None:
    op.drop_table("job_work_summaries")
    op.drop_index("ix_pairs_stats", table_name="pairs")
