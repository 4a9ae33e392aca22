"""Whether a Hugging Face Hub model id can be loaded by a worker, checked at submit time.

Torch-free and cheap (a few ``stat`` calls in the local cache, no network): the API uses it so
that a hub id that cannot be reached offline is refused at submit instead of failing a minute
later in the worker. ``huggingface_hub`` is imported only when a hub id is checked.
"""

from __future__ import annotations

from pathlib import Path


def offline_unavailable_reason(ref: str, cache_dir: str | Path | None = None) -> str | None:
    """None when the workers can load hub model ``ref``: the hub is reachable (not offline), or
    the model's ``config.json`` is in the local Hugging Face cache (``cache_dir``, default
    ``HF_HUB_CACHE``). Otherwise why it cannot be.

    The workers share the API's environment and cache (one machine, or the same volume in the
    compose file); a worker with a cache of its own would still fail in the worker, with the
    reason on the run."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.is_offline_mode():
        return None
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    try:
        found = try_to_load_from_cache(ref, "config.json", cache_dir=cache)
    except ValueError as exc:  # HFValidationError: not a valid repo id
        return f"{ref!r} is not a valid Hugging Face Hub model id: {exc}"
    if isinstance(found, str):
        return None
    return (
        f"The model {ref!r} is a Hugging Face Hub id, the hub is offline (HF_HUB_OFFLINE=1) and "
        f"the model is not in the local cache ({cache}). Download it where the hub is reachable "
        f"(`hf download {ref}`), or pass a local model directory or a registered model."
    )
