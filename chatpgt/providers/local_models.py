"""Loading a local model: resolving a model name to a directory, picking the device, and one
loaded copy of each model per process, run on one background thread (see
:mod:`chatpgt.providers.local`, which batches requests onto it).

torch and transformers are imported lazily, when the first model is loaded.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatpgt.providers.ab import AB_LETTERS
from chatpgt.providers.smollm2 import SMOLLM2_ALIAS, LocalModelUnavailable, ensure_smollm2
from chatpgt.providers.types import LocalOptions

if TYPE_CHECKING:
    pass

log = logging.getLogger("chatpgt.providers.local")

DEFAULT_CACHE_DIR = Path("~/.cache/chatpgt/models")


def resolve_model(model: str, cache_dir: Path | str | None = None) -> Path:
    """The directory a local ``model`` name stands for.

    ``smollm2-135m-instruct`` (any case) resolves to the converted bundled model under
    ``cache_dir`` (converting it on first use, ~20-40 s); anything else must be a directory
    with a ``config.json``. Raises LocalModelUnavailable, naming the model, otherwise.
    """
    if model.strip().lower() == SMOLLM2_ALIAS:
        return ensure_smollm2(Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR)
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    if path.is_dir():
        raise LocalModelUnavailable(f"local model {model!r} is a directory without config.json")
    raise LocalModelUnavailable(
        f"local model {model!r} not found: give a model directory or {SMOLLM2_ALIAS!r}"
    )


# --- loaded models, shared by the whole process -------------------------------------------------


@dataclass(slots=True)
class LoadedModel:
    """A model and tokenizer in memory, with what batching needs precomputed."""

    path: Path
    device: str
    model: Any
    tokenizer: Any
    eos_ids: frozenset[int]
    pad_id: int
    # Token ids counted for each letter ("A" and " A", ...), for judge_ab.
    letter_ids: dict[str, list[int]]
    max_positions: int | None
    load_s: float


_models: dict[tuple[str, str], LoadedModel] = {}
_models_lock = threading.Lock()
_load_locks: dict[tuple[str, str], threading.Lock] = {}
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_threads_set = False


def _compute_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The single thread every batch of the process runs on (torch parallelises inside it)."""
    global _executor
    with _models_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="chatpgt-local"
            )
        return _executor


def pick_device(requested: str | None = None) -> str:
    """``requested`` when given, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: Path, options: LocalOptions | None = None) -> LoadedModel:
    """The model at ``path`` on the options' device, loaded once per process (thread-safe).

    bfloat16 on CUDA (float16 where the GPU lacks bf16), float32 elsewhere. On CPU, torch's
    thread count is set once to ``options.torch_threads`` or the CPUs this process may use.
    Blocks for the load: call it from a thread, not from the event loop.
    """
    options = options or LocalOptions()
    device = pick_device(options.device)
    key = (str(path), device)
    with _models_lock:
        found = _models.get(key)
        if found is not None:
            return found
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:
        with _models_lock:
            found = _models.get(key)
        if found is not None:
            return found
        loaded = _load(path, device, options)
        with _models_lock:
            _models[key] = loaded
        return loaded


def loaded_models() -> list[LoadedModel]:
    """The models this process holds in memory."""
    with _models_lock:
        return list(_models.values())


def unload_models() -> None:
    """Forget every loaded model (their memory is freed once no batch still uses them)."""
    with _models_lock:
        _models.clear()


def _load(path: Path, device: str, options: LocalOptions) -> LoadedModel:
    global _threads_set
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device.startswith("cpu") and not _threads_set:
        threads = options.torch_threads or _available_cpus()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        _threads_set = True
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise LocalModelUnavailable(f"local model {str(path)!r} has no chat template")
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device)
    model.eval()

    eos: set[int] = set()
    for source in (tokenizer.eos_token_id, model.generation_config.eos_token_id):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, list):
            eos.update(i for i in source if isinstance(i, int))
    if not eos:
        raise LocalModelUnavailable(f"local model {str(path)!r} defines no end-of-text token")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = min(eos)
    letter_ids: dict[str, list[int]] = {}
    for letter in AB_LETTERS:
        ids: list[int] = []
        for variant in (letter, " " + letter):
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
        if not ids:
            raise LocalModelUnavailable(
                f"local model {str(path)!r}: {letter!r} is not a single token, cannot judge"
            )
        letter_ids[letter] = ids
    max_positions = getattr(model.config, "max_position_embeddings", None)
    load_s = time.perf_counter() - started
    log.info("loaded local model %s on %s (%s) in %.1f s", path, device, dtype, load_s)
    return LoadedModel(
        path=path,
        device=device,
        model=model,
        tokenizer=tokenizer,
        eos_ids=frozenset(eos),
        pad_id=int(pad),
        letter_ids=letter_ids,
        max_positions=max_positions if isinstance(max_positions, int) else None,
        load_s=load_s,
    )


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
