"""`txl generate`: prompt text or file, seeded sampling, streamed text, JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

from transformer_xl.cli import main
from transformer_xl.cli.generate import TextStream
from transformer_xl.data.vocab import Vocabulary


def test_generate_is_seeded_and_streams(trained_run: Path, tmp_path: Path, capsys) -> None:
    args = ["generate", "--checkpoint", str(trained_run), "--max-new-tokens", "25", "--seed", "3",
            "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--json"]
    assert main([*args, "--prompt", "def f1(x):\n"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (tmp_path / "prompt.txt").write_text("def f1(x):\n", encoding="utf-8")
    assert main([*args, "--prompt-file", str(tmp_path / "prompt.txt")]) == 0
    out = capsys.readouterr().out
    second = json.loads(out.strip().splitlines()[-1])
    assert first["text"] == second["text"] and second["tokens"] == 25
    assert out.startswith(second["text"])  # the text was written out before the summary
    assert main(["generate", "--checkpoint", str(trained_run), "--max-new-tokens", "3", "--mem-len", "-1"]) == 2


def test_text_stream_joins_bytes_and_words() -> None:
    stream = TextStream(Vocabulary.byte_level())
    pieces = [stream.push(b) for b in "é!".encode("utf-8")]
    assert pieces == ["", "é", "!"]  # a two-byte character is printed once complete
    words = Vocabulary("word", ["<eos>", "a", "b"], specials={"eos": "<eos>"}, lines="eos")
    stream = TextStream(words)
    assert "".join(stream.push(t) for t in [1, 2, 0, 2, 1]) == "a b\nb a"
