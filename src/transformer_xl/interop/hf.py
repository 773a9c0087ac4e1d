"""Hugging Face TransfoXL checkpoints (transformers <= 4.x ``TransfoXLLMHeadModel``) <-> our model.

Our parameter names follow the original release, as Hugging Face's do, so the weight mapping is a
rename: the Hugging Face names carry a ``transformer.`` prefix on everything outside the softmax
(``crit.*``). Things that need care:

- Tied tensors (embedding and softmax weights when ``tie_word_embeddings``, projections listed in
  ``tie_projs``, global u/v when not ``untie_r``) appear once in a safetensors file and possibly under
  every name in a ``pytorch_model.bin``. We read the canonical (embedding-side) name and check the
  aliases agree when present.
- ``cluster_weight`` / ``cluster_bias``: Hugging Face's ``ProjectedAdaptiveLogSoftmax.forward`` reads
  cluster i at head column ``shortlist + i - 1``, the natural order we use (as does the original
  TensorFlow code its weights came from), so the rows are copied as they are. Only the original
  PyTorch code reads them reversed (see ``original.py``). The parity tests pin this down.
- ``pos_emb.inv_freq`` is a saved buffer in Hugging Face checkpoints; we recompute it.
- Hugging Face starts from a zero-filled memory of ``mem_len`` positions; we start from an empty one.
  To reproduce its first segment, pass ``zero_memory(model, batch_size)`` as ``memory``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..config import ModelConfig, TransformerXLError
from ..model import Memory, TransformerXLLM
from ..pretrained import assign_state, check_state_against_config, read_json, read_safetensors_header, safe_torch_load

__all__ = [
    "HF_PREFIX", "config_from_hf", "config_to_hf", "export_hf", "import_hf", "load_hf_state", "read_text_vocab",
    "state_dict_from_hf", "state_dict_to_hf", "zero_memory",
]

HF_PREFIX = "transformer."
_INV_FREQ = "transformer.pos_emb.inv_freq"


# Config ---------------------------------------------------------------------------------------------
_HF_INTS = ("vocab_size", "n_token", "n_layer", "n_head", "d_model", "d_head", "d_inner", "d_embed", "mem_len",
            "ext_len", "clamp_len", "div_val", "tgt_len", "attn_type", "sample_softmax")
_HF_FLOATS = ("dropout", "dropatt", "layer_norm_epsilon", "init_std", "proj_init_std")
_HF_BOOLS = ("same_length", "pre_lnorm", "untie_r", "tie_word_embeddings", "tie_weight", "proj_share_all_but_first")


def _check_hf_types(hf: Mapping[str, Any]) -> None:
    """One-line errors for values of the wrong type (a string where a number belongs, a nested object...)."""
    def bad(key: str, wanted: str) -> TransformerXLError:
        return TransformerXLError(f"the Hugging Face config's {key} must be {wanted}, got {hf[key]!r:.60}; "
                                  "the config.json is damaged or not a TransfoXL config")

    if not isinstance(hf, Mapping):
        raise TransformerXLError(f"a Hugging Face config is a JSON object, got {type(hf).__name__}")
    for key in _HF_INTS:
        if key in hf and hf[key] is not None and (isinstance(hf[key], bool) or not isinstance(hf[key], int)):
            raise bad(key, "an integer")
    for key in _HF_FLOATS:
        value = hf.get(key)
        if key in hf and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
                          or value in (float("inf"), float("-inf"))):
            raise bad(key, "a finite number")
    for key in _HF_BOOLS:
        if key in hf and (not isinstance(hf[key], (bool, int)) or isinstance(hf[key], float)):
            raise bad(key, "true or false")
    if "cutoffs" in hf and (not isinstance(hf["cutoffs"], list)
                            or not all(type(c) is int for c in hf["cutoffs"])):
        raise bad("cutoffs", "a list of integers")
    if "tie_projs" in hf and (not isinstance(hf["tie_projs"], list)
                              or not all(isinstance(t, (bool, int)) for t in hf["tie_projs"])):
        raise bad("tie_projs", "a list of true/false")


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
    """Our ModelConfig from a Hugging Face TransfoXL config.json (a dict), refusing what we cannot run."""
    _check_hf_types(hf)
    attn_type = hf.get("attn_type", 0)
    if attn_type != 0:
        raise TransformerXLError(f"Hugging Face attn_type={attn_type!r} is not supported (only 0, the relative "
                                 "attention of the released models)")
    if hf.get("sample_softmax", -1) > 0:
        raise TransformerXLError("sample_softmax > 0 checkpoints are not supported")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise TransformerXLError(f"layer_norm_epsilon={eps} is not supported: our layer norms use 1e-5")
    cutoffs = list(hf.get("cutoffs", []))
    if "tie_projs" in hf:
        tie_projs = [bool(t) for t in hf["tie_projs"]]
    else:  # configs that only record the constructor flag
        share = hf.get("proj_share_all_but_first", True)
        tie_projs = [False] + [bool(share)] * len(cutoffs)
    n_token = hf.get("vocab_size", hf.get("n_token"))
    if n_token is None:
        raise TransformerXLError("the Hugging Face config has no vocab_size")
    d_model = hf.get("d_model", 1024)
    values: dict[str, Any] = dict(
        n_token=n_token, n_layer=hf.get("n_layer", 18), n_head=hf.get("n_head", 16), d_model=d_model,
        d_head=hf.get("d_head", 64), d_inner=hf.get("d_inner", 4096), d_embed=hf.get("d_embed", d_model),
        dropout=hf.get("dropout", 0.1), attn_dropout=hf.get("dropatt", 0.0),
        mem_len=hf.get("mem_len", 1600), ext_len=hf.get("ext_len", 0), clamp_len=hf.get("clamp_len", 1000),
        same_length=hf.get("same_length", True), pre_norm=hf.get("pre_lnorm", False),
        untie_rel_bias=hf.get("untie_r", True), attn_type="xl", cutoffs=tuple(cutoffs),
        div_val=hf.get("div_val", 4), tie_weight=hf.get("tie_word_embeddings", hf.get("tie_weight", True)),
        tie_projs=tuple(tie_projs), init_std=hf.get("init_std", 0.02), proj_init_std=hf.get("proj_init_std", 0.01))
    if hf.get("tgt_len"):  # recorded by old Hugging Face configs and by our export
        values["seg_len"] = hf["tgt_len"]
    try:
        return ModelConfig(**values)
    except TransformerXLError as exc:
        raise TransformerXLError(f"the Hugging Face config does not make a valid model: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise TransformerXLError(f"the Hugging Face config does not make a valid model ({type(exc).__name__}: "
                                 f"{str(exc)[:200]})") from None


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """A Hugging Face TransfoXL config.json (dict) for ``config``; ``tgt_len``/``ext_len`` ride along."""
    if config.attn_type != "xl":
        raise TransformerXLError(f"Hugging Face TransfoXL only has the relative attention 'xl', not "
                                 f"{config.attn_type!r}")
    tie_projs = list(config.tie_projs)
    return {
        "architectures": ["TransfoXLLMHeadModel"], "model_type": "transfo-xl",
        "vocab_size": config.n_token, "cutoffs": list(config.cutoffs), "d_model": config.d_model,
        "d_embed": config.d_embed, "n_head": config.n_head, "d_head": config.d_head, "d_inner": config.d_inner,
        "div_val": config.div_val, "pre_lnorm": config.pre_norm, "n_layer": config.n_layer,
        "mem_len": config.mem_len, "clamp_len": config.clamp_len, "same_length": config.same_length,
        # HF rebuilds tie_projs from this flag, then the explicit list below overrides it.
        "proj_share_all_but_first": tie_projs[1:] == [True] * config.n_clusters, "tie_projs": tie_projs,
        "attn_type": 0, "sample_softmax": -1, "adaptive": True, "dropout": config.dropout,
        "dropatt": config.attn_dropout, "untie_r": config.untie_rel_bias, "init": "normal",
        "init_range": 0.01, "proj_init_std": config.proj_init_std, "init_std": config.init_std,
        "layer_norm_epsilon": 1e-5, "eos_token_id": 0, "tie_word_embeddings": config.tie_weight,
        "tgt_len": config.seg_len, "ext_len": config.ext_len, "torch_dtype": "float32",
    }


# Weights --------------------------------------------------------------------------------------------
def _hf_name(name: str) -> str:
    """Hugging Face name of our parameter ``name``: a ``transformer.`` prefix outside the softmax."""
    return name if name.startswith("crit.") else HF_PREFIX + name


def _meta_model(config: ModelConfig) -> TransformerXLLM:
    with torch.device("meta"):  # parameter names and ties without allocating memory
        return TransformerXLLM(config)


_SHARED_BIASES = ("r_w_bias", "r_r_bias")


def state_dict_from_hf(hf_state: Mapping[str, Tensor], config: ModelConfig, *,
                       source: str | Path = "the Hugging Face checkpoint") -> dict[str, Tensor]:
    """Our state dict (canonical names only: one entry per distinct tensor) from Hugging Face tensors.

    Every Hugging Face tensor must be used: an unknown name means the checkpoint is not the model the
    config describes. Aliases of tied tensors, when present, must equal the tensor they alias.
    """
    model = _meta_model(config)
    canonical = {id(p): name for name, p in model.named_parameters()}
    out: dict[str, Tensor] = {}
    used = {_INV_FREQ}
    if not config.untie_rel_bias:
        # transformers' pytorch_model.bin (untie_r false) repeats the shared u and v under every layer's
        # name: aliases of the shared tensors, which must then be equal to them
        for key in [k for k in hf_state if k.startswith(HF_PREFIX + "layers.") and k.endswith(_SHARED_BIASES)]:
            shared = hf_state.get(HF_PREFIX + key.rsplit(".", 1)[1])
            if shared is None or not torch.equal(shared, hf_state[key]):
                raise TransformerXLError(f"{source}: {key} differs from the shared u/v, but the config has "
                                         "untie_r false; the checkpoint does not match its config")
            used.add(key)
    missing = []
    for name in canonical.values():
        key = _hf_name(name)
        if key in hf_state:
            out[name] = hf_state[key]
            used.add(key)
        else:
            missing.append(key)
    for alias, param in model.named_parameters(remove_duplicate=False):
        key = _hf_name(alias)
        if key in used or key not in hf_state:
            continue
        twin = out.get(canonical[id(param)])
        if twin is not None and not torch.equal(hf_state[key], twin):
            raise TransformerXLError(f"{source}: {key} differs from {_hf_name(canonical[id(param)])}, but the "
                                     "config ties them (tie_word_embeddings / tie_projs / untie_r)")
        used.add(key)
    unexpected = sorted(set(hf_state) - used)
    if missing or unexpected:
        raise TransformerXLError(f"{source} does not match its config: missing {missing[:8]}, unexpected "
                                 f"{unexpected[:8]}")
    return out


def state_dict_to_hf(model: TransformerXLLM) -> dict[str, Tensor]:
    """Hugging Face tensors for ``model``, each tied tensor once, as its own save_pretrained writes them."""
    state = {_hf_name(name): p.detach().cpu().contiguous() for name, p in model.named_parameters()}
    d_model = model.config.d_model
    # HF keeps the sinusoid's inverse frequencies as a persistent buffer; same formula as ours.
    state[_INV_FREQ] = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0) / d_model))
    return state


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    read_safetensors_header(path)  # a regular file with a consistent header, or a one-line error
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors' own error type for a bad header or a truncated file
        raise TransformerXLError(f"cannot read {path}: {exc}. The file is corrupt or truncated; "
                                 "download it again") from None


def _shard_path(directory: Path, name: str, index: Path) -> Path:
    """``directory/name`` for a shard an index names, refusing any name or link that leads outside the
    checkpoint: absolute paths, ``..``, links out. (A Hugging Face hub cache's snapshot links into its
    sibling ``blobs/`` folder; that one place is allowed.)"""
    parts = Path(name).parts
    if not name or "\x00" in name or Path(name).is_absolute() or ".." in parts:
        raise TransformerXLError(f"{index} names the shard {name!r}, which is not a file inside {directory}; "
                                 "refusing to read it (the index is damaged or hostile)")
    root = directory.resolve()
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    target = (directory / name).resolve()
    if not any(target == r or r in target.parents for r in roots):
        raise TransformerXLError(f"{index} names the shard {name!r}, a link to {target} outside {directory}; "
                                 "refusing to read it")
    return directory / name


def load_hf_state(directory: str | Path) -> dict[str, Tensor]:
    """The tensors of a Hugging Face checkpoint directory, without executing anything from it.

    ``model.safetensors`` (or a sharded ``model.safetensors.index.json``) is preferred; otherwise
    ``pytorch_model.bin`` (or its index) is read with ``torch.load(weights_only=True)``.
    """
    directory = Path(directory)
    for single, index, reader in (("model.safetensors", "model.safetensors.index.json", _read_safetensors),
                                  ("pytorch_model.bin", "pytorch_model.bin.index.json", safe_torch_load)):
        if (directory / single).exists():
            state = reader(directory / single)
            break
        if (directory / index).exists():
            weight_map = read_json(directory / index, what="checkpoint index").get("weight_map", {})
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TransformerXLError(f"{directory / index}: weight_map must map tensor names to shard file "
                                         "names; the index is damaged")
            state = {}
            for shard in sorted(set(weight_map.values())):
                state.update(reader(_shard_path(directory, shard, directory / index)))
            break
    else:
        raise TransformerXLError(f"no Hugging Face weights in {directory}: expected model.safetensors or "
                                 "pytorch_model.bin (TensorFlow .h5 checkpoints are not supported)")
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TransformerXLError(f"the weights in {directory} are not a state dict of tensors")
    return dict(state)


def read_text_vocab(directory: str | Path) -> list[str] | None:
    """Symbols of a text vocabulary (``vocab.txt``: one symbol per line, first field, repeats dropped as
    Hugging Face's tokenizer drops them) or None. The whole vocabulary of a directory (vocab.json,
    vocab.pkl, vocab.bin or vocab.txt) is :func:`.hf_vocab.load_hf_vocabulary`."""
    from .hf_vocab import read_hf_text_vocab

    path = Path(directory) / "vocab.txt"
    if not path.exists():
        return None
    return read_hf_text_vocab(path).symbols


def import_hf(directory: str | Path) -> TransformerXLLM:
    """Our model (eval mode) with the weights of a Hugging Face TransfoXL checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TransformerXLError(f"Hugging Face checkpoint directory not found: {directory}")
    config = config_from_hf(read_json(directory / "config.json", what="Hugging Face config"))
    state = state_dict_from_hf(load_hf_state(directory), config, source=directory)
    # shapes checked on the meta device: a config that claims a huge model is refused before allocating it
    check_state_against_config(config, {k: tuple(v.shape) for k, v in state.items()}, source=directory,
                               config_source=directory / "config.json")
    model = TransformerXLLM(config)
    assign_state(model, state, source=directory)
    return model.eval()


