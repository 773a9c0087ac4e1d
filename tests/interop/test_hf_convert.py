"""Hugging Face conversion without transformers installed: config mapping, bit-exact round trips, errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from helpers import randomize_, trap_torch_loaders
from transformer_xl import ModelConfig, TransformerXLError, TransformerXLLM
from transformer_xl.interop import config_from_hf, config_to_hf, export_hf, import_hf, read_text_vocab
from transformer_xl.interop.hf import load_hf_state, state_dict_to_hf

CONFIGS = {
    "plain": ModelConfig(n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, seg_len=6, mem_len=5),
    "div1-proj-untie-r": ModelConfig(n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32,
                                     d_embed=24, cutoffs=(10, 30), untie_rel_bias=True, same_length=True,
                                     clamp_len=3, ext_len=2),
    "div4-untied": ModelConfig(n_token=60, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, d_embed=32,
                               cutoffs=(10, 30), div_val=4, tie_weight=False, tie_projs=(True, False, True),
                               pre_norm=True, dropout=0.2, attn_dropout=0.1),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_ours_hf_ours_is_bit_exact(name: str, tmp_path: Path) -> None:
    model = randomize_(TransformerXLLM(CONFIGS[name]), std=0.3)
    export_hf(model, tmp_path / "hf")
    back = import_hf(tmp_path / "hf")
    assert back.config == model.config
    original, restored = model.state_dict(), back.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    # ties survive: the softmax weight is the embedding, not a copy
    if model.config.tie_weight:
        assert back.crit.out_layers[0].weight is back.word_emb.emb_layers[0].weight


def test_config_mapping_reads_hf_names() -> None:
    hf = {"model_type": "transfo-xl", "vocab_size": 267735, "cutoffs": [20000, 40000, 200000], "d_model": 1024,
          "d_embed": 1024, "n_head": 16, "d_head": 64, "d_inner": 4096, "div_val": 4, "pre_lnorm": False,
          "n_layer": 18, "mem_len": 1600, "clamp_len": 1000, "same_length": True, "tie_projs": [False, True, True, True],
          "attn_type": 0, "sample_softmax": -1, "dropout": 0.1, "dropatt": 0.0, "untie_r": True, "init_std": 0.02,
          "proj_init_std": 0.01, "tgt_len": 128, "ext_len": 0, "layer_norm_epsilon": 1e-5}
    config = config_from_hf(hf)
    assert (config.n_token, config.seg_len, config.mem_len, config.clamp_len) == (267735, 128, 1600, 1000)
    assert config.untie_rel_bias and config.same_length and not config.pre_norm
    assert config.cutoffs == (20000, 40000, 200000) and config.div_val == 4
    assert config.tie_projs == (False, True, True, True) and config.tie_weight
    assert config_from_hf(config_to_hf(config)) == config
    # configs that only have the constructor flag
    flag_only = {k: v for k, v in hf.items() if k != "tie_projs"} | {"proj_share_all_but_first": False}
    assert config_from_hf(flag_only).tie_projs == (False,) * 4


@pytest.mark.parametrize("change, message", [
    ({"attn_type": 2}, "attn_type"), ({"layer_norm_epsilon": 1e-12}, "layer_norm_epsilon"),
    ({"cutoffs": [100]}, "cutoffs"), ({"sample_softmax": 5}, "sample_softmax")])
def test_unsupported_hf_configs_are_refused(change: dict, message: str) -> None:
    hf = config_to_hf(CONFIGS["plain"]) | change
    with pytest.raises(TransformerXLError, match=message):
        config_from_hf(hf)


def test_export_refuses_attention_hf_lacks() -> None:
    with pytest.raises(TransformerXLError, match="shaw"):
        config_to_hf(CONFIGS["plain"].replace(attn_type="shaw"))


def test_pytorch_model_bin_with_every_alias_is_accepted(tmp_path: Path) -> None:
    """Old HF checkpoints are torch.save'd state dicts that list tied tensors under every name."""
    model = randomize_(TransformerXLLM(CONFIGS["div1-proj-untie-r"]), std=0.3)
    export_hf(model, tmp_path / "src")
    state = load_hf_state(tmp_path / "src")
    # every alias, as HF's state_dict() lists them
    state["crit.out_layers.0.weight"] = state["transformer.word_emb.emb_layers.0.weight"]
    for i in (1, 2):
        state[f"crit.out_projs.{i}"] = state["transformer.word_emb.emb_projs.0"]
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "config.json").write_text((tmp_path / "src" / "config.json").read_text())
    torch.save(state, directory / "pytorch_model.bin")
    back = import_hf(directory)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    # an alias that disagrees with its twin means the config's ties are wrong
    state["crit.out_layers.0.weight"] = state["crit.out_layers.0.weight"] + 1
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(TransformerXLError, match="ties them"):
        import_hf(directory)


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = TransformerXLLM(CONFIGS["plain"])
    export_hf(model, tmp_path)
    state = state_dict_to_hf(model)
    del state["transformer.layers.1.dec_attn.r_net.weight"]
    state["transformer.extra"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(TransformerXLError, match=r"missing \['transformer.layers.1.dec_attn.r_net.weight'\], "
                                                 r"unexpected \['transformer.extra'\]"):
        import_hf(tmp_path)


def test_corrupt_or_absent_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TransformerXLError, match="not found"):
        import_hf(tmp_path / "nope")
    export_hf(TransformerXLLM(CONFIGS["plain"]), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(TransformerXLError, match="model.safetensors.*corrupt"):
        import_hf(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(TransformerXLError, match="no Hugging Face weights"):
        import_hf(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TransformerXLError, match="config.json is not valid JSON"):
        import_hf(tmp_path)


def test_text_vocabulary(tmp_path: Path) -> None:
    assert read_text_vocab(tmp_path) is None
    (tmp_path / "vocab.txt").write_text("<eos> 100\nthe 50\n\n, 7\n")
    assert read_text_vocab(tmp_path) == ["<eos>", "the", ","]
    export_hf(TransformerXLLM(CONFIGS["plain"]), tmp_path / "out", vocab_symbols=["a", "b"])
    assert read_text_vocab(tmp_path / "out") == ["a", "b"]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "transfo-xl"


# --- issue 12: shards stay inside the directory, nothing executes, odd configs are one-line errors ----------
def _sharded(tmp_path: Path, shard_name: str) -> Path:
    """A Hugging Face directory whose index names ``shard_name``; the shard itself (valid weights, so that
    reading it would succeed) lies at tmp_path/outside/w.safetensors."""
    model = TransformerXLLM(CONFIGS["plain"])
    export_hf(model, tmp_path / "hf")
    (tmp_path / "outside").mkdir()
    os.replace(tmp_path / "hf" / "model.safetensors", tmp_path / "outside" / "w.safetensors")
    index = {"metadata": {}, "weight_map": {name: shard_name for name in state_dict_to_hf(model)}}
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    return tmp_path / "hf"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "link"])
def test_a_shard_index_cannot_name_a_file_outside_the_directory(how: str, monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    import transformer_xl.interop.hf as hf

    outside = tmp_path / "outside" / "w.safetensors"
    name = {"dotdot": "../outside/w.safetensors", "absolute": str(outside), "link": "shard.safetensors"}[how]
    directory = _sharded(tmp_path, name)
    if how == "link":
        os.symlink(outside, directory / "shard.safetensors")
    marker = tmp_path / "read"
    real = hf._read_safetensors

    def watched(path):
        marker.write_text(str(path))
        return real(path)

    monkeypatch.setattr(hf, "_read_safetensors", watched)
    with pytest.raises(TransformerXLError, match="refusing to read it"):
        import_hf(directory)
    assert not marker.exists()
    # the same shard inside the directory loads
    (directory / "shard.safetensors").unlink(missing_ok=True)
    os.replace(outside, directory / "shard.safetensors")
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    index["weight_map"] = dict.fromkeys(index["weight_map"], "shard.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    import_hf(directory)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_pytorch_model_bin_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    export_hf(TransformerXLLM(CONFIGS["plain"]), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(tmp_path / "pytorch_model.bin"))
    marker = tmp_path / "reached"
    trap_torch_loaders(monkeypatch, marker)
    with pytest.raises(TransformerXLError, match="TorchScript"):
        import_hf(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("change", [
    {"d_model": "1024"}, {"n_layer": 2.5}, {"dropout": "high"}, {"dropout": float("nan")}, {"cutoffs": "10,20"},
    {"cutoffs": [10.5]}, {"tie_projs": 3}, {"same_length": "yes"}, {"sample_softmax": "no"},
    {"layer_norm_epsilon": None}, {"vocab_size": None}, {"vocab_size": -5}, {"n_head": 0}, {"div_val": True},
    {"mem_len": [1]}, {"tie_word_embeddings": {"a": 1}}])
def test_unusual_hf_config_values_are_one_line_errors(change: dict) -> None:
    hf = config_to_hf(CONFIGS["plain"]) | change
    with pytest.raises(TransformerXLError) as info:
        config_from_hf(hf)
    assert "\n" not in str(info.value)


def test_a_huge_vocab_size_is_refused_before_allocating(tmp_path: Path) -> None:
    export_hf(TransformerXLLM(CONFIGS["plain"]), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 10_000_000
    (tmp_path / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    with pytest.raises(TransformerXLError, match="does not match"):
        import_hf(tmp_path)
    assert time.perf_counter() - started < 5


def test_a_bin_saved_with_shared_biases_repeats_them_per_layer_and_still_imports(tmp_path) -> None:
    """transformers' pytorch_model.bin with untie_r false lists the shared u/v under every layer's name too."""
    transformers = pytest.importorskip("transformers")
    from transformer_xl.interop.hf import import_hf

    config = transformers.TransfoXLConfig(vocab_size=30, cutoffs=[10], d_model=16, d_embed=16, n_head=2, d_head=8,
                                          d_inner=32, n_layer=2, mem_len=4, tgt_len=4, untie_r=False, div_val=1)
    hf = transformers.TransfoXLLMHeadModel(config).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=False)
    state = torch.load(tmp_path / "hf" / "pytorch_model.bin", weights_only=True)
    assert any(k.startswith("transformer.layers.0.") and k.endswith("r_w_bias") for k in state)
    ours = import_hf(tmp_path / "hf")
    x = torch.randint(0, 30, (1, 6))
    from transformer_xl.interop.hf import zero_memory

    with torch.no_grad():  # HF starts from a zero-filled memory of mem_len: give ours the same start
        expected = hf(x).prediction_scores
        got = ours(x, memory=zero_memory(ours, 1), return_log_probs=True).log_probs
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
