"""Configured LLM providers, as the API may show them: never a key, only whether one is set."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from api import problems
from api.deps import AppSettings
from chatpgt.errors import NotFound
from chatpgt.settings import ProviderConfig

router = APIRouter(prefix="/providers", tags=["providers"])


class ProviderView(ProviderConfig):
    """A provider's configuration without secrets (``ProviderConfig.public()``)."""

    # The path of a secret file is not shown; public() leaves it out.
    api_key_file: SkipJsonSchema[None] = Field(None, exclude=True)
    has_api_key: bool = Field(description="whether the key variable or file is set right now")


def _view(config: ProviderConfig) -> ProviderView:
    return ProviderView.model_validate(config.public())


@router.get("", response_model=list[ProviderView])
async def list_providers(settings: AppSettings) -> list[ProviderView]:
    """Predefined providers and those from the providers file and CHATPGT_PROVIDERS, by name."""
    configs = settings.provider_configs()
    return [_view(configs[name]) for name in sorted(configs)]


@router.get("/{name}", response_model=ProviderView, responses=problems.responses(404))
async def get_provider(name: str, settings: AppSettings) -> ProviderView:
    config = settings.provider_configs().get(name)
    if config is None:
        raise NotFound(f"No provider named {name!r}.", provider=name)
    return _view(config)
