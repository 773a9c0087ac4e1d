"""`txl eval`: lengths from the run or flags, JSON output, every token once, vocabulary checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transformer_xl.cli import main
from transformer_xl.data.cache import load_prepared


def _json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_json_uses_the_runs_eval_lengths(trained_run: Path, char_data: Path, capsys) -> None:
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
