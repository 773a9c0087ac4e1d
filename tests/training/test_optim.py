"""Parameter groups: no weight decay on biases, LayerNorm, u/v; matrices and embeddings decay; tied ones once."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from training.tiny import tiny_data, tiny_run_config
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.config import OptimConfig
from transformer_xl.training import train
from transformer_xl.training.checkpoint import load_training_state
from transformer_xl.training.optim import build_optimizer, parameter_groups

SMALL = dict(n_token=40, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32)


def _names(model: TransformerXLLM, weight_decay: float = 0.1) -> dict[str, list[str]]:
    return {g["group"]: g["names"] for g in parameter_groups(model, weight_decay)}


def test_groups_by_name_with_adaptive_softmax_and_tied_weights() -> None:
    torch.manual_seed(0)
    model = TransformerXLLM(ModelConfig(**SMALL, cutoffs=(10, 20), div_val=2))
    groups = _names(model)
    layer_no_decay = {f"layers.{i}.{name}" for i in range(2) for name in (
        "dec_attn.layer_norm.weight", "dec_attn.layer_norm.bias", "pos_ff.layer_norm.weight",
        "pos_ff.layer_norm.bias", "pos_ff.CoreNet.0.bias", "pos_ff.CoreNet.3.bias")}
    out_biases = {f"crit.out_layers.{i}.bias" for i in range(3)}
    assert set(groups["no_decay"]) == {"r_w_bias", "r_r_bias", "crit.cluster_bias"} | layer_no_decay | out_biases
    decay = set(groups["decay"])
    assert {"word_emb.emb_layers.0.weight", "word_emb.emb_projs.1", "crit.cluster_weight",
            "layers.0.dec_attn.qkv_net.weight", "layers.1.dec_attn.r_net.weight",
            "layers.1.pos_ff.CoreNet.3.weight"} <= decay
    # every trainable parameter exactly once; the softmax's tied weights and projections are the embedding's
    listed = [p for g in parameter_groups(model, 0.1) for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == len(list(model.parameters()))
    shared = {n for n, _ in model.named_parameters(remove_duplicate=False)} - decay - set(groups["no_decay"])
    assert "crit.out_layers.0.weight" in shared and "crit.out_projs.1" in shared


@pytest.mark.parametrize("attn_type", ["shaw", "xl-untied"])
def test_groups_of_per_layer_biases(attn_type: str) -> None:
    config = (ModelConfig(**SMALL, attn_type="shaw") if attn_type == "shaw"
              else ModelConfig(**SMALL, untie_rel_bias=True))
    groups = _names(TransformerXLLM(config))
    for i in range(2):
        assert f"layers.{i}.dec_attn.r_w_bias" in groups["no_decay"]
        if attn_type == "shaw":
            assert f"layers.{i}.dec_attn.r_bias" in groups["no_decay"]  # one bias per distance and head
            assert f"layers.{i}.dec_attn.r_emb" in groups["decay"]  # a learned embedding of distances
        else:
            assert f"layers.{i}.dec_attn.r_r_bias" in groups["no_decay"]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_decay_changes_matrices_only(optimizer: str) -> None:
    # the same gradients through two optimisers, with and without weight decay: the no_decay parameters
    # (biases, LayerNorm, u and v) end bitwise equal, every decayed one differs
    torch.manual_seed(0)
    model = TransformerXLLM(ModelConfig(**SMALL, cutoffs=(10, 20), div_val=2, dropout=0.0))
    twin = copy.deepcopy(model)
    x, y = torch.randint(0, 40, (2, 8)), torch.randint(0, 40, (2, 8))
    for m in (model, twin):
        m(x, targets=y).loss.mean().backward()
    # LayerNorm and bias parameters start at 1 and 0: move them, so that a decay would show
    with torch.no_grad():
        for a, b in zip(model.parameters(), twin.parameters()):
            a.add_(0.5)
            b.add_(0.5)
    decayed = build_optimizer(model, OptimConfig(optimizer=optimizer, lr=0.01, weight_decay=0.5))
    plain = build_optimizer(twin, OptimConfig(optimizer=optimizer, lr=0.01, weight_decay=0.0))
    decayed.step()
    plain.step()
    groups = _names(model)
    after, reference = dict(model.named_parameters()), dict(twin.named_parameters())
    for name in groups["no_decay"]:
        assert torch.equal(after[name], reference[name]), name
    for name in groups["decay"]:
        assert not torch.equal(after[name], reference[name]), name
    assert [g["weight_decay"] for g in decayed.param_groups] == [0.5, 0.0]


def test_training_checkpoint_holds_both_groups(tmp_path) -> None:
    config = tiny_run_config(max_steps=1, eval_every=0)
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, optimizer="adamw",
                                                                   weight_decay=0.01))
    train(config, data=tiny_data(), out=tmp_path)
    groups = load_training_state(tmp_path / "last")["optimizer"]["param_groups"]
    assert [(g["group"], g["weight_decay"]) for g in groups] == [("decay", 0.01), ("no_decay", 0.0)]
    assert "r_w_bias" in groups[1]["names"] and "word_emb.emb_layers.0.weight" in groups[0]["names"]
