"""`txl score FILE`: per-token log-probabilities streamed, summary equal to evaluating the same tokens,
with the span the one resolver gives (flags > run.json [eval] > training span)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cli.conftest import with_saved_eval
from transformer_xl.cli import main
from transformer_xl.cli import score as score_cli
from transformer_xl.config import Span
from transformer_xl.evaluation import evaluate
from transformer_xl.pretrained import save_pretrained
from transformer_xl.runtime import load_checkpoint


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
    loaded = load_checkpoint(trained_run)
    # the span score used: --mem-len 16 over the run's saved evaluation span (seg_len 4, no clamp)
    expected = evaluate(loaded.model, loaded.vocab.encode(text), seg_len=4, mem_len=16)
    assert summary["loss"] == pytest.approx(expected.loss, rel=1e-5)
    assert summary["ppl"] == pytest.approx(math.exp(expected.loss), rel=1e-5)
    assert -sum(float(row[2]) for row in per_token) / len(per_token) == pytest.approx(expected.loss, abs=1e-3)


def test_score_errors(trained_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["score", "--checkpoint", str(trained_run), str(tmp_path / "missing.txt")]) == 2
    (tmp_path / "one.txt").write_text("x")
    assert main(["score", "--checkpoint", str(trained_run), str(tmp_path / "one.txt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


PRESET_LIKE = {"seg_len": 4, "mem_len": 12, "clamp_len": 6, "same_length": True}  # short segments, long memory


def test_score_span_is_flags_then_the_runs_eval_settings_then_training(trained_run: Path, tmp_path: Path,
                                                                       capsys) -> None:
    # a run whose run.json holds a preset-like evaluation span (as `txl train --preset wt103-base` saves one)
    checkpoint = with_saved_eval(trained_run, tmp_path / "ckpt", **PRESET_LIKE)
    text = "".join(f"def h{i}(z):\n    return z + {i}\n" for i in range(20))
    path = tmp_path / "in.py"
    path.write_text(text, encoding="utf-8")
    loaded = load_checkpoint(checkpoint)
    tokens = loaded.vocab.encode(text)

    def score(directory: Path, *flags: str) -> dict:
        assert main(["score", "--checkpoint", str(directory), str(path), "--summary-only", "--json", *flags]) == 0
        out = capsys.readouterr().out
        summary = json.loads(out.strip().splitlines()[-1])
        assert Span(**summary["span"]).describe() in out  # the span used is printed
        return summary

    saved = score(checkpoint)  # 2. the run's eval settings, all four of them
    assert saved["span"] == PRESET_LIKE
    assert saved["loss"] == pytest.approx(evaluate(loaded.model, tokens, span=Span(**PRESET_LIKE)).loss, rel=1e-6)
    flagged = score(checkpoint, "--seg-len", "5", "--no-same-length")  # 1. flags win, field by field
    assert flagged["span"] == {**PRESET_LIKE, "seg_len": 5, "same_length": False}
    assert flagged["loss"] == pytest.approx(evaluate(loaded.model, tokens, span=Span(**flagged["span"])).loss,
                                            rel=1e-6)
    bare = tmp_path / "bare"  # 3. no run.json (a save_pretrained directory): the training span
    save_pretrained(loaded.model, bare, vocab=loaded.vocab)
    assert score(bare)["span"] == {"seg_len": 8, "mem_len": 8, "clamp_len": -1, "same_length": False}
    assert score(bare, "--clamp-len", "3")["span"]["clamp_len"] == 3


# --- issue 12: <unk> warning, one very long line, strict JSON ----------------------------------------------
def test_symbols_outside_the_vocabulary_are_warned_about_once(trained_run: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "odd.py"
    path.write_text("def f(x):\n    return ☃€漢 + ☃\n" * 3, encoding="utf-8")  # 4 unknown a line
    assert main(["score", "--checkpoint", str(trained_run), str(path), "--summary-only"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"txl score: warning: 12 symbol(s) of {path} are not in the vocabulary and were scored as <unk>"]
    path.write_text("def f(x):\n", encoding="utf-8")  # nothing unknown: nothing said
    assert main(["score", "--checkpoint", str(trained_run), str(path), "--summary-only"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kind", ["char", "word"])
def test_one_very_long_line_is_read_in_bounded_pieces(kind: str, tmp_path: Path, monkeypatch) -> None:
    """text8 is one 100 MB line: the pieces stay bounded and together encode exactly as the whole text."""
    from transformer_xl.data.vocab import Vocabulary

    words = [f"w{i}" for i in range(50)]
    if kind == "char":
        vocab = Vocabulary("char", sorted(set("".join(words) + " ")) + ["<unk>"], specials={"unk": "<unk>"})
    else:
        vocab = Vocabulary("word", ["<unk>", "<eos>", *words], specials={"unk": "<unk>", "eos": "<eos>"},
                           lines="eos")
    text = " ".join(words[(i * 7) % 50] for i in range(60_000))  # ~200 K characters, no line end
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(score_cli, "READ_CHARS", 4096)
    pieces = list(score_cli.read_pieces(str(path), vocab))
    assert len(pieces) > 40
    assert max(len(p) for p in pieces) <= 4096 + 64  # bounded: never the whole line at once
    joined = [int(i) for p in pieces for i in p]
    assert joined == [int(i) for i in vocab.encode(text)]


def test_non_finite_losses_are_null_in_json(trained_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import transformer_xl.evaluation as evaluation
    from transformer_xl.cli.jsonout import json_line

    assert json_line({"a": float("nan"), "b": [float("inf"), 1.5], "c": (float("-inf"),)}) == \
        '{"a": null, "b": [null, 1.5], "c": [null]}'

    def non_finite(model, chunks, **kwargs):
        for chunk in chunks:
            for token in chunk[1:]:
                yield int(token), float("nan")

    monkeypatch.setattr(evaluation, "score_tokens", non_finite)
    path = tmp_path / "in.py"
    path.write_text("def f(x):\n", encoding="utf-8")
    assert main(["score", "--checkpoint", str(trained_run), str(path), "--summary-only", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in JSON output")

    summary = json.loads(line, parse_constant=refuse)  # strict JSON: NaN / Infinity are not allowed
    assert summary["loss"] is None and summary["ppl"] is None
