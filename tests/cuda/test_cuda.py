"""CUDA-only paths, each against a reference that runs anywhere. Skipped without a GPU.

Run on a GPU machine with `pytest -m cuda` (benchmarks/gpu_check.sh does). Every test compares the
GPU result with the same computation in float64 on the CPU or with the other code path on the GPU, so
a wrong kernel, a missing synchronisation or a dtype slip fails here rather than in a user's run.
`TXL_CUDA_TESTS_DEVICE=cpu` runs them on the CPU instead (gpu_check.sh --dry-run): that checks the tests
themselves, not the GPU; the CUDA-only parts (fp16 with the grad scaler) are skipped there.
"""

from __future__ import annotations

import os

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, SegmentRunner, Span, TransformerXLLM, apply_device_kernels, evaluate

CUDA = torch.device(os.environ.get("TXL_CUDA_TESTS_DEVICE", "cuda"))
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")]
needs_real_cuda = pytest.mark.skipif(CUDA.type != "cuda", reason="CUDA only (grad scaler)")

V = 50


def make_model(**overrides) -> TransformerXLLM:
    options = dict(n_token=V, n_layer=2, n_head=4, d_model=64, d_head=16, d_inner=128, dropout=0.0,
                   seg_len=16, mem_len=32, cutoffs=(10, 30), div_val=2)
    options.update(overrides)
    return randomize_(TransformerXLLM(ModelConfig(**options)), std=0.1).eval()


def on_cuda(model: TransformerXLLM) -> TransformerXLLM:
    gpu = TransformerXLLM(model.config)
    gpu.load_state_dict(model.state_dict())
    return apply_device_kernels(gpu.to(CUDA).eval(), CUDA)


@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("same_length", [False, True])
def test_segmented_on_cuda_equals_one_pass_on_the_cpu_in_float64(attn_impl, same_length):
    model = make_model(attn_impl=attn_impl, same_length=same_length, mem_len=64)
    tokens = torch.randint(0, V, (3, 49))
    reference = TransformerXLLM(model.config).double()
    reference.load_state_dict(model.state_dict())
    full = reference.eval()(tokens[:, :-1], tokens[:, 1:], mem_len=64).loss
    runner = SegmentRunner(on_cuda(model), span=Span(seg_len=16, mem_len=64, same_length=same_length))
    with torch.no_grad():
        losses = [out.loss for _, _, out in runner.run(tokens[:, :-1].to(CUDA), tokens[:, 1:].to(CUDA))]
    torch.testing.assert_close(torch.cat(losses, 1).double().cpu(), full, atol=2e-4, rtol=0)


def test_sdpa_with_the_positional_bias_equals_the_explicit_path_with_gradients():
    explicit = on_cuda(make_model(attn_impl="explicit")).train()
    sdpa = on_cuda(make_model(attn_impl="sdpa")).train()
    sdpa.load_state_dict(explicit.state_dict())
    x = torch.randint(0, V, (4, 32), device=CUDA)
    first_e, first_s = explicit(x[:, :16], x[:, 1:17]), sdpa(x[:, :16], x[:, 1:17])
    out_e = explicit(x[:, 16:31], x[:, 17:32], memory=first_e.memory)
    out_s = sdpa(x[:, 16:31], x[:, 17:32], memory=first_s.memory)
    torch.testing.assert_close(out_s.loss, out_e.loss, atol=1e-4, rtol=1e-4)
    out_e.loss.sum().backward()
    out_s.loss.sum().backward()
    for (name, p_e), p_s in zip(explicit.named_parameters(), sdpa.parameters()):
        torch.testing.assert_close(p_s.grad, p_e.grad, atol=1e-3, rtol=1e-3, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_losses_stay_close_to_fp32(dtype):
    model = on_cuda(make_model())
    x = torch.randint(0, V, (4, 33), device=CUDA)
    with torch.no_grad():
        fp32 = model(x[:, :-1], x[:, 1:]).loss
        with torch.autocast(CUDA.type, dtype=dtype):
            low = model(x[:, :-1], x[:, 1:]).loss
    assert low.dtype == torch.float32  # the log-softmax runs in full precision
    assert (low - fp32).abs().mean() < 0.05 * fp32.abs().mean()


def test_the_kv_cache_on_cuda_changes_nothing():
    model = on_cuda(make_model())
    x = torch.randint(0, V, (2, 81), device=CUDA)
    span = Span(seg_len=8, mem_len=24)
    with torch.no_grad():
        cached = [o.log_probs for _, _, o in SegmentRunner(model, span=span).run(x[:, :-1], x[:, 1:],
                                                                                 return_log_probs=True)]
        plain = [o.log_probs for _, _, o in SegmentRunner(model, span=span, use_kv_cache=False).run(
            x[:, :-1], x[:, 1:], return_log_probs=True)]
    torch.testing.assert_close(torch.cat(cached, 1), torch.cat(plain, 1), atol=1e-5, rtol=0)


def test_evaluate_on_cuda_equals_evaluate_on_the_cpu():
    model = make_model()
    tokens = torch.randint(0, V, (600,))
    cpu = evaluate(model, tokens, seg_len=16, mem_len=48, batch_size=3)
    gpu = evaluate(on_cuda(model), tokens, seg_len=16, mem_len=48, batch_size=3, device=CUDA)
    assert gpu.n_tokens == cpu.n_tokens
    assert abs(gpu.loss - cpu.loss) < 1e-4


def test_compiled_model_on_cuda_equals_eager():
    model = on_cuda(make_model())
    compiled = torch.compile(model)
    x = torch.randint(0, V, (2, 49), device=CUDA)
    eager_runner, compiled_runner = SegmentRunner(model), SegmentRunner(compiled)
    with torch.no_grad():
        for start in range(0, 48, 16):
            a = eager_runner.step(x[:, start:start + 16], x[:, start + 1:start + 17]).loss
            b = compiled_runner.step(x[:, start:start + 16], x[:, start + 1:start + 17]).loss
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=needs_real_cuda)])
def test_training_on_cuda_with_autocast_and_the_grad_scaler(tmp_path, precision):
    from statistics import mean

    from transformer_xl import OptimConfig, RunConfig, TrainConfig, train

    config = RunConfig(model=make_model().config, optim=OptimConfig(lr=3e-3),
                       train=TrainConfig(batch_size=4, max_steps=60, eval_every=0, save_every=0, log_every=10,
                                         precision=precision, device=str(CUDA), tensorboard=False))
    tokens = torch.arange(4000) % V  # a cycle a small model learns in a few dozen steps
    result = train(config, data={"train": tokens.numpy(), "valid": tokens[:400].numpy()}, out=tmp_path / "run",
                   progress=False)
    assert result.step == 60 and result.skipped_steps == 0
    assert mean(result.losses[-10:]) < 0.7 * mean(result.losses[:10])  # measured on CPU bf16: 4.55 -> 2.36
