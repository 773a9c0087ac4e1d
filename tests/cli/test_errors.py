"""Every user mistake is one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.conftest import TINY_MODEL, TINY_TRAIN
from transformer_xl.cli import main


def _one_line_error(capsys: pytest.CaptureFixture, needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("extra,needle", [
    (["--preset", "nope"], "unknown preset"),
    (["--model.n_layer", "0"], "n_layer must be a positive integer"),
    (["--train.batch_size", "3", "--train.grad_accum", "2"], "divisible"),
    (["--model.mem_len", "-4"], "mem_len must be a non-negative integer"),
    (["--optim.schedule", "linear"], "optim.schedule"),
])
def test_bad_training_values(tmp_path: Path, char_data: Path, capsys, extra: list[str], needle: str) -> None:
    code = main(["train", "--data", str(char_data), "--out", str(tmp_path / "r"), *TINY_MODEL, *extra])
    assert code == 2
    _one_line_error(capsys, needle)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "D", "--out", "R", "--train.nope", "1"], "unrecognized arguments: --train.nope"),
    (["train", "--data", "D", "--out", "R", "--train.max_steps", "many"], "invalid int value"),
    (["train", "--data", "D", "--out", "R", "--train.max_st", "5"], "unrecognized arguments"),  # no abbreviations
    (["eval", "--checkpoint", "C", "--data", "D", "--mem-len", "x"], "invalid int value"),
])
def test_unknown_or_malformed_flags(capsys, argv: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    _one_line_error(capsys, needle)


def test_bad_toml_missing_data_and_resume_mismatch(tmp_path: Path, char_data: Path, trained_run: Path,
                                                   capsys) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[train]\nmax_stepz = 3\n")
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "a"), "--config", str(toml)]) == 2
    _one_line_error(capsys, "unknown train field(s) ['max_stepz']")
    assert main(["train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "b")]) == 2
    _one_line_error(capsys, "txl prepare")
    assert main(["train", "--data", str(char_data), "--out", str(trained_run), "--resume",
                 "--model.n_layer", "2", *TINY_TRAIN]) == 2
    _one_line_error(capsys, "model.n_layer was 1, now 2")
    assert main(["train", "--data", str(char_data), "--out", str(trained_run), *TINY_MODEL]) == 2
    _one_line_error(capsys, "pass --resume")


@pytest.mark.parametrize("flags,needle", [(["--seg-len", "0"], "seg_len"), (["--mem-len", "-1"], "mem_len")])
def test_out_of_range_span_values(trained_run: Path, char_data: Path, capsys, flags, needle) -> None:
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(char_data), *flags]) == 2
    _one_line_error(capsys, needle)


def test_real_subprocess_error_is_one_line(tmp_path: Path) -> None:
    txl = Path(sys.executable).with_name("txl")
    command = [str(txl)] if txl.exists() else [sys.executable, "-m", "transformer_xl.cli"]
    proc = subprocess.run([*command, "eval", "--checkpoint", str(tmp_path / "missing"), "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"txl eval: error: checkpoint not found: {tmp_path / 'missing'}"]
