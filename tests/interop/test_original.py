"""Original-release and NVIDIA pickled checkpoints: only behind the unsafe flag, only allow-listed classes."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import randomize_, trap_torch_loaders
from transformer_xl import ModelConfig, TransformerXLError, TransformerXLLM
from transformer_xl.interop.original import import_original

CONFIG = ModelConfig(n_token=40, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, d_embed=16,
                     cutoffs=(10, 20), div_val=2, seg_len=6, mem_len=6, dropout=0.1, attn_dropout=0.05)


def _fake_original_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """Classes named and laid out as kimiyoung/transformer-xl's pytorch code (parameters only)."""
    mt = types.ModuleType("mem_transformer")
    sm = types.ModuleType("utils.proj_adaptive_softmax")

    class Bag(nn.Module):
        def __init__(self, **attrs):
            super().__init__()
            for k, v in attrs.items():
                setattr(self, k, v)

    names = {"MemTransformerLM": mt, "AdaptiveEmbedding": mt, "RelPartialLearnableDecoderLayer": mt,
             "RelPartialLearnableMultiHeadAttn": mt, "PositionwiseFF": mt, "PositionalEmbedding": mt,
             "ProjectedAdaptiveLogSoftmax": sm}
    for name, module in names.items():
        cls = type(name, (Bag,), {"__module__": module.__name__})
        setattr(module, name, cls)
    return mt, sm


def _plain(module: nn.Module) -> nn.Module:
    """The same parameters in torch's own classes, as the original code pickles them (ours subclass them)."""
    if isinstance(module, nn.Linear):
        plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
        plain.weight = module.weight
        plain.bias = module.bias
        return plain
    if isinstance(module, nn.Dropout):
        return nn.Dropout(module.p)
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*(_plain(m) for m in module))
    return module


def _to_original(model: TransformerXLLM, path: Path) -> None:
    """torch.save(model) of an original-code MemTransformerLM holding ``model``'s weights."""
    mt, sm = _fake_original_modules()
    c = model.config
    utils = types.ModuleType("utils")
    utils.proj_adaptive_softmax = sm
    saved = {k: sys.modules.get(k) for k in ("mem_transformer", "utils", "utils.proj_adaptive_softmax")}
    sys.modules.update({"mem_transformer": mt, "utils": utils, "utils.proj_adaptive_softmax": sm})
    try:
        layers = nn.ModuleList()
        for layer in model.layers:
            a, f = layer.dec_attn, layer.pos_ff
            attn = mt.RelPartialLearnableMultiHeadAttn(qkv_net=_plain(a.qkv_net), o_net=_plain(a.o_net),
                                                       r_net=_plain(a.r_net),
                                                       layer_norm=a.layer_norm, drop=nn.Dropout(c.dropout),
                                                       dropatt=nn.Dropout(c.attn_dropout), pre_lnorm=c.pre_norm)
            ff = mt.PositionwiseFF(CoreNet=_plain(f.CoreNet), layer_norm=f.layer_norm, d_inner=c.d_inner)
            layers.append(mt.RelPartialLearnableDecoderLayer(dec_attn=attn, pos_ff=ff))
        crit = sm.ProjectedAdaptiveLogSoftmax(out_layers=model.crit.out_layers, out_projs=model.crit.out_projs,
                                              cutoffs=list(c.cutoffs) + [c.n_token], div_val=c.div_val)
        # the original reads cluster i at head column -i: store the rows reversed
        crit.cluster_weight = nn.Parameter(model.crit.cluster_weight.detach().flip(0))
        crit.cluster_bias = nn.Parameter(model.crit.cluster_bias.detach().flip(0))
        word_emb = mt.AdaptiveEmbedding(emb_layers=model.word_emb.emb_layers, emb_projs=model.word_emb.emb_projs,
                                        d_embed=c.d_embed)
        lm = mt.MemTransformerLM(word_emb=word_emb, drop=nn.Dropout(c.dropout), layers=layers, crit=crit,
                                 pos_emb=mt.PositionalEmbedding(), n_token=c.n_token, n_layer=c.n_layer,
                                 n_head=c.n_head, d_model=c.d_model, d_head=c.d_head, d_embed=c.d_embed,
                                 tgt_len=c.seg_len, mem_len=c.mem_len, ext_len=c.ext_len, attn_type=0,
                                 clamp_len=c.clamp_len, same_length=c.same_length, sample_softmax=-1)
        lm.r_w_bias, lm.r_r_bias = model.r_w_bias, model.r_r_bias
        lm.pos_emb.register_buffer("inv_freq", torch.ones(c.d_model // 2))
        torch.save(lm, path)
    finally:
        for k, v in saved.items():
            if v is None:
                del sys.modules[k]
            else:
                sys.modules[k] = v


def _same(a: TransformerXLLM, b: TransformerXLLM) -> bool:
    return a.config == b.config and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                                          b.state_dict().values()))


def test_original_whole_module_pickle_imports_behind_the_flag(tmp_path: Path) -> None:
    model = randomize_(TransformerXLLM(CONFIG), std=0.3)
    _to_original(model, tmp_path / "model.pt")
    with pytest.raises(TransformerXLError, match="unsafe"):
        import_original(tmp_path / "model.pt")
    back = import_original(tmp_path / "model.pt", unsafe_pickle=True)
    assert _same(model, back)  # including the cluster rows flipped back into natural order
    assert back.crit.out_layers[0].weight is back.word_emb.emb_layers[0].weight


