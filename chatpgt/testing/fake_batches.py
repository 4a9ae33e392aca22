"""OpenAI's Batch API in the fake server: ``/v1/files`` and ``/v1/batches``.

- ``POST /v1/files`` (multipart, ``purpose=batch``) keeps a JSONL file; ``GET
  /v1/files/{id}/content`` gives a file back (inputs, outputs and error files alike).
- ``POST /v1/batches`` checks the file (every line a ``custom_id`` request to
  ``/v1/chat/completions`` with a body, ids unique); a file that fails the check, or any batch
  while ``batch_reject`` draws it, is ``failed`` with the reason in ``errors.data``.
- A batch is ``in_progress`` for ``batch_delay_s`` seconds after it was created, then
  ``completed``: every request answered as ``POST /v1/chat/completions`` would (the same essays
  and verdicts, no HTTP faults), except a ``batch_fail_rate`` share that land in the error file
  with a 500. While ``batch_expire`` draws a batch, it ends ``expired`` with only its first half
  answered (the rest in neither file).
- ``GET /v1/batches/{id}``, ``GET /v1/batches`` (newest first, ``after``/``limit``),
  ``POST /v1/batches/{id}/cancel`` (``cancelled`` at once, its first half answered, as if
  those had finished before the cancel).

Anthropic's Message Batches the same way (same delay, failures, expiry, rejection):
``POST /v1/messages/batches`` (requests inline, ``custom_id`` + ``params`` checked as
``POST /v1/messages`` checks them), ``GET /v1/messages/batches/{id}`` (``processing_status``,
``request_counts``, ``results_url`` once ended), ``POST .../cancel``, ``GET .../results``
(``succeeded``, ``errored`` with an ``api_error``, ``expired``/``canceled`` for the rest).

``/_stats`` counts ``batches`` created, ``batch_requests`` answered, the most times any one
custom_id was answered (``batch_item_max``) and ``file_downloads`` begun; a download waits
``batch_download_delay_s`` before it answers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from chatpgt.testing.fake_content import (
    anthropic_message,
    validate_anthropic_request,
    validate_request,
    verdict_json,
)

# The fake server's state (chatpgt.testing.fake_openai.FakeOpenAI: profile, rng, essays,
# by_model, _essay, _verdict); not imported, so that the two modules make no circle.
FakeOpenAI = Any

CHAT_URL = "/v1/chat/completions"


class FakeBatches:
    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self._n = 0
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.created = 0
        self.answered = 0
        self.downloads = 0
        self.items: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "batches": self.created,
            "batch_requests": self.answered,
            "batch_item_max": max(self.items.values(), default=0),
            "file_downloads": self.downloads,
        }

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n:06d}"

    # --- files ----------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        content = upload.file.read() if isinstance(upload, web.FileField) else None
        name = upload.filename if isinstance(upload, web.FileField) else "batch.jsonl"
        if purpose != "batch" or content is None:
            return _error(400, "a file and purpose=batch are required")
        file_id = self._id("file")
        self.files[file_id] = bytes(content)
        return _json(_file(file_id, name, len(content)))

    async def content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return _error(404, "No such File object")
        self.downloads += 1
        delay = self.fake.profile.batch_download_delay_s
        if delay:  # a slow download: a test kills the worker in the middle of it
            await asyncio.sleep(delay)
        return web.Response(body=data, content_type="application/octet-stream")

    # --- batches --------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "body is not JSON")
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return _error(400, f"input_file_id {file_id!r} not found")
        if body.get("endpoint") != CHAT_URL:
            return _error(400, f"endpoint must be {CHAT_URL}")
        self.created += 1
        batch_id = self._id("batch")
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": CHAT_URL,
            "input_file_id": file_id,
            "completion_window": body.get("completion_window", "24h"),
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "errors": None,
            "metadata": body.get("metadata"),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "_due": time.monotonic() + self.fake.profile.batch_delay_s,
        }
        problem, lines = _check(self.files[file_id])
        rng = self.fake.rng
        if problem is None and rng.random() < self.fake.profile.batch_reject:
            problem = "the file was rejected by the fake (batch_reject)"
        if problem is not None:
            batch.update(
                status="failed",
                errors={"object": "list", "data": [{"code": "invalid_file", "message": problem}]},
            )
        else:
            batch["_lines"] = lines
            batch["_expire"] = rng.random() < self.fake.profile.batch_expire
            batch["request_counts"]["total"] = len(lines)
        self.batches[batch_id] = batch
        return _json(_public(batch))

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object")
        self._advance(batch)
        return _json(_public(batch))

    async def list_batches(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        ordered = sorted(self.batches, reverse=True)
        if after is not None:
            ordered = [b for b in ordered if b < after]
        page = ordered[:limit]
        for b in page:
            self._advance(self.batches[b])
        return _json(
            {
                "object": "list",
                "data": [_public(self.batches[b]) for b in page],
                "has_more": len(ordered) > limit,
                "last_id": page[-1] if page else None,
            }
        )

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object")
        if batch["status"] == "in_progress":
            # What had finished before the cancel (its first half) is in its output file.
            self._advance(batch, end="cancelled")
        return _json(_public(batch))

    def _advance(self, batch: dict[str, Any], end: str | None = None) -> None:
        """Finish an in-progress batch whose time has come (or that ``end``s now, half done:
        ``expired`` or ``cancelled``)."""
        if batch["status"] != "in_progress":
            return
        if end is None:
            if time.monotonic() < batch["_due"]:
                return
            end = "expired" if batch["_expire"] else "completed"
        lines: list[dict[str, Any]] = batch.pop("_lines")
        batch["_all"] = lines
        if end != "completed":
            lines = lines[: len(lines) // 2]
        out, errors = [], []
        for line in lines:
            custom_id = line["custom_id"]
            if self.fake.rng.random() < self.fake.profile.batch_fail_rate:
                errors.append(
                    {
                        "id": self._id("batch_req"),
                        "custom_id": custom_id,
                        "response": {
                            "status_code": 500,
                            "request_id": "req",
                            "body": {
                                "error": {
                                    "message": "The server had an error.",
                                    "type": "server_error",
                                }
                            },
                        },
                        "error": None,
                    }
                )
                continue
            self.answered += 1
            self.items[custom_id] += 1
            out.append(
                {
                    "id": self._id("batch_req"),
                    "custom_id": custom_id,
                    "response": {
                        "status_code": 200,
                        "request_id": "req",
                        "body": self._answer(line["body"], batch.get("_kind") == "anthropic"),
                    },
                    "error": None,
                }
            )
        batch["status"] = end
        if batch.get("_kind") == "anthropic":
            self._anthropic_results(batch, out, errors, end)
            return
        counts = batch["request_counts"]
        counts.update(completed=len(out), failed=len(errors))
        if out:
            batch["output_file_id"] = self._keep(out)
        if errors:
            batch["error_file_id"] = self._keep(errors)

    # --- Anthropic's Message Batches ---------------------------------------------------------

    async def create_messages(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/batches``: ``{"requests": [{"custom_id", "params"}]}``."""
        if not request.headers.get("anthropic-version"):
            return _anthropic_error(400, "anthropic-version: header is required")
        try:
            body = orjson.loads(await request.read())
            requests = body["requests"]
            lines, seen = [], set()
            for n, r in enumerate(requests):
                custom_id = r["custom_id"]
                if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", custom_id) or custom_id in seen:
                    raise ValueError(f"requests.{n}.custom_id: invalid or duplicate")
                seen.add(custom_id)
                validate_anthropic_request(r["params"])
                lines.append({"custom_id": custom_id, "body": r["params"]})
            if not lines:
                raise ValueError("requests: at least one request is required")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _anthropic_error(400, f"invalid batch: {exc}")
        if self.fake.rng.random() < self.fake.profile.batch_reject:
            return _anthropic_error(400, "the batch was rejected by the fake (batch_reject)")
        self.created += 1
        batch_id = "msgbatch_" + self._id("b")
        self.batches[batch_id] = {
            "id": batch_id,
            "status": "in_progress",
            "created_at": int(time.time()),
            "_kind": "anthropic",
            "_lines": lines,
            "_expire": self.fake.rng.random() < self.fake.profile.batch_expire,
            "_due": time.monotonic() + self.fake.profile.batch_delay_s,
            "_base": f"{request.scheme}://{request.host}",
        }
        return _json(_anthropic_view(self.batches[batch_id]))

    async def retrieve_messages(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None or batch.get("_kind") != "anthropic":
            return _anthropic_error(404, "batch not found")
        self._advance(batch)
        return _json(_anthropic_view(batch))

    async def cancel_messages(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None or batch.get("_kind") != "anthropic":
            return _anthropic_error(404, "batch not found")
        if batch["status"] == "in_progress":
            self._advance(batch, end="cancelled")
        return _json(_anthropic_view(batch))

    async def results_messages(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None or "_results" not in batch:
            return _anthropic_error(404, "no results yet")
        self.downloads += 1
        delay = self.fake.profile.batch_download_delay_s
        if delay:
            await asyncio.sleep(delay)
        body = b"".join(orjson.dumps(r) + b"\n" for r in batch["_results"])
        return web.Response(body=body, content_type="application/binary")

    def _anthropic_results(
        self, batch: dict[str, Any], out: list[Any], errors: list[Any], end: str
    ) -> None:
        results = [
            {
                "custom_id": r["custom_id"],
                "result": {
                    "type": "succeeded",
                    "message": anthropic_message(r["response"]["body"]),
                },
            }
            for r in out
        ]
        results += [
            {
                "custom_id": r["custom_id"],
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": "api_error", "message": "Internal server error"},
                    },
                },
            }
            for r in errors
        ]
        answered = {r["custom_id"] for r in results}
        left = "canceled" if end == "cancelled" else "expired"
        results += [
            {"custom_id": line["custom_id"], "result": {"type": left}}
            for line in batch["_all"]
            if line["custom_id"] not in answered
        ]
        batch["_results"] = results

    def _keep(self, rows: list[dict[str, Any]]) -> str:
        file_id = self._id("file")
        self.files[file_id] = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        return file_id

    def _answer(self, body: dict[str, Any], anthropic: bool = False) -> dict[str, Any]:
        """A chat completion for one request, as the online endpoint answers it."""
        fake = self.fake
        if anthropic:
            model, messages, max_tokens_ = validate_anthropic_request(body)
            max_tokens: int | None = max_tokens_
        else:
            model, messages, max_tokens = validate_request(body)
        fake.by_model[model] += 1
        finish = "stop"
        if model.startswith("judge"):
            verdict = fake._verdict(messages, fake.rng, fake.profile.position_bias)
            content = verdict_json(*verdict) if verdict else "no essays to judge"
        elif model in fake.essays:
            content = fake.essays[model]
        else:
            content, finish = fake._essay(model, messages, max_tokens, fake.rng)
        prompt = max(1, sum(len(m.get("content") or "") for m in messages) // 4)
        completion = len(content.split())
        return {
            "id": self._id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


def _check(data: bytes) -> tuple[str | None, list[dict[str, Any]]]:
    """The file's requests, or why the Batch API would refuse it."""
    lines, seen = [], set()
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
            custom_id, body = line["custom_id"], line["body"]
            if line.get("method") != "POST" or line.get("url") != CHAT_URL:
                return f"line {n}: method must be POST and url {CHAT_URL}", []
            validate_request(body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return f"line {n}: invalid request ({exc})", []
        if custom_id in seen:
            return f"line {n}: duplicate custom_id {custom_id!r}", []
        seen.add(custom_id)
        lines.append(line)
    if not lines:
        return "the file holds no requests", []
    return None, lines


def _anthropic_view(batch: dict[str, Any]) -> dict[str, Any]:
    """A message batch as Anthropic's API shows it."""
    ended = batch["status"] != "in_progress"
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if ended:
        for r in batch["_results"]:
            counts[r["result"]["type"]] += 1
    else:
        counts["processing"] = len(batch["_lines"])
    return {
        "id": batch["id"],
        "type": "message_batch",
        "processing_status": "ended" if ended else "in_progress",
        "request_counts": counts,
        "created_at": batch["created_at"],
        "ended_at": batch["created_at"] if ended else None,
        "results_url": f"{batch['_base']}/v1/messages/batches/{batch['id']}/results"
        if ended
        else None,
    }


def _anthropic_error(status: int, message: str) -> web.Response:
    return _json(
        {"type": "error", "error": {"type": "invalid_request_error", "message": message}}, status
    )


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _file(file_id: str, name: str, size: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": name,
        "purpose": "batch",
    }


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": {"message": message, "type": "invalid_request_error"}}, status)


def add_routes(app: web.Application, fake: FakeOpenAI) -> FakeBatches:
    batches = FakeBatches(fake)
    app.router.add_post("/v1/files", batches.upload)
    app.router.add_get("/v1/files/{file_id}/content", batches.content)
    app.router.add_post("/v1/batches", batches.create)
    app.router.add_get("/v1/batches", batches.list_batches)
    app.router.add_get("/v1/batches/{batch_id}", batches.retrieve)
    app.router.add_post("/v1/batches/{batch_id}/cancel", batches.cancel)
    app.router.add_post("/v1/messages/batches", batches.create_messages)
    app.router.add_get("/v1/messages/batches/{batch_id}", batches.retrieve_messages)
    app.router.add_post("/v1/messages/batches/{batch_id}/cancel", batches.cancel_messages)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", batches.results_messages)
    return batches
