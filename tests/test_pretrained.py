"""save_pretrained / load_pretrained, and the promise that loading never runs code from a file."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
import zipfile
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
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checksums.json", "config.json", "model.safetensors"]
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
    vocab = Vocabulary("word", ["<eos>"] + [f"w{i}" for i in range(39)], specials={"eos": "<eos>"}, lines="eos")
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
    with pytest.raises(TransformerXLError, match="model.safetensors does not match the sha256 recorded"):
        load_pretrained(tmp_path / "a")
    (tmp_path / "a" / "checksums.json").unlink()  # an older save: the header check still catches it
    with pytest.raises(TransformerXLError, match="model.safetensors.*corrupt or truncated"):
        load_pretrained(tmp_path / "a")
    weights.unlink()
    with pytest.raises(TransformerXLError, match="no weights in .*expected model.safetensors"):
        load_pretrained(tmp_path / "a")
    # weights that do not fit the config
    save_pretrained(_model(), tmp_path / "b")
    (tmp_path / "b" / "checksums.json").unlink()  # a hand-edited config.json, without the checksum list
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


# --- issue 12: nothing executes, checksums, validation before allocation, regular files only ----------------
def _torchscript(path: Path) -> None:
    """A real TorchScript archive (constants.pkl, code/), as torch.jit.save writes it."""
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(path))


def _trap(monkeypatch: pytest.MonkeyPatch, marker: Path) -> None:
    """torch.load and torch.jit.load write ``marker`` if anything reaches them: the refusal must come first."""
    real_load = torch.load

    def trapped(*args, **kwargs):
        marker.write_text("reached")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", trapped)
    monkeypatch.setattr(torch.jit, "load", trapped)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archives_are_refused_before_torch_reads_them(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    from transformer_xl.pretrained import safe_torch_load
    from transformer_xl.training.checkpoint import load_training_state

    save_pretrained(_model(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "checksums.json").unlink()
    _torchscript(tmp_path / "model.pt")
    marker = tmp_path / "reached"
    _trap(monkeypatch, marker)
    with pytest.raises(TransformerXLError, match="TorchScript archive holding code"):
        load_pretrained(tmp_path)
    with pytest.raises(TransformerXLError, match="TorchScript"):
        safe_torch_load(tmp_path / "model.pt")
    os.replace(tmp_path / "model.pt", tmp_path / "training_state.pt")
    with pytest.raises(TransformerXLError, match="TorchScript"):
        load_training_state(tmp_path)
    assert not marker.exists()


def test_a_zip_holding_python_code_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from transformer_xl.pretrained import safe_torch_load

    model = _model()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with zipfile.ZipFile(tmp_path / "model.pt", "a") as archive:  # a state dict with code riding along
        archive.writestr("model/code/evil.py", "open('pwned', 'w')\n")
    marker = tmp_path / "reached"
    _trap(monkeypatch, marker)
    with pytest.raises(TransformerXLError, match=r"holding code \(model/code/evil.py\)"):
        safe_torch_load(tmp_path / "model.pt")
    assert not marker.exists()


def test_a_pickled_payload_in_training_state_never_runs(tmp_path: Path) -> None:
    from transformer_xl.training.checkpoint import load_training_state

    marker = tmp_path / "pwned"
    torch.save({"format": 1, "step": 1, "x": _Evil(marker)}, tmp_path / "training_state.pt")
    with pytest.raises(TransformerXLError, match="refusing to load"):
        load_training_state(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "training_state.pt"])
def test_a_text_file_under_a_torch_name_is_a_one_line_error(name: str, tmp_path: Path) -> None:
    from transformer_xl.training.checkpoint import load_training_state

    save_pretrained(_model(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / name).write_text("these are my notes, not weights\n")
    load = load_pretrained if name == "model.pt" else load_training_state
    with pytest.raises(TransformerXLError, match=f"{name} is not a torch checkpoint") as info:
        load(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "vocab.json"])
def test_a_flipped_bit_is_an_error_naming_the_file(name: str, tmp_path: Path) -> None:
    from transformer_xl.data.vocab import Vocabulary

    vocab = Vocabulary("char", [chr(65 + i) for i in range(40)])
    save_pretrained(_model(), tmp_path, vocab=vocab)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle (inside the tensors for the weights)
    path.write_bytes(bytes(data))
    with pytest.raises(TransformerXLError, match=f"{name} does not match the sha256 recorded"):
        load_pretrained(tmp_path)
        load_vocabulary(tmp_path)


def test_a_directory_without_checksums_still_loads(tmp_path: Path) -> None:
    model = _model()
    save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "checksums.json").read_text())["sha256"].keys() == {"config.json",
                                                                                      "model.safetensors"}
    (tmp_path / "checksums.json").unlink()
    assert torch.equal(load_pretrained(tmp_path).state_dict()["word_emb.emb_layers.0.weight"],
                       model.state_dict()["word_emb.emb_layers.0.weight"])


def test_a_vocabulary_of_another_size_than_n_token_is_refused(tmp_path: Path) -> None:
    from transformer_xl.data.vocab import Vocabulary

    save_pretrained(_model(), tmp_path, vocab=Vocabulary("char", list("abc")))
    with pytest.raises(TransformerXLError, match="vocab.json has 3 symbols but .*n_token 40"):
        load_vocabulary(tmp_path)


def test_a_huge_config_beside_small_weights_fails_before_allocating(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    save_pretrained(_model(), tmp_path)
    (tmp_path / "checksums.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(n_token=10_000_000)
    (tmp_path / "config.json").write_text(json.dumps(config))
    built = []
    real_init = TransformerXLLM.__init__

    def counting_init(self, *args, **kwargs):
        built.append(torch.empty(0).device.type)  # the default device while the model is built
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(TransformerXLLM, "__init__", counting_init)
    started = time.perf_counter()
    with pytest.raises(TransformerXLError, match="model.safetensors does not match .*config.json"):
        load_pretrained(tmp_path)
    assert time.perf_counter() - started < 5
    assert built == ["meta"]  # only the meta model was built: no real allocation happened
    config.update(n_token=40, n_layer=10**6)  # a million layers: refused before even the meta model
    (tmp_path / "config.json").write_text(json.dumps(config))
    built.clear()
    with pytest.raises(TransformerXLError, match="1000000 layers"):
        load_pretrained(tmp_path)
    assert built == []


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_config_that_is_a_fifo_or_dev_zero_does_not_hang(kind: str, tmp_path: Path) -> None:
    save_pretrained(_model(), tmp_path)
    (tmp_path / "checksums.json").unlink()
    (tmp_path / "config.json").unlink()
    if kind == "fifo":
        os.mkfifo(tmp_path / "config.json")
    else:
        os.symlink("/dev/zero", tmp_path / "config.json")
    signal.alarm(20)  # a regression would block forever: fail instead
    try:
        with pytest.raises(TransformerXLError, match="not a regular file"):
            load_pretrained(tmp_path)
    finally:
        signal.alarm(0)


def test_a_run_directory_loads_like_its_checkpoint(tmp_path: Path) -> None:
    """load_pretrained / load_vocabulary accept a training run directory: best/ first, else last/."""
    from transformer_xl.data.vocab import Vocabulary

    vocab = Vocabulary("char", [chr(65 + i) for i in range(CONFIG.n_token)])
    last, best = _model(), TransformerXLLM(CONFIG).eval()
    save_pretrained(last, tmp_path / "run" / "last", vocab=vocab)
    loaded = load_pretrained(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), last.state_dict().values()))
    assert load_vocabulary(tmp_path / "run") == vocab
    save_pretrained(best, tmp_path / "run" / "best")
    loaded = load_pretrained(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), best.state_dict().values()))
    with pytest.raises(TransformerXLError, match="no checkpoint|not found"):
        load_pretrained(tmp_path / "empty-run-that-does-not-exist")
