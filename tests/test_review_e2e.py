"""The review page in a real browser: Debian's headless Chromium driven by Playwright, against
the API under uvicorn on Postgres with keys required. Sign in, filter, open a pair, label it
with the keyboard, watch the calibration page update; a read key looks but cannot label; no
console errors anywhere. Screenshots are saved under the test's tmp dir (and copied to
docs/img/ when CHATPGT_REVIEW_SCREENSHOTS_TO_DOCS=1)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.pairs.labels import PairLabel
from chatpgt.review import service as review
from chatpgt.review.schemas import LabelIn
from tests import factories, procs, review_world
from tests.test_auth import new_key

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DOCS_IMG = procs.ROOT / "docs" / "img"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")

# (title, combined confidence, what the second reviewer "bob" says: chosen/rejected/tie/bad)
TOPICS = [
    ("How to Start Noticing Cities", 8.5, "chosen"),
    ("Why Boredom Makes Good Founders", 7.0, "chosen"),
    ("The Case Against Meetings", 6.5, "rejected"),
    ("What Makes a Question Worth Asking", 3.5, "rejected"),
    ("The Hardest Lessons for First-Time Founders", 9.5, "chosen"),
    ("On Writing Simply", 9.0, "chosen"),
    ("Why Smart People Procrastinate", 8.0, "chosen"),
    ("The Real Cost of Hiring Fast", 7.5, "tie"),
    ("How Not to Die as a Startup", 6.0, "chosen"),
    ("Schlep Blindness", 4.5, "rejected"),
]
REASONS = [
    "The first essay argues from a concrete example and keeps one thread; the second "
    "lists platitudes.",
    "The second essay is shorter but says more: each paragraph earns its place.",
]
OPENERS = [
    "Most people notice this only when it is already too late.",
    "The interesting thing is not the answer but why the question feels hard.",
    "I used to believe the opposite, and it took me years to see why I was wrong.",
]
MIDDLES = [
    "When you look closely, the pattern repeats: the people who do well are the ones who "
    "kept asking small questions long after everyone else stopped.",
    "There is a cost to this, of course. It takes time, and time is the one thing a startup "
    "never seems to have.",
    "A good test is to ask what you would do if nobody were watching. The answer is usually "
    "more honest than the plan you wrote down.",
]


def essay(topic: str, variant: int, paragraphs: int) -> str:
    parts = [f"{OPENERS[variant % 3]} That is true of {topic.lower()} too."]
    parts += [MIDDLES[(variant + i) % 3] for i in range(paragraphs)]
    parts.append("So the advice is simple, even if following it is not: start small, and notice.")
    return "\n\n".join(parts)


@pytest.fixture(scope="module")
def secured_url(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    yield from review_world.secured_api(service_env, log_dir)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def seed(session: AsyncSession) -> list[int]:
    """Ten judged pairs of one job, all but the first four already labelled by "bob"."""
    job = await factories.job(
        session,
        request={"judge": {"provider": "fake", "model": "judge", "method": "json"}},
        errors=[{"stage": "generate", "model": "writer-b", "error": "timeout after 30 s"}],
    )
    ids = []
    for i, (title, confidence, bob) in enumerate(TOPICS):
        topic = await factories.topic(session, title)
        chosen = await factories.generation(
            session, job, topic, "writer-a", essay(title, i, 3), cost_usd="0.0012"
        )
        rejected = await factories.generation(
            session, job, topic, "writer-b", essay(title, i + 1, 1), cost_usd="0.0007"
        )
        conf = int(confidence)
        ab = await factories.judgment(session, chosen, rejected, "A", confidence=conf)
        ba = await factories.judgment(session, rejected, chosen, "B", confidence=conf + 1)
        ab.reasoning, ba.reasoning = REASONS[0], REASONS[1]
        pair = await factories.judged_pair(
            session, chosen, rejected, confidence, topic_title=title, judgments=(ab, ba)
        )
        ids.append(pair.id)
        if i >= 4:
            choice = {"chosen": "A", "rejected": "B"}.get(bob, bob)
            label = LabelIn(choice=choice, shown_order="AB")  # type: ignore[arg-type]
            await review.put_label(session, pair.id, label, reviewer="bob")
    await session.commit()
    return ids


class Console:
    """Every console error and uncaught page error of a page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


