"""`txl ablate` and its Python API (run_ablation): the four Table 6 rows trained at equal parameters and
tokens, scored, with RECL (tiny)."""

from __future__ import annotations

import json
from pathlib import Path

from transformer_xl.cli import main
from transformer_xl.config import ModelConfig, RunConfig, Span, TrainConfig
from transformer_xl.training.ablation import finished_run, run_ablation

MODEL = ["--model.n_layer", "1", "--model.d_model", "16", "--model.n_head", "2", "--model.d_head", "8",
         "--model.d_inner", "32", "--model.seg_len", "8", "--model.mem_len", "8", "--model.dropout", "0.0"]
TRAIN = ["--train.batch_size", "4", "--train.max_steps", "2", "--train.eval_every", "0", "--train.save_every", "0",
         "--train.log_every", "1", "--train.eval_max_tokens", "50"]


def test_ablate_trains_and_compares_the_rows(char_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ablate"
    assert main(["ablate", "--data", str(char_data), "--out", str(out), *MODEL, *TRAIN, "--split", "valid",
                 "--max-tokens", "60", "--start", "8", "--step", "8", "--max-context", "24", "--no-progress",
                 "--json"]) == 0
    text = capsys.readouterr().out
    assert "| Row | recurrence | encoding | params | bpc at train len |" in text
    result = json.loads(text.strip().splitlines()[-1])
    rows = {r["row"]: r for r in result["rows"]}
    assert list(rows) == ["xl", "shaw", "no-recurrence", "vanilla"]
    assert (rows["xl"]["attn_type"], rows["xl"]["recurrence"]) == ("xl", True)
    assert (rows["vanilla"]["attn_type"], rows["vanilla"]["recurrence"], rows["vanilla"]["method"]) == \
        ("al-rfou", False, "window")
    target = rows["xl"]["params"]
    for row in rows.values():  # equal parameter count, up to one d_inner unit (2 * d_model + 1)
        assert abs(row["params"] - target) <= 2 * 16 + 1, (row["row"], row["params"], target)
        assert row["train_attn_len"] == 8 and row["best_attn_len"] in (8, 16, 24)
        assert set(row["recl"]) == {"0.1", "0.5", "1.0"}
    assert rows["shaw"]["d_inner"] != 32 or rows["vanilla"]["d_inner"] != 32  # parameters were matched
    for row in rows:
        steps = [json.loads(line)["step"] for line in (out / row / "metrics.jsonl").read_text().splitlines()
                 if "loss" in json.loads(line)]
        assert steps[-1] == 2  # equal training tokens: same steps, batch and segment for every row
    assert (out / "report.md").exists() and (out / "recl" / "recl.json").exists()
    # a rerun reuses the finished rows (and the cached losses); another config in the same --out is refused
    args = ["ablate", "--data", str(char_data), "--out", str(out), *MODEL, *TRAIN, "--split", "valid",
            "--max-tokens", "60", "--start", "8", "--step", "8", "--max-context", "24", "--no-progress", "--json"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.count("reusing it") == 4 and json.loads(text.strip().splitlines()[-1])["rows"] == result["rows"]
    assert main([*args, "--optim.lr", "0.5"]) == 2
    assert "another run" in capsys.readouterr().err


def test_ablate_needs_memory_for_the_recurrent_rows(char_data: Path, tmp_path: Path, capsys) -> None:
    assert main(["ablate", "--data", str(char_data), "--out", str(tmp_path / "a"), *MODEL, "--model.mem_len", "0",
                 *TRAIN, "--no-progress"]) == 2
    assert "mem_len" in capsys.readouterr().err


def test_run_ablation_python_api(char_data: Path, tmp_path: Path) -> None:
    base = ModelConfig(n_token=1, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0, seg_len=8,
                       mem_len=8)  # n_token is set from the data's vocabulary
    lines: list[str] = []
    result = run_ablation(char_data, tmp_path / "api", base=base, rows=["xl", "vanilla"],
                          train_config=TrainConfig(batch_size=4, max_steps=2, eval_every=0, save_every=0,
                                                   tensorboard=False),
                          split="valid", max_tokens=40, contexts=[8, 16], ratios=(1.0,), device="cpu",
                          log=lines.append)
    assert [r["row"] for r in result.rows] == ["xl", "vanilla"] and result.contexts == [8, 16]
    assert [c.name for c in result.curves] == ["xl", "vanilla"] and result.curves[0].losses.shape == (2, 40)
    assert set(result.recl.recl[1.0]) == {"xl", "vanilla"} and result.curves[1].method == "window"
    assert result.rows[1]["recurrence"] is False and result.rows[1]["d_inner"] != 32
    assert result.spans["xl"] == Span(seg_len=8, mem_len=8)  # the training span (no saved eval settings)
    assert result.training_tokens == 2 * 4 * 8 and "| xl | yes | xl |" in result.table
    saved = json.loads((tmp_path / "api" / "ablation.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict()))
    assert sum("== " in line for line in lines) == 2
    assert finished_run(tmp_path / "api" / "xl", RunConfig(model=ModelConfig.from_dict(
        json.loads((tmp_path / "api" / "xl" / "last" / "config.json").read_text())),
        train=TrainConfig(batch_size=4, max_steps=2, eval_every=0, save_every=0, tensorboard=False)))
    assert not finished_run(tmp_path / "api" / "missing", RunConfig(model=base))
