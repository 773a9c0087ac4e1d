"""`txl recl` and `txl analyze`: the RECL table, saved gain curves, cache reuse, one-line user errors, and the
Python API they call (recl_of_checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transformer_xl.analysis import recl_of_checkpoints
from transformer_xl.cli import main
from transformer_xl.config import Span, TransformerXLError


def _last_json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_recl_prints_the_table_and_saves_curves(trained_run: Path, char_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "recl"
    args = ["recl", "--checkpoints", str(trained_run / "best"), str(trained_run / "last"), "--names", "best", "last",
            "--data", str(char_data), "--split", "valid", "--max-tokens", "150", "--start", "4", "--step", "4",
            "--max-context", "12", "--out", str(out), "--no-progress", "--json"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| Model | r = 0.1 | r = 0.5 | r = 1.0 |" in text and "| best |" in text and "| last |" in text
    result = json.loads(text.strip().splitlines()[-1])
    assert result["contexts"] == [4, 8, 12]
    assert set(result["recl"]["0.1"]) == {"best", "last"}
    assert all(v in (4, 8, 12) for v in result["recl"]["1.0"].values())
    saved = json.loads((out / "recl.json").read_text())
    assert {c["name"] for c in saved["curves"]} == {"best", "last"} and len(saved["curves"]) == 6
    assert (out / "gains.csv").read_text().startswith("model,r,c,c_prime,gain")
    assert "RECL" in (out / "report.md").read_text()
    cached = sorted(p.name for p in (out / "cache").glob("*.npy"))
    assert len(cached) == 3  # best and last hold the same weights (step 4): the cache keys on weights
    assert main(args) == 0  # a rerun reads the cache
    assert sorted(p.name for p in (out / "cache").glob("*.npy")) == cached
    assert _last_json(capsys) == result


def test_recl_user_errors_exit_2(trained_run: Path, char_data: Path, tmp_path: Path, capsys) -> None:
    base = ["recl", "--checkpoints", str(trained_run), "--data", str(char_data), "--out", str(tmp_path / "r"),
            "--no-progress"]
    assert main([*base, "--names", "a", "b"]) == 2
    assert main([*base, "--max-tokens", "10", "--contexts", "4", "8", "16"]) == 2  # too few tokens for c = 16
    assert main([*base, "--contexts", "4", "6", "10"]) == 2  # uneven grid
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("txl recl: error:") for line in err)


def test_analyze_position_and_context(trained_run: Path, char_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pos"
    position = ["analyze", "position", "--checkpoint", str(trained_run), "--data", str(char_data), "--split",
                "valid", "--batch-size", "2", "--out", str(out), "--json"]
    assert main(position) == 0  # the run's saved evaluation span: seg_len 4, mem_len 12
    text = capsys.readouterr().out
    assert "span: seg_len 4, mem_len 12, no clamp, same_length off" in text
    default = json.loads(text.strip().splitlines()[-1])
    assert (default["seg_len"], default["mem_len"], len(default["with_memory"])) == (4, 12, 4)
    assert main([*position, "--seg-len", "8"]) == 0  # the training segment, as a flag
    result = _last_json(capsys)
    assert result["seg_len"] == 8 and len(result["with_memory"]) == 8
    assert (out / "position.csv").exists() and "without memory" in (out / "report.md").read_text()
    out = tmp_path / "ctx"
    assert main(["analyze", "context", "--checkpoint", str(trained_run), "--data", str(char_data), "--split",
                 "valid", "--contexts", "2", "6", "--max-tokens", "60", "--out", str(out), "--no-progress",
                 "--json"]) == 0
    result = _last_json(capsys)
    assert result["method"] == "memory" and set(result["mean_loss"]) == {"2", "6"} and result["n_tokens"] == 60
    assert main(["analyze", "speed", "--checkpoint", str(trained_run), "--data", str(char_data), "--split", "valid",
                 "--attn-lens", "8", "16", "--seg-len", "4", "--xl-tokens", "16", "--vanilla-tokens", "4",
                 "--json"]) == 0
    assert [row["attn_len"] for row in _last_json(capsys)["rows"]] == [8, 16]


def test_recl_of_checkpoints_python_api_matches_the_command(trained_run: Path, char_data: Path, tmp_path: Path,
                                                            capsys) -> None:
    group = recl_of_checkpoints([trained_run / "best", trained_run], char_data, names=["best", "run"], split="valid",
                                max_tokens=150, start=4, step=4, max_context=12, cache_dir=tmp_path / "cache")
    assert group.contexts == [4, 8, 12] and group.n_tokens == 150 and group.names == ["best", "run"]
    # each checkpoint runs with the resolved span: the run's saved eval settings (seg_len 4, mem_len 12)
    assert group.spans["best"] == Span(seg_len=4, mem_len=12)
    assert [c.losses.shape for c in group.curves] == [(3, 150), (3, 150)]
    assert main(["recl", "--checkpoints", str(trained_run / "best"), str(trained_run), "--names", "best", "run",
                 "--data", str(char_data), "--split", "valid", "--max-tokens", "150", "--start", "4", "--step", "4",
                 "--max-context", "12", "--out", str(tmp_path / "out"), "--no-progress", "--json"]) == 0
    text = capsys.readouterr().out
    assert "best: memory method: span seg_len 4, mem_len 12, no clamp, same_length off" in text
    assert json.loads(text.strip().splitlines()[-1])["recl"] == group.to_dict()["recl"]
    with pytest.raises(TransformerXLError, match="distinct name"):
        recl_of_checkpoints([trained_run, trained_run], char_data, split="valid", contexts=[4, 8])
