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
