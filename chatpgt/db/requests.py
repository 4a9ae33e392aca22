"""The base of every request schema: a JSON boolean is not a number, nor a number a boolean.

Pydantic's lax mode reads ``true`` as 1 wherever an integer or a float is asked for, and 1 or
``"yes"`` as true where a boolean is, so requests the OpenAPI document calls invalid
(``"epochs": true``, ``"merge": 1``) were taken. Each field that takes numbers and not booleans
refuses a boolean (at the top level or as a list item), and each boolean field refuses anything
but a boolean (or null where null is allowed).
"""

from __future__ import annotations

import types
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError


def _leaves(annotation: Any) -> set[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaves(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_leaves(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {type(arg) for arg in get_args(annotation)}
    return {annotation}


def _numbers_only(leaves: set[Any]) -> bool:
    return bool(leaves & {int, float}) and bool not in leaves and Any not in leaves


@cache
def _number_fields(
    model: type[BaseModel],
) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(fields whose value is a number, those whose value is a list of numbers, booleans)."""
    scalars, lists, booleans = set(), set(), set()
    for name, field in model.model_fields.items():
        leaves = _leaves(field.annotation)
        if leaves and leaves <= {bool, type(None)} and bool in leaves:
            booleans.add(name)
        if _numbers_only(leaves):
            scalars.add(name)
        items = {
            leaf for arg in leaves if get_origin(arg) is list for leaf in _leaves(get_args(arg)[0])
        }
        if _numbers_only(items):
            lists.add(name)
    return frozenset(scalars), frozenset(lists), frozenset(booleans)


def _refuse(name: str) -> PydanticCustomError:
    # A model-level check reports at the model's location: the message names the field.
    return PydanticCustomError(
        "number_type", "{field}: input should be a number, not a boolean", {"field": name}
    )


class RequestModel(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        scalars, lists, booleans = _number_fields(cls)
        for name in booleans.intersection(data):
            if data[name] is not None and not isinstance(data[name], bool):
                raise PydanticCustomError(
                    "bool_type", "{field}: input should be a boolean", {"field": name}
                )
        for name in scalars.intersection(data):
            if isinstance(data[name], bool):
                raise _refuse(name)
        for name in lists.intersection(data):
            if isinstance(data[name], list) and any(isinstance(v, bool) for v in data[name]):
                raise _refuse(name)
        return data
