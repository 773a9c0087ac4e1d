"""`txl generate`: prompt text or file, seeded sampling, streamed text, JSON summary, the resolved span."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.conftest import with_saved_eval
from transformer_xl.cli import main
from transformer_xl.cli.generate import TextStream
from transformer_xl.config import Span
from transformer_xl.data.vocab import Vocabulary
from transformer_xl.generation import generate
from transformer_xl.runtime import load_checkpoint


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


def test_generate_span_is_flags_then_the_runs_eval_settings(trained_run: Path, tmp_path: Path, capsys) -> None:
    preset_like = {"seg_len": 4, "mem_len": 12, "clamp_len": 6, "same_length": True}
    checkpoint = with_saved_eval(trained_run, tmp_path / "ckpt", **preset_like)
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", "def f1(x):\n", "--max-new-tokens", "4",
            "--seed", "0", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["span"] == preset_like
    assert f"span {Span(**preset_like).describe()}" in captured.err  # on stderr: stdout is only the text
    assert main([*args, "--mem-len", "5", "--clamp-len", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["span"] == {**preset_like, "mem_len": 5,
                                                                                     "clamp_len": 2}
    # the same seed and span give the same text as the library with that span
    loaded = load_checkpoint(checkpoint)
    prompt = [int(t) for t in loaded.vocab.encode("def f1(x):\n")]
    expected = list(generate(loaded.model, prompt, max_new_tokens=4, seed=0, span=Span(**preset_like)))
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["text"] == loaded.vocab.decode(expected)


def test_empty_prompt_and_unusable_temperatures_are_one_line_errors(trained_run: Path, tmp_path: Path,
                                                                     capsys) -> None:
    base = ["generate", "--checkpoint", str(trained_run), "--max-new-tokens", "3"]
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    for extra, message in [(["--prompt", ""], "prompt is empty"),
                           (["--prompt-file", str(tmp_path / "empty.txt")], "prompt is empty"),
                           (["--temperature", "nan"], "temperature"), (["--temperature", "inf"], "temperature"),
                           (["--top-p", "nan"], "top_p")]:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("txl generate: error:") and message in err and err.count("\n") == 1, err
    assert main([*base, "--temperature", "1e-45", "--prompt", "def", "--json"]) == 0  # tiny: greedy, not a crash
    tiny = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*base, "--temperature", "0", "--prompt", "def", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ids"] == tiny["ids"]


def test_text_stream_continues_the_prompt_line_and_detokenizes_wikitext() -> None:
    words = Vocabulary("word", ["<eos>", "a", "b"], specials={"eos": "<eos>"}, lines="eos")
    stream = TextStream(words, context=[1, 0, 2])  # the prompt's last line is "b": the next word needs a space
    assert "".join(stream.push(t) for t in [1, 0, 2]) + stream.flush() == " a\nb"
    symbols = ["<eos>", "Hello", ",", "world", "!", "1", "@,@", "000", "(", ")"]
    wiki = Vocabulary("word", symbols, specials={"eos": "<eos>"}, lines="eos", normalization="wikitext")
    ids = [2, 3, 4, 0, 5, 6, 7, 8, 1, 9, 2]
    stream = TextStream(wiki, context=[1])
    shown = "".join(stream.push(t) for t in ids) + stream.flush()
    assert "Hello" + shown == wiki.decode([1] + ids) == "Hello, world!\n1,000 (Hello),"


@pytest.mark.slow
def test_several_prompts_are_one_batch_equal_to_each_alone(trained_run: Path, tmp_path: Path, capsys) -> None:
    base = ["generate", "--checkpoint", str(trained_run), "--max-new-tokens", "12", "--seed", "4", "--top-k", "8",
            "--json"]
    prompts = ["def f1(x):", "def f2", "    return x * 3 + 1"]
    alone = []
    for i, prompt in enumerate(prompts):
        assert main([*base[:-3], "--seed", str(4 + i), "--top-k", "8", "--json", "--prompt", prompt]) == 0
        alone.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert main([*base, *(arg for p in prompts for arg in ("--prompt", p)), "--echo"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert [r["ids"] for r in summary["results"]] == [a["ids"] for a in alone]
    assert [r["text"] for r in summary["results"]] == [a["text"] for a in alone]
    assert [r["seed"] for r in summary["results"]] == [4, 5, 6] and summary["tokens"] == 36
    assert captured.out.startswith("### prompt 1/3\n" + prompts[0] + alone[0]["text"] + "\n### prompt 2/3\n")
    assert "3 prompts of" in captured.err and "one batch" in captured.err
    # one prompt per line of a file (blank lines skipped, each without its newline): the same batch
    (tmp_path / "prompts.txt").write_text("\n".join([prompts[0], "", *prompts[1:]]) + "\n", encoding="utf-8")
    assert main([*base, "--prompts-file", str(tmp_path / "prompts.txt")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"] == summary["results"]


def test_several_prompts_errors_are_one_line(trained_run: Path, tmp_path: Path, capsys) -> None:
    base = ["generate", "--checkpoint", str(trained_run), "--max-new-tokens", "3"]
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    for extra, message in [(["--prompts-file", str(tmp_path / "blank.txt")], "has no prompt"),
                           (["--prompts-file", str(tmp_path / "missing.txt")], "prompts file not found"),
                           (["--prompt", "def", "--prompt", ""], "prompt 2/2 is empty")]:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("txl generate: error:") and message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):  # argparse: the prompt sources exclude each other
        main([*base, "--prompt", "a", "--prompts-file", str(tmp_path / "blank.txt")])
