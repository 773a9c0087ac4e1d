"""Weight import and export of other Transformer-XL implementations.

- :mod:`.hf`: Hugging Face TransfoXL checkpoint directories (config.json + model.safetensors or
  pytorch_model.bin read with ``weights_only=True``), both directions.
- :mod:`.hf_vocab`: Hugging Face TransfoXL vocabularies (vocab.pkl / vocab.bin read by an unpickler that
  builds nothing, vocab.txt) and ours written for Hugging Face; :mod:`.hub`: hub ids through huggingface_hub.
- :mod:`.original`: the original release's and NVIDIA's pickled PyTorch checkpoints, only behind an
  explicit unsafe flag and through an unpickler restricted to an allow-list of classes.
- :mod:`.tf`: the original release's TensorFlow checkpoints (the paper's released models), read by the
  pure-Python checkpoint reader :mod:`.tf_checkpoint` (no TensorFlow needed).
- :mod:`.export`: a fixed-shape, memory-carrying inference step as a ``torch.export`` program.
"""

from .export import StreamingSession, StreamingStep, export_streaming
from .hf import config_from_hf, config_to_hf, export_hf, import_hf, read_text_vocab, zero_memory
from .hf_vocab import load_hf_vocabulary, read_vocab_pickle, write_hf_vocabulary
from .hub import resolve_hf_source
from .original import import_original
from .tf import import_tf
from .tf_checkpoint import TFCheckpoint

__all__ = [
    "StreamingSession", "StreamingStep", "TFCheckpoint", "export_streaming", "config_from_hf", "config_to_hf",
    "export_hf", "import_hf", "import_original", "import_tf", "load_hf_vocabulary", "read_text_vocab",
    "read_vocab_pickle", "resolve_hf_source", "write_hf_vocabulary", "zero_memory",
]
