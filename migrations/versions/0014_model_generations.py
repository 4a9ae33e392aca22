"""model generations (a leased request per POST /models/{id}/generations, run by a gpu worker)
and the playground's blind comparisons (arena_battles)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_generations",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("model_id", BIGID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("results", _json(), nullable=False),
        sa.Column("timings", _json(), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_model_generations_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_generations")),
    )
    op.create_index(
        "ix_model_generations_model_id_id", "model_generations", ["model_id", "id"], unique=False
    )

    op.create_table(
        "arena_battles",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(length=255), nullable=False),
        sa.Column("model_ids", _json(), nullable=False),
        sa.Column("generation_ids", _json(), nullable=False),
        sa.Column("choice", sa.String(length=8), nullable=True),
        sa.Column("winner_model_id", BIGID, nullable=True),
        sa.Column("voted_by", sa.String(length=255), nullable=True),
        sa.Column("voted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arena_battles")),
    )
    op.create_index("ix_arena_battles_voted_at", "arena_battles", ["voted_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_arena_battles_voted_at", table_name="arena_battles")
    op.drop_table("arena_battles")
    op.drop_index("ix_model_generations_model_id_id", table_name="model_generations")
    op.drop_table("model_generations")
