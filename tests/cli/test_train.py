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


# --- issue 12.2 / 13: the run directory, defaults sized to the machine, small things -------------------------
def test_data_that_is_a_file_says_to_run_prepare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello world\n")
    assert main(["train", "--data", str(text), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "txl prepare --corpus text --path" in err
    assert not (tmp_path / "run").exists()


def test_resume_and_overwrite_together_is_an_error(tmp_path: Path, char_data: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "r"), *TINY_MODEL, *TINY_TRAIN]
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert "pass one of them" in capsys.readouterr().err


def test_fresh_run_refuses_then_overwrite_and_resume_through_the_cli(tmp_path: Path, char_data: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "r"), *TINY_MODEL, *TINY_TRAIN,
            "--train.max_steps", "2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "new"), *TINY_MODEL, *TINY_TRAIN,
                 "--train.max_steps", "2", "--resume"]) == 0  # nothing to resume yet: starts, and says so
    assert "no checkpoint in" in capsys.readouterr().err


def test_interrupted_summary_names_only_saved_checkpoints(tmp_path: Path, char_data: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    import signal

    from transformer_xl.training import loop

    class CtrlC(loop.StopSignals):
        def __enter__(self) -> "CtrlC":
            super().__enter__()
            self.received = signal.SIGINT  # as if Ctrl-C came during the first step
            return self

    monkeypatch.setattr(loop, "StopSignals", CtrlC)
    out = tmp_path / "r"
    assert main(["train", "--data", str(char_data), "--out", str(out), *TINY_MODEL, *TINY_TRAIN]) == 130
    stdout = capsys.readouterr().out
    assert f"checkpoints: {out / 'last'}\n" in stdout and "best" not in stdout
    assert not (out / "best").exists()


def test_threads_flag_and_plain_log_lines(tmp_path: Path, char_data: Path, capsys: pytest.CaptureFixture) -> None:
    import re

    import torch

    before = torch.get_num_threads()
    try:
        assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "r"), *TINY_MODEL, *TINY_TRAIN,
                     "--train.max_steps", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err  # not a terminal: timestamped lines, and the banner first
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d model: .* parameters .* tokens per step .* device cpu, "
                     r"1 threads, precision fp32", err, flags=re.M)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step 2/2 loss \d", err, flags=re.M)
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "r0"), "--threads", "0"]) == 2


def test_no_preset_sizes_the_model_to_the_device(char_data: Path) -> None:
    from transformer_xl.cli import build_parser
    from transformer_xl.cli.train import resolve_config
    from transformer_xl.config import ModelConfig

    def config(*extra: str, level: str = "char") -> RunConfig:
        args = build_parser().parse_args(["train", "--data", str(char_data), "--out", "unused", *extra])
        return resolve_config(args, n_token=40, level=level)

    small = ModelConfig.preset("char-small")
    chosen = config("--train.device", "cpu").model
    assert (chosen.n_layer, chosen.d_model, chosen.n_token) == (small.n_layer, small.d_model, 40)
    assert config("--train.device", "cpu").optim.lr == 1e-3  # the small model's rate, below the flags:
    assert config("--train.device", "cpu", "--optim.lr", "0.01").optim.lr == 0.01
    assert config("--train.device", "cpu", level="word").model.div_val == ModelConfig.preset("word-small").div_val
    assert config("--train.device", "cpu", level="word").model.cutoffs == ()  # 40 words: no cluster fits
    assert resolve_config(build_parser().parse_args(["train", "--data", "d", "--out", "o", "--train.device", "cpu"]),
                          n_token=5000, level="word").model.cutoffs == (2000,)
    # any model setting, or a preset, is the user's choice: no automatic preset
    assert config("--train.device", "cpu", "--model.n_layer", "3").model.d_model == ModelConfig(n_token=40).d_model
    assert config("--train.device", "cpu", "--preset", "tiny").model.d_model == 64


def test_every_compute_command_has_threads_and_txl_has_a_version(capsys: pytest.CaptureFixture) -> None:
    from transformer_xl import __version__

    commands = [["train"], ["eval"], ["score"], ["generate"], ["recl"], ["ablate"], ["analyze", "position"],
                ["analyze", "context"], ["analyze", "speed"]]
    for command in commands:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "--threads N" in capsys.readouterr().out, command
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"txl {__version__}"


def test_help_lists_choices_instead_of_constant_names(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one of xl, shaw, vaswani, al-rfou" in text and "ATTENTION_TYPES" not in text
    assert "TRAIN_STREAMS" not in text