async def shot(page: Page, tmp_path: Path, name: str, **kw: Any) -> None:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), **kw)
    if os.environ.get("CHATPGT_REVIEW_SCREENSHOTS_TO_DOCS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / f"review-{name}.png")


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(f"{base}/ui/pairs")
    assert "/ui/login" in page.url  # keys required: sent to sign in first
    await page.fill("#key", key)
    await page.click("#sign-in")
    await page.wait_for_url(f"{base}/ui/pairs")


async def listed(page: Page) -> list[int]:
    ids: list[int] = await page.eval_on_selector_all(
        "#pairs tbody tr[data-pair]", "rows => rows.map(r => Number(r.dataset.pair))"
    )
    return ids


async def labels(session: AsyncSession) -> list[PairLabel]:
    session.expire_all()
    return list((await session.execute(select(PairLabel).order_by(PairLabel.id))).scalars())


async def test_a_reviewer_signs_in_filters_labels_with_the_keyboard_and_sees_calibration(
    secured_url: str,
    browser: Browser,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    pair_ids = await seed(session)
    key = await new_key(sessionmaker, "write", "ann")
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    console = Console(page)

    await page.goto(f"{secured_url}/ui/pairs")
    await shot(page, tmp_path, "login")
    await sign_in(page, secured_url, key)
    assert await page.text_content("#reviewer") == "ann"
    cookie = next(c for c in await context.cookies() if c["name"] == "chatpgt_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and key not in cookie["value"]

    # Filter: confidence ≥ 6 and a topic word.
    await page.fill("input[name=min_confidence]", "6")
    await page.fill("#topic-search", "the")
    await page.click("#apply-filters")
    await page.wait_for_load_state()
    assert await listed(page) == [
        i
        for i, (title, c, _) in zip(pair_ids, TOPICS, strict=True)
        if c >= 6 and "the" in title.lower()
    ]
    await page.fill("#topic-search", "")
    await page.select_option("select[name=labels]", "not_mine")
    await page.click("#apply-filters")
    await page.wait_for_load_state()
    # Not labelled by ann: every pair so far (bob's labels are his).
    assert await listed(page) == [
        i for i, (_, c, _) in zip(pair_ids, TOPICS, strict=True) if c >= 6
    ]
    await shot(page, tmp_path, "pairs")

    # Open the first pair: models hidden until the label.
    await page.click(f"tr[data-pair='{pair_ids[0]}'] td.topic a")
    await page.wait_for_url(f"{secured_url}/ui/pairs/{pair_ids[0]}")
    body = await page.text_content("body") or ""
    assert "writer-a" not in body and "writer-b" not in body
    order = await page.get_attribute("#shown-order", "data-order")
    await shot(page, tmp_path, "pair", full_page=False)

    # Label with the keyboard: "a" prefers the left essay.
    await page.keyboard.press("a")
    await page.wait_for_selector("#my-label")
    assert await page.text_content("#my-label") == "A"
    assert "writer-a" in (await page.text_content("#models") or "")
    await page.locator("#reveal").scroll_into_view_if_needed()
    await shot(page, tmp_path, "pair-labelled", full_page=False)
    rows = [r for r in await labels(session) if r.reviewer == "ann"]
    assert [(r.pair_id, r.choice, r.shown_order) for r in rows] == [(pair_ids[0], "A", order)]
    assert rows[0].preferred == ("chosen" if order == "AB" else "rejected")

    # "n" opens the next pair; a note, then "x" (bad pair) from the keyboard.
    await page.keyboard.press("n")
    await page.wait_for_url(f"{secured_url}/ui/pairs/{pair_ids[1]}")
    await page.fill("#note", "both essays miss the topic")
    await page.locator("#note").blur()
    await page.keyboard.press("x")
    await page.wait_for_selector("#my-label")
    rows = [r for r in await labels(session) if r.reviewer == "ann"]
    assert (rows[1].pair_id, rows[1].preferred, rows[1].note) == (
        pair_ids[1], "bad", "both essays miss the topic"
    )  # fmt: skip

    # Calibration: the judge's label count, then one more label, and the page follows.
    await page.goto(f"{secured_url}/ui/calibration")
    assert await page.text_content(".judge .labels-count") == "8"  # bob's 6 and ann's 2
    await page.goto(f"{secured_url}/ui/pairs/{pair_ids[2]}")
    await page.keyboard.press("t")
    await page.wait_for_selector("#my-label")
    await page.goto(f"{secured_url}/ui/calibration")
    assert await page.text_content(".judge .labels-count") == "9"
    assert await page.locator("svg.plot circle.bucket").count() >= 1
    await shot(page, tmp_path, "calibration", full_page=True)

    await page.goto(f"{secured_url}/ui/jobs")
    await page.click("#jobs a")
    assert "timeout after 30 s" in (await page.text_content("#errors") or "")
    assert "100.0%" not in (await page.text_content("#flip-rate") or "")
    await shot(page, tmp_path, "job", full_page=True)
    assert console.errors == []
    await context.close()


async def test_a_read_key_views_but_cannot_label(
    secured_url: str,
    browser: Browser,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    pair_ids = await seed(session)
    key = await new_key(sessionmaker, "read", "reader")
    context = await browser.new_context()
    page = await context.new_page()
    console = Console(page)
    await sign_in(page, secured_url, key)
    await page.goto(f"{secured_url}/ui/pairs/{pair_ids[0]}")
    assert await page.is_visible("#read-only")
    assert await page.locator("#label-form").count() == 0
    await page.keyboard.press("a")  # no form: nothing happens
    # A post with the session cookie and a valid CSRF token is still refused: 403 problem+json.
    csrf = await page.eval_on_selector(
        "form[action='/ui/logout'] input[name=csrf_token]", "e => e.value"
    )
    answer = await page.request.post(
        f"{secured_url}/ui/pairs/{pair_ids[0]}/label",
        form={"choice": "A", "view": "x", "csrf_token": csrf},
    )
    assert answer.status == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert [r.reviewer for r in await labels(session)] == ["bob"] * 6
    assert console.errors == []
    await context.close()
