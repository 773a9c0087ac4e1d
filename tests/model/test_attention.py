"""Relative attention internals: rel_shift, masks, causality, the two execution paths, the variants."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.model import AttentionContext, XLRelativeAttention, attention_mask, rel_shift
from transformer_xl.model.embedding import SinusoidPositionEmbedding, relative_positions

V = 30


def make_model(**overrides) -> TransformerXLLM:
    options = dict(n_token=V, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                   seg_len=5, mem_len=10)
    options.update(overrides)
    return randomize_(TransformerXLLM(ModelConfig(**options)).double().eval())


@pytest.mark.parametrize("qlen,mlen,clamp_len", [(5, 0, -1), (5, 7, -1), (1, 9, -1), (6, 4, 3), (4, 12, 6)])
def test_rel_shift_equals_naive_gather_float64(qlen, mlen, clamp_len):
    """(q_i + v) · W_kR R_{i+M-j} by direct indexing equals the shifted term on every unmasked entry."""
    config = ModelConfig(n_token=V, n_layer=1, n_head=3, d_model=12, d_head=4, d_inner=8, dropout=0.0,
                         clamp_len=clamp_len, untie_rel_bias=True)
    attn = randomize_(XLRelativeAttention(config).double())
    klen = qlen + mlen
    sinusoid = SinusoidPositionEmbedding(12).double()
    pos_emb = sinusoid(relative_positions(klen, clamp_len=clamp_len, device=torch.device("cpu")))
    ctx = AttentionContext(qlen=qlen, mlen=mlen, pos_emb=pos_emb,
                           mask=attention_mask(qlen=qlen, mlen=mlen, mem_len=mlen, same_length=False,
                                               device=torch.device("cpu")))
    q = torch.randn(2, 3, qlen, 4, dtype=torch.float64)
    _, unshifted = attn.position_terms(q * attn.scale, ctx)  # scaled, (B, H, T, K)
    shifted = rel_shift(unshifted) / attn.scale

    w_r = attn.r_net.weight.view(3, 4, 12)  # (H, D, C)
    checked = 0
    for i in range(qlen):
        for j in range(klen):
            if j > i + mlen:
                continue  # the future: masked, its value is irrelevant
            distance = i + mlen - j
            if clamp_len > 0:
                distance = min(distance, clamp_len)
            r = sinusoid(torch.tensor([float(distance)], dtype=torch.float64))[0]  # (C,)
            r_head = torch.einsum("hdc,c->hd", w_r, r)  # (H, D)
            expected = torch.einsum("bhd,hd->bh", q[:, :, i] + attn.r_r_bias[None], r_head)  # (B, H)
            torch.testing.assert_close(shifted[:, :, i, j], expected, atol=1e-12, rtol=1e-12)
            checked += 1
    assert checked == sum(min(klen, i + mlen + 1) for i in range(qlen))


class _GatherShiftAdd:
    """Reference for the fused shift-add: a plain gather, differentiated by autograd."""

    @staticmethod
    def apply(pos, base, mask_bias):
        qlen, klen = pos.shape[-2:]
        i = torch.arange(qlen)[:, None]
        j = torch.arange(klen)[None, :]
        index = (j + qlen - 1 - i).clamp(max=klen - 1).expand(*pos.shape)  # (B, H, T, K)
        return pos.gather(-1, index) + base + mask_bias


@pytest.mark.parametrize("attn_type", ["xl", "shaw"])
@pytest.mark.parametrize("attn_impl", ["explicit", "sdpa"])
def test_fused_shift_backward_equals_autograd_of_a_gather(monkeypatch, attn_type, attn_impl):
    model = make_model(attn_type=attn_type, attn_impl=attn_impl, same_length=True, mem_len=4)
    x = torch.randint(0, V, (2, 11))
    first = model(x[:, :5], x[:, 1:6])
    model(x[:, 5:10], x[:, 6:11], memory=first.memory).loss.sum().backward()
    fused = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    from transformer_xl.model import attention as attention_module
    monkeypatch.setattr(attention_module, "_RelShiftAdd", _GatherShiftAdd)
    first = model(x[:, :5], x[:, 1:6])
    model(x[:, 5:10], x[:, 6:11], memory=first.memory).loss.sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, fused[name], atol=1e-10, rtol=1e-10, msg=name)


def test_rel_shift_is_the_documented_alignment():
    scores = torch.arange(3 * 7, dtype=torch.float64).view(3, 7)  # T=3, K=7 (M=4)
    shifted = rel_shift(scores)
    for i in range(3):
        for j in range(i + 4 + 1):
            assert shifted[i, j] == scores[i, j + 3 - 1 - i]


def test_mask_causal_and_same_length():
    mask = attention_mask(qlen=3, mlen=2, mem_len=2, same_length=False, device=torch.device("cpu"))
    expected = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    same = attention_mask(qlen=3, mlen=2, mem_len=2, same_length=True, device=torch.device("cpu"))
    assert (~same).sum(-1).tolist() == [2, 2, 2]  # every query sees mem_len keys, itself included
    assert not same.all(-1).any()


def test_same_length_with_mem_len_zero_has_no_nan():
    model = make_model(mem_len=0, same_length=True)
    out = model(torch.randint(0, V, (2, 6)), torch.randint(0, V, (2, 6)), return_log_probs=True)
    assert torch.isfinite(out.loss).all() and torch.isfinite(out.log_probs).all()


def test_same_length_limits_a_one_layer_model_to_mem_len_positions():
    """With one layer, a prediction under same_length depends on exactly the last mem_len tokens."""
    model = make_model(n_layer=1, mem_len=4, same_length=True)
    x = torch.randint(0, V, (1, 12))
    ref = model(x[:, 6:], memory=model(x[:, :6]).memory, return_log_probs=True).log_probs  # (1, 6, V)
    far = x.clone()
    far[0, 2] = (far[0, 2] + 1) % V  # 4+ positions before every query of the second segment
    new = model(far[:, 6:], memory=model(far[:, :6]).memory, return_log_probs=True).log_probs
    torch.testing.assert_close(new, ref, atol=1e-10, rtol=0)
    near = x.clone()
    near[0, 3] = (near[0, 3] + 1) % V  # exactly mem_len - 1 before the first query: still seen
    new = model(near[:, 6:], memory=model(near[:, :6]).memory, return_log_probs=True).log_probs
    assert (new[:, 0] - ref[:, 0]).abs().max() > 1e-6
    torch.testing.assert_close(new[:, 1:], ref[:, 1:], atol=1e-10, rtol=0)


@pytest.mark.parametrize("attn_type", ["xl", "shaw", "vaswani", "al-rfou"])
def test_causality(attn_type):
    """Changing token t changes no output before t, with and without memory."""
    model = make_model(attn_type=attn_type)
    x = torch.randint(0, V, (2, 12))
    first = model(x[:, :5])
    ref = model(x[:, 5:], memory=first.memory, return_log_probs=True).log_probs  # (B, 7, V)
    t = 3  # position within the second segment
    x2 = x.clone()
    x2[:, 5 + t] = (x2[:, 5 + t] + 7) % V
    new = model(x2[:, 5:], memory=first.memory, return_log_probs=True).log_probs
    torch.testing.assert_close(new[:, :t], ref[:, :t], atol=1e-12, rtol=0)
    assert (new[:, t:] - ref[:, t:]).abs().max() > 1e-6  # and it does change the later ones
    full = model(x, return_log_probs=True).log_probs
    full2 = model(x2, return_log_probs=True).log_probs
    torch.testing.assert_close(full2[:, :5 + t], full[:, :5 + t], atol=1e-12, rtol=0)


@pytest.mark.parametrize("attn_type", ["xl", "shaw", "vaswani", "al-rfou"])
@pytest.mark.parametrize("pre_norm", [False, True])
def test_sdpa_path_equals_explicit_path(attn_type, pre_norm):
    config = dict(attn_type=attn_type, pre_norm=pre_norm, same_length=attn_type == "xl", mem_len=6)
    explicit = make_model(attn_impl="explicit", **config).float()
    sdpa = make_model(attn_impl="sdpa", **config).float()
    sdpa.load_state_dict(explicit.state_dict())
    x = torch.randint(0, V, (3, 10))
    mems_e = mems_s = None
    for seg in (x[:, :5], x[:, 5:]):
        out_e = explicit(seg, seg, memory=mems_e)
        out_s = sdpa(seg, seg, memory=mems_s)
        torch.testing.assert_close(out_s.loss, out_e.loss, atol=1e-5, rtol=1e-5)
        mems_e, mems_s = out_e.memory, out_s.memory
    out_e.loss.sum().backward()
    out_s.loss.sum().backward()
    for (name, p_e), p_s in zip(explicit.named_parameters(), sdpa.parameters()):
        torch.testing.assert_close(p_s.grad, p_e.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = make_model(cutoffs=(10,), div_val=2).float().train()
    ckpt = make_model(cutoffs=(10,), div_val=2, gradient_checkpointing=True).float().train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randint(0, V, (2, 10))
    first_p = plain(x[:, :5], x[:, :5])
    first_c = ckpt(x[:, :5], x[:, :5])
    plain(x[:, 5:], x[:, 5:], memory=first_p.memory).loss.sum().backward()
    ckpt(x[:, 5:], x[:, 5:], memory=first_c.memory).loss.sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-6, msg=name)


def test_attention_dropout_is_active_only_in_training():
    model = make_model(attn_dropout=0.5, attn_impl="explicit")
    x = torch.randint(0, V, (2, 6))
    torch.testing.assert_close(model(x, x).loss, model(x, x).loss)  # eval: deterministic
    model.train()
    assert (model(x, x).loss - model(x, x).loss).abs().max() > 0


def test_scale_is_one_over_sqrt_d_head():
    attn = XLRelativeAttention(ModelConfig(n_token=5, n_layer=1, n_head=2, d_model=8, d_head=9, d_inner=4))
    assert attn.scale == pytest.approx(1 / math.sqrt(9))


@pytest.mark.parametrize("qlen,klen", [(1, 1), (3, 7), (5, 5), (4, 12)])
def test_the_compile_friendly_rel_shift_agrees_on_every_unmasked_pair(qlen, klen):
    from transformer_xl.model.attention import _rel_shift_by_padding

    scores = torch.randn(2, 3, qlen, klen, dtype=torch.float64)
    visible = ~attention_mask(qlen=qlen, mlen=klen - qlen, mem_len=klen - qlen, same_length=False,
                              device=torch.device("cpu"))
    assert torch.equal(_rel_shift_by_padding(scores)[..., visible], rel_shift(scores)[..., visible])
