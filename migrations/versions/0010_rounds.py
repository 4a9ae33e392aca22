"""on-policy DPO rounds: a rounds run (leased) and its rounds

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")
MONEY = sa.Numeric(precision=14, scale=6)


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _created_at() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "rounds_runs",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("start_model", _json(), nullable=False),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("step_token", sa.String(length=32), nullable=True),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds_runs")),
    )
    op.create_index("ix_rounds_runs_status_id", "rounds_runs", ["status", "id"], unique=False)
    op.create_table(
        "rounds",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("rounds_run_id", BIGID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("generator_model", _json(), nullable=False),
        sa.Column("datagen_job_id", BIGID, nullable=True),
        sa.Column("dpo_run_id", BIGID, nullable=True),
        sa.Column("model_id", BIGID, nullable=True),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("pairs_trained", sa.Integer(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["rounds_run_id"],
            ["rounds_runs.id"],
            name=op.f("fk_rounds_rounds_run_id_rounds_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["datagen_job_id"],
            ["datagen_jobs.id"],
            name=op.f("fk_rounds_datagen_job_id_datagen_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dpo_run_id"],
            ["training_runs.id"],
            name=op.f("fk_rounds_dpo_run_id_training_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_rounds_model_id_models"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("rounds_run_id", "number", name=op.f("uq_rounds_rounds_run_id_number")),
    )


def downgrade() -> None:
    op.drop_table("rounds")
    op.drop_index("ix_rounds_runs_status_id", table_name="rounds_runs")
    op.drop_table("rounds_runs")
