"""The training loop: accumulation chunks keep their own memory, bf16 autocast, metrics, errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.tiny import tiny_data, tiny_run_config
from transformer_xl.config import OptimConfig, TransformerXLError
from transformer_xl.training import train


@pytest.mark.slow
def test_accumulation_chunks_equal_one_big_batch(tmp_path: Path) -> None:
    # streams are independent, so 2 chunks of 2 streams (each with its own memory) give the gradient
    # of one batch of 4 streams
    data = tiny_data()
    one = train(tiny_run_config(dropout=0.0, grad_accum=1, max_steps=5), data=data, out=tmp_path / "one")
    two = train(tiny_run_config(dropout=0.0, grad_accum=2, max_steps=5), data=data, out=tmp_path / "two")
    np.testing.assert_allclose(one.losses, two.losses, rtol=1e-5)
    a, b = load_file(tmp_path / "one/last/model.safetensors"), load_file(tmp_path / "two/last/model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 2e-5


@pytest.mark.slow
def test_metrics_jsonl_and_learning(tmp_path: Path) -> None:
    # a learnable sequence: the loss must fall
    data = {"train": np.tile(np.arange(10), 60), "valid": np.tile(np.arange(10), 10)}
    config = dataclasses.replace(tiny_run_config(dropout=0.0, max_steps=30, eval_every=10, save_every=0),
                                 optim=OptimConfig(lr=1e-2))
    result = train(config, data=data, out=tmp_path)
    assert result.losses[-1] < 0.5 * result.losses[0]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 31))
    assert {"lr", "tokens_per_s", "grad_norm"} <= set(train_rows[0])
    assert [r["step"] for r in rows if "valid_loss" in r] == [10, 20, 30]
    assert result.best_valid_loss == min(r["valid_loss"] for r in rows if "valid_loss" in r)


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    result = train(tiny_run_config(precision="bf16", max_steps=2, eval_every=0, save_every=0),
                   data=tiny_data(), out=None)
    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)


def test_fp16_needs_cuda_and_data_must_fit_the_vocabulary() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(TransformerXLError, match="fp16 needs CUDA"):
            train(tiny_run_config(precision="fp16", device="cpu"), data=tiny_data(), out=None)
    with pytest.raises(TransformerXLError, match="beyond model.n_token"):
        train(tiny_run_config(), data={"train": np.arange(200)}, out=None)
