"""`txl train` end to end: config resolution, exact resume through the CLI, metrics and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.conftest import TINY_MODEL, TINY_TRAIN
from transformer_xl.cli import main
from transformer_xl.config import RunConfig


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_resume_through_the_cli_equals_one_run(tmp_path: Path, char_data: Path) -> None:
    # the cosine decays over decay_steps (default: max_steps): fixed here, so that stopping at step 3
    # and extending max_steps keeps the schedule of the 6-step run
    common = ["--data", str(char_data), *TINY_MODEL, *TINY_TRAIN, "--optim.decay_steps", "6"]
    assert main(["train", *common, "--out", str(tmp_path / "full"), "--train.max_steps", "6"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "split"), "--train.max_steps", "3"]) == 0
    # resume with only the new length: the saved run config provides everything else
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "split"), "--resume",
                 "--train.max_steps", "6", "--no-progress"]) == 0
    assert _losses(tmp_path / "split") == _losses(tmp_path / "full")
    assert len(_losses(tmp_path / "full")) == 6


def test_config_layers_preset_toml_flags(tmp_path: Path, char_data: Path, capsys: pytest.CaptureFixture) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "tiny"\n[model]\nn_layer = 1\nd_model = 16\nd_head = 8\nd_inner = 32\n'
                    'seg_len = 8\nmem_len = 8\n[optim]\nlr = 0.001\nschedule = "inv_sqrt"\nwarmup_steps = 1\n'
                    '[train]\nbatch_size = 4\nmax_steps = 2\n')
    out = tmp_path / "run"
    code = main(["train", "--data", str(char_data), "--out", str(out), "--config", str(toml),
                 "--optim.lr", "0.002", "--seed", "7", "--no-progress", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2
    saved = RunConfig.from_dict(json.loads((out / "last" / "run.json").read_text()))
    vocab = json.loads((out / "last" / "vocab.json").read_text())
    assert saved.model.n_token == vocab["size"]  # taken from the data, not the preset's 256
    assert saved.model.n_layer == 1 and saved.model.n_head == 2  # TOML over preset; preset fills the rest
    assert saved.optim.lr == 0.002 and saved.optim.schedule == "inv_sqrt"  # flag over TOML
    assert saved.train.seed == 7
    assert (saved.eval.seg_len, saved.eval.mem_len) == (16, 96)  # the tiny preset's evaluation lengths
    for name in ("config.json", "model.safetensors", "vocab.json", "run.json", "training_state.pt"):
        assert (out / "best" / name).exists() and (out / "last" / name).exists()


def test_train_streams_flag(tmp_path: Path, char_data: Path) -> None:
    from transformer_xl.training.checkpoint import load_training_state

    common = ["--data", str(char_data), *TINY_MODEL, *TINY_TRAIN, "--train.max_steps", "2"]
    assert main(["train", *common, "--out", str(tmp_path / "varlen"), "--train.streams", "varlen"]) == 0
    assert load_training_state(tmp_path / "varlen" / "last")["streams"]["kind"] == "varlen"
    assert main(["train", *common, "--out", str(tmp_path / "auto")]) == 0
    assert load_training_state(tmp_path / "auto" / "last")["streams"]["kind"] == "ordered"  # no sentences here
    # text prepared without sentence starts cannot be read as sentences: a one-line error, status 2
    assert main(["train", *common, "--out", str(tmp_path / "bad"), "--train.streams", "sentences"]) == 2
