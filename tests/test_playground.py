"""The blind playground (/ui/playground): two registered models write on one title through a
real gpu worker, the essays are shown as A and B in a random, recorded order without the
models' names, the reviewer votes by keyboard in Debian's Chromium (Playwright), and the human
win rates with their Wilson intervals follow the votes. Keys required; a read key sees but
cannot start a battle or vote; CSRF on every post; no console errors. Screenshots go to the
test's tmp dir (and to docs/img/ with CHATPGT_PLAYGROUND_SCREENSHOTS_TO_DOCS=1).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.review.arena import tally
from chatpgt.review.models import ArenaBattle
from chatpgt.training.models import RegisteredModel
from tests import fixtures_training as ft
from tests import local_model_fixtures as lm
from tests import procs, review_world
from tests.test_auth import new_key
from tests.test_review_e2e import CHROMIUM, CHROMIUM_ARGS, Console

gpu_worker = ft.gpu_worker
smollm2_tokenizer_dir = lm.smollm2_tokenizer_dir
tiny_chat_model = lm.tiny_chat_model
tiny_stopping_model = lm.tiny_stopping_model
DOCS_IMG = procs.ROOT / "docs" / "img"
HAS_CHROMIUM = Path(CHROMIUM).exists()
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_tally_of_three_way_votes() -> None:
    """The chosen essay of three beat both others (nothing between those two); a tie among
    three is a tie for each of the three pairs."""
    names = {1: "base", 2: "sft", 3: "dpo"}
    rates = {(r.first_id, r.second_id): r for r in tally([([3, 1, 2], "C")], names)}
    assert set(rates) == {(1, 2), (2, 3)}  # 2 (shown C) beat 1 and 3; 1 vs 3 undecided
    assert (rates[1, 2].first_wins, rates[1, 2].second_wins) == (0, 1)
    assert (rates[2, 3].first_wins, rates[2, 3].second_wins) == (1, 0)
    rates = {(r.first_id, r.second_id): r for r in tally([([2, 3, 1], "tie")], names)}
    assert set(rates) == {(1, 2), (1, 3), (2, 3)}
    assert all(
        (r.ties, r.first_wins, r.second_wins, r.rate.n) == (1, 0, 0, 0) for r in rates.values()
    )


def test_tally_counts_positions_ties_and_wilson() -> None:
    names = {1: "base", 2: "sft"}
    votes = [([1, 2], "A"), ([2, 1], "A"), ([2, 1], "B"), ([1, 2], "tie"), ([2, 1], "A")]
    (rate,) = tally(votes, names)
    # base won when shown first (A) and when shown second and picked (B); sft won twice as A.
    assert (rate.first, rate.second) == ("base", "sft")
    assert (rate.first_wins, rate.second_wins, rate.ties) == (2, 2, 1)
    assert rate.rate.n == 4 and rate.rate.rate == 0.5
    # Wilson 95% for 2/4, worked out by hand: centre 0.5, half-width 0.3500.
    assert rate.rate.low == pytest.approx(0.1500, abs=1e-4)
    assert rate.rate.high == pytest.approx(0.8500, abs=1e-4)


@pytest.fixture(scope="module")
def secured_url(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    yield from review_world.secured_api(service_env, log_dir)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAS_CHROMIUM:
        pytest.skip("needs Debian's chromium")
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def register(sessionmaker: async_sessionmaker[AsyncSession], name: str, path: Path) -> int:
    async with sessionmaker() as session:
        existing = await session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
        if existing is not None:
            return existing.id
        model = RegisteredModel(name=name, kind="sft", path=str(path), metrics={})
        session.add(model)
        await session.commit()
        return model.id


async def shot(page: Page, tmp_path: Path, name: str, **kw: Any) -> None:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), **kw)
    if os.environ.get("CHATPGT_PLAYGROUND_SCREENSHOTS_TO_DOCS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / f"playground-{name}.png")


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(f"{base}/ui/playground")
    assert "/ui/login" in page.url  # keys required: sent to sign in first
    await page.fill("#key", key)
    await page.click("#sign-in")
    await page.wait_for_url(f"{base}/ui/playground")


async def battle(
    page: Page, base: str, title: str, first: int, second: int, third: int | None = None
) -> int:
    """Start a battle from the form; wait until every essay is in; the battle id."""
    await page.goto(f"{base}/ui/playground")
    await page.fill("#title", title)
    await page.select_option("#model-1", str(first))
    await page.select_option("#model-2", str(second))
    if third is not None:
        await page.select_option("#model-3", str(third))
    await page.fill("#max-new-tokens", "5")
    await page.click("#generate")
    await page.wait_for_url(re.compile(r".*/ui/playground/battles/\d+$"))
    battle_id = int(page.url.rsplit("/", 1)[1])
    await page.wait_for_selector("#label-form", timeout=120_000)  # htmx polls the essays
    return battle_id


async def row(session: AsyncSession, battle_id: int) -> ArenaBattle:
    session.expire_all()
    found = await session.get(ArenaBattle, battle_id)
    assert found is not None
    return found


async def test_blind_battles_votes_by_keyboard_and_win_rates(
    secured_url: str,
    browser: Browser,
    sessionmaker: async_sessionmaker[AsyncSession],
    gpu_worker: procs.Proc,
    tiny_chat_model: Path,
    tiny_stopping_model: Path,
    tmp_path: Path,
) -> None:
    first = await register(sessionmaker, "arena-chat", tiny_chat_model)
    second = await register(sessionmaker, "arena-stop", tiny_stopping_model)
    key = await new_key(sessionmaker, "write", "ann")
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    console = Console(page)
    await sign_in(page, secured_url, key)
    assert await page.locator("#no-votes").count() == 1
    await shot(page, tmp_path, "start")

    battle_id = await battle(page, secured_url, "Why Cities Matter", first, second)
    body = await page.text_content("body") or ""
    assert "arena-chat" not in body and "arena-stop" not in body  # blind until the vote
    await shot(page, tmp_path, "battle")
    await page.keyboard.press("a")
    await page.wait_for_selector("#my-vote")
    assert await page.text_content("#my-vote") == "A"
    async with sessionmaker() as session:
        voted = await row(session, battle_id)
    assert sorted(voted.model_ids) == sorted([first, second])  # the order drawn is recorded
    assert voted.choice == "A" and voted.voted_by == "ann"
    assert voted.winner_model_id == voted.model_ids[0]
    names = await page.locator(".model-name").all_text_contents()
    expected = {first: "arena-chat", second: "arena-stop"}
    assert names == [expected[i] for i in voted.model_ids]  # revealed, in shown order
    await shot(page, tmp_path, "voted")

    await page.goto(f"{secured_url}/ui/playground")
    pair = page.locator("#win-rates tr[data-pair='arena-chat|arena-stop']")
    winner_is_first = voted.winner_model_id == first
    assert await pair.locator(".wins").text_content() == ("1" if winner_is_first else "0")
    assert await pair.locator(".losses").text_content() == ("0" if winner_is_first else "1")
    assert "of 1" in (await pair.locator(".rate").text_content() or "")

    # A second battle, a tie by keyboard: the count moves.
    second_battle = await battle(page, secured_url, "On Taste", second, first)
    await page.keyboard.press("t")
    await page.wait_for_selector("#my-vote")
    await page.goto(f"{secured_url}/ui/playground")
    assert await pair.locator(".ties").text_content() == "1"
    await shot(page, tmp_path, "win-rates", full_page=True)
    async with sessionmaker() as session:
        assert (await row(session, second_battle)).winner_model_id is None

    # A vote is final; a post without the page's CSRF token is refused.
    answer = await page.request.get(f"{secured_url}/ui/playground/battles/{battle_id}")
    token = CSRF.search(await answer.text()).group(1)  # type: ignore[union-attr]
    again = await page.request.post(
        f"{secured_url}/ui/playground/battles/{battle_id}/vote",
        form={"choice": "B", "csrf_token": token},
    )
    assert again.status == 409
    no_c = await page.request.post(
        f"{secured_url}/ui/playground/battles/{battle_id}/vote",
        form={"choice": "C", "csrf_token": token},
    )
    assert no_c.status == 400  # a battle of two essays has no C
    forged = await page.request.post(
        f"{secured_url}/ui/playground/battles/{battle_id}/vote", form={"choice": "B"}
    )
    assert forged.status == 403
    same = await page.request.post(
        f"{secured_url}/ui/playground",
        data=urlencode({"title": "x", "model": [first, first], "csrf_token": token}, doseq=True),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert same.status == 400
    assert console.errors == []
    await context.close()

    # A read key sees the win rates, not the form; its posts are refused.
    reader = await new_key(sessionmaker, "read", "reader")
    context = await browser.new_context()
    page = await context.new_page()
    console = Console(page)
    await sign_in(page, secured_url, reader)
    assert await page.locator("#read-only").count() == 1
    assert await page.locator("#battle-form").count() == 0
    assert await page.locator("#win-rates tr[data-pair]").count() == 1
    html = await page.content()
    token = CSRF.search(html).group(1)  # type: ignore[union-attr]
    refused = await page.request.post(
        f"{secured_url}/ui/playground",
        form={"title": "x", "model": str(first), "csrf_token": token},
    )
    assert refused.status == 403
    # The models page, for a read key too: the models and the same win rates.
    await page.goto(f"{secured_url}/ui/models")
    assert await page.locator("#models tr[data-model='arena-chat']").count() == 1
    assert await page.locator("#win-rates tr[data-pair]").count() == 1
    await shot(page, tmp_path, "models", full_page=True)
    assert console.errors == []
    await context.close()

    # The same counts as JSON, for a read key too; filtered to a pair of models.
    auth = {"Authorization": f"Bearer {reader}"}
    async with httpx.AsyncClient(base_url=secured_url, headers=auth) as client:
        rates = (await client.get("/arena/win-rates")).json()
        assert rates["votes"] == 2
        (item,) = rates["items"]
        assert (item["first"]["name"], item["second"]["name"]) == ("arena-chat", "arena-stop")
        assert (item["first_wins"], item["second_wins"], item["ties"]) == (
            (1, 0, 1) if winner_is_first else (0, 1, 1)
        )
        assert item["first_win_rate"]["n"] == 1
        assert item["first_win_rate"]["rate"] == (1.0 if winner_is_first else 0.0)
        only = await client.get("/arena/win-rates", params={"model_id": [first, 10**6]})
        assert only.json() == {"votes": 0, "items": []}
        both = await client.get("/arena/win-rates", params={"model_id": [first, second]})
        assert both.json() == rates

    # Three models: essays A, B and C; "c" by keyboard picks C, which beat both others.
    third = await register(sessionmaker, "arena-third", tiny_chat_model)
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    console = Console(page)
    await sign_in(page, secured_url, key)
    three = await battle(page, secured_url, "On Threes", first, second, third)
    assert await page.locator("section.essay").count() == 3
    assert await page.locator("#vote-C").count() == 1
    await shot(page, tmp_path, "three")
    await page.keyboard.press("c")
    await page.wait_for_selector("#my-vote")
    assert await page.text_content("#my-vote") == "C"
    async with sessionmaker() as session:
        voted = await row(session, three)
    assert sorted(voted.model_ids) == sorted([first, second, third])
    assert voted.winner_model_id == voted.model_ids[2]
    assert console.errors == []
    await context.close()
    async with httpx.AsyncClient(base_url=secured_url, headers=auth) as client:
        rates = (await client.get("/arena/win-rates")).json()
    assert rates["votes"] == 3
    assert sum(i["first_wins"] + i["second_wins"] + i["ties"] for i in rates["items"]) == 4
    pairs = {(i["first"]["model_id"], i["second"]["model_id"]): i for i in rates["items"]}
    winner = voted.winner_model_id
    for loser in set(voted.model_ids) - {winner}:
        item = pairs[tuple(sorted((winner, loser)))]  # type: ignore[index]
        wins = item["first_wins"] if item["first"]["model_id"] == winner else item["second_wins"]
        assert wins >= 1


async def test_playground_over_http_refuses_bad_input(
    api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], tiny_chat_model: Path
) -> None:
    """Open API (loopback): unknown models, one model twice, a missing title, a bad vote."""
    model = await register(sessionmaker, "arena-http", tiny_chat_model)
    hub_only = await register(sessionmaker, "arena-hub-id", Path("HuggingFaceTB/SmolLM2-135M"))
    page = await api.get("/ui/playground")
    assert page.status_code == 200
    # Only models with a folder here are offered.
    assert f'<option value="{model}">' in page.text
    assert f'<option value="{hub_only}"' not in page.text
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    post = {"csrf_token": token, "title": "T", "model": [str(model), "999999"]}
    assert (await api.post("/ui/playground", data=post)).status_code == 404
    post["model"] = [str(model), str(model)]
    assert (await api.post("/ui/playground", data=post)).status_code == 400
    post["model"] = [str(model), "1", "2", "3"]  # four models
    assert (await api.post("/ui/playground", data=post)).status_code == 400
    post["model"] = [str(model), ""]  # the third select left empty: one model
    assert (await api.post("/ui/playground", data=post)).status_code == 400
    post = {"csrf_token": token, "title": "  ", "model": [str(model), "1"]}
    assert (await api.post("/ui/playground", data=post)).status_code == 400
    post = {"csrf_token": token, "title": "T", "model": ["x", "y"]}
    assert (await api.post("/ui/playground", data=post)).status_code == 422
    assert (await api.get("/ui/playground/battles/999999")).status_code == 404
    # The models page lists every registered model (the hub-only one with no folder here),
    # and a model's page shows its card.
    listing = await api.get("/ui/models")
    assert listing.status_code == 200
    assert f'<a href="/ui/models/{model}">arena-http</a>' in listing.text
    assert 'data-model="arena-hub-id"' in listing.text
    one = await api.get(f"/ui/models/{model}")
    assert one.status_code == 200 and 'id="card"' in one.text and "library_name" in one.text
    assert (await api.get("/ui/models/999999")).status_code == 404
    async with sessionmaker() as session:
        titles = (await session.scalars(select(ArenaBattle.title))).all()
    assert "T" not in titles  # nothing was written by the refused posts
