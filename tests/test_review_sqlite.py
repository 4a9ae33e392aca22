"""Review on the embedded database: labels, calibration, the review list's filters and the
`labels: "prefer"` export on a SQLite file migrated by Alembic give what they give on Postgres
(the same fixed world and hand-computed figures as tests/test_review_labels.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datasets.export import write_jsonl
from chatpgt.db.session import make_engine, make_sessionmaker
from chatpgt.pairs.repository import PairFilters
from chatpgt.review import service
from chatpgt.review.repository import ReviewFilters
from tests import procs, review_world
from tests.conftest import alembic_config


@pytest.fixture
def lite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'review.db'}"
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture
async def lite(lite_url: str) -> AsyncIterator[AsyncSession]:
    engine = make_engine(lite_url)
    async with make_sessionmaker(engine)() as session:
        yield session
    await engine.dispose()


async def test_calibration_filters_and_prefer_export_on_sqlite(
    lite: AsyncSession, tmp_path: Path
) -> None:
    world = await review_world.build(lite)
    await lite.commit()
    cal = await service.calibration(lite, target=0.75, min_labels=2)
    judges = {(j.provider, j.model, j.method): j for j in cal.judges}
    j1 = judges[("fake", "judge", "json")]
    assert (j1.pairs, j1.labels, j1.suggested_min_confidence) == (5, 9, 8)
    assert [(t.agreement.n, t.agreement.hits) for t in j1.thresholds] == [
        (7, 4), (7, 4), (7, 4), (6, 4), (6, 4), (6, 4), (5, 3), (4, 3), (2, 2), (0, 0)
    ]  # fmt: skip
    assert (j1.flip_rate.n, j1.flip_rate.hits) == (6, 1)
    assert (j1.position_bias.n, j1.position_bias.hits) == (12, 7)
    assert (j1.human_prefers_longer.n, j1.human_prefers_longer.hits) == (6, 3)
    assert judges[("fake", "judge-2", "ab_probability")].agreement.n == 1

    flipped = world.pairs[1]
    first, second = flipped.verdicts
    flipped.verdicts = [first, {**second, "winner_generation_id": flipped.rejected_generation_id}]
    await lite.commit()
    rows, _ = await service.review_page(lite, ReviewFilters(flipped=True), limit=10, cursor=None)
    assert [r.id for r in rows] == [flipped.id]
    rows, _ = await service.review_page(
        lite, ReviewFilters(topic="1-3 ON CITIES", consensus="bad"), limit=10, cursor=None
    )
    assert [r.id for r in rows] == [world.pairs[3].id]

    path = tmp_path / "prefer.jsonl"
    await write_jsonl(lite, PairFilters(min_confidence=6, labels="prefer"), path)
    exported = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["confidence"], r["human_label"]) for r in exported] == [
        (9.0, "chosen"), (3.5, "chosen"), (5.0, "chosen")
    ]  # fmt: skip
    assert exported[1]["chosen"][0]["content"] == world.pairs[4].rejected


def test_the_api_process_imports_no_torch() -> None:
    """The review page lives in the API process, which never imports torch or matplotlib."""
    code = (
        "import sys, api.main; "
        "bad = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=procs.ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
