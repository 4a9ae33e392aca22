"""job work summaries keep the judge's position counts, so GET /pairs/stats reads no judgment

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNT = (
    "(SELECT count(*) FROM judgments j WHERE j.job_id = job_work_summaries.job_id "
    "AND j.status = 'succeeded' AND j.winner = '{winner}')"
)


def upgrade() -> None:
    # Added with a default of 0, then filled from the stored jobs' judgments once, here, so
    # that no read has to scan them later (ix_judgments_job_status serves each job's count).
    with op.batch_alter_table("job_work_summaries") as batch:
        for column in ("position_a_wins", "position_b_wins"):
            batch.add_column(sa.Column(column, sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE job_work_summaries SET "
        f"position_a_wins = {_COUNT.format(winner='A')}, "
        f"position_b_wins = {_COUNT.format(winner='B')}"
    )


def downgrade() -> None:
    with op.batch_alter_table("job_work_summaries") as batch:
        batch.drop_column("position_b_wins")
        batch.drop_column("position_a_wins")
