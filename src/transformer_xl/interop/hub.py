"""A Hugging Face hub id (``transfo-xl/transfo-xl-wt103``) as a local folder, through ``huggingface_hub``.

Only the files a conversion reads are fetched (config, safetensors or bin weights and their index,
the vocabulary files); TensorFlow weights and anything else in the repository are not. The files are
then read like any folder: JSON and safetensors as data, ``pytorch_model.bin`` with ``weights_only``,
``vocab.pkl`` through the inert unpickler of :mod:`.hf_vocab`. ``HF_HUB_OFFLINE=1`` (read at each call)
or ``local_files_only=True`` uses only the local cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..config import TransformerXLError

__all__ = ["HUB_FILES", "is_hub_id", "hub_snapshot", "resolve_hf_source"]

HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
             "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin",
             "vocab.json", "vocab.pkl", "vocab.bin", "vocab.txt"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def is_hub_id(text: str) -> bool:
    """``owner/name`` with hub-legal characters (a path that exists is a folder, not an id)."""
    return bool(_HUB_ID.match(text)) and ".." not in text


def _offline_from_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_snapshot(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                 local_files_only: bool | None = None) -> Path:
    """The local folder holding ``repo_id``'s conversion files (downloaded into the hub cache if needed)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise TransformerXLError(f"{repo_id!r} looks like a Hugging Face hub id, but huggingface_hub is not "
                                 "installed: .venv/bin/pip install -e '.[hf]' in a git clone, or pass a downloaded "
                                 "folder") from None
    offline = _offline_from_env() if local_files_only is None else local_files_only
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir),
                                   local_files_only=offline, allow_patterns=HUB_FILES)
    except Exception as exc:  # huggingface_hub's errors: not cached offline, no network, unknown repository
        detail = " ".join(str(exc).split())[:300]
        hint = ("it is not in the local hub cache and HF_HUB_OFFLINE is set; download it on a connected machine "
                "or pass a folder" if offline else "check the id and the network, or pass a downloaded folder")
        raise TransformerXLError(f"cannot fetch {repo_id!r} from the Hugging Face hub "
                                 f"({type(exc).__name__}: {detail}); {hint}") from None
    return Path(folder)


def resolve_hf_source(source: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
                      local_files_only: bool | None = None) -> Path:
    """A Hugging Face checkpoint folder: ``source`` itself when it exists, else the snapshot of the hub id."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise TransformerXLError(f"{path} is a file; pass the Hugging Face checkpoint folder (config.json, "
                                     "weights, vocab.pkl) or a hub id such as transfo-xl/transfo-xl-wt103")
        return path
    if is_hub_id(str(source)):
        return hub_snapshot(str(source), revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    raise TransformerXLError(f"Hugging Face checkpoint directory not found: {path} (nor is it a hub id owner/name)")
