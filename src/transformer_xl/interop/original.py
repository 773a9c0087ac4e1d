"""The original release's and NVIDIA's PyTorch checkpoints: pickles, read only behind an explicit flag.

- Original (kimiyoung/transformer-xl, ``pytorch/train.py``): ``torch.save(model)``, a whole pickled
  ``mem_transformer.MemTransformerLM``. Config values are read from the module's attributes, ties from
  tensor identity (the pickle keeps shared tensors shared).
- NVIDIA (DeepLearningExamples, Transformer-XL): a dict with ``model_config`` and ``model_state``;
  the softmax is stored as ``out_layers_weights`` / ``out_layers_biases`` / ``shared_out_projs``.

Both PyTorch codes read the cluster logits reversed (head column ``-i`` for tail cluster i), so
``cluster_weight`` / ``cluster_bias`` rows are flipped into our natural order.

Unpickling runs whatever the file names, so this module never uses a permissive unpickler: classes are
resolved through an allow-list. Model classes of those repositories become inert :class:`_Stub`
objects that only hold their attributes; torch's tensor and storage rebuilders and a few plain
containers are the only callables allowed. Anything else aborts the load.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from ..config import ModelConfig, TransformerXLError
from ..model import TransformerXLLM
from ..pretrained import assign_state, check_state_against_config, check_torch_file

__all__ = ["import_original", "restricted_load"]


class _Stub:
    """Stands in for a class of the original code: keeps the pickled attributes, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


# Modules whose classes may appear in these checkpoints; each becomes an inert _Stub subclass.
_STUB_MODULES = ("mem_transformer", "utils.proj_adaptive_softmax", "utils.log_uniform_sampler",
                 "utils.vocabulary", "torch.nn.modules.", "torch.nn.backends.", "apex.")
_STUB_NAMES = {("argparse", "Namespace")}
# Real callables allowed: they only build tensors, storages and containers.
_REAL = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int, ("builtins", "float"): float, ("builtins", "list"): list,
    ("builtins", "dict"): dict, ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
}
_stub_classes: dict[tuple[str, str], type] = {}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins"}.get(module, module)  # protocol-2 pickles use Python 2 names
        if (module, name) in _REAL:
            return _REAL[(module, name)]
        if module == "torch" and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)  # storage types and dtypes: data, not code
        if (module, name) in _STUB_NAMES or any(module == m or module.startswith(m) for m in _STUB_MODULES):
            key = (module, name)
            if key not in _stub_classes:
                _stub_classes[key] = type(name, (_Stub,), {"__module__": "transformer_xl.stub." + module})
            return _stub_classes[key]
        raise pickle.UnpicklingError(f"{module}.{name} is not on the allow-list of Transformer-XL checkpoint "
                                     "classes; refusing to build it")


# torch.load calls pickle_module.Unpickler (and .load for the legacy format's headers).
_restricted_pickle = SimpleNamespace(
    __name__="transformer_xl_restricted_pickle", Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load())


def restricted_load(path: str | Path, *, unsafe_pickle: bool = False) -> Any:
    """Unpickle a torch checkpoint building only allow-listed classes (requires ``unsafe_pickle=True``).

    TorchScript archives and zips holding code are refused first, flag or not: torch.load would hand them
    to the TorchScript loader, which runs their code and never consults this unpickler."""
    path = Path(path)
    if not path.exists():
        raise TransformerXLError(f"checkpoint file not found: {path}")
    check_torch_file(path)
    if not unsafe_pickle:
        raise TransformerXLError(f"{path} is a pickled checkpoint; reading it needs the explicit unsafe flag "
                                 "(--unsafe-pickle / unsafe_pickle=True), and only for files you trust")
    try:
        return torch.load(path, map_location="cpu", pickle_module=_restricted_pickle, weights_only=False)
    except pickle.UnpicklingError as exc:
        raise TransformerXLError(f"refusing to load {path}: {' '.join(str(exc).split())[:300]}") from None
    except Exception as exc:  # damaged bytes surface as many types (RuntimeError, KeyError, struct.error, ...)
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise TransformerXLError(f"cannot read {path}: {detail}. Is it an original or NVIDIA Transformer-XL "
                                 "checkpoint?") from None


# --------------------------------------------------------------------------------------------------
def _flip_clusters(state: dict[str, Tensor]) -> None:
    for name in ("crit.cluster_weight", "crit.cluster_bias"):
        if name in state:
            state[name] = state[name].flip(0).contiguous()


def _module_state(obj: Any, prefix: str = "") -> dict[str, Tensor]:
    """state_dict of a stubbed module tree: walk _parameters, _buffers and _modules as nn.Module does."""
    out: dict[str, Tensor] = {}
    for key in ("_parameters", "_buffers"):
        for name, tensor in (getattr(obj, key, None) or {}).items():
            if tensor is not None:
                out[prefix + name] = tensor
    for name, child in (getattr(obj, "_modules", None) or {}).items():
        if child is not None:
            out.update(_module_state(child, f"{prefix}{name}."))
    return out


