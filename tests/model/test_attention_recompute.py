"""Selective recomputation (``recompute_attention``): same losses and gradients, fewer saved bytes.

The flag checkpoints each layer's score block (positional term, scores, softmax, dropout, weighted sum),
so backward keeps q, k and v and recomputes the (B, H, T, K) tensors. Attention dropout must draw the
very same mask in the recomputation (checkpoint restores the RNG state), hence dropout > 0 everywhere.
"""

from __future__ import annotations

import os

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM, apply_device_kernels
from transformer_xl.config import ConfigError

V = 30


def make_pair(**overrides) -> tuple[TransformerXLLM, TransformerXLLM]:
    """The same weights without and with the flag, in training mode, fp32."""
    options = dict(n_token=V, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.1,
                   attn_dropout=0.3, seg_len=5, mem_len=7)
    options.update(overrides)
    plain = randomize_(TransformerXLLM(ModelConfig(**options))).train()
    flagged = TransformerXLLM(ModelConfig(**options, recompute_attention=True)).train()
    flagged.load_state_dict(plain.state_dict())
    return plain, flagged


def two_segments(model: TransformerXLLM, x: torch.Tensor, seed: int = 3, **span) -> torch.Tensor:
    """Loss of two segments (the second attends to the first's memory), backward run; returns the loss."""
    torch.manual_seed(seed)
    first = model(x[:, :5], x[:, 1:6], **span)
    second = model(x[:, 5:10], x[:, 6:11], memory=first.memory, **span)
    loss = first.loss.mean() + second.loss.mean()
    loss.backward()
    return loss.detach()


def assert_same_gradients(plain: TransformerXLLM, flagged: TransformerXLLM) -> None:
    checked = 0
    for (name, p), q in zip(plain.named_parameters(), flagged.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-5, msg=name)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("attn_type", ["xl", "shaw", "vaswani", "al-rfou"])
@pytest.mark.parametrize("span", [{}, {"same_length": True, "clamp_len": 3}])
def test_same_loss_and_gradients_with_dropout(attn_type, span):
    plain, flagged = make_pair(attn_type=attn_type, untie_rel_bias=attn_type == "xl" and bool(span))
    x = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(1))
    loss_plain = two_segments(plain, x, **span)
    loss_flagged = two_segments(flagged, x, **span)
    torch.testing.assert_close(loss_flagged, loss_plain, atol=1e-6, rtol=1e-6)
    assert_same_gradients(plain, flagged)
    # the dropout masks really matter: another seed gives another loss
    assert abs(two_segments(plain, x, seed=4) - loss_plain) > 1e-4


def test_same_gradients_with_cpu_kernels_and_layer_checkpointing():
    """The training path: CheapDropout draws from the default generator; nested in whole-layer checkpoints."""
    plain, flagged = make_pair(d_model=32, d_inner=64, gradient_checkpointing=False)
    nested = TransformerXLLM(flagged.config.replace(gradient_checkpointing=True)).train()
    nested.load_state_dict(plain.state_dict())
    x = torch.randint(0, V, (4, 11), generator=torch.Generator().manual_seed(2))
    for model in (plain, flagged, nested):
        apply_device_kernels(model, "cpu")
    loss_plain = two_segments(plain, x)
    torch.testing.assert_close(two_segments(flagged, x), loss_plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(two_segments(nested, x), loss_plain, atol=1e-6, rtol=1e-6)
    assert_same_gradients(plain, flagged)
    assert_same_gradients(plain, nested)


def test_same_under_bf16_autocast():
    """checkpoint replays the autocast state: the recomputed bf16 block is the one the forward ran."""
    plain, flagged = make_pair()
    x = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_plain, loss_flagged = two_segments(plain, x), two_segments(flagged, x)
    torch.testing.assert_close(loss_flagged, loss_plain, atol=0, rtol=0)
    assert_same_gradients(plain, flagged)


def test_sdpa_path_same_gradients():
    plain, flagged = make_pair(attn_impl="sdpa", attn_dropout=0.0)
    x = torch.randint(0, V, (2, 11), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(two_segments(flagged, x), two_segments(plain, x), atol=1e-6, rtol=1e-6)
    assert_same_gradients(plain, flagged)


def test_rng_stream_after_a_step_is_unchanged():
    """Recomputing in backward must not consume random numbers the next step would have drawn."""
    plain, flagged = make_pair()
    x = torch.randint(0, V, (2, 11))
    two_segments(plain, x)
    after_plain = torch.rand(4)
    two_segments(flagged, x)
    torch.testing.assert_close(torch.rand(4), after_plain)


def saved_bytes(model: TransformerXLLM, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward of one training forward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x[:, :16], x[:, 1:17]).loss.mean()
    return sum(storages.values())


def test_flag_saves_the_attention_tensors():
    plain, flagged = make_pair(n_layer=3, n_head=4, d_model=32, seg_len=16, mem_len=0, attn_dropout=0.1)
    x = torch.randint(0, V, (4, 17))
    probs_bytes = 4 * 4 * 16 * 16 * 4  # (B, H, T, K) fp32
    saved_plain, saved_flagged = saved_bytes(plain, x), saved_bytes(flagged, x)
    # per layer at least the probabilities, the positional term and the dropout mask are gone
    assert saved_plain - saved_flagged >= 3 * (2 * probs_bytes + probs_bytes // 4)


def test_flag_is_off_at_inference_and_validated():
    plain, flagged = make_pair()
    plain.eval(), flagged.eval()
    x = torch.randint(0, V, (2, 6))
    torch.testing.assert_close(flagged(x, x).loss, plain(x, x).loss, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="recompute_attention"):
        ModelConfig(n_token=V, recompute_attention="yes")


def test_cli_flag_reaches_the_model_config():
    import argparse

    from transformer_xl.cli.flags import add_config_flags, overrides

    parser = argparse.ArgumentParser()
    add_config_flags(parser, "model", ModelConfig)
    changes = overrides(parser.parse_args(["--model.recompute_attention", "true"]), "model")
    assert changes == {"recompute_attention": True}
    model = TransformerXLLM(ModelConfig(n_token=V, n_layer=1, d_model=16, n_head=2, d_head=8, d_inner=16, **changes))
    assert model.layers[0].dec_attn.recompute


CUDA = torch.device(os.environ.get("TXL_CUDA_TESTS_DEVICE", "cuda"))  # as tests/cuda: cpu for a dry run


@pytest.mark.cuda
@pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
def test_same_gradients_on_cuda_with_dropout(attn_impl):
    """On the GPU the checkpoint must replay the CUDA generator too (SDPA's and nn.Dropout's masks)."""
    plain, flagged = make_pair(attn_impl=attn_impl, d_model=32, d_inner=64)
    plain, flagged = plain.to(CUDA), flagged.to(CUDA)
    x = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(7)).to(CUDA)
    torch.testing.assert_close(two_segments(flagged, x), two_segments(plain, x), atol=1e-5, rtol=1e-5)
    assert_same_gradients(plain, flagged)
