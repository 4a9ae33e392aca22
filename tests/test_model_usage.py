"""Using a trained model, through the real API, Postgres, Redis and a gpu-queue worker: the
saved model renders its training format, its card (YAML parsed with huggingface_hub's card
classes, with the numbers of its latest evaluation), generations (API and CLI), the archive and
the Hub push.

One SFT run (and a DPO run from it) of a tiny random llama with the real SmolLM2 tokenizer is
trained once for the module; the tests read it and never truncate the tables.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT
from tests import fixtures_training as ft
from tests import procs
from tests.fixtures_training import finished, insert_pairs, sft_body, wait_run

pytestmark = pytest.mark.e2e
tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus
gpu_worker = ft.gpu_worker
PROBLEM = "application/problem+json"
SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM"


def assert_problem(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert needle in response.json()["detail"], response.json()


@pytest.fixture(scope="module")
async def trained(
    api_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> dict[str, Any]:
    """An SFT model and a DPO model from it, as the registry lists them."""
    async with sessionmaker() as session:
        await insert_pairs(session, [8, 8, 7, 9])
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0) as api:
        body = {**sft_body(tiny_model_dir, essay_corpus, max_steps=2), "name": "usage-sft"}
        response = await api.post("/train/sft", json=body)
        assert response.status_code == 202, response.text
        sft = await wait_run(api, response.json()["id"], finished, worker=gpu_worker)
        assert sft["status"] == "succeeded", sft["error"]
        dpo_body = {
            "model": "usage-sft",
            "name": "usage-dpo",
            "pairs": {"min_confidence": 6},
            "hyperparameters": {"max_steps": 1, "max_length": 256, "per_device_batch_size": 2},
            "samples": {"prompts": [], "max_new_tokens": 4},
        }
        response = await api.post("/train/dpo", json=dpo_body)
        assert response.status_code == 202, response.text
        dpo = await wait_run(api, response.json()["id"], finished, worker=gpu_worker)
        assert dpo["status"] == "succeeded", dpo["error"]
        models = {m["name"]: m for m in (await api.get("/models")).json()["items"]}
    return {"sft_run": sft, "dpo_run": dpo, "sft": models["usage-sft"], "dpo": models["usage-dpo"]}


@pytest.fixture(scope="module")
async def lora_model(
    api_url: str, gpu_worker: procs.Proc, tiny_model_dir: Path, essay_corpus: Path
) -> dict[str, Any]:
    """An SFT model trained with LoRA (saved merged, its adapter kept), as the registry lists
    it."""
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    body = {**sft_body(tiny_model_dir, essay_corpus, max_steps=2, lora=lora), "name": "usage-lora"}
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0) as api:
        response = await api.post("/train/sft", json=body)
        assert response.status_code == 202, response.text
        run = await wait_run(api, response.json()["id"], finished, worker=gpu_worker)
        assert run["status"] == "succeeded", run["error"]
        models = {m["name"]: m for m in (await api.get("/models")).json()["items"]}
    return {**models["usage-lora"], "run": run}


def rendered(model_dir: str, messages: list[dict[str, str]]) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


async def test_saved_models_render_the_training_system_prompt(trained: dict[str, Any]) -> None:
    user = [{"role": "user", "content": 'Write an essay titled "Cities".'}]
    for name in ("sft", "dpo"):
        text = rendered(trained[name]["path"], user)
        assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>"), name
        assert SMOLLM_DEFAULT not in text
    # The seed's usage: pipeline() with a plain user message renders the same prompt.
    from transformers import pipeline

    generator = pipeline("text-generation", model=trained["sft"]["path"])
    prompt = generator.tokenizer.apply_chat_template(user, tokenize=False)
    assert DEFAULT_SYSTEM_PROMPT in prompt
    out = generator(user, max_new_tokens=3)[0]["generated_text"]
    assert out[0] == {"role": "user", "content": user[0]["content"]}
    assert out[-1]["role"] == "assistant"


def read_text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


async def wait_file(path: Path, needle: str, within_s: float = 30.0) -> str:
    """The file's text once it contains ``needle`` (the worker writes cards after the run's
    status changed)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if needle in (text := read_text(path)):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} never contained {needle!r}")