def export_hf(model: TransformerXLLM, directory: str | Path, *, vocab_symbols: list[str] | None = None) -> None:
    """Write ``model`` as a Hugging Face TransfoXL checkpoint: config.json + model.safetensors.

    ``TransfoXLLMHeadModel.from_pretrained(directory)`` (transformers 4.x) loads it. With
    ``vocab_symbols``, a ``vocab.txt`` (one symbol per line) is written too.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n",
                                           encoding="utf-8")
    save_file(state_dict_to_hf(model), str(directory / "model.safetensors"), metadata={"format": "pt"})
    if vocab_symbols is not None:
        (directory / "vocab.txt").write_text("".join(s + "\n" for s in vocab_symbols), encoding="utf-8")


def zero_memory(model: TransformerXLLM, batch_size: int, *, mem_len: int | None = None) -> Memory:
    """Hugging Face's initial memory: ``mem_len`` (default: the training value) zero states per layer,
    (B, mem_len, d_model) each.

    Our model starts from an empty memory (the paper's definition); pass this as ``memory`` only to
    reproduce a Hugging Face (or original-code) first segment exactly.
    """
    param = next(model.parameters())
    length = model.config.mem_len if mem_len is None else mem_len
    shape = (batch_size, length, model.config.d_model)
    return Memory(tuple(torch.zeros(shape, dtype=param.dtype, device=param.device)
                        for _ in range(model.config.n_layer)))
