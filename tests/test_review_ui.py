"""The review page (/ui) over HTTP against the real API on Postgres: pages render, the shown
order is random and recorded, model names stay hidden until the label, sign-in with a key
(signed HttpOnly cookie), CSRF on every form post, and a read key that may look but not label.
Browser tests (keyboard, htmx, screenshots) are in tests/test_review_e2e.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.auth import service as auth_service
from chatpgt.pairs.labels import PairLabel
from tests import review_world
from tests.test_auth import assert_problem, new_key

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
VIEW = re.compile(r'name="view" value="([^"]+)"')
ORDER = re.compile(r'id="shown-order" data-order="(AB|BA)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


@pytest.fixture(scope="module")
def secured_url(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    yield from review_world.secured_api(service_env, log_dir)


@pytest.fixture
async def browser_like(secured_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=secured_url, timeout=30) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, key: str) -> None:
    form = await client.get("/ui/login")
    assert form.status_code == 200
    answer = await client.post(
        "/ui/login", data={"key": key, "csrf_token": csrf_of(form.text), "next": "/ui/pairs"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/pairs", answer.text


async def test_pages_render_and_the_shown_order_is_random_and_recorded(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await review_world.build(session, with_labels=False)
    await session.commit()
    pair = world.pairs[0]
    for path in ("/ui/pairs", "/ui/jobs", f"/ui/jobs/{pair.job_id}", "/ui/calibration"):
        answer = await api.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"].startswith("text/html")
    listing = (await api.get("/ui/pairs", params={"q": "topic 1-1"})).text
    assert f'data-pair="{world.pairs[1].id}"' in listing and f'data-pair="{pair.id}"' not in listing

    orders = set()
    for _ in range(40):
        html = (await api.get(f"/ui/pairs/{pair.id}")).text
        order = ORDER.search(html)
        assert order
        orders.add(order.group(1))
        # Hidden until labelled: neither model name appears anywhere on the page.
        assert "writer-a" not in html and "writer-b" not in html
        assert "A is better" in html
    assert orders == {"AB", "BA"}  # 40 draws: both orders (a 2 * 0.5**40 chance to fail)

    html = (await api.get(f"/ui/pairs/{pair.id}")).text
    shown = ORDER.search(html).group(1)  # type: ignore[union-attr]
    left_is_chosen = shown == "AB"
    posted = await api.post(
        f"/ui/pairs/{pair.id}/label",
        data={"choice": "A", "view": VIEW.search(html).group(1), "csrf_token": csrf_of(html)},  # type: ignore[union-attr]
    )
    assert posted.status_code == 303, posted.text
    row = (
        await session.execute(select(PairLabel).where(PairLabel.pair_id == pair.id))
    ).scalar_one()
    assert (row.reviewer, row.choice, row.shown_order) == ("local", "A", shown)
    assert row.preferred == ("chosen" if left_is_chosen else "rejected")
    # Labelled: the page keeps the order the label was given in, and names the models.
    after = (await api.get(f"/ui/pairs/{pair.id}")).text
    assert ORDER.search(after).group(1) == shown  # type: ignore[union-attr]
    assert "writer-a" in after and "writer-b" in after


async def test_a_form_post_without_its_csrf_token_is_refused(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await review_world.build(session, with_labels=False)
    await session.commit()
    pair = world.pairs[0]
    html = (await api.get(f"/ui/pairs/{pair.id}")).text
    view = VIEW.search(html).group(1)  # type: ignore[union-attr]
    url = f"/ui/pairs/{pair.id}/label"
    assert_problem(await api.post(url, data={"choice": "A", "view": view}), 403)
    wrong = {"choice": "A", "view": view, "csrf_token": "not-the-token"}
    assert_problem(await api.post(url, data=wrong), 403)
    # A token without its session cookie (a forged cross-site post) is refused too.
    async with httpx.AsyncClient(base_url=str(api.base_url)) as stranger:
        forged = {"choice": "A", "view": view, "csrf_token": csrf_of(html)}
        assert_problem(await stranger.post(url, data=forged), 403)
    # The view token is bound to its pair.
    other = {"choice": "A", "view": view, "csrf_token": csrf_of(html)}
    assert_problem(await api.post(f"/ui/pairs/{world.pairs[1].id}/label", data=other), 400)
    too_long = {"choice": "A", "view": view, "csrf_token": csrf_of(html), "note": "n" * 5000}
    assert_problem(await api.post(url, data=too_long), 422)
    nul = {"choice": "A", "view": view, "csrf_token": csrf_of(html), "note": "a\x00b"}
    assert_problem(await api.post(url, data=nul), 422)
    assert (await session.execute(select(PairLabel))).first() is None


async def test_sign_in_with_a_key_and_a_read_key_cannot_label(
    browser_like: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    world = await review_world.build(session, with_labels=False)
    await session.commit()
    pair = world.pairs[0]
    # Keys required: the page sends a visitor to sign in, and a post without a session is a 401.
    first = await browser_like.get(f"/ui/pairs/{pair.id}")
    assert first.status_code == 303 and first.headers["location"].startswith("/ui/login?next=")
    assert_problem(await browser_like.post(f"/ui/pairs/{pair.id}/label", data={}), 401)
    assert (await browser_like.get("/ui/static/htmx.min.js")).status_code == 200

    login = await browser_like.get("/ui/login")
    refused = await browser_like.post(
        "/ui/login", data={"key": "cpgt_000000000000_nope", "csrf_token": csrf_of(login.text)}
    )
    assert refused.status_code == 401 and "invalid or revoked" in refused.text
    assert_problem(await browser_like.post("/ui/login", data={"key": "x"}), 403)  # no CSRF

    reader = await new_key(sessionmaker, "read", "reader")
    await sign_in(browser_like, reader)
    cookie = next(c for c in browser_like.cookies.jar if c.name == "chatpgt_ui")
    assert reader not in cookie.value  # the key itself is never in the cookie
    set_cookie = (await _fresh_sign_in_header(browser_like, reader)).lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie and "path=/ui" in set_cookie
    html = (await browser_like.get(f"/ui/pairs/{pair.id}")).text
    assert "read-only" in html and "reader" in html
    assert_problem(
        await browser_like.post(
            f"/ui/pairs/{pair.id}/label", data={"choice": "A", "csrf_token": csrf_of(html)}
        ),
        403,
    )
    # The session does not open the JSON API: that still takes a bearer key.
    assert_problem(await browser_like.get("/pairs"), 401)

    writer = await new_key(sessionmaker, "write", "ann")
    await sign_in(browser_like, writer)
    html = (await browser_like.get(f"/ui/pairs/{pair.id}")).text
    assert "ann" in html
    posted = await browser_like.post(
        f"/ui/pairs/{pair.id}/label",
        data={"choice": "tie", "view": VIEW.search(html).group(1), "csrf_token": csrf_of(html)},  # type: ignore[union-attr]
        headers={"HX-Request": "true"},
    )
    assert posted.status_code == 200 and 'id="my-label">tie<' in posted.text
    assert "writer-a" in posted.text  # revealed with the label
    row = (await session.execute(select(PairLabel))).scalar_one()
    assert (row.reviewer, row.preferred) == ("ann", "tie")

    # Sign out: the session is anonymous again.
    await browser_like.post("/ui/logout", data={"csrf_token": csrf_of(html)})
    assert (await browser_like.get("/ui/pairs")).status_code == 303


async def _fresh_sign_in_header(client: httpx.AsyncClient, key: str) -> str:
    form = await client.get("/ui/login")
    answer = await client.post("/ui/login", data={"key": key, "csrf_token": csrf_of(form.text)})
    return answer.headers["set-cookie"]


PAIR_ROW = re.compile(r'data-pair="(\d+)"')
NEXT = re.compile(r'href="(/ui/pairs\?[^"]*cursor=[^"]+)" id="next-page"')


async def test_the_list_pages_by_keyset_and_filters_flipped_verdicts_and_labels(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    pairs = []
    for _ in range(5):  # 30 pairs: two pages of 25
        pairs += (await review_world.build(session, with_labels=False)).pairs
    flipped = pairs[7]
    first, second = flipped.verdicts
    flipped.verdicts = [first, {**second, "winner_generation_id": flipped.rejected_generation_id}]
    await session.commit()

    seen: list[int] = []
    url: str | None = "/ui/pairs?min_confidence=0"
    while url:
        html = (await api.get(url.replace("&amp;", "&"))).text
        seen += [int(i) for i in PAIR_ROW.findall(html)]
        found = NEXT.search(html)
        url = found.group(1) if found else None
    assert seen == sorted(p.id for p in pairs)  # every pair once, in id order

    html = (await api.get("/ui/pairs", params={"flipped": "1"})).text
    assert [int(i) for i in PAIR_ROW.findall(html)] == [flipped.id]
    band = (
        await api.get("/ui/pairs", params={"min_confidence": "6", "max_confidence": "8.5"})
    ).text
    assert [int(i) for i in PAIR_ROW.findall(band)] == [
        p.id for p in pairs if 6 <= p.confidence <= 8.5
    ]
    corpus = (await api.get("/ui/pairs", params={"kind": "corpus"})).text
    assert PAIR_ROW.findall(corpus) == []

    labelled = await api.post(
        f"/pairs/{pairs[0].id}/labels", json={"choice": "tie", "shown_order": "AB"}
    )
    assert labelled.status_code == 201
    for params, want in (
        ({"consensus": "tie"}, [pairs[0].id]),
        ({"labels": "mine"}, [pairs[0].id]),
        ({"labels": "labelled"}, [pairs[0].id]),
    ):
        html = (await api.get("/ui/pairs", params=params)).text
        assert [int(i) for i in PAIR_ROW.findall(html)] == want, params
    unlabelled = (await api.get("/ui/pairs", params={"labels": "unlabelled"})).text
    assert pairs[0].id not in [int(i) for i in PAIR_ROW.findall(unlabelled)]
    for bad in ({"min_confidence": "high"}, {"max_confidence": "11"}, {"kind": "tie"}):
        assert_problem(await api.get("/ui/pairs", params=bad), 422)
    assert_problem(await api.get("/ui/pairs", params={"cursor": "nonsense"}), 400)


async def test_a_forged_cookie_or_a_revoked_key_ends_the_session(
    browser_like: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    writer = await new_key(sessionmaker, "write", "ann")
    await sign_in(browser_like, writer)
    assert (await browser_like.get("/ui/pairs")).status_code == 200
    real = browser_like.cookies.get("chatpgt_ui", path="/ui")
    assert real
    # Tampered with (the key id changed by hand, or any byte): not a session at all.
    browser_like.cookies.clear()
    browser_like.cookies.set(
        "chatpgt_ui", real[:-2] + ("AA" if real[-2:] != "AA" else "BB"), path="/ui"
    )
    assert (await browser_like.get("/ui/pairs")).status_code == 303
    browser_like.cookies.clear()
    browser_like.cookies.set("chatpgt_ui", real, path="/ui")
    assert (await browser_like.get("/ui/pairs")).status_code == 200
    # Revoked: its sessions end (no key cache in this API).
    async with sessionmaker() as s:
        await auth_service.revoke_key(s, writer)
        await s.commit()
    answer = await browser_like.get("/ui/pairs")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")