async def test_model_card(
    api: httpx.AsyncClient, trained: dict[str, Any], gpu_worker: procs.Proc, tiny_model_dir: Path
) -> None:
    from huggingface_hub import ModelCard

    sft, dpo = trained["sft"], trained["dpo"]
    # Written into the folder by the worker, and over the trainer's card in the run directory.
    folder_card = await wait_file(Path(sft["path"]) / "README.md", "library_name: transformers")
    run_dir = Path(trained["sft_run"]["artifacts"]["run_dir"])
    assert "[None]" not in read_text(run_dir / "README.md")

    response = await api.get(f"/models/{sft['id']}/card")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/markdown")
    card = ModelCard(response.text)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert "chatpgt" in data["tags"] and "sft" in data["tags"]
    assert "base_model" not in data  # a local base has no Hub page to link to
    assert data["chatpgt"]["lineage"][-1] == {"id": sft["id"], "name": "usage-sft", "kind": "sft"}
    assert card.data.eval_results is None  # not evaluated yet
    assert "Not evaluated yet" in card.text
    assert "fine-tuned version of [None]" not in card.text
    assert str(tiny_model_dir) in card.text  # lineage
    assert DEFAULT_SYSTEM_PROMPT in card.text
    assert "learning_rate" in card.text and "Corpus" in card.text
    assert ModelCard(folder_card).data.to_dict()["chatpgt"]["model_id"] == sft["id"]

    dpo_card = ModelCard((await api.get(f"/models/{dpo['id']}/card")).text)
    assert [e["name"] for e in dpo_card.data.to_dict()["chatpgt"]["lineage"]] == [
        str(tiny_model_dir),
        "usage-sft",
        "usage-dpo",
    ]
    assert "Preference pairs" in dpo_card.text

    # An evaluation of the SFT model: its numbers land in model-index, and in the folder's card.
    body = {
        "models": ["usage-sft"],
        "generation": {"max_new_tokens": 6},
        "style": {"enabled": False},
        "bootstrap_samples": 50,
    }
    response = await api.post("/eval/runs", json=body)
    assert response.status_code == 202, response.text
    run = await wait_run(
        api, response.json()["id"], finished, worker=gpu_worker, runs_path="/eval/runs"
    )
    assert run["status"] == "succeeded", run["error"]
    perplexity = run["results"]["models"][0]["perplexity"]["value"]
    card = ModelCard((await api.get(f"/models/{sft['id']}/card")).text)
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["perplexity"].metric_value == pytest.approx(perplexity, rel=1e-5)
    assert results["perplexity"].task_type == "text-generation"
    assert card.data.to_dict()["chatpgt"]["evaluation_run_id"] == run["id"]
    assert f"Evaluation run {run['id']}" in card.text
    refreshed = await wait_file(Path(sft["path"]) / "README.md", "model-index")
    assert ModelCard(refreshed).data.eval_results[0].metric_value == pytest.approx(
        perplexity, rel=1e-5
    )

    assert_problem(await api.get("/models/999999/card"), 404, "999999")


async def wait_generation(
    api: httpx.AsyncClient, location: str, worker: procs.Proc, within_s: float = 90.0
) -> dict[str, Any]:
    return await wait_run(
        api,
        int(location.rsplit("/", 1)[1]),
        finished,
        worker=worker,
        within_s=within_s,
        runs_path=location.rsplit("/", 1)[0],
    )


