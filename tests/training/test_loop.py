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


def _state(**train_overrides):
    from transformer_xl.runtime import DistInfo
    from transformer_xl.training.loop import load_data, setup

    return setup(tiny_run_config(**train_overrides), load_data(tiny_data()), out=None, resume=False,
                 device=torch.device("cpu"), info=DistInfo())


def test_a_skipped_step_keeps_weights_and_restores_each_chunks_memory() -> None:
    from transformer_xl.training.loop import agree, apply_or_skip, forward_backward
    from transformer_xl.training.signals import StopSignals

    state = _state()
    first = forward_backward(state)
    agree(state, first, StopSignals())
    assert not (first.bad or first.stop or first.signalled)
    apply_or_skip(state, first)
    memories = [runner.memory for runner in state.runners]
    assert len(memories) == 2 and all(m.batch_size == 2 and m.length == 8 for m in memories)  # 2 chunks of 2
    weights = {k: v.clone() for k, v in state.model.state_dict().items()}

    second = forward_backward(state)
    assert [runner.memory for runner in state.runners] != memories  # the forward moved the memory on
    second.loss = second.loss * float("nan")
    agree(state, second, StopSignals())
    assert second.bad
    apply_or_skip(state, second)
    assert all(a is b for a, b in zip((runner.memory for runner in state.runners), memories))
    assert all(torch.equal(weights[k], v) for k, v in state.model.state_dict().items())
    assert all(p.grad is None for p in state.params)
    assert (state.step, state.bad_run, state.result.skipped_steps) == (2, 1, 1)


def test_log_cadence_and_the_bad_step_policy() -> None:
    from transformer_xl.training.loop import NonFiniteLossError, StepOutcome, apply_or_skip, check_bad_steps, log_step

    state = _state(log_every=3, max_bad_steps=2)
    loss = torch.tensor(2.0)
    good = StepOutcome(loss=loss, grad_norm=None, lr=0.1, tokens=32, previous_memory=[None, None])
    apply_or_skip(state, good)
    assert log_step(state, good) is None and len(state.pending) == 1  # step 1 of 3: nothing written yet
    bad = StepOutcome(loss=loss * float("nan"), grad_norm=None, lr=0.1, tokens=32, previous_memory=[None, None],
                      bad=True)
    apply_or_skip(state, bad)
    record = log_step(state, bad)  # an event is logged at once, with the finite losses only
    assert record is not None and record["loss"] == 2.0 and record["skipped_steps"] == 1
    check_bad_steps(state, bad)  # 1 in a row: allowed
    apply_or_skip(state, bad)
    with pytest.raises(NonFiniteLossError, match="2 consecutive step.*no checkpoint was saved yet"):
        check_bad_steps(state, bad)


def test_prepared_lm1b_trains_on_shuffled_sentences(tmp_path: Path) -> None:
    from transformer_xl.data.cache import prepare_corpus
    from transformer_xl.training.checkpoint import load_training_state
    from transformer_xl.training.loop import load_data

    top = tmp_path / "1-billion-word-language-modeling-benchmark-r13output"
    words = "the cat sat on a mat and dog ran to it".split()
    sentences = [" ".join(words[(i + j) % len(words)] for j in range(2 + i % 5)) for i in range(60)]
    for folder, name, lines in (("training-monolingual.tokenized.shuffled", "news.en-00001-of-00100", sentences),
                                ("heldout-monolingual.tokenized.shuffled", "news.en.heldout-00000-of-00050",
                                 sentences[:10])):
        (top / folder).mkdir(parents=True)
        (top / folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "1b_word_vocab.txt").write_text("<S> 9\n</S> 9\n<UNK> 1\n" + "".join(f"{w} 1\n" for w in words),
                                                encoding="utf-8")
    prepare_corpus("lm1b", tmp_path, tmp_path / "data", progress=False)
    data = load_data(tmp_path / "data")
    assert data.train_sentences is not None and len(data.train_sentences) == 60
    config = tiny_run_config(max_steps=2, eval_every=0)
    config = dataclasses.replace(config, model=config.model.replace(n_token=len(data.vocab)))
    train(config, data=data, out=tmp_path / "run")  # train.streams=auto
    assert load_training_state(tmp_path / "run" / "last")["streams"]["kind"] == "sentences"
