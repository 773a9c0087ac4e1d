"""Checks every optimiser of build_optimizer must pass end to end: an interrupted and resumed run equals
the uninterrupted one bitwise, and a tiny `txl train` run with it learns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from cli.conftest import TINY_MODEL, TINY_TRAIN, _prepare
from training.tiny import tiny_data, tiny_run_config
from transformer_xl.cli import main
from transformer_xl.config import OptimConfig, RunConfig
from transformer_xl.training import train


def assert_resume_is_exact(tmp_path: Path, optim: OptimConfig) -> None:
    """6 steps in one run against 3 + 3 with a resume: the same losses and final weights, no tolerance."""
    def config(max_steps: int) -> RunConfig:
        return dataclasses.replace(tiny_run_config(max_steps=max_steps), optim=optim)

    data = tiny_data()
    full = train(config(6), data=data, out=tmp_path / "full")
    first = train(config(3), data=data, out=tmp_path / "split")
    second = train(config(6), data=data, out=tmp_path / "split", resume=True)
    assert first.losses + second.losses == full.losses
    a = load_file(tmp_path / "full" / "last" / "model.safetensors")
    b = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_cli_run_learns(tmp_path: Path, optimizer: str, *flags: str) -> None:
    """30 steps of `txl train --optim.optimizer OPTIMIZER FLAGS` on a tiny char corpus: the mean loss of the
    last 5 steps is below 0.8x that of the first 5, and the saved run config names the optimiser."""
    data = _prepare(tmp_path, "char")
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--out", str(out), *TINY_MODEL, *TINY_TRAIN,
                 "--train.max_steps", "30", "--train.eval_every", "0", "--train.save_every", "0",
                 "--optim.optimizer", optimizer, *flags])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    saved = json.loads((out / "last" / "run.json").read_text())
    assert saved["optim"]["optimizer"] == optimizer
