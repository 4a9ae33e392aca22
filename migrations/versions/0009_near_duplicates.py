"""near-duplicate flags of candidate essays (MinHash-LSH), read by pair exports and statistics

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "near_duplicates",
        sa.Column("generation_id", BIGID, nullable=False),
        sa.Column("job_id", BIGID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("similar_generation_id", BIGID, nullable=True),
        sa.Column("similar_topic_id", BIGID, nullable=True),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name=op.f("fk_near_duplicates_generation_id_generations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["datagen_jobs.id"],
            name=op.f("fk_near_duplicates_job_id_datagen_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["similar_generation_id"],
            ["generations.id"],
            name=op.f("fk_near_duplicates_similar_generation_id_generations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["similar_topic_id"],
            ["topics.id"],
            name=op.f("fk_near_duplicates_similar_topic_id_topics"),
        ),
        sa.PrimaryKeyConstraint("generation_id", name=op.f("pk_near_duplicates")),
    )
    op.create_index("ix_near_duplicates_job_id", "near_duplicates", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_near_duplicates_job_id", table_name="near_duplicates")
    op.drop_table("near_duplicates")
