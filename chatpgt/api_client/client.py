"""A small typed client of the ChatPGT HTTP API; the ``chatpgt`` CLI talks to the service with it
(request bodies from loose values: ``chatpgt.api_client.requests``).

Synchronous httpx. Answers are parsed into the pydantic schemas the API itself declares, and
requests are sent as those schemas dumped with ``exclude_unset``, so the server's defaults stay the
only defaults. Every failure is a ``ClientError`` whose ``str()`` is one line:

- ``ApiUnreachable``: no HTTP answer (refused connection, DNS, timeout, a broken stream);
- ``ApiError``: an error status; the message is the problem+json ``detail`` (for a 422, with the
  first offending fields; a 401 means a missing, invalid or revoked API key);
- ``UnexpectedAnswer``: a success whose body does not fit the schema (not a ChatPGT API).

This module imports neither FastAPI, Celery nor torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, BinaryIO, Literal, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from chatpgt.datagen.schemas import DatagenJobCreate, DatagenJobView
from chatpgt.datasets.schemas import DedupRequest, DedupScanOut, PairImport, PairImportResult
from chatpgt.evaluation.schemas import EvalRequest, EvalRunOut
from chatpgt.pairs.schemas import ExportFormat, PairSource
from chatpgt.review.schemas import PairStatsWithLabels
from chatpgt.rounds.schemas import RoundsRequest, RoundsRunOut
from chatpgt.serving.schemas import GenerationCreate, GenerationOut
from chatpgt.topics.schemas import FileImport, HFImport, ImportResult, TopicsCreated
from chatpgt.training.schemas import DPORequest, ModelOut, ModelPage, SFTRequest, TrainingRunOut

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# An export streams for as long as the database takes to read the rows; allow long gaps.
EXPORT_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=600.0)
# How many validation errors of a 422 are named in the message.
SHOWN_VALIDATION_ERRORS = 3

ModelT = TypeVar("ModelT", bound=BaseModel)


class ClientError(Exception):
    """A call to the API that did not succeed; ``str()`` is one line fit for a terminal."""


class ApiUnreachable(ClientError):
    """No HTTP answer came back from the API."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the API at {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


class UnexpectedAnswer(ClientError):
    """A success status whose body is not what the ChatPGT API returns (another service?)."""


