"""The import contracts of .importlinter (docs/architecture.md, "Layers"): they hold on this tree,
and they break on a copy of it with a deliberately bad import or an import circle."""

from __future__ import annotations

import configparser
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
PACKAGES = ("chatpgt", "api", "workers")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages under ``tree`` (first on the path), with no cache."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(tree / ".importlinter"), "--no-cache", "--no-logo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    # Every contract ran: the six of .importlinter.
    assert result.stdout.count("KEPT") == CONFIG.read_text().count("[importlinter:contract:")


def floors() -> set[str]:
    """Every module named on a floor of the `floors` contract."""
    config = configparser.ConfigParser()
    config.read(CONFIG)
    lines = config["importlinter:contract:floors"]["layers"].split("\n")
    return {name.strip() for line in lines for name in re.split(r"[|:]", line) if name.strip()}


def test_every_module_of_chatpgt_is_on_a_floor() -> None:
    """A new module or package must be given its floor, or nothing checks what it imports."""
    placed = floors()
    standalone = {"chatpgt.testing"}  # its own contracts: it imports nothing of chatpgt
    unplaced = []
    for info in pkgutil.iter_modules([str(ROOT / "chatpgt")]):
        name = f"chatpgt.{info.name}"
        if name in placed or name in standalone:
            continue
        # A package may be placed module by module (chatpgt.observability is).
        parts = (
            {
                f"{name}.{sub.name}"
                for sub in pkgutil.iter_modules([str(ROOT / "chatpgt" / info.name)])
            }
            if info.ispkg
            else set()
        )
        if not parts or not parts <= placed:
            unplaced.append(name)
    assert not unplaced, (
        f"{unplaced} on no floor: add them to the `floors` contract of .importlinter "
        '(docs/architecture.md, "Layers")'
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and the contracts, for the breaking tests to write into."""
    tree = tmp_path_factory.mktemp("tree")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tree / ".importlinter")
    return tree


# (files to write into the copy, what lint-imports must say)
BAD = {
    "a domain imports one above it": (
        {"chatpgt/topics/upward.py": "from chatpgt.datagen import service\n"},
        [
            "chatpgt's floors: no module imports a module above it BROKEN",
            "chatpgt.topics is not allowed to import chatpgt.datagen",
            "chatpgt.topics.upward -> chatpgt.datagen.service (l.1)",
        ],
    ),
    # None: an existing module, with a lazy (in-function) upward import appended.
    "a floor-0 module imports the database, in a function": (
        {"chatpgt/redact.py": None},
        [
            "chatpgt.redact is not allowed to import chatpgt.db",
            "chatpgt.redact -> chatpgt.db.session",
        ],
    ),
    "rooms of one floor import each other": (
        {"chatpgt/auth/sideways.py": "import chatpgt.topics.service\n"},
        [
            "chatpgt's floors: no module imports a module above it BROKEN",
            "chatpgt.auth is not allowed to import chatpgt.topics",
        ],
    ),
    "the library imports its door": (
        {"chatpgt/pairs/door.py": "from api.main import create_app\n"},
        [
            "the library never imports its doors (api, workers) or their frameworks BROKEN",
            "chatpgt is not allowed to import api",
        ],
    ),
    "the library imports FastAPI": (
        {"chatpgt/datagen/framework.py": "import fastapi\n"},
        ["chatpgt is not allowed to import fastapi"],
    ),
    "an import circle inside a package": (
        {
            "chatpgt/topics/circle_a.py": "from chatpgt.topics import circle_b\n",
            "chatpgt/topics/circle_b.py": "from chatpgt.topics import circle_a\n",
        },
        [
            "no import circles between the modules of a package BROKEN",
            "No cycles are allowed in chatpgt.topics",
        ],
    ),
    "a circle hidden under TYPE_CHECKING": (
        {
            "chatpgt/datagen/judges/typed.py": (
                "from typing import TYPE_CHECKING\n\n"
                "if TYPE_CHECKING:\n"
                "    from chatpgt.datagen.schemas import JudgeSpec\n"
            )
        },
        [
            "no import circles between the modules of a package BROKEN",
            "No cycles are allowed in chatpgt.datagen",
            "datagen's judging methods never import its job schemas or pairing rules BROKEN",
        ],
    ),
    "an API module imports torch": (
        {"api/heavy.py": "import torch\n"},
        ["the API's own modules never import torch or transformers BROKEN"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_import_breaks_a_contract(copy: Path, case: str) -> None:
    files, expected = BAD[case]
    written: dict[Path, str | None] = {}
    try:
        for name, text in files.items():
            path = copy / name
            written[path] = path.read_text() if path.exists() else None
            if text is None:
                text = f"{written[path]}\n\ndef _upward():\n    import chatpgt.db.session\n"
            path.write_text(text)
        result = lint_imports(copy)
    finally:
        for path, before in written.items():
            if before is None:
                path.unlink()
            else:
                path.write_text(before)
    assert result.returncode == 1, result.stdout + result.stderr
    for line in expected:
        assert line in result.stdout, f"{line!r} not in:\n{result.stdout}"


def test_the_copy_is_clean_again(copy: Path) -> None:
    """The breaking cases undo what they wrote: the copy keeps every contract."""
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout
