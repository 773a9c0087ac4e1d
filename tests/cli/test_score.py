"""`txl score FILE`: per-token log-probabilities streamed, summary equal to evaluating the same tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from transformer_xl.cli import main
from transformer_xl.cli import score as score_cli
from transformer_xl.evaluation import evaluate
from transformer_xl.training.checkpoint import load_model


def test_score_matches_evaluate_and_streams_in_pieces(trained_run: Path, tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(f"def g{i}(y):\n    return y - {i}\n" for i in range(30))
    path = tmp_path / "in.py"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(score_cli, "READ_CHARS", 50)  # many small pieces: memory carries across them
    assert main(["score", "--checkpoint", str(trained_run), str(path), "--mem-len", "16", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    per_token = [line.split("\t") for line in lines[:-2]]
    assert summary["tokens"] == len(text) - 1 == len(per_token)
    assert per_token[0][1] == "e" and per_token[2][1] == " "  # tokens in order ("d" is the unscored first)
    model, vocab, _ = load_model(trained_run)
    expected = evaluate(model, vocab.encode(text), mem_len=16)
    assert summary["loss"] == pytest.approx(expected.loss, rel=1e-5)
    assert summary["ppl"] == pytest.approx(math.exp(expected.loss), rel=1e-5)
    assert -sum(float(row[2]) for row in per_token) / len(per_token) == pytest.approx(expected.loss, abs=1e-3)


def test_score_errors(trained_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["score", "--checkpoint", str(trained_run), str(tmp_path / "missing.txt")]) == 2
    (tmp_path / "one.txt").write_text("x")
    assert main(["score", "--checkpoint", str(trained_run), str(tmp_path / "one.txt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
