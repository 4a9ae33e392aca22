"""rounds' evaluation: each round's eval run and score, whether it improved on the best so far

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("eval_run_id", BIGID, nullable=True))
        batch.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("start_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("improved", sa.Boolean(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_rounds_eval_run_id_eval_runs"),
            "eval_runs",
            ["eval_run_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_constraint(op.f("fk_rounds_eval_run_id_eval_runs"), type_="foreignkey")
        batch.drop_column("improved")
        batch.drop_column("start_score")
        batch.drop_column("score")
        batch.drop_column("eval_run_id")
