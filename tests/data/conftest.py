"""Small corpora in each standard format, generated per test (the real ones are never read in tests)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

WORDS = "the cat sat on a mat and the dog ran <unk> to it".split()


def lines(n: int, seed: int = 0, width: int = 9) -> list[str]:
    out = []
    for i in range(n):
        k = (i * 7 + seed) % width
        out.append(" ".join(WORDS[(i + j * 3 + seed) % len(WORDS)] for j in range(k)))
    return out


def write_wikitext(folder: Path, n: tuple[int, int, int] = (40, 8, 8)) -> dict[str, list[str]]:
    """wiki.{train,valid,test}.tokens: ' = Title = ' headings, blank lines, space-separated tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    text = {}
    for split, count, seed in zip(("train", "valid", "test"), n, (0, 1, 2)):
        body = [" = Heading = ", ""] + [f" {line} " for line in lines(count, seed)]
        text[split] = body
        (folder / f"wiki.{split}.tokens").write_text("\n".join(body) + "\n", encoding="utf-8")
    return text


@pytest.fixture
def files() -> SimpleNamespace:
    """The generators above, for tests (tests/data is not on the import path)."""
    return SimpleNamespace(lines=lines, write_wikitext=write_wikitext)
