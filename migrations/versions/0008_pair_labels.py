"""pair labels: reviewers' verdicts on pairs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pair_labels",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("pair_id", BIGID, nullable=False),
        sa.Column("reviewer", sa.String(length=255), nullable=False),
        sa.Column("choice", sa.String(length=8), nullable=False),
        sa.Column("shown_order", sa.String(length=2), nullable=False),
        sa.Column("preferred", sa.String(length=8), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.CheckConstraint(
            "choice IN ('A', 'B', 'tie', 'bad')", name=op.f("ck_pair_labels_choice")
        ),
        sa.CheckConstraint("shown_order IN ('AB', 'BA')", name=op.f("ck_pair_labels_shown_order")),
        sa.CheckConstraint(
            "preferred IN ('chosen', 'rejected', 'tie', 'bad')",
            name=op.f("ck_pair_labels_preferred"),
        ),
        sa.ForeignKeyConstraint(
            ["pair_id"],
            ["pairs.id"],
            name=op.f("fk_pair_labels_pair_id_pairs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pair_labels")),
        sa.UniqueConstraint("pair_id", "reviewer", name=op.f("uq_pair_labels_pair_id_reviewer")),
    )
    op.create_index("ix_pair_labels_reviewer", "pair_labels", ["reviewer"])


def downgrade() -> None:
    op.drop_index("ix_pair_labels_reviewer", table_name="pair_labels")
    op.drop_table("pair_labels")