def test_nvidia_checkpoint_imports(tmp_path: Path) -> None:
    model = randomize_(TransformerXLLM(CONFIG.replace(tie_weight=False)), std=0.3)
    c = model.config
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("crit.out_layers."):
            _, _, i, kind = name.split(".")
            name = f"crit.out_layers_{'weights' if kind == 'weight' else 'biases'}.{i}"
        elif name.startswith("crit.out_projs.") and c.tie_projs[int(name.split(".")[-1])]:
            continue  # tied: NVIDIA reads it from shared_out_projs, the embedding's projections
        elif name.startswith("word_emb.emb_projs."):
            state[name.replace("word_emb.emb_projs", "crit.shared_out_projs")] = tensor
        elif name.startswith("crit.cluster_"):
            tensor = tensor.flip(0)
        state[name] = tensor
    model_config = dict(n_token=c.n_token, n_layer=c.n_layer, n_head=c.n_head, d_model=c.d_model,
                        d_head=c.d_head, d_inner=c.d_inner, dropout=c.dropout, dropatt=c.attn_dropout,
                        dtype=None, tie_weight=False, d_embed=c.d_embed, div_val=c.div_val,
                        tie_projs=list(c.tie_projs), pre_lnorm=False, tgt_len=c.seg_len, ext_len=0,
                        mem_len=c.mem_len, cutoffs=list(c.cutoffs), same_length=False, attn_type=0,
                        clamp_len=-1, sample_softmax=-1)
    torch.save({"args": argparse.Namespace(lr=0.01), "model_config": model_config, "model_state": state,
                "epoch": 3, "best_val_loss": 4.2}, tmp_path / "checkpoint_best.pt")
    back = import_original(tmp_path / "checkpoint_best.pt", flavour="nvidia", unsafe_pickle=True)
    assert _same(model, back)
    with pytest.raises(TransformerXLError, match="--from nvidia"):
        import_original(tmp_path / "checkpoint_best.pt", unsafe_pickle=True)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_even_with_the_flag_classes_off_the_allow_list_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model_config": {}, "model_state": {}, "evil": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(TransformerXLError, match=r"exec is not on the allow-list"):
        import_original(tmp_path / "evil.pt", flavour="nvidia", unsafe_pickle=True)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("unsafe", [False, True])
def test_torchscript_archives_are_refused_with_and_without_the_flag(unsafe: bool, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    """torch.load would hand a TorchScript archive to the TorchScript loader, which runs its code and never
    asks the allow-list unpickler: the importer refuses the archive before torch sees it."""
    torch.jit.save(torch.jit.script(nn.Linear(3, 2)), str(tmp_path / "model.pt"))
    marker = tmp_path / "reached"
    trap_torch_loaders(monkeypatch, marker)
    for flavour in ("original", "nvidia"):
        with pytest.raises(TransformerXLError, match="TorchScript archive holding code"):
            import_original(tmp_path / "model.pt", flavour=flavour, unsafe_pickle=unsafe)
    assert not marker.exists()


def test_a_malicious_pickle_never_runs_without_the_flag_either(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save(_Evil(marker), tmp_path / "evil.pt")
    with pytest.raises(TransformerXLError, match="--unsafe-pickle"):
        import_original(tmp_path / "evil.pt")
    with pytest.raises(TransformerXLError, match="not on the allow-list"):
        import_original(tmp_path / "evil.pt", unsafe_pickle=True)
    assert not marker.exists()


def test_a_config_that_does_not_fit_the_state_fails_before_allocating(tmp_path: Path) -> None:
    model = randomize_(TransformerXLLM(ModelConfig(n_token=30, n_layer=1, n_head=2, d_model=8, d_head=4, d_inner=16)))
    state = {name: t for name, t in model.state_dict().items() if name != "pos_emb.inv_freq"}
    mc = {"n_token": 10_000_000, "n_layer": 1, "n_head": 2, "d_model": 8, "d_head": 4, "d_inner": 16}
    torch.save({"model_config": mc, "model_state": state}, tmp_path / "nv.pt")
    with pytest.raises(TransformerXLError, match="does not match the config stored in it"):
        import_original(tmp_path / "nv.pt", flavour="nvidia", unsafe_pickle=True)
    torch.save({"model_config": {"n_layer": "two"}, "model_state": state}, tmp_path / "bad.pt")
    with pytest.raises(TransformerXLError, match="not a complete nvidia Transformer-XL checkpoint|n_token"):
        import_original(tmp_path / "bad.pt", flavour="nvidia", unsafe_pickle=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_convert_names_a_torchscript_archive_for_what_it_is_with_or_without_the_flag(tmp_path: Path, capsys) -> None:
    """Not "re-run with --unsafe-pickle": no flag makes an archive holding code loadable."""
    from transformer_xl.cli import main

    torch.jit.save(torch.jit.script(nn.Linear(3, 2)), str(tmp_path / "model.pt"))
    for extra in ([], ["--unsafe-pickle"]):
        code = main(["convert", "--from", "original", "--to", "ours", *extra, str(tmp_path / "model.pt"),
                     str(tmp_path / f"out{len(extra)}")])
        err = capsys.readouterr().err
        assert code == 2 and "TorchScript archive holding code" in err and "re-run with" not in err, err
