"""Product files speak of the product: no word of how or by whom it was written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.paths import REPO as ROOT

PRODUCT = [ROOT / "src", ROOT / "docs", ROOT / "conf", ROOT / "README.md"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml"}
PROCESS_WORDS = re.compile(
    r"\b[Ss]ession \d+\b"  # a numbered work session (user sessions are never numbered in prose)
    r"|\b[Ii]ssues? #?\d+"
    r"|\b(?:next|previous|earlier|this|that) (?:issue|ticket)s?\b"
    r"|\btickets?\b"
    r"|\bsub-?agents?\b"
)


def product_files() -> list[Path]:
    files: list[Path] = []
    for place in PRODUCT:
        files += [place] if place.is_file() else [p for p in place.rglob("*") if p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return sorted(files)


def process_words(text: str) -> list[str]:
    return [m.group(0) for m in PROCESS_WORDS.finditer(text)]


def test_the_pattern_catches_process_words_and_spares_the_product() -> None:
    text = "Session 5 moved it; see issue #14 and the next issue. A user session closes after 30 s of silence."
    assert process_words(text) == ["Session 5", "issue #14", "next issue"]


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_product_file_speaks_of_how_it_was_written(path: Path) -> None:
    assert process_words(path.read_text(encoding="utf-8")) == []