async def test_generations_through_the_api(
    api: httpx.AsyncClient, trained: dict[str, Any], gpu_worker: procs.Proc
) -> None:
    from transformers import AutoTokenizer

    sft = trained["sft"]
    body = {"title": "Why Cities Matter", "max_new_tokens": 6, "n": 2, "temperature": 0.8}
    response = await api.post(f"/models/{sft['id']}/generations", json=body)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued" and queued["model_name"] == "usage-sft"
    location = response.headers["location"]
    assert location == f"/models/{sft['id']}/generations/{queued['id']}"
    done = await wait_generation(api, location, gpu_worker)
    assert done["status"] == "succeeded", done["error"]
    assert len(done["results"]) == 2
    for essay in done["results"]:
        assert isinstance(essay["text"], str)
        assert 1 <= essay["completion_tokens"] <= 6
    # The model was asked in its training format: the title in the template, under the system
    # prompt its chat template renders by default.
    assert done["request"]["messages"] == [
        {"role": "user", "content": 'Write an essay titled "Why Cities Matter".'}
    ]
    tokenizer = AutoTokenizer.from_pretrained(sft["path"])
    prompt = tokenizer.apply_chat_template(
        done["request"]["messages"], tokenize=True, add_generation_prompt=True, return_dict=True
    )
    assert done["results"][0]["prompt_tokens"] == len(prompt["input_ids"])
    assert done["timings"]["device"] == "cpu" and done["timings"]["generate_s"] > 0

    # The event stream of a finished request: its essays as deltas, then done.
    events = await read_events(api, f"{location}/events")
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["results"] == done["results"]
    for i, essay in enumerate(done["results"]):
        streamed = "".join(d["text"] for e, d in events if e == "delta" and d["index"] == i)
        assert streamed == essay["text"]

    # A long essay, followed as it is written: the deltas add up to the essay, and a request
    # that takes seconds shows its text before it is done (the worker writes it every second).
    long = {"title": "Streams", "max_new_tokens": 1800, "temperature": 0}
    response = await api.post(f"/models/{sft['id']}/generations", json=long)
    assert response.status_code == 202, response.text
    events = await read_events(api, response.headers["location"] + "/events")
    kind, final = events[-1]
    assert kind == "done" and final["status"] == "succeeded", final["error"]
    assert [e for e, _ in events[:-1]] == ["delta"] * (len(events) - 1)
    assert "".join(d["text"] for _, d in events[:-1]) == final["results"][0]["text"]
    if final["timings"]["generate_s"] > 3:
        assert len(events) >= 3, (final["timings"], len(events))
    assert_problem(await api.get(f"/models/{sft['id']}/generations/999999/events"), 404, "999999")

    # Messages instead of a title, greedy: the same answer twice.
    messages = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Say something."},
    ]
    greedy = {"messages": messages, "max_new_tokens": 4, "temperature": 0, "n": 2}
    response = await api.post(f"/models/{trained['dpo']['id']}/generations", json=greedy)
    assert response.status_code == 202, response.text
    done = await wait_generation(api, response.headers["location"], gpu_worker)
    assert done["status"] == "succeeded", done["error"]
    assert done["results"][0]["text"] == done["results"][1]["text"]

    # Refused at submit, nothing queued.
    url = f"/models/{sft['id']}/generations"
    assert_problem(await api.post("/models/999999/generations", json=body), 404, "999999")
    too_long = {"title": "x", "max_new_tokens": 4000}
    assert_problem(await api.post(url, json=too_long), 400, "does not fit the context")
    for bad in (
        {"title": "x", "temperature": -1},
        {"title": "x", "n": 1000},
        {"title": "x", "max_new_tokens": 0},
        {"title": "x", "top_p": 0},
        {"max_new_tokens": 5},
        {"title": "x", "messages": messages},
        {"title": "x", "template": "no placeholder"},
    ):
        assert_problem(await api.post(url, json=bad), 422, "")
    other = f"/models/{trained['dpo']['id']}/generations/{queued['id']}"
    assert_problem(await api.get(other), 404, str(queued["id"]))


async def read_events(api: httpx.AsyncClient, url: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a server-sent event stream, read to its end."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with api.stream("GET", url, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event, data = "", ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif not line and data:
                events.append((event, json.loads(data)))
                event, data = "", ""
    return events


async def test_playground_suggests_the_heldout_titles(
    api: httpx.AsyncClient, trained: dict[str, Any]
) -> None:
    """The playground's title field offers the titles the SFT run held out."""
    held = trained["sft_run"]["essay_split"]["heldout_titles"]
    assert held
    page = await api.get("/ui/playground")
    assert page.status_code == 200
    assert 'list="heldout-titles"' in page.text
    for title in held:
        assert f'<option value="{html.escape(title)}"></option>' in page.text


def test_generate_with_the_cli(
    api_url: str, service_env: dict[str, str], trained: dict[str, Any], gpu_worker: procs.Proc
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "chatpgt.cli", "--api", api_url, "models", *args],
            cwd=procs.ROOT,
            env={**service_env, "COLUMNS": "200", "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    done = cli("generate", "usage-sft", "The Hardest Lessons", "--max-new-tokens", "5", "--json")
    assert done.returncode == 0, done.stderr
    generation = json.loads(done.stdout)
    assert generation["status"] == "succeeded" and generation["model_name"] == "usage-sft"
    assert generation["results"][0]["completion_tokens"] <= 5
    assert "tokens in" in done.stderr

    done = cli("generate", str(trained["sft"]["id"]), "Cities", "--max-new-tokens", "3")
    assert done.returncode == 0, done.stderr
    # One essay is printed as it streams in: the greedy essay, whole, on stdout.
    greedy = cli("generate", "usage-sft", "Cities", "--max-new-tokens", "40", "--temperature", "0")
    again = cli(
        "generate", "usage-sft", "Cities", "--max-new-tokens", "40", "--temperature", "0", "--json"
    )
    assert greedy.returncode == again.returncode == 0, greedy.stderr + again.stderr
    text = json.loads(again.stdout)["results"][0]["text"]
    assert greedy.stdout == text + "\n"
    assert re.search(r"^[0-3] tokens in [0-9.]+ s", done.stderr, re.M), done.stderr

    done = cli("generate", "no-such-model", "Cities")
    assert done.returncode == 1
    assert "no registered model is named 'no-such-model'" in done.stderr

    done = cli("generate", "usage-sft", "Cities", "--temperature", "-2")
    assert done.returncode == 2, done.stderr
    assert "--temperature: Input should be greater than or equal to 0" in done.stderr

    card = cli("card", "usage-sft")
    assert card.returncode == 0 and card.stdout.startswith("---\n")


async def hub_base(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """A base model registered by its Hub id: no folder here."""
    from chatpgt.training.models import RegisteredModel

    async with sessionmaker() as session:
        model = RegisteredModel(
            name="usage-hub-base", kind="base", path="HuggingFaceTB/SmolLM2-135M", metrics={}
        )
        session.add(model)
        await session.commit()
        return model.id


async def test_archive_unpacks_and_loads(
    api: httpx.AsyncClient,
    trained: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatpgt.serving.archive import folder_files, read_tar

    sft = trained["sft"]
    response = await api.get(f"/models/{sft['id']}/archive")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert 'filename="usage-sft.tar"' in response.headers["content-disposition"]
    folder = read_tar(response.content, tmp_path)
    assert folder.name == "usage-sft"
    original = Path(sft["path"])
    assert set(folder_files(folder)) == set(folder_files(original)) | {Path("README.md")}
    for name in ("config.json", "model.safetensors", "chat_template.jinja"):
        assert (folder / name).read_bytes() == (original / name).read_bytes()
    card = ModelCard.load(folder / "README.md")
    assert card.data.to_dict()["chatpgt"]["model_id"] == sft["id"]

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2
    user = [{"role": "user", "content": "Hi"}]
    assert DEFAULT_SYSTEM_PROMPT in tokenizer.apply_chat_template(user, tokenize=False)

    assert_problem(await api.get("/models/999999/archive"), 404, "999999")
    base_id = await hub_base(sessionmaker)
    assert_problem(await api.get(f"/models/{base_id}/archive"), 409, "no model folder")
    body = {"title": "x", "max_new_tokens": 2}
    assert_problem(
        await api.post(f"/models/{base_id}/generations", json=body), 409, "no model folder"
    )


async def test_lora_adapter_archive_loads_with_peft(
    api: httpx.AsyncClient, lora_model: dict[str, Any], trained: dict[str, Any], tmp_path: Path
) -> None:
    """A LoRA run is saved merged and keeps its adapter: the adapter's archive carries a peft
    card, loads with peft onto its base model and computes what the merged model computes."""
    import torch
    from huggingface_hub import ModelCard
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatpgt.serving.archive import read_tar

    merged_dir = Path(lora_model["path"])
    assert not (merged_dir / "adapter_config.json").exists()  # full weights
    assert lora_model["run"]["artifacts"]["adapter_dir"] == str(merged_dir.parent / "adapter")
    url = f"/models/{lora_model['id']}/archive"
    response = await api.get(url, params={"adapter": "true"})
    assert response.status_code == 200, response.text
    assert 'filename="usage-lora-adapter.tar"' in response.headers["content-disposition"]
    folder = read_tar(response.content, tmp_path)
    assert (folder / "adapter_config.json").is_file() and not (folder / "config.json").exists()
    card = ModelCard.load(folder / "README.md")
    assert card.data.to_dict()["library_name"] == "peft"
    assert "lora" in card.data.to_dict()["tags"] and "AutoPeftModelForCausalLM" in card.text
    tokenizer = AutoTokenizer.from_pretrained(folder)
    user = [{"role": "user", "content": "Hi"}]
    assert DEFAULT_SYSTEM_PROMPT in tokenizer.apply_chat_template(user, tokenize=False)

    adapted = AutoPeftModelForCausalLM.from_pretrained(folder).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    ids = torch.tensor([tokenizer("Cities grow because", add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-4)

    # A model trained without LoRA has no adapter.
    no_adapter = await api.get(f"/models/{trained['sft']['id']}/archive?adapter=true")
    assert_problem(no_adapter, 409, "no LoRA adapter")


def test_push_to_a_fake_hub(
    api_url: str,
    service_env: dict[str, str],
    trained: dict[str, Any],
    lora_model: dict[str, Any],
    tmp_path: Path,
) -> None:
    from chatpgt.serving.archive import folder_files
    from tests.fake_hub import fake_hub

    token = "hf_test_token"
    sft = trained["sft"]
    with fake_hub(token) as (endpoint, hub):
        env = {
            **service_env,
            "HF_ENDPOINT": endpoint,
            "HF_HUB_OFFLINE": "0",  # only the fake Hub on 127.0.0.1 is reached
            "HF_HOME": str(tmp_path / "hf-home"),  # no saved login
            "HF_TOKEN": "",
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }

        def push(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [sys.executable, "-m", "chatpgt.cli", "--api", api_url, "models", "push", *args],
                cwd=procs.ROOT,
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
            assert "Traceback" not in done.stdout + done.stderr, done.stderr
            return done

        # No token, then a refused one: nothing is created or uploaded.
        done = push("usage-sft", "tester/usage-sft")
        assert done.returncode == 1 and "No Hugging Face token" in done.stderr
        done = push("usage-sft", "tester/usage-sft", HF_TOKEN="hf_wrong")
        assert done.returncode == 1 and "token was refused (HTTP 401)" in done.stderr
        assert not [r for r in hub.requests if r.startswith("POST")]

        done = push("usage-sft", "tester/usage-sft", "--hf-token", token)
        assert done.returncode == 0, done.stderr
        assert "tester/usage-sft/commit" in done.stdout
        assert hub.repos["tester/usage-sft"]["visibility"] == "private"
        uploaded = hub.files["tester/usage-sft"]
        original = Path(sft["path"])
        expected = {str(p) for p in folder_files(original)} | {"README.md"}
        assert set(uploaded) == expected
        for name in expected - {"README.md"}:
            assert uploaded[name] == (original / name).read_bytes(), name
        assert b"library_name: transformers" in uploaded["README.md"]
        assert hub.validated == 1  # the card's metadata passed the (fake) Hub's check

        done = push(str(sft["id"]), "tester/public-copy", "--public", HF_TOKEN=token)
        assert done.returncode == 0, done.stderr
        assert hub.repos["tester/public-copy"]["visibility"] == "public"

        # --adapter: the LoRA adapter's files and its peft card, nothing of the merged model.
        done = push("usage-lora", "tester/usage-lora", "--adapter", HF_TOKEN=token)
        assert done.returncode == 0, done.stderr
        assert "the LoRA adapter of usage-lora" in done.stdout
        adapter_dir = Path(lora_model["path"]).parent / "adapter"
        uploaded = hub.files["tester/usage-lora"]
        assert set(uploaded) == {str(p) for p in folder_files(adapter_dir)} | {"README.md"}
        assert "adapter_model.safetensors" in uploaded and "model.safetensors" not in uploaded
        assert b"library_name: peft" in uploaded["README.md"]
        done = push("usage-sft", "tester/nothing", "--adapter", HF_TOKEN=token)
        assert done.returncode == 1 and "no LoRA adapter" in done.stderr
        assert "tester/nothing" not in hub.files