class ApiError(ClientError):
    """The API answered with an error status. ``detail`` is the problem+json detail (or the
    status phrase when the body is not problem+json); ``problem`` is the whole body, if JSON."""

    def __init__(self, status: int, detail: str, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem: Mapping[str, Any] = problem or {}


def _reason(exc: Exception) -> str:
    """A short reason for a transport failure ("[Errno 111] Connection refused", "timed out")."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _problem_detail(response: httpx.Response) -> tuple[str, dict[str, Any] | None]:
    """The one-line message of an error response, and its JSON body when it has one."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        phrase = response.reason_phrase or HTTPStatus(status).phrase
        return f"the API answered {status} {phrase}", None
    detail = body.get("detail")
    if not isinstance(detail, str) or not detail:
        # FastAPI's own error shape, or anything else: name the status.
        detail = f"the API answered {status} {body.get('title') or response.reason_phrase}"
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for error in errors[:SHOWN_VALIDATION_ERRORS]:
            loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
            parts.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', '')}")
        more = len(errors) - SHOWN_VALIDATION_ERRORS
        detail = f"{detail.rstrip('.')}: {'; '.join(parts)}" + (
            f" (+{more} more)" if more > 0 else ""
        )
    return " ".join(detail.split()), body


def _dump(request: BaseModel) -> dict[str, Any]:
    """A request body with only the fields that were set: the server fills in its defaults."""
    return request.model_dump(mode="json", exclude_unset=True)


# The card layouts of GET /pairs/card (where its ``configs`` point).
CardLayout = Literal["parquet", "jsonl", "hf"]


@dataclass(frozen=True)
class PairSelection:
    """A selection of pairs: the filters of ``GET /pairs``, plus (exports and cards) leaving out
    pairs with a near-duplicate essay flagged at ``dedup_threshold`` or more, and dropping pairs
    so the chosen essay is the longer in half of them (``balance_length``)."""

    min_confidence: float | None = None
    job_ids: Sequence[int] = ()
    model: str | None = None
    source: PairSource | None = None
    dedup_threshold: float | None = None
    balance_length: bool = False

    def params(self) -> dict[str, Any]:
        """The query of GET /pairs/stats, /pairs/export and /pairs/card."""
        params: dict[str, Any] = {}
        if self.min_confidence is not None:
            params["min_confidence"] = self.min_confidence
        if self.job_ids:
            params["job_id"] = list(self.job_ids)
        if self.model:
            params["model"] = self.model
        if self.source:
            params["source"] = self.source
        if self.dedup_threshold is not None:
            params["dedup_threshold"] = self.dedup_threshold
        if self.balance_length:
            params["balance_length"] = True
        return params


class ChatPGTClient:
    """The ChatPGT API at ``base_url``. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """``api_key``, when given, is sent as ``Authorization: Bearer`` with every request."""
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            self._http = httpx.Client(
                base_url=self.base_url, timeout=timeout, transport=transport, headers=headers
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise ApiUnreachable(base_url, f"not a usable URL ({exc})") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """``timeout``: this request's, instead of the client's (long work: scans, imports)."""
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout or httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from exc
        if response.is_error:
            detail, body = _problem_detail(response)
            if response.status_code == 404 and detail == "Not Found":
                # No route at all (not a missing row): --api points somewhere else.
                detail = f"the API at {self.base_url} has no {path} (is it the ChatPGT API?)"
            raise ApiError(response.status_code, detail, body)
        return response

    def _parse(self, response: httpx.Response, model: type[ModelT]) -> ModelT:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise UnexpectedAnswer(
                f"the API at {self.base_url} answered {response.request.url.path} with something "
                f"that is not a {model.__name__} (is it ChatPGT, and the same version?)"
            ) from exc

    def _get(
        self, path: str, model: type[ModelT], params: Mapping[str, Any] | None = None
    ) -> ModelT:
        return self._parse(self._request("GET", path, params=params), model)

    def _post(
        self,
        path: str,
        model: type[ModelT],
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelT:
        return self._parse(self._request("POST", path, json=body, headers=headers), model)

    # -- service ----------------------------------------------------------------------------

    def health(self) -> None:
        """Raises unless the API answers and reaches its database."""
        self._request("GET", "/healthz")

    # -- topics -----------------------------------------------------------------------------

    def add_topics(self, titles: Sequence[str]) -> TopicsCreated:
        """Add titles; those already present (after normalisation) are reported as existing."""
        return self._post("/topics", TopicsCreated, {"titles": list(titles)})

    def import_topics(self, request: FileImport | HFImport) -> ImportResult:
        """Import from a file *the API process can read* or from a Hugging Face dataset."""
        return self._post("/topics/import", ImportResult, _dump(request))

    # -- datagen ----------------------------------------------------------------------------

    def create_job(
        self, request: DatagenJobCreate, *, idempotency_key: str | None = None
    ) -> tuple[DatagenJobView, bool]:
        """Submit a datagen job; ``(job, created)``. ``created`` is False when the same
        ``idempotency_key`` and body replayed an earlier job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self._request("POST", "/datagen/jobs", json=_dump(request), headers=headers)
        return self._parse(response, DatagenJobView), response.status_code == 201

    def get_job(self, job_id: int) -> DatagenJobView:
        return self._get(f"/datagen/jobs/{job_id}", DatagenJobView)

    def cancel_job(self, job_id: int) -> DatagenJobView:
        """Ask the job to stop; a queued job is cancelled at once, a running one soon after."""
        return self._post(f"/datagen/jobs/{job_id}/cancel", DatagenJobView)

    # -- pairs ------------------------------------------------------------------------------

    def pair_stats(
        self,
        *,
        min_confidence: float | None = None,
        job_ids: Sequence[int] = (),
        model: str | None = None,
        source: PairSource | None = None,
    ) -> PairStatsWithLabels:
        params = PairSelection(min_confidence, job_ids, model, source).params()
        return self._get("/pairs/stats", PairStatsWithLabels, params)

    @contextmanager
    def export_pairs(
        self, fmt: ExportFormat = "jsonl", selection: PairSelection | None = None
    ) -> Iterator[Iterator[bytes]]:
        """The export of the selection (every pair by default) as an iterator of byte chunks,
        valid inside the ``with`` block. An error status is raised on entry; a stream that
        breaks off raises ``ApiUnreachable``."""
        params = (selection or PairSelection()).params()
        params["format"] = fmt
        try:
            with self._http.stream(
                "GET", "/pairs/export", params=params, timeout=EXPORT_TIMEOUT
            ) as response:
                if response.is_error:
                    response.read()
                    detail, body = _problem_detail(response)
                    raise ApiError(response.status_code, detail, body)
                yield self._chunks(response)
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from exc

    @staticmethod
    def _chunks(response: httpx.Response) -> Iterator[bytes]:
        yield from response.iter_bytes()

    def pair_card(
        self, layout: CardLayout = "parquet", selection: PairSelection | None = None
    ) -> str:
        """The dataset card (``README.md``) of the selection, for the given data layout."""
        params = (selection or PairSelection()).params()
        params["layout"] = layout
        return self._request("GET", "/pairs/card", params=params, timeout=EXPORT_TIMEOUT).text

    def submit_dedup_scan(self, request: DedupRequest) -> DedupScanOut:
        """Queue a near-duplicate scan of the jobs (all when none); a datagen worker runs it
        and replaces their flags. Follow it with :meth:`get_dedup_scan`."""
        return self._post("/pairs/dedup", DedupScanOut, _dump(request))

    def get_dedup_scan(self, scan_id: int) -> DedupScanOut:
        return self._get(f"/pairs/dedup/{scan_id}", DedupScanOut)

    def cancel_dedup_scan(self, scan_id: int) -> DedupScanOut:
        """Cancel the scan (a running one stops at its next heartbeat, writing no flags)."""
        return self._post(f"/pairs/dedup/{scan_id}/cancel", DedupScanOut)

    def import_pairs(self, request: PairImport) -> PairImportResult:
        """Import a Hugging Face preference dataset as a job of its own."""
        response = self._request(
            "POST", "/pairs/import", json=_dump(request), timeout=EXPORT_TIMEOUT
        )
        return self._parse(response, PairImportResult)

    # -- training ---------------------------------------------------------------------------

    def submit_sft(self, request: SFTRequest) -> TrainingRunOut:
        return self._post("/train/sft", TrainingRunOut, _dump(request))

    def submit_dpo(self, request: DPORequest) -> TrainingRunOut:
        return self._post("/train/dpo", TrainingRunOut, _dump(request))

    def get_run(self, run_id: int) -> TrainingRunOut:
        return self._get(f"/train/runs/{run_id}", TrainingRunOut)

    def cancel_run(self, run_id: int) -> TrainingRunOut:
        """Stop the run at its next step (a queued run at once); the last checkpoint is kept."""
        return self._post(f"/train/runs/{run_id}/cancel", TrainingRunOut)

    def submit_rounds(self, request: RoundsRequest) -> RoundsRunOut:
        return self._post("/train/rounds", RoundsRunOut, _dump(request))

    def get_rounds(self, run_id: int) -> RoundsRunOut:
        return self._get(f"/train/rounds/{run_id}", RoundsRunOut)

    def cancel_rounds(self, run_id: int) -> RoundsRunOut:
        """Stop the rounds run: its next step cancels the current datagen job or DPO run."""
        return self._post(f"/train/rounds/{run_id}/cancel", RoundsRunOut)

    # -- evaluation -------------------------------------------------------------------------

    def submit_eval(self, request: EvalRequest) -> EvalRunOut:
        return self._post("/eval/runs", EvalRunOut, _dump(request))

    def get_eval(self, run_id: int) -> EvalRunOut:
        return self._get(f"/eval/runs/{run_id}", EvalRunOut)

    def cancel_eval(self, run_id: int) -> EvalRunOut:
        return self._post(f"/eval/runs/{run_id}/cancel", EvalRunOut)

    def eval_report(self, run_id: int, fmt: str = "html") -> bytes:
        """The run's report: the self-contained HTML page, or ``report.json`` (``fmt="json"``)."""
        return self._request("GET", f"/eval/runs/{run_id}/report", params={"format": fmt}).content

    # -- models -----------------------------------------------------------------------------

    def list_models(self, *, limit: int = 50, after: int | None = None) -> ModelPage:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self._get("/models", ModelPage, params)

    def iter_models(self, *, page_size: int = 100) -> Iterator[ModelOut]:
        """Every registered model, following the pages."""
        after: int | None = None
        while True:
            page = self.list_models(limit=page_size, after=after)
            yield from page.items
            if page.next_after is None or not page.items:
                return
            after = page.next_after

    def model_by_ref(self, ref: str) -> ModelOut:
        """A registered model by id (digits) or name; ApiError 404 when there is none."""
        if ref.isdigit():
            return self._get(f"/models/{int(ref)}", ModelOut)
        for model in self.iter_models():
            if model.name == ref:
                return model
        raise ApiError(404, f"no registered model is named {ref!r} (see `chatpgt models list`)")

    def model_card(self, model_id: int) -> str:
        """The model's Hugging Face card (README.md text), with its latest evaluation."""
        return self._request("GET", f"/models/{model_id}/card").text

    def submit_generation(self, model_id: int, request: GenerationCreate) -> GenerationOut:
        return self._post(f"/models/{model_id}/generations", GenerationOut, _dump(request))

    def get_generation(self, model_id: int, generation_id: int) -> GenerationOut:
        return self._get(f"/models/{model_id}/generations/{generation_id}", GenerationOut)

    def generation_events(
        self, model_id: int, generation_id: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event, data)`` of the request's event stream (``GET .../events``): ``delta`` and
        ``replace`` while the model writes, then ``done`` with the whole request."""
        path = f"/models/{model_id}/generations/{generation_id}/events"
        try:
            with self._http.stream("GET", path, timeout=EXPORT_TIMEOUT) as response:
                if response.is_error:
                    response.read()
                    detail, body = _problem_detail(response)
                    raise ApiError(response.status_code, detail, body)
                event, data = "message", []
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield event, json.loads("\n".join(data))
                        event, data = "message", []
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from exc

    def model_archive(self, model_id: int, target: BinaryIO, *, adapter: bool = False) -> int:
        """Write the model folder's tar (``GET /models/{id}/archive``; ``adapter``: its LoRA
        adapter's) into ``target``; bytes."""
        written = 0
        params = {"adapter": "true"} if adapter else None
        try:
            with self._http.stream(
                "GET", f"/models/{model_id}/archive", params=params, timeout=EXPORT_TIMEOUT
            ) as response:
                if response.is_error:
                    response.read()
                    detail, body = _problem_detail(response)
                    raise ApiError(response.status_code, detail, body)
                for chunk in response.iter_bytes():
                    target.write(chunk)
                    written += len(chunk)
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from exc
        return written
