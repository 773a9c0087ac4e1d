"""Checkpoints are atomic: a save killed at any point leaves the previous checkpoint loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.config import RunConfig, TransformerXLError
from transformer_xl.runtime import load_checkpoint, resolve_checkpoint
from transformer_xl.training.checkpoint import load_training_state, save_checkpoint

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from transformer_xl import ModelConfig, TransformerXLLM
    from transformer_xl.config import RunConfig
    from transformer_xl.training.checkpoint import save_checkpoint
    config = ModelConfig(n_token=20, n_layer=1, n_head=1, d_model=8, d_head=8, d_inner=16)
    torch.manual_seed(0)
    model = TransformerXLLM(config)
    save_checkpoint(sys.argv[1], model=model, run_config=RunConfig(model=config), training_state={"step": 1})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    os.environ["TXL_TEST_CHECKPOINT_PAUSE"] = sys.argv[2] + ":60"
    save_checkpoint(sys.argv[1], model=model, run_config=RunConfig(model=config), training_state={"step": 2})
""")


def _reference() -> TransformerXLLM:
    torch.manual_seed(0)
    return TransformerXLLM(ModelConfig(n_token=20, n_layer=1, n_head=1, d_model=8, d_head=8, d_inner=16))


@pytest.mark.parametrize("phase", ["write", "swap"])
def test_save_killed_midway_leaves_previous_checkpoint(tmp_path: Path, phase: str) -> None:
    target = tmp_path / "last"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(target), phase], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the second save is paused inside
        assert line.strip() == f"checkpoint paused at {phase}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    directory = resolve_checkpoint(target)  # ".last.old" when killed between the two renames
    assert load_training_state(directory)["step"] == 1
    loaded = load_checkpoint(target)
    model, run = loaded.model, loaded.run_config
    reference = _reference()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert run is not None and run.model == reference.config
    # the next save cleans up and completes normally
    save_checkpoint(target, model=reference, run_config=RunConfig(model=reference.config),
                    training_state={"step": 3})
    assert load_training_state(target)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_corrupt_or_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    model = _reference()
    save_checkpoint(tmp_path / "ck", model=model, run_config=RunConfig(model=model.config),
                    training_state={"step": 1})
    (tmp_path / "ck" / "training_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TransformerXLError):
        load_training_state(tmp_path / "ck")
    with pytest.raises(TransformerXLError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(TransformerXLError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path)
    # a run directory resolves to its best/, else last/
    (tmp_path / "run").mkdir()
    os.replace(tmp_path / "ck", tmp_path / "run" / "last")
    assert resolve_checkpoint(tmp_path / "run") == tmp_path / "run" / "last"


def test_training_state_refuses_pickled_objects(tmp_path: Path) -> None:
    model = _reference()
    save_checkpoint(tmp_path / "ck", model=model, run_config=RunConfig(model=model.config),
                    training_state={"step": 1})
    (tmp_path / "ck" / "checksums.json").unlink()  # else the checksum refuses the replaced file first
    torch.save({"format": 1, "evil": TransformerXLError("x")}, tmp_path / "ck" / "training_state.pt")
    with pytest.raises(TransformerXLError, match="refusing"):
        load_training_state(tmp_path / "ck")
