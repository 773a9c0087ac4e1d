"""Model-level properties: parameter counts of the paper presets, initialisation, overfitting, API."""

from __future__ import annotations

import pytest
import torch

from transformer_xl import ModelConfig, TransformerXLError, TransformerXLLM, XLOutput

# Counts of the released original code (kimiyoung/transformer-xl, pytorch/mem_transformer.py)
# instantiated with the same settings; tied parameters counted once.
RELEASED_COUNTS = {
    "wt103-base": 151_107_538,
    "wt103-large": 285_170_506,
    "enwik8-base": 41_055_436,
    "enwik8-large": 277_231_820,
    "text8-large": 277_050_395,
    "lm1b-base": 357_812_082,
    "lm1b-large": 841_295_982,
}


@pytest.mark.parametrize("name", sorted(RELEASED_COUNTS))
def test_preset_parameter_counts_match_the_released_code(name):
    with torch.device("meta"):
        model = TransformerXLLM(ModelConfig.preset(name))
    assert model.num_parameters() == RELEASED_COUNTS[name]


def test_initialisation_follows_the_original():
    config = ModelConfig(n_token=2000, n_layer=2, n_head=4, d_model=64, d_head=16, d_inner=256,
                         cutoffs=(500,), div_val=2)
    model = TransformerXLLM(config)
    qkv = model.layers[0].dec_attn.qkv_net.weight
    assert abs(qkv.std().item() - 0.02) < 0.002
    assert abs(model.word_emb.emb_projs[0].std().item() - 0.01) < 0.001
    assert torch.all(model.layers[0].pos_ff.CoreNet[0].bias == 0)
    assert abs(model.layers[0].pos_ff.layer_norm.weight.mean().item() - 1.0) < 0.01
    assert abs(model.r_w_bias.std().item() - 0.02) < 0.01


def test_a_tiny_model_overfits_one_batch():
    config = ModelConfig(n_token=32, n_layer=2, n_head=2, d_model=32, d_head=16, d_inner=64, dropout=0.0,
                         seg_len=16, mem_len=16)
    model = TransformerXLLM(config)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    tokens = torch.randint(0, 32, (4, 33))
    loss = None
    for _ in range(300):
        out = model(tokens[:, :16], tokens[:, 1:17])
        out2 = model(tokens[:, 16:32], tokens[:, 17:33], memory=out.memory)
        loss = torch.cat([out.loss, out2.loss], 1).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.1


def test_output_shapes_and_prefix_targets():
    model = TransformerXLLM(ModelConfig.preset("tiny")).eval()
    x = torch.randint(0, 256, (3, 10))
    out = model(x, x[:, -4:], return_log_probs=True, return_hidden=True)
    assert isinstance(out, XLOutput)
    assert out.loss.shape == (3, 4) and out.log_probs.shape == (3, 4, 256) and out.hidden.shape == (3, 4, 64)
    assert len(out.memory.states) == 2 and out.memory.states[0].shape == (3, 10, 64)
    assert model(x).loss is None


@pytest.mark.parametrize("bad", [
    lambda: torch.randint(0, 256, (10,)),  # not (B, T)
    lambda: torch.full((2, 5), 300),  # outside the vocabulary
    lambda: torch.full((2, 5), -1),
    lambda: torch.zeros(2, 5),  # float tokens
])
def test_bad_inputs_raise_clear_errors(bad):
    model = TransformerXLLM(ModelConfig.preset("tiny"))
    with pytest.raises(TransformerXLError):
        model(bad())


def test_mismatched_memory_and_targets_raise():
    model = TransformerXLLM(ModelConfig.preset("tiny"))
    x = torch.randint(0, 256, (2, 5))
    with pytest.raises(TransformerXLError, match="memory"):
        model(x, memory=(torch.zeros(3, 4, 64),) * 2)
    with pytest.raises(TransformerXLError, match="targets"):
        model(x, torch.randint(0, 256, (2, 6)))


def test_a_call_runs_at_other_lengths_without_changing_the_model():
    model = TransformerXLLM(ModelConfig.preset("tiny"))
    trained = model.config
    out = model(torch.randint(0, 256, (1, 60)), mem_len=100, clamp_len=50, same_length=True)
    out = model(torch.randint(0, 256, (1, 60)), memory=out.memory, mem_len=100, clamp_len=50, same_length=True)
    assert out.memory.states[0].shape[1] == 100
    assert model.config is trained and model.config.mem_len == 32


@pytest.mark.parametrize("attn_type", ["vaswani", "al-rfou", "shaw"])
def test_variants_train_and_have_their_own_parameters(attn_type):
    model = TransformerXLLM(ModelConfig.preset("tiny", attn_type=attn_type, mem_len=0 if attn_type == "al-rfou" else 32))
    names = {name for name, _ in model.named_parameters()}
    assert not any("r_net" in n for n in names)
    assert ("r_w_bias" in names) is False
    x = torch.randint(0, 256, (2, 32))
    out = model(x, x)
    out.loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
