"""Flags generated from the config dataclasses: types, help from the field comments, only given values."""

from __future__ import annotations

import argparse

import pytest

from transformer_xl.cli.flags import add_config_flags, field_help, one_line_errors, overrides
from transformer_xl.config import ModelConfig, TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = one_line_errors(argparse.ArgumentParser(prog="txl test", allow_abbrev=False))
    add_config_flags(parser, "model", ModelConfig)
    add_config_flags(parser, "train", TrainConfig)
    return parser


def test_types_and_only_given_values() -> None:
    args = _parser().parse_args(["--model.cutoffs", "10,20", "--model.d_embed", "none", "--model.same_length",
                                 "true", "--model.dropout", "0.2", "--train.compile", "0", "--train.max_steps", "9"])
    assert overrides(args, "model") == {"cutoffs": (10, 20), "d_embed": None, "same_length": True, "dropout": 0.2}
    assert overrides(args, "train") == {"compile": False, "max_steps": 9}
    assert overrides(_parser().parse_args([]), "model") == {}


def test_help_comes_from_the_field_comments() -> None:
    helps = field_help(TrainConfig)
    assert helps["grad_accum"].startswith("chunks per step")
    assert "--train.grad_accum" in _parser().format_help()


def test_bad_value_is_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["--model.same_length", "maybe"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected true or false" in err[0]


def test_default_threads_follow_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from transformer_xl import runtime

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert runtime.available_cpus() == 6 and runtime.default_threads() == 6
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four processes share the six CPUs
    assert runtime.default_threads() == 1


def test_a_second_prepare_on_one_out_is_refused(tmp_path, capsys: pytest.CaptureFixture) -> None:
    import os

    from transformer_xl.cli import main
    from transformer_xl.locks import DirectoryLock

    (tmp_path / "c.txt").write_text("abc\n" * 50)
    out = tmp_path / "data"
    with DirectoryLock(out):
        code = main(["prepare", "--corpus", "text", "--path", str(tmp_path / "c.txt"), "--out", str(out),
                     "--no-progress"])
    assert code == 2 and f"in use by process {os.getpid()}" in capsys.readouterr().err
    assert not (out / "meta.json").exists()
    assert main(["prepare", "--corpus", "text", "--path", str(tmp_path / "c.txt"), "--out", str(out),
                 "--no-progress"]) == 0
