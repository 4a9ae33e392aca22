"""Judging methods, keyed by ``judge.method`` of a job request.

Each module of this package (but ``base``) holds one method and registers it with
:func:`~chatpgt.datagen.judges.base.register`; they are all imported here, so adding a method is
adding one file. The request schema offers the registered names (``method_names``).
"""

from __future__ import annotations

import importlib
import pkgutil

from chatpgt.datagen.judges.base import (
    JudgeCall,
    JudgeMethod,
    JudgmentItem,
    judge_method,
    method_names,
    needs_provider,
    register,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "JudgeCall",
    "JudgeMethod",
    "JudgmentItem",
    "judge_method",
    "method_names",
    "needs_provider",
    "register",
]