def _original_config(model: Any) -> tuple[ModelConfig, dict[str, Tensor]]:
    """Config and state of a pickled ``MemTransformerLM`` (kimiyoung/transformer-xl, PyTorch)."""
    if getattr(model, "attn_type", 0) != 0:
        raise TransformerXLError(f"original attn_type={model.attn_type} is not supported by the importer "
                                 "(only 0, the relative attention of the released models)")
    mods = model._modules
    layer0 = mods["layers"]._modules["0"]
    attn, ff = layer0._modules["dec_attn"], layer0._modules["pos_ff"]
    crit, emb = mods["crit"], mods["word_emb"]
    emb_layers = list(emb._modules["emb_layers"]._modules.values())
    emb_projs = list(emb._modules["emb_projs"]._parameters.values())
    out_layers = list(crit._modules["out_layers"]._modules.values())
    out_projs = list(crit._modules["out_projs"]._parameters.values())
    tie_weight = all(o._parameters["weight"] is e._parameters["weight"] for o, e in zip(out_layers, emb_layers))
    tie_projs = tuple(p is not None and any(p is q for q in emb_projs) for p in out_projs)
    if crit.div_val == 1 and emb.d_embed == model.d_model:
        tie_projs = (False,) + (True,) * (len(out_projs) - 1)  # no projections: the flags do not matter
    config = ModelConfig(
        n_token=model.n_token, n_layer=model.n_layer, n_head=model.n_head, d_model=model.d_model,
        d_head=model.d_head, d_inner=ff.d_inner, d_embed=model.d_embed, dropout=mods["drop"].p,
        attn_dropout=attn._modules["dropatt"].p, seg_len=model.tgt_len, mem_len=model.mem_len,
        ext_len=model.ext_len, clamp_len=model.clamp_len, same_length=model.same_length,
        pre_norm=bool(attn.pre_lnorm), cutoffs=tuple(crit.cutoffs[:-1]), div_val=crit.div_val,
        tie_weight=tie_weight, tie_projs=tie_projs)
    return config, _module_state(model)


def _nvidia_config(checkpoint: dict) -> tuple[ModelConfig, dict[str, Tensor]]:
    """Config and state of an NVIDIA DeepLearningExamples checkpoint dict."""
    mc, raw = checkpoint["model_config"], checkpoint["model_state"]
    if mc.get("attn_type", 0) != 0:
        raise TransformerXLError(f"NVIDIA attn_type={mc['attn_type']} is not supported (only 0)")
    cutoffs = tuple(mc.get("cutoffs", ()))
    config = ModelConfig(
        n_token=mc["n_token"], n_layer=mc["n_layer"], n_head=mc["n_head"], d_model=mc["d_model"],
        d_head=mc["d_head"], d_inner=mc["d_inner"], d_embed=mc.get("d_embed") or mc["d_model"],
        dropout=mc.get("dropout", 0.1), attn_dropout=mc.get("dropatt", 0.0), seg_len=mc.get("tgt_len", 128),
        mem_len=mc.get("mem_len", 128), ext_len=mc.get("ext_len", 0), clamp_len=mc.get("clamp_len", -1),
        same_length=mc.get("same_length", False), pre_norm=mc.get("pre_lnorm", False), cutoffs=cutoffs,
        div_val=mc.get("div_val", 1), tie_weight=mc.get("tie_weight", True),
        tie_projs=tuple(mc.get("tie_projs") or [False] + [True] * len(cutoffs)))
    return config, _rename_out_layers(raw)


def _rename_out_layers(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """NVIDIA names -> ours: out_layers_{weights,biases}.i -> out_layers.i.{weight,bias}."""
    state: dict[str, Tensor] = {}
    for name, tensor in raw.items():
        name = name.removeprefix("module.")
        if name.startswith("crit.shared_out_projs."):
            continue  # the embedding projections again (tied): read from word_emb
        for nv, ours in (("crit.out_layers_weights.", "weight"), ("crit.out_layers_biases.", "bias")):
            if name.startswith(nv):
                name = f"crit.out_layers.{name[len(nv):]}.{ours}"
        state[name] = tensor
    return state


def import_original(path: str | Path, *, flavour: str = "original", unsafe_pickle: bool = False) -> TransformerXLLM:
    """Our model (eval mode) from an original (``flavour="original"``) or NVIDIA checkpoint file."""
    if flavour not in ("original", "nvidia"):
        raise TransformerXLError(f"flavour must be 'original' or 'nvidia', got {flavour!r}")
    obj = restricted_load(path, unsafe_pickle=unsafe_pickle)
    try:
        config, state = _read_checkpoint(obj, path, flavour)
    except TransformerXLError:
        raise
    except (KeyError, AttributeError, TypeError, ValueError, IndexError) as exc:
        raise TransformerXLError(f"{path} is not a complete {flavour} Transformer-XL checkpoint ({type(exc).__name__}: "
                                 f"{str(exc)[:200]}); check --from original|nvidia and the file") from None
    state.pop("pos_emb.inv_freq", None)  # recomputed
    _flip_clusters(state)
    if not all(isinstance(t, Tensor) for t in state.values()):
        raise TransformerXLError(f"{path}: the model state holds values that are not tensors")
    check_state_against_config(config, {k: tuple(v.shape) for k, v in state.items()}, source=path,
                               config_source="the config stored in it")  # before allocating the model
    model = TransformerXLLM(config)
    assign_state(model, state, source=path)
    return model.eval()


def _read_checkpoint(obj: Any, path: str | Path, flavour: str) -> tuple[ModelConfig, dict[str, Tensor]]:
    if flavour == "original":
        if isinstance(obj, dict) and "model_state" in obj:
            raise TransformerXLError(f"{path} looks like an NVIDIA checkpoint; use --from nvidia")
        if not isinstance(obj, _Stub) or not hasattr(obj, "_modules"):
            raise TransformerXLError(f"{path} does not hold a pickled MemTransformerLM (torch.save(model))")
        config, state = _original_config(obj)
    else:
        if not isinstance(obj, dict) or "model_state" not in obj or "model_config" not in obj:
            raise TransformerXLError(f"{path} is not an NVIDIA checkpoint (a dict with model_config and "
                                     "model_state); for torch.save(model) files use --from original")
        config, state = _nvidia_config(obj)
    return config, state
