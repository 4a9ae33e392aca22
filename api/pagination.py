"""List-route parameters: the page size (capped by a setting) and id path parameters.

Cursors themselves are made and read in the library (chatpgt.db.keyset).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query
from fastapi.exceptions import RequestValidationError

from api.deps import AppSettings
from chatpgt.db.ids import MAX_ID

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
# The keyset cursor of the newest-first lists of leased runs: the id the last page ended before.
BeforeId = Annotated[int | None, Query(ge=1, le=MAX_ID, description="next_before of the last page")]
DEFAULT_PAGE_SIZE = 50


async def page_limit(
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
