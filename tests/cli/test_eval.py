"""`txl eval`: lengths from the run or flags, JSON output, every token once (the whole split unless
--max-tokens), vocabulary checks, and the same loss as `txl score` on the same text and span."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.conftest import with_saved_eval
from transformer_xl.cli import main
from transformer_xl.config import Span
from transformer_xl.data.cache import load_prepared


def _json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_json_uses_the_runs_eval_span(trained_run: Path, char_data: Path, capsys) -> None:
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(char_data), "--json",
                 "--no-progress"]) == 0
    result = _json(capsys)
    assert (result["seg_len"], result["mem_len"]) == (4, 12)  # saved by --eval.seg_len / --eval.mem_len
    assert result["n_tokens"] == len(load_prepared(char_data).split("test")) - 1
    assert result["bpc"] == pytest.approx(result["loss"] / np.log(2))


def test_eval_flags_memory_warmup_and_per_token(trained_run: Path, char_data: Path, tmp_path: Path, capsys) -> None:
    args = ["eval", "--checkpoint", str(trained_run / "last"), "--data", str(char_data), "--split", "valid",
            "--json", "--no-progress"]
    assert main([*args, "--seg-len", "5", "--mem-len", "0", "--per-token", str(tmp_path / "a.npy")]) == 0
    short = _json(capsys)
    assert main([*args, "--seg-len", "5", "--mem-len", "50", "--batch-size", "3", "--warmup", "20"]) == 0
    long = _json(capsys)
    assert short["mem_len"] == 0 and long["mem_len"] == 50 and long["batch_size"] == 3
    assert short["n_tokens"] == long["n_tokens"] == len(np.load(tmp_path / "a.npy"))
    assert main([*args, "--sliding-window", "--seg-len", "6", "--max-tokens", "30"]) == 0
    assert _json(capsys)["sliding_window"] is True


def test_eval_refuses_data_of_another_vocabulary(trained_run: Path, byte_data: Path, capsys) -> None:
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(byte_data)]) == 2
    err = capsys.readouterr().err
    assert "another vocabulary" in err and len(err.strip().splitlines()) == 1


def test_eval_and_score_give_the_same_loss_for_the_same_text_and_span(trained_run: Path, char_data: Path,
                                                                      tmp_path: Path, capsys) -> None:
    prepared = load_prepared(char_data)
    tokens = prepared.split("test")
    text = prepared.vocab.decode(tokens)
    np.testing.assert_array_equal(prepared.vocab.encode(text), tokens)  # the file holds exactly the split
    path = tmp_path / "test.txt"
    path.write_text(text, encoding="utf-8", newline="")
    span = ["--seg-len", "5", "--mem-len", "20", "--clamp-len", "7", "--same-length"]
    described = Span(seg_len=5, mem_len=20, clamp_len=7, same_length=True).describe()
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(char_data), "--batch-size", "1", *span,
                 "--json", "--no-progress"]) == 0
    out = capsys.readouterr().out
    evaluated = json.loads(out.strip().splitlines()[-1])
    assert f"span: {described}" in out
    assert main(["score", "--checkpoint", str(trained_run), str(path), *span, "--summary-only", "--json"]) == 0
    out = capsys.readouterr().out
    scored = json.loads(out.strip().splitlines()[-1])
    assert described in out and scored["span"] == {"seg_len": 5, "mem_len": 20, "clamp_len": 7, "same_length": True}
    assert scored["tokens"] == evaluated["n_tokens"] == len(tokens) - 1
    assert scored["loss"] == pytest.approx(evaluated["loss"], rel=1e-6)
    # and every span flag reaches score: without --same-length the loss is another one
    assert main(["score", "--checkpoint", str(trained_run), str(path), *span[:-1], "--summary-only", "--json"]) == 0
    assert _json(capsys)["loss"] != pytest.approx(evaluated["loss"], rel=1e-6)


def test_eval_scores_the_whole_split_unless_max_tokens_is_on_its_command_line(trained_run: Path, char_data: Path,
                                                                            tmp_path: Path, capsys) -> None:
    # a run saved with eval.max_tokens (as the demo's config has): txl eval must not inherit it
    checkpoint = with_saved_eval(trained_run, tmp_path / "ckpt", max_tokens=30, batch_size=2)
    n = len(load_prepared(char_data).split("test")) - 1
    args = ["eval", "--checkpoint", str(checkpoint), "--data", str(char_data), "--json", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    whole = json.loads(out.strip().splitlines()[-1])
    assert whole["n_tokens"] == whole["n_available"] == n > 30 and whole["partial"] is False
    assert whole["batch_size"] == 2  # batch size still defaults from run.json
    assert f"scored {n:,} of {n:,} tokens" in out and "PARTIAL" not in out
    assert main([*args, "--max-tokens", "30"]) == 0
    out = capsys.readouterr().out
    part = json.loads(out.strip().splitlines()[-1])
    assert part["n_tokens"] == 30 and part["n_available"] == n and part["partial"] is True
    assert f"scored 30 of {n:,} tokens (PARTIAL" in out


def test_a_checkpoint_without_vocabulary_is_scored_with_a_note(capsys) -> None:
    """Equal sizes prove nothing about ids (a converted text8 model and our text8 both have 27 symbols)."""
    from transformer_xl.analysis import check_vocabulary
    from transformer_xl.data.vocab import Vocabulary

    vocab = Vocabulary.byte_level()  # any data vocabulary
    check_vocabulary(None, vocab, len(vocab), checkpoint="models/text8-tf", data="data/text8")
    err = capsys.readouterr().err
    assert "models/text8-tf has no vocabulary" in err and len(err.strip().splitlines()) == 1
    check_vocabulary(vocab, vocab, len(vocab), checkpoint="runs/a", data="data/a")
    assert capsys.readouterr().err == ""
