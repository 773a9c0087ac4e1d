"""`txl prepare` end to end on a generated WikiText folder, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from transformer_xl.cli import main
from transformer_xl.data import load_prepared


def write_wikitext(folder: Path) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / f"wiki.{split}.tokens").write_text(" = T = \n\n the cat <unk> sat \n the dog \n", encoding="utf-8")


def test_prepare_prints_summary_and_json(tmp_path: Path, capsys) -> None:
    write_wikitext(tmp_path / "wt")
    code = main(["prepare", "--corpus", "wikitext-2", "--path", str(tmp_path / "wt"), "--out", str(tmp_path / "o"),
                 "--json", "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and "vocabulary 8 symbols" in "\n".join(out)
    summary = json.loads(out[-1])
    assert summary["vocab_size"] == 8 and summary["splits"]["valid"]["tokens"] == 13
    assert load_prepared(tmp_path / "o").tokens["test"] == 13


def test_prepare_missing_path_is_one_line_with_the_source(tmp_path: Path, capsys) -> None:
    code = main(["prepare", "--corpus", "enwik8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "enwik8.zip" in err and "Traceback" not in err
    code = main(["prepare", "--corpus", "text", "--path", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")])
    assert code == 2 and "neither a file" in capsys.readouterr().err
