"""save_pretrained / load_pretrained, and the promise that loading never runs code from a file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLError, TransformerXLLM
from transformer_xl.pretrained import load_pretrained, load_vocabulary, save_pretrained

CONFIG = ModelConfig(n_token=40, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, d_embed=8,
                     cutoffs=(10, 20), div_val=2, seg_len=6, mem_len=6, untie_rel_bias=True)


def _model() -> TransformerXLLM:
    return randomize_(TransformerXLLM(CONFIG), std=0.3).eval()


def test_save_and_load_give_the_same_model(tmp_path: Path) -> None:
    model = _model()
    save_pretrained(model, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "model.safetensors"]
    back = load_pretrained(tmp_path / "run")
    assert back.config == model.config and not back.training
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    # tied tensors are tied again, not two copies
    assert back.crit.out_layers[1].weight is back.word_emb.emb_layers[1].weight
    assert back.crit.out_projs[1] is back.word_emb.emb_projs[1]
    x = torch.randint(0, 40, (2, 6))
    with torch.no_grad():
        assert torch.equal(model(x, targets=x).loss, back(x, targets=x).loss)


def test_vocabulary_is_saved_as_json_and_loaded_back(tmp_path: Path) -> None:
    Vocabulary = pytest.importorskip("transformer_xl.data.vocab").Vocabulary
    vocab = Vocabulary("word", ["<eos>", "a", "b"], specials={"eos": "<eos>"}, lines="eos")
    save_pretrained(_model(), tmp_path, vocab=vocab)
    assert (tmp_path / "vocab.json").read_text().lstrip().startswith("{")
    assert load_vocabulary(tmp_path) == vocab
    assert load_vocabulary(tmp_path / "elsewhere") is None


class _Evil:
    """Unpickling this runs code: it writes a marker file (a stand-in for anything worse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _plant(path: Path, marker: Path, state: dict) -> None:
    torch.save({**state, "evil": _Evil(marker)}, path)


def test_the_planted_pickle_really_runs_code(tmp_path: Path) -> None:
    """Control: plain unpickling of the planted file does create the marker, so the tests below mean something."""
    marker = tmp_path / "ran"
    _plant(tmp_path / "x.bin", marker, {})
    torch.load(tmp_path / "x.bin", weights_only=False)
    assert marker.exists()


def test_load_pretrained_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    model = _model()
    save_pretrained(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    _plant(tmp_path / "pytorch_model.bin", marker, model.state_dict())
    with pytest.raises(TransformerXLError, match=r"refusing to load .*pytorch_model.bin.*could run code"):
        load_pretrained(tmp_path)
    assert not marker.exists()


def test_hf_import_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    from transformer_xl.interop import export_hf, import_hf
    from transformer_xl.interop.hf import load_hf_state

    export_hf(_model(), tmp_path)
    state = load_hf_state(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    _plant(tmp_path / "pytorch_model.bin", marker, state)
    with pytest.raises(TransformerXLError, match="refusing to load"):
        import_hf(tmp_path)
    assert not marker.exists()


def test_a_clean_torch_state_dict_is_accepted(tmp_path: Path) -> None:
    model = _model()
    save_pretrained(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    back = load_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))


def test_errors_name_the_file_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TransformerXLError, match="model directory not found"):
        load_pretrained(tmp_path / "missing")
    save_pretrained(_model(), tmp_path / "a")
    weights = tmp_path / "a" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated download
    with pytest.raises(TransformerXLError, match="model.safetensors.*corrupt or truncated"):
        load_pretrained(tmp_path / "a")
    weights.unlink()
    with pytest.raises(TransformerXLError, match="no weights in .*expected model.safetensors"):
        load_pretrained(tmp_path / "a")
    # weights that do not fit the config
    save_pretrained(_model(), tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text(
        (tmp_path / "b" / "config.json").read_text().replace('"d_inner": 32', '"d_inner": 48'))
    with pytest.raises(TransformerXLError, match="model.safetensors does not match .*config.json"):
        load_pretrained(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text('{"n_token": 40, "n_layer": 2, "mystery": 1}')
    with pytest.raises(TransformerXLError, match=r"config.json.*unknown ModelConfig field.*mystery"):
        load_pretrained(tmp_path / "b")
    (tmp_path / "b" / "config.json").unlink()
    with pytest.raises(TransformerXLError, match="model config not found"):
        load_pretrained(tmp_path / "b")


def test_a_hugging_face_directory_points_to_convert(tmp_path: Path) -> None:
    from transformer_xl.interop import export_hf

    export_hf(_model(), tmp_path)
    with pytest.raises(TransformerXLError, match="txl convert --from hf"):
        load_pretrained(tmp_path)


def test_pickle_module_is_not_used_for_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default path never reaches pickle.load / pickle.Unpickler with a permissive unpickler."""
    save_pretrained(_model(), tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    load_pretrained(tmp_path)
