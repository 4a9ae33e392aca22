"""Batch mode survives its worker: SIGKILLed after a batch was submitted (and, the worst case,
before the batch's id was stored), a fresh worker resumes polling the same remote batch — the
provider sees one batch per chunk and answers no request twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import ProviderBatch
from tests import procs
from tests.datagen_helpers import wait_job
from tests.fakes import control, stats
from tests.test_batch_mode import batch_body

pytestmark = pytest.mark.e2e


async def _stored_batch(session: AsyncSession, within_s: float = 30) -> ProviderBatch:
    deadline = time.monotonic() + within_s
    while True:
        async with session.begin():
            row = await session.scalar(
                select(ProviderBatch).where(ProviderBatch.remote_batch_id.is_not(None))
            )
        if row is not None:
            return row
        assert time.monotonic() < deadline, "no batch was submitted"
        await asyncio.sleep(0.1)


async def test_sigkilled_after_submit_and_before_the_id_was_stored(
    api: httpx.AsyncClient,
    session: AsyncSession,
    fake: httpx.AsyncClient,
    service_env: dict[str, str],
    log_dir: Path,
) -> None:
    await control(fake, batch_delay_s=2.0)
    doomed = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="doomed")
    try:
        created = await api.post("/datagen/jobs", json=batch_body(["On crashes", "On resumes"]))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        batch = await _stored_batch(session)
        batch_id, remote_id = batch.id, batch.remote_batch_id
        doomed.kill()  # SIGKILL, with the essays' batch at the provider
    finally:
        doomed.stop()
    # As if it had died between creating the batch and storing its id: only the file id is
    # known. The next worker must find the batch at the provider, not make another.
    async with session.begin():
        await session.execute(
            update(ProviderBatch)
            .where(ProviderBatch.id == batch_id)
            .values(remote_batch_id=None, status="submitting")
        )
    assert (await stats(fake))["batches"] == 1

    fresh = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="fresh")
    try:
        job = await wait_job(api, job_id, within_s=90)
    finally:
        fresh.stop()
    assert job["status"] == "succeeded", job
    assert job["generations"]["done"] == 4 and job["judgments"]["done"] == 4
    seen = await stats(fake)
    assert seen["batches"] == 2, seen  # essays, then verdicts: one batch per chunk
    assert seen["batch_item_max"] == 1 and seen["total"] == 0, seen
    assert job["batches"][0]["remote_batch_id"] == remote_id


async def test_sigkilled_during_download(
    api: httpx.AsyncClient,
    session: AsyncSession,
    fake: httpx.AsyncClient,
    service_env: dict[str, str],
    log_dir: Path,
) -> None:
    await control(fake, batch_delay_s=0.5, batch_download_delay_s=3.0)
    doomed = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="doomed2")
    try:
        created = await api.post("/datagen/jobs", json=batch_body(["On downloads"]))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 30
        while (await stats(fake))["file_downloads"] < 1:  # the essays' output file
            assert time.monotonic() < deadline, await stats(fake)
            await asyncio.sleep(0.05)
        doomed.kill()  # SIGKILL in the middle of the download
    finally:
        doomed.stop()
    async with session.begin():
        (batch,) = (await session.scalars(select(ProviderBatch))).all()
        assert batch.status != "done"  # nothing of it was stored
    await control(fake, batch_download_delay_s=0.0)

    fresh = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="fresh2")
    try:
        job = await wait_job(api, job_id, within_s=90)
    finally:
        fresh.stop()
    assert job["status"] == "succeeded", job
    seen = await stats(fake)
    assert seen["batches"] == 2 and seen["batch_item_max"] == 1 and seen["total"] == 0, seen
    assert seen["file_downloads"] >= 3  # the essays' file twice, then the verdicts'
