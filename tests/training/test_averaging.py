"""The weight average (train.ema_decay): the bias-corrected mean it promises, a training trajectory it does
not touch, checkpoints and validation that use it, and an exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from training.tiny import tiny_data, tiny_run_config
from transformer_xl import evaluate, load_checkpoint
from transformer_xl.config import TrainConfig, TransformerXLError
from transformer_xl.training import loop, train
from transformer_xl.training.averaging import WeightAverage
from transformer_xl.training.checkpoint import load_training_state


def _expected_average(history: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The weighted mean of the weights visited, weights (1 - d) d^(t - i), normalised to sum to one."""
    t = len(history)
    weights = [(1 - decay) * decay ** (t - i) for i in range(1, t + 1)]
    total = sum(weights)
    return {name: sum(w * h[name] for w, h in zip(weights, history)) / total for name in history[0]}


def test_average_is_the_bias_corrected_weighted_mean() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    history = []
    for _ in range(7):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        history.append({n: p.detach().clone() for n, p in model.named_parameters()})
        average.update()
        if len(history) == 1:  # the first update is the weights themselves, not a mix with the initial ones
            assert all(torch.equal(average.average[n], history[0][n]) for n in history[0])
    expected = _expected_average(history, 0.9)
    for name, value in expected.items():
        torch.testing.assert_close(average.average[name], value, rtol=1e-5, atol=1e-6)


def test_applied_swaps_the_average_in_and_the_training_weights_back_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    average = WeightAverage(model, 0.5)
    average.update()
    with torch.no_grad():
        model.weight.mul_(3.0)
    average.update()
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with average.applied():
        for n, p in model.named_parameters():
            assert torch.equal(p, average.average[n])
        assert not torch.equal(model.weight, trained["weight"])  # the weight moved between the updates
    for n, p in model.named_parameters():
        assert torch.equal(p, trained[n])


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_ema_decay_outside_0_1_is_refused(value: float) -> None:
    with pytest.raises(TransformerXLError, match="ema_decay"):
        TrainConfig(ema_decay=value)


def test_averaged_run_trains_alike_and_saves_and_validates_the_average(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    history: list[dict[str, torch.Tensor]] = []
    real_update = WeightAverage.update

    def record(self: WeightAverage) -> None:
        history.append({n: p.detach().clone() for n, p in self.named.items()})
        real_update(self)

    monkeypatch.setattr(WeightAverage, "update", record)
    data = tiny_data()
    plain = train(tiny_run_config(max_steps=6), data=data, out=tmp_path / "plain")
    averaged = train(tiny_run_config(max_steps=6, ema_decay=0.7), data=data, out=tmp_path / "avg")
    assert averaged.losses == plain.losses  # the average is read, never stepped: the run is the same run
    assert len(history) == 6

    saved = load_checkpoint(tmp_path / "avg" / "last").model
    expected = _expected_average(history, 0.7)
    for name, p in saved.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-6)
    # the training weights travel in the training state: they are the plain run's final weights
    trained = load_training_state(tmp_path / "avg" / "last")["training_weights"]
    plain_model = load_checkpoint(tmp_path / "plain" / "last").model
    for name, p in plain_model.named_parameters():
        assert torch.equal(trained[name], p.detach())
    # the final validation scored the average (the model last/ holds), not the training weights
    config = tiny_run_config()
    check = evaluate(saved, data["valid"], batch_size=config.train.eval_batch_size)
    assert averaged.valid_loss == pytest.approx(check.loss, rel=1e-6)
    assert averaged.valid_loss != pytest.approx(plain.valid_loss, rel=1e-6)


@pytest.mark.slow
def test_averaged_run_resumes_exactly(tmp_path: Path) -> None:
    data = tiny_data()
    whole = train(tiny_run_config(max_steps=6, ema_decay=0.8), data=data, out=tmp_path / "whole")
    first = train(tiny_run_config(max_steps=3, save_every=3, ema_decay=0.8), data=data, out=tmp_path / "split")
    second = train(tiny_run_config(max_steps=6, ema_decay=0.8), data=data, out=tmp_path / "split", resume=True)
    assert first.losses + second.losses == whole.losses
    a = load_checkpoint(tmp_path / "whole" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "split" / "last").model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-7)
    # an averaged run resumed without the average goes on from its training weights, not the average
    off = train(tiny_run_config(max_steps=6), data=data, out=tmp_path / "plain", overwrite=True)
    train(tiny_run_config(max_steps=3, save_every=3, ema_decay=0.8), data=data, out=tmp_path / "off",
          overwrite=True)
    resumed = train(tiny_run_config(max_steps=6), data=data, out=tmp_path / "off", resume=True)
    assert resumed.losses == off.losses[3:]


def test_resume_refuses_training_weights_of_another_model(tmp_path: Path) -> None:
    data = tiny_data()
    train(tiny_run_config(max_steps=2, ema_decay=0.8), data=data, out=tmp_path)
    state = load_training_state(tmp_path / "last")
    state["training_weights"] = {"other." + k: v for k, v in state["training_weights"].items()}
    model_state = loop.TrainState.__new__(loop.TrainState)
    model = load_checkpoint(tmp_path / "last").model
    model_state.model, model_state.average = model, WeightAverage(model, 0.8)
    with pytest.raises(TransformerXLError, match="training weights"):
        loop.restore_weights(model_state, state, tmp_path / "last")
