"""Command-line options shared by several command groups."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

AsJson = Annotated[bool, typer.Option("--json", help="print the API's answer")]
MinConfidence = Annotated[
    float | None, typer.Option(min=0, max=10, help="keep pairs with confidence ≥ this")
]
JobFilter = Annotated[
    list[int] | None, typer.Option("--job", help="only pairs of this job, repeatable")
]
ModelFilter = Annotated[str | None, typer.Option(help="only pairs with this chosen/rejected model")]
SourceFilter = Annotated[Literal["judged", "corpus"] | None, typer.Option(help="pair source")]
