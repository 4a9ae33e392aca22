"""Pushing a model folder to the Hugging Face Hub, with the token checked before anything is
uploaded (the dataset push's token handling: ``chatpgt.datasets.hf.hub_token``)."""

from __future__ import annotations

from pathlib import Path

from chatpgt.datasets.hf import hub_token
from chatpgt.errors import InvalidInput
from chatpgt.serving.archive import folder_files

__all__ = ["check_token", "hub_token", "push_folder"]


def check_token(token: str) -> str:
    """The account ``token`` belongs to (``whoami``); InvalidInput when the Hub refuses it, so a
    push stops before anything is downloaded or uploaded."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi().whoami(token=token)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise InvalidInput(
            f"The Hugging Face token was refused (HTTP {status}); nothing was uploaded."
        ) from None
    return str(info.get("name") or "?")


def push_folder(folder: Path, repo_id: str, *, token: str, private: bool) -> tuple[str, list[str]]:
    """Create (or reuse) the model repository ``repo_id`` and upload every file of ``folder``
    in one commit; the commit URL and the paths uploaded."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    files = [str(p) for p in folder_files(folder)]
    commit = api.create_commit(
        repo_id,
        repo_type="model",
        operations=[CommitOperationAdd(path, str(folder / path)) for path in files],
        commit_message="ChatPGT model",
    )
    return str(commit.commit_url), files
