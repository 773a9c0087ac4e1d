"""Muon (training/muon.py): the Newton-Schulz iteration orthogonalises, the Muon groups step as
torch.optim.Muon does and the others as torch.optim.AdamW does (two code paths agree), bf16 iterations stay
close to fp32, exact state round trips, the parameter groups, a CLI run that learns, and exact resume."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from training.optimizer_runs import assert_cli_run_learns, assert_resume_is_exact
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.config import ConfigError, OptimConfig
from transformer_xl.training.muon import Muon, newton_schulz
from transformer_xl.training.optim import build_optimizer


@pytest.mark.parametrize("shape", [(8, 20), (20, 8), (12, 12)])
def test_newton_schulz_pushes_singular_values_to_about_one(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    # a badly conditioned matrix: singular values spread over two orders of magnitude (five iterations lift
    # ~1e-2 of the norm to the band; far smaller ones need more)
    u, _, v = torch.linalg.svd(torch.randn(*shape), full_matrices=False)
    s = torch.logspace(0, -2, min(shape))
    d = u @ torch.diag(s) @ v
    o = newton_schulz(d)
    sv = torch.linalg.svdvals(o)
    assert sv.min() > 0.6 and sv.max() < 1.25  # the quintic's band, not exactly 1
    # same singular vectors: o is close to u v^T
    assert torch.nn.functional.cosine_similarity(o.flatten(), (u @ v).flatten(), dim=0) > 0.95
    # a batch gives each matrix's own result
    batch = newton_schulz(torch.stack([d, 2 * d, -d]))
    for got, want in zip(batch, (o, o, -o)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                            torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
    b = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                            torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def _run(model: torch.nn.Module, opts: list[torch.optim.Optimizer], steps: int, seed: int = 1) -> None:
    torch.manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 6)
        for o in opts:
            o.zero_grad()
        model(x).square().mean().backward()
        for o in opts:
            o.step()


def _matrices(m: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [m[0].weight, m[2].weight, m[4].weight]


def _others(m: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [m[0].bias, m[2].bias, m[3].weight, m[3].bias, m[4].bias]


@pytest.mark.parametrize("ns_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_groups_step_as_torch_muon(nesterov: bool, ns_dtype: str) -> None:
    torch.manual_seed(0)
    shapes = [(8, 6), (16, 16), (3, 16)]
    start = [torch.randn(*shape) for shape in shapes]
    ours_params = [torch.nn.Parameter(w.clone()) for w in start]
    ref_params = [torch.nn.Parameter(w.clone()) for w in start]
    ours = Muon([{"params": ours_params, "muon": True}], lr=0.02, momentum=0.9, nesterov=nesterov,
                weight_decay=0.1, ns_dtype=ns_dtype)
    ref = torch.optim.Muon(ref_params, lr=0.02, momentum=0.9, nesterov=nesterov, weight_decay=0.1,
                           adjust_lr_fn="match_rms_adamw")
    for _ in range(4):  # the same gradients for both, so that only the rule can differ
        grads = [torch.randn(*shape) for shape in shapes]
        for params, opt in ((ours_params, ours), (ref_params, ref)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    # torch.optim.Muon always iterates in bf16 (and its momentum is an average where ours is a sum: the same
    # direction after the normalisation): the displacements agree to bf16's precision
    for a, b, w0 in zip(ours_params, ref_params, start):
        ours_move, ref_move = (a - w0).detach(), (b - w0).detach()
        assert ref_move.norm() > 0.05
        assert (ours_move - ref_move).norm() / ref_move.norm() < 0.03
    # a wrong rule (here: without the RMS-matching factor) would be far off
    assert (ours_move / (0.2 * 4) - ref_move).norm() / ref_move.norm() > 0.1


def test_other_groups_step_as_torch_adamw() -> None:
    ours_model, ref_model = _pair()
    ours = Muon([{"params": _others(ours_model), "muon": False}], lr=0.02, weight_decay=0.1, betas=(0.9, 0.99))
    ref = torch.optim.AdamW(_others(ref_model), lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    _run(ours_model, [ours], 4)
    _run(ref_model, [ref], 4)
    for a, b, w0 in zip(_others(ours_model), _others(ref_model), _others(_pair()[0])):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(a, w0)


def test_bf16_iterations_stay_close_to_fp32() -> None:
    torch.manual_seed(0)
    d = torch.randn(3, 24, 40)
    fp32, bf16 = newton_schulz(d), newton_schulz(d, dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(fp32.flatten(1), bf16.flatten(1), dim=1)
    assert (cos > 0.99).all()


def test_state_dict_round_trip_is_exact() -> None:
    model, copy = _pair()
    groups = lambda m: [{"params": [m[0].weight, m[2].weight], "muon": True},  # noqa: E731
                        {"params": [m[0].bias, m[3].weight, m[4].weight], "muon": False}]
    opt = Muon(groups(model), lr=0.01, weight_decay=0.01, ns_dtype="bfloat16")
    _run(model, [opt], 2)
    copy.load_state_dict(model.state_dict())
    restored = Muon(groups(copy), lr=0.01, weight_decay=0.01, ns_dtype="bfloat16")
    buffer = io.BytesIO()  # through bytes, as a checkpoint goes (a live state dict shares its tensors)
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    _run(model, [opt], 3, seed=5)
    _run(copy, [restored], 3, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), copy.parameters()))


def test_bad_settings_are_refused() -> None:
    layer = torch.nn.Linear(3, 4)
    with pytest.raises(ValueError, match="not 2-D"):
        Muon([{"params": [layer.weight, layer.bias], "muon": True}])
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon([layer.weight], ns_dtype="float16")
    with pytest.raises(ConfigError, match="optim.momentum"):
        OptimConfig(optimizer="muon", momentum=1.0)


@pytest.mark.parametrize("tie_weight", [True, False])
def test_build_optimizer_gives_muon_the_decoder_matrices_only(tie_weight: bool) -> None:
    model = TransformerXLLM(ModelConfig(n_token=40, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32,
                                        tie_weight=tie_weight))
    opt = build_optimizer(model, OptimConfig(optimizer="muon", weight_decay=0.1, lr=0.01), precision="bf16")
    assert isinstance(opt, Muon)
    groups = {g["group"]: g for g in opt.param_groups}
    assert [g["group"] for g in opt.param_groups] == ["muon", "decay", "no_decay"]
    assert {name: g["muon"] for name, g in groups.items()} == {"muon": True, "decay": False, "no_decay": False}
    assert {name: g["weight_decay"] for name, g in groups.items()} == {"muon": 0.1, "decay": 0.1, "no_decay": 0.0}
    assert all(g["ns_dtype"] == "bfloat16" for g in opt.param_groups)
    expected = {f"layers.{i}.{name}.weight" for i in range(2)
                for name in ("dec_attn.qkv_net", "dec_attn.o_net", "dec_attn.r_net", "pos_ff.CoreNet.0",
                             "pos_ff.CoreNet.3")}
    assert set(groups["muon"]["names"]) == expected
    # the embedding (and an untied softmax) stay with AdamW
    assert any(n.startswith("word_emb") for n in groups["decay"]["names"])
    assert not any(n.startswith(("word_emb", "crit")) for n in groups["muon"]["names"])
    every = [p for g in opt.param_groups for p in g["params"]]
    assert len(every) == len({id(p) for p in model.parameters()})
    fp32 = build_optimizer(model, OptimConfig(optimizer="muon"))
    assert all(g["ns_dtype"] == "float32" for g in fp32.param_groups)


@pytest.mark.slow
def test_resume_with_muon_equals_uninterrupted_run(tmp_path: Path) -> None:
    assert_resume_is_exact(tmp_path, OptimConfig(optimizer="muon", lr=0.01, weight_decay=0.1, warmup_steps=1,
                                                 decay_steps=6))


@pytest.mark.slow
def test_txl_train_with_muon_learns(tmp_path: Path) -> None:
    assert_cli_run_learns(tmp_path, "muon", "--optim.lr", "0.01", "--optim.warmup_steps", "4")
