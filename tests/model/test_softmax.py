"""Adaptive embedding and projected adaptive log-softmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.model import AdaptiveEmbedding, ProjectedAdaptiveLogSoftmax

V = 50
CONFIGS = {
    "plain": dict(),
    "div1": dict(cutoffs=(10, 30), div_val=1),
    "div1-proj": dict(cutoffs=(10, 30), div_val=1, d_embed=24),
    "div4": dict(cutoffs=(10, 30), div_val=4, d_embed=32),
    "div2-untied": dict(cutoffs=(5,), div_val=2, tie_weight=False, tie_projs=(False, False)),
}


def make_config(**overrides) -> ModelConfig:
    options = dict(n_token=V, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0)
    options.update(overrides)
    return ModelConfig(**options)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_probabilities_sum_to_one_and_match_the_loss(name):
    crit = randomize_(ProjectedAdaptiveLogSoftmax(make_config(**CONFIGS[name])).double())
    hidden = torch.randn(40, 16, dtype=torch.float64)
    targets = torch.randint(0, V, (40,))
    log_probs = crit.log_probs(hidden)  # (N, V)
    assert log_probs.shape == (40, V)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(40, dtype=torch.float64))
    torch.testing.assert_close(crit(hidden, targets), -log_probs.gather(1, targets[:, None]).squeeze(1))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_losses_come_back_in_input_order(name):
    crit = randomize_(ProjectedAdaptiveLogSoftmax(make_config(**CONFIGS[name])).double())
    hidden = torch.randn(30, 16, dtype=torch.float64)
    targets = torch.randint(0, V, (30,))
    perm = torch.randperm(30)
    torch.testing.assert_close(crit(hidden[perm], targets[perm]), crit(hidden, targets)[perm])


def test_without_cutoffs_it_is_log_softmax_of_a_linear_layer():
    crit = randomize_(ProjectedAdaptiveLogSoftmax(make_config()).double())
    hidden = torch.randn(20, 16, dtype=torch.float64)
    layer = crit.out_layers[0]
    expected = F.log_softmax(F.linear(hidden, layer.weight, layer.bias), dim=-1)
    torch.testing.assert_close(crit.log_probs(hidden), expected)
    targets = torch.randint(0, V, (20,))
    torch.testing.assert_close(crit(hidden, targets), F.cross_entropy(
        F.linear(hidden, layer.weight, layer.bias), targets, reduction="none"))


def test_tail_cluster_probability_is_head_cluster_times_tail():
    crit = randomize_(ProjectedAdaptiveLogSoftmax(make_config(cutoffs=(10, 30), div_val=2)).double())
    hidden = torch.randn(5, 16, dtype=torch.float64)
    log_probs = crit.log_probs(hidden)
    head = F.log_softmax(crit._logits(hidden, *crit._cluster_params(0)), -1)  # (N, 10 + 2)
    # Mass of cluster 2 (tokens 30..49) equals the head's probability of its cluster logit (row 1).
    torch.testing.assert_close(log_probs[:, 30:].logsumexp(-1), head[:, 11])
    torch.testing.assert_close(log_probs[:, 10:30].logsumexp(-1), head[:, 10])


def test_adaptive_embedding_looks_up_each_cluster():
    config = make_config(cutoffs=(10, 30), div_val=2, d_embed=16)
    emb = randomize_(AdaptiveEmbedding(config).double())
    tokens = torch.tensor([[0, 9, 10, 29, 30, 49]])
    out = emb(tokens)  # (1, 6, 16)
    for pos, token in enumerate(tokens[0].tolist()):
        cluster = 0 if token < 10 else 1 if token < 30 else 2
        start = (0, 10, 30)[cluster]
        vector = emb.emb_layers[cluster].weight[token - start] @ emb.emb_projs[cluster].t()
        torch.testing.assert_close(out[0, pos], vector * 16 ** 0.5)


def test_tied_weights_and_projections_are_shared():
    model = TransformerXLLM(make_config(cutoffs=(10, 30), div_val=2))
    for out_layer, emb_layer in zip(model.crit.out_layers, model.word_emb.emb_layers):
        assert out_layer.weight is emb_layer.weight
    assert model.crit.out_projs[0] is not model.word_emb.emb_projs[0]  # tie_projs default (False, True, True)
    assert model.crit.out_projs[1] is model.word_emb.emb_projs[1]
    untied = TransformerXLLM(make_config(cutoffs=(10,), div_val=2, tie_weight=False, tie_projs=(False, False)))
    assert untied.crit.out_layers[0].weight is not untied.word_emb.emb_layers[0].weight


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loss_gradients_equal_autograd_of_log_softmax(name):
    """The fused NLL (logsumexp forward, softmax - one-hot backward) against plain autograd."""
    crit = randomize_(ProjectedAdaptiveLogSoftmax(make_config(**CONFIGS[name])).double())
    hidden = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (30,))
    weights = torch.rand(30, dtype=torch.float64)
    (crit(hidden, targets) * weights).sum().backward()
    fused = [hidden.grad.clone()] + [p.grad.clone() for p in crit.parameters()]
    hidden.grad = None
    crit.zero_grad()
    reference = -crit.log_probs(hidden).gather(1, targets[:, None]).squeeze(1)
    (reference * weights).sum().backward()
    for got, want in zip(fused, [hidden.grad] + [p.grad for p in crit.parameters()]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
