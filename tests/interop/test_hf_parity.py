"""Parity with Hugging Face's TransfoXLLMHeadModel (transformers 4.37.2), an independent implementation.

Weights are re-drawn with std 0.3 (helpers.randomize_): with the default 0.02 a wrong rel-shift or a
swapped u/v changes the outputs by ~1e-7 and no tolerance would notice. Eval mode, dropout 0.

Hugging Face starts from a zero-filled memory of mem_len positions; ours starts empty (the paper's
definition). To reproduce its first segment we pass the equivalent initial memory, zeros of shape
(B, mem_len, d_model) per layer (interop.hf.zero_memory); later segments carry each side's own memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import randomize_
from transformer_xl import TransformerXLLM
from transformer_xl.interop import export_hf, import_hf, zero_memory
from transformer_xl.interop.hf import config_from_hf, state_dict_from_hf
from transformer_xl.pretrained import assign_state

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # HF: "output will change in v5"

BATCH, SEG, N_SEG, VOCAB = 2, 5, 3, 60
BASE = dict(vocab_size=VOCAB, d_model=16, n_head=2, d_head=8, d_inner=32, n_layer=2, mem_len=7,
            dropout=0.0, dropatt=0.0)

CONFIGS: dict[str, dict[str, Any]] = {
    # plain softmax, global u/v, no clamping, d_embed == d_model
    "plain": dict(cutoffs=[], div_val=1, d_embed=16, untie_r=False, same_length=False, clamp_len=-1),
    # adaptive softmax div_val 1 with d_embed != d_model (shared projection), per-layer u/v,
    # same_length and clamp_len shorter than the attention span
    "adaptive-div1": dict(cutoffs=[10, 30], div_val=1, d_embed=24, untie_r=True, same_length=True, clamp_len=4),
    # div_val 4, untied projections, pre-norm, global u/v
    "adaptive-div4-untied-projs-prenorm": dict(cutoffs=[10, 30], div_val=4, d_embed=32, untie_r=False,
                                               proj_share_all_but_first=False, same_length=False,
                                               clamp_len=-1, pre_lnorm=True),
    # div_val 4, tied projections, untied word embeddings / softmax weights, same_length + clamp
    "adaptive-div4-tied-projs": dict(cutoffs=[10, 30], div_val=4, d_embed=32, untie_r=True,
                                     same_length=True, clamp_len=3, tie_word_embeddings=False),
}


def _hf_model(name: str, tmp_path: Path) -> tuple[Any, Path]:
    config = transformers.TransfoXLConfig(**BASE, **CONFIGS[name])
    hf = transformers.TransfoXLLMHeadModel(config).eval()
    randomize_(hf, std=0.3, seed=len(name))
    directory = tmp_path / "hf"
    hf.save_pretrained(directory)  # the real on-disk format (safetensors, shared tensors stored once)
    return hf, directory


@torch.no_grad()
def _max_diffs(hf: Any, ours: TransformerXLLM, tokens: torch.Tensor) -> dict[str, float]:
    """Largest differences of log-probs, final hidden states and memories over N_SEG segments."""
    hf_mems, our_mems = None, zero_memory(ours, BATCH)  # HF: zero-filled memory when mems is None
    diffs = {"log_probs": 0.0, "hidden": 0.0, "mems": 0.0}
    for s in range(N_SEG):
        seg = tokens[:, s * SEG:(s + 1) * SEG]
        h = hf(seg, mems=hf_mems, output_hidden_states=True)
        o = ours(seg, memory=our_mems, return_log_probs=True, return_hidden=True)
        diffs["log_probs"] = max(diffs["log_probs"], (h.prediction_scores - o.log_probs).abs().max().item())
        diffs["hidden"] = max(diffs["hidden"], (h.hidden_states[-1] - o.hidden).abs().max().item())
        for hm, om in zip(h.mems, o.memory.states):  # HF memory is (M, B, C): the inputs of every layer
            diffs["mems"] = max(diffs["mems"], (hm.transpose(0, 1) - om).abs().max().item())
        hf_mems, our_mems = h.mems, o.memory
    return diffs


@torch.no_grad()
def _greedy(hf: Any, ours: TransformerXLLM, prompt: torch.Tensor, steps: int) -> tuple[list, list]:
    """Greedy decoding one token at a time, each implementation carrying its own memory."""
    outs = []
    for model in (hf, ours):
        is_hf = model is hf
        mems = None if is_hf else zero_memory(ours, prompt.shape[0])
        x, generated = prompt, []
        for _ in range(steps):
            if is_hf:
                out = model(x, mems=mems)
                log_probs, mems = out.prediction_scores, out.mems
            else:
                out = model(x, memory=mems, return_log_probs=True)
                log_probs, mems = out.log_probs, out.memory
            x = log_probs[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            generated.append(x)
        outs.append(torch.cat(generated, dim=1).tolist())
    return outs[0], outs[1]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_log_probs_hidden_states_and_memory_match_hf(name: str, tmp_path: Path) -> None:
    hf, directory = _hf_model(name, tmp_path)
    ours = import_hf(directory)
    tokens = torch.randint(0, VOCAB, (BATCH, SEG * N_SEG), generator=torch.Generator().manual_seed(1))
    diffs = _max_diffs(hf, ours, tokens)
    assert diffs["log_probs"] < 1e-5, diffs
    assert diffs["hidden"] < 1e-5, diffs
    assert diffs["mems"] < 1e-5, diffs


@pytest.mark.parametrize("name", ["adaptive-div1", "adaptive-div4-untied-projs-prenorm"])
def test_greedy_generation_matches_hf(name: str, tmp_path: Path) -> None:
    hf, directory = _hf_model(name, tmp_path)
    ours = import_hf(directory)
    prompt = torch.randint(0, VOCAB, (BATCH, 4), generator=torch.Generator().manual_seed(2))
    hf_tokens, our_tokens = _greedy(hf, ours, prompt, 50)
    assert len(our_tokens[0]) == 50
    assert our_tokens == hf_tokens
    assert len({t for row in our_tokens for t in row}) >= 2  # not one token repeated


def _break(state: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    if how == "flip-cluster-rows":  # the original PyTorch code's order: wrong for HF checkpoints
        state["crit.cluster_weight"] = state["crit.cluster_weight"].flip(0)
        state["crit.cluster_bias"] = state["crit.cluster_bias"].flip(0)
    elif how == "swap-u-v":
        for name in [n for n in state if n.endswith("r_w_bias")]:
            twin = name.replace("r_w_bias", "r_r_bias")
            state[name], state[twin] = state[twin], state[name]
    elif how == "drop-positional-projection":
        for name in [n for n in state if n.endswith("r_net.weight")]:
            state[name] = torch.zeros_like(state[name])
    return state


@pytest.mark.parametrize("how", ["flip-cluster-rows", "swap-u-v", "drop-positional-projection"])
def test_a_broken_mapping_is_caught(how: str, tmp_path: Path) -> None:
    """The parity check has teeth: each plausible mapping mistake moves the outputs far beyond 1e-5."""
    from transformer_xl.interop.hf import load_hf_state
    from transformer_xl.pretrained import read_json

    hf, directory = _hf_model("adaptive-div1", tmp_path)
    config = config_from_hf(read_json(directory / "config.json", what="config"))
    state = state_dict_from_hf(load_hf_state(directory), config)
    broken = TransformerXLLM(config).eval()
    assign_state(broken, _break(state, how), source=how)
    tokens = torch.randint(0, VOCAB, (BATCH, SEG * N_SEG), generator=torch.Generator().manual_seed(1))
    assert _max_diffs(hf, broken, tokens)["log_probs"] > 1e-3


def test_our_export_loads_in_transformers_with_the_same_outputs(tmp_path: Path) -> None:
    hf, directory = _hf_model("adaptive-div4-tied-projs", tmp_path)
    ours = import_hf(directory)
    export_hf(ours, tmp_path / "exported")
    reloaded = transformers.TransfoXLLMHeadModel.from_pretrained(tmp_path / "exported").eval()
    tokens = torch.randint(0, VOCAB, (BATCH, SEG * N_SEG), generator=torch.Generator().manual_seed(3))
    assert max(_max_diffs(reloaded, ours, tokens).values()) < 1e-5
    for (name, a), (_, b) in zip(hf.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
