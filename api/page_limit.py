"""The page-size parameter of the list routes, capped by the ``api_max_page_size`` setting."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError

from api.deps import AppSettings

DEFAULT_PAGE_SIZE = 50


def page_limit(
    settings: AppSettings,
    limit: Annotated[
        int, Query(ge=1, description="page size, at most the server's api_max_page_size")
    ] = DEFAULT_PAGE_SIZE,
) -> int:
    """The requested page size. Above the server cap it is a 422, like any other bad parameter
    (the cap is a setting, so it cannot be a static ``le=`` on the query parameter)."""
    cap = settings.api_max_page_size
    if limit > cap:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "limit"),
                    "msg": f"Input should be less than or equal to {cap}",
                    "type": "less_than_equal",
                }
            ]
        )
    return limit


PageLimit = Annotated[int, Depends(page_limit)]
