"""Bad inputs for every `txl` subcommand: each must give a clear one-line error and a non-zero exit.

Shared by tests/cli/test_bad_input.py (in process) and benchmarks/bad_input.py (each case in its own
process with a timeout, for the table in benchmarks/RESULTS.md). A case is (what was tried, a function
that prepares its files and returns the argv, text the error must contain).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Informational lines a command may print before its error (txl train without --preset names the model
# it picked); every other stderr line counts against the one-line error.
NOTICE_PREFIXES = ("no --preset:",)


def error_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines that are not known notices."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(NOTICE_PREFIXES)]


@dataclass(frozen=True)
class Env:
    char_data: Path  # prepared char-level corpus
    byte_data: Path  # prepared byte-level corpus (another vocabulary)
    run: Path  # a trained tiny run on char_data (last/, best/)
    tmp: Path  # scratch space for this case


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Env], list[str]]
    needle: str  # in the error line (or, for an accepted input, in stderr; "" for nothing)
    accepted: bool = False  # a valid request by design: exit 0, and still no traceback
    heavy: bool = False  # tries a large allocation: run in its own process only (benchmarks/bad_input.py)


def _ckpt_copy(env: Env) -> Path:
    dst = env.tmp / "ckpt"
    shutil.copytree(env.run / "last", dst)
    return dst


def _data_copy(env: Env) -> Path:
    dst = env.tmp / "data"
    shutil.copytree(env.char_data, dst)
    return dst


def _run_copy(env: Env) -> Path:
    dst = env.tmp / "run"
    shutil.copytree(env.run, dst)
    return dst


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot what you think\x93" * 7)


def _eval(ck: Path, data: Path, *extra: str) -> list[str]:
    return ["eval", "--checkpoint", str(ck), "--data", str(data), "--no-progress", "--device", "cpu", *extra]


def _gen(ck: Path, *extra: str) -> list[str]:
    return ["generate", "--checkpoint", str(ck), "--device", "cpu", *extra]


def _corrupt_weights(env: Env) -> list[str]:
    ck = _ckpt_copy(env)
    _garbage(ck / "model.safetensors")
    return _eval(ck, env.char_data)


def _truncated_weights(env: Env) -> list[str]:
    ck = _ckpt_copy(env)
    _truncate(ck / "model.safetensors")
    return _eval(ck, env.char_data)


def _corrupt_config(env: Env) -> list[str]:
    ck = _ckpt_copy(env)
    (ck / "config.json").write_text("{ \"n_layer\": 1, ")
    return _gen(ck, "--prompt", "def", "--max-new-tokens", "2")


def _mismatched_config(env: Env) -> list[str]:
    ck = _ckpt_copy(env)
    text = (ck / "config.json").read_text().replace('"d_model": 16', '"d_model": 32')
    (ck / "config.json").write_text(text)
    return _eval(ck, env.char_data)


def _truncated_state(env: Env) -> list[str]:
    run = _run_copy(env)
    _truncate(run / "last" / "training_state.pt")
    return ["train", "--data", str(env.char_data), "--out", str(run), "--resume", "--no-progress"]


def _garbage_run_json(env: Env) -> list[str]:
    run = _run_copy(env)
    (run / "last" / "run.json").write_bytes(b"\xff\xfe\x00garbage")
    return ["train", "--data", str(env.char_data), "--out", str(run), "--resume", "--no-progress"]


def _corrupt_vocab(env: Env) -> list[str]:
    ck = _ckpt_copy(env)
    (ck / "vocab.json").write_text("[1, 2, 3]")
    return _gen(ck, "--prompt", "def", "--max-new-tokens", "2")


def _empty_checkpoint(env: Env) -> list[str]:
    (env.tmp / "empty").mkdir()
    return _eval(env.tmp / "empty", env.char_data)


def _truncated_cache(env: Env) -> list[str]:
    data = _data_copy(env)
    _truncate(data / "test.npy", 0.3)
    return _eval(env.run, data)


def _garbage_cache(env: Env) -> list[str]:
    data = _data_copy(env)
    _garbage(data / "train.npy")
    return ["train", "--data", str(data), "--out", str(env.tmp / "r"), "--no-progress"]


def _corrupt_meta(env: Env) -> list[str]:
    data = _data_copy(env)
    (data / "meta.json").write_text("not json")
    return _eval(env.run, data)


def _cache_of_other_vocab(env: Env) -> list[str]:
    import numpy as np

    data = _data_copy(env)
    ids = np.load(data / "test.npy")
    np.save(data / "test.npy", np.full_like(ids, 200))  # same length and dtype, ids beyond the vocabulary
    return _eval(env.run, data)


def _write(env: Env, name: str, content: bytes) -> Path:
    path = env.tmp / name
    path.write_bytes(content)
    return path


NON_UTF8 = b"def f(x):\n    return '\xff\xfe caf\xe9'\n"


# --- issue 12: nothing executes, checksums, validation before allocation, regular files only ---------------
def _torchscript(path: Path) -> Path:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; it is still what an attacker would use
        torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(path))
    return path


def _convert_torchscript(flag: bool):
    def argv(env: Env) -> list[str]:
        src = _torchscript(env.tmp / "model.pt")
        return ["convert", "--from", "original", "--to", "ours", str(src), str(env.tmp / "dst"),
                *(["--unsafe-pickle"] if flag else [])]
    return argv


def _weights_as(env: Env, name: str, content: bytes | None = None) -> Path:
    ck = _ckpt_copy(env)
    (ck / "model.safetensors").unlink()
    (ck / "checksums.json").unlink()
    if content is None:
        _torchscript(ck / name)
    else:
        (ck / name).write_bytes(content)
    return ck


def _zip_with_code(env: Env) -> list[str]:
    import zipfile

    import torch
    from safetensors.torch import load_file

    ck = _ckpt_copy(env)
    state = load_file(str(ck / "model.safetensors"))
    (ck / "model.safetensors").unlink()
    (ck / "checksums.json").unlink()
    torch.save(state, ck / "model.pt")
    with zipfile.ZipFile(ck / "model.pt", "a") as archive:
        archive.writestr("model/code/payload.py", "import os\n")
    return _eval(ck, env.char_data)


def _text_training_state(env: Env) -> list[str]:
    run = _run_copy(env)
    (run / "last" / "checksums.json").unlink()  # else the checksum refuses it first (the next case)
    (run / "last" / "training_state.pt").write_text("my notes\n")
    return ["train", "--data", str(env.char_data), "--out", str(run), "--resume", "--no-progress"]


def _flipped_weights(env: Env) -> list[str]:
    ck = _ckpt_copy(env)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[len(data) - 100] ^= 0x04  # one bit of one weight: the model would silently differ
    (ck / "model.safetensors").write_bytes(bytes(data))
    return _eval(ck, env.char_data)


def _huge_n_token(env: Env) -> list[str]:
    import json

    ck = _ckpt_copy(env)
    (ck / "checksums.json").unlink()  # a hand-edited config
    config = json.loads((ck / "config.json").read_text())
    config["n_token"] = 10_000_000
    (ck / "config.json").write_text(json.dumps(config))
    return _gen(ck, "--prompt", "def", "--max-new-tokens", "2")


def _special_file(name: str, kind: str):
    def argv(env: Env) -> list[str]:
        import os

        ck = _ckpt_copy(env)
        (ck / "checksums.json").unlink()
        (ck / name).unlink()
        if kind == "fifo":
            os.mkfifo(ck / name)
        else:
            os.symlink("/dev/zero", ck / name)
        return _gen(ck, "--prompt", "def", "--max-new-tokens", "2")
    return argv


def _vocab_edit(change: str):
    def argv(env: Env) -> list[str]:
        import json

        ck = _ckpt_copy(env)
        (ck / "checksums.json").unlink()
        vocab = json.loads((ck / "vocab.json").read_text())
        if change == "no symbols":
            del vocab["symbols"]
        elif change == "symbols as text":
            vocab["symbols"] = "abc"
        else:  # one symbol fewer than the model predicts
            vocab["symbols"] = vocab["symbols"][:-1]
            vocab["size"] -= 1
        (ck / "vocab.json").write_text(json.dumps(vocab))
        return _gen(ck, "--prompt", "def", "--max-new-tokens", "2")
    return argv


def _hf_dir(env: Env) -> Path:
    from transformer_xl.interop import export_hf
    from transformer_xl.pretrained import load_pretrained

    hf = env.tmp / "hf"
    export_hf(load_pretrained(env.run / "last"), hf)
    return hf


def _hf_shard_outside(env: Env) -> list[str]:
    import json
    import os

    hf = _hf_dir(env)
    os.replace(hf / "model.safetensors", env.tmp / "elsewhere.safetensors")
    from safetensors import safe_open

    with safe_open(str(env.tmp / "elsewhere.safetensors"), "pt") as f:
        names = list(f.keys())
    (hf / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": dict.fromkeys(names, "../elsewhere.safetensors")}))
    return ["convert", "--from", "hf", "--to", "ours", str(hf), str(env.tmp / "dst")]


def _hf_config_string(env: Env) -> list[str]:
    import json

    hf = _hf_dir(env)
    config = json.loads((hf / "config.json").read_text())
    config["d_model"] = "16"
    (hf / "config.json").write_text(json.dumps(config))
    return ["convert", "--from", "hf", "--to", "ours", str(hf), str(env.tmp / "dst")]


def _prepare_out_inside_path(env: Env) -> list[str]:
    from transformer_xl.cli import main

    src = env.tmp / "corpus"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a b c d e\n" * 200)
    argv = ["prepare", "--corpus", "text", "--path", str(src), "--out", str(src / "prepared"), "--level", "word"]
    assert main(argv) == 0  # the first run; the case is the second, which must not read the first's cache
    (src / "prepared" / "meta.json").unlink()  # force a rebuild over the old files
    return argv


def _resume_other_data(env: Env) -> list[str]:
    import numpy as np

    run, data = _run_copy(env), _data_copy(env)
    train = np.load(data / "train.npy")
    np.save(data / "train.npy", np.roll(train, 7))  # same vocabulary, same length, other text
    return ["train", "--data", str(data), "--out", str(run), "--resume", "--no-progress",
            "--train.max_steps", "6"]


def _meta_fifo(env: Env) -> list[str]:
    import os

    data = _data_copy(env)
    (data / "meta.json").unlink()
    os.mkfifo(data / "meta.json")
    return _eval(env.run, data)


def _score_file(name: str, content: bytes, *flags: str):
    def argv(env: Env) -> list[str]:
        return ["score", "--checkpoint", str(env.run), "--device", "cpu", "--summary-only", *flags,
                str(_write(env, name, content))]
    return argv

CASES: list[Case] = [
    # corrupt, truncated or mismatched checkpoints
    Case("checkpoint: model.safetensors is garbage", _corrupt_weights, "model.safetensors"),
    Case("checkpoint: model.safetensors truncated to half", _truncated_weights, "model.safetensors"),
    Case("checkpoint: config.json cut mid-object", _corrupt_config, "config.json"),
    Case("checkpoint: config.json says d_model 32, weights are 16", _mismatched_config, "does not match"),
    Case("checkpoint: training_state.pt truncated, --resume", _truncated_state, "training_state.pt"),
    Case("checkpoint: run.json not UTF-8, --resume", _garbage_run_json, "run.json"),
    Case("checkpoint: vocab.json is a list", _corrupt_vocab, "vocab"),
    Case("checkpoint: empty directory", _empty_checkpoint, "holds no checkpoint"),
    Case("checkpoint: path does not exist", lambda e: _eval(e.tmp / "nope", e.char_data), "not found"),
    # corrupt, truncated or mismatched caches
    Case("cache: test.npy truncated to 30%", _truncated_cache, "test.npy"),
    Case("cache: train.npy is garbage", _garbage_cache, "train.npy"),
    Case("cache: meta.json is not JSON", _corrupt_meta, "meta.json"),
    Case("cache: test.npy from another vocabulary", _cache_of_other_vocab, "vocabulary"),
    # wrong-vocabulary data
    Case("eval a char model on byte-level data", lambda e: _eval(e.run, e.byte_data), "vocabulary"),
    Case("resume a char run on byte-level data", lambda e: ["train", "--data", str(e.byte_data), "--out",
                                                            str(_run_copy(e)), "--resume", "--no-progress"],
         "n_token"),
    # lengths of zero or negative
    Case("eval --seg-len 0", lambda e: _eval(e.run, e.char_data, "--seg-len", "0"), "seg_len"),
    Case("eval --mem-len -1", lambda e: _eval(e.run, e.char_data, "--mem-len", "-1"), "mem_len"),
    Case("eval --batch-size -3", lambda e: _eval(e.run, e.char_data, "--batch-size", "-3"), "batch_size"),
    Case("eval --clamp-len -2 (documented: <= 0 is no clamping)",
         lambda e: _eval(e.run, e.char_data, "--clamp-len", "-2"), "", accepted=True),
    Case("generate --max-new-tokens -1", lambda e: _gen(e.run, "--prompt", "def", "--max-new-tokens", "-1"),
         "max_new_tokens"),
    Case("generate --top-k -1", lambda e: _gen(e.run, "--prompt", "def", "--top-k", "-1"), "top"),
    Case("generate --temperature -1", lambda e: _gen(e.run, "--prompt", "def", "--temperature", "-1"),
         "temperature"),
    Case("generate --top-p 0", lambda e: _gen(e.run, "--prompt", "def", "--top-p", "0"), "top"),
    Case("score --seg-len 0", lambda e: ["score", "--checkpoint", str(e.run), "--seg-len", "0", "--device", "cpu",
                                         str(_write(e, "a.txt", b"def f(x):\n"))], "seg_len"),
    Case("train --model.seg_len 0", lambda e: ["train", "--data", str(e.char_data), "--out", str(e.tmp / "r"),
                                               "--model.seg_len", "0"], "seg_len"),
    Case("train --train.max_steps -5", lambda e: ["train", "--data", str(e.char_data), "--out", str(e.tmp / "r"),
                                                  "--train.max_steps", "-5"], "max_steps"),
    Case("prepare --valid-fraction -0.1", lambda e: ["prepare", "--corpus", "text", "--path",
                                                     str(_write(e, "c.txt", b"a b c\n" * 50)), "--out",
                                                     str(e.tmp / "p"), "--valid-fraction", "-0.1"], "fraction"),
    # prompts with unknown symbols, empty input
    Case("generate: prompt of symbols not in the vocabulary", lambda e: _gen(e.run, "--prompt", "☃€漢",
                                                                          "--max-new-tokens", "2"), "replaced by <unk>", accepted=True),
    Case("generate: empty --prompt", lambda e: _gen(e.run, "--prompt", "", "--max-new-tokens", "2"), "empty"),
    Case("score: empty file", lambda e: ["score", "--checkpoint", str(e.run), "--device", "cpu",
                                         str(_write(e, "empty.txt", b""))], "empty"),
    # non-UTF-8 files
    Case("score a non-UTF-8 file", lambda e: ["score", "--checkpoint", str(e.run), "--device", "cpu",
                                              str(_write(e, "latin1.txt", NON_UTF8))], "UTF-8"),
    Case("generate --prompt-file non-UTF-8", lambda e: _gen(e.run, "--prompt-file",
                                                            str(_write(e, "p.txt", NON_UTF8)), "--max-new-tokens",
                                                            "2"), "UTF-8"),
    Case("prepare a non-UTF-8 corpus (strict)", lambda e: ["prepare", "--corpus", "text", "--level", "char",
                                                           "--path", str(_write(e, "c.txt", NON_UTF8 * 40)),
                                                           "--out", str(e.tmp / "p")], "UTF-8"),
    Case("train --config: TOML not UTF-8", lambda e: ["train", "--data", str(e.char_data), "--out",
                                                      str(e.tmp / "r"), "--config",
                                                      str(_write(e, "c.toml", b"[train]\nmax_steps = \xff\n"))],
         "c.toml"),
    Case("train --config: invalid TOML", lambda e: ["train", "--data", str(e.char_data), "--out", str(e.tmp / "r"),
                                                    "--config", str(_write(e, "c.toml", b"[train\nx=1"))], "c.toml"),
    # huge values for lengths
    Case("generate --max-new-tokens 10**12", lambda e: _gen(e.run, "--prompt", "def", "--max-new-tokens",
                                                            str(10**12)), "max-new-tokens"),
    # lengths beyond the split are bounded by it: one segment, memory of everything before (exact)
    Case("eval --seg-len 10**9 (bounded by the split)",
         lambda e: _eval(e.run, e.char_data, "--seg-len", str(10**9)), "", accepted=True),
    Case("eval --mem-len 10**9 (bounded by the split)",
         lambda e: _eval(e.run, e.char_data, "--mem-len", str(10**9)), "", accepted=True),
    Case("eval --batch-size 10**9 (bounded by the split)",
         lambda e: _eval(e.run, e.char_data, "--batch-size", str(10**9)), "", accepted=True),
    Case("generate --mem-len 10**12 (memory holds at most the tokens seen)",
         lambda e: _gen(e.run, "--prompt", "def", "--mem-len", str(10**12), "--max-new-tokens", "2"), "",
         accepted=True),
    Case("train --model.d_model 10**7", lambda e: ["train", "--data", str(e.char_data), "--out", str(e.tmp / "r"),
                                                   "--model.d_model", str(10**7), "--model.d_head", str(10**7),
                                                   "--model.n_head", "1", "--train.device", "cpu"], "memory", heavy=True),
    Case("train --train.batch_size 10**9", lambda e: ["train", "--data", str(e.char_data), "--out",
                                                      str(e.tmp / "r"), "--train.batch_size", str(10**9),
                                                      "--no-progress"], "streams"),
    # issue 12: nothing from a file executes
    Case("convert --from original --unsafe-pickle: a TorchScript archive", _convert_torchscript(True),
         "TorchScript"),
    Case("checkpoint: model.pt is a TorchScript archive", lambda e: _eval(_weights_as(e, "model.pt"), e.char_data),
         "TorchScript"),
    Case("checkpoint: model.pt is a state dict zip with a .py inside", _zip_with_code, "holding code"),
    Case("convert --from hf: shard index names ../elsewhere.safetensors", _hf_shard_outside,
         "refusing to read it"),
    # issue 12: files that are not what their name says
    Case("checkpoint: model.pt is a text file", lambda e: _eval(_weights_as(e, "model.pt", b"my notes\n"),
                                                                e.char_data), "not a torch checkpoint"),
    Case("checkpoint: training_state.pt is a text file, --resume", _text_training_state, "not a torch checkpoint"),
    Case("checkpoint: one bit of model.safetensors flipped", _flipped_weights, "sha256"),
    Case("checkpoint: config.json says n_token 10,000,000 (weights 300 KB)", _huge_n_token, "does not match"),
    Case("checkpoint: config.json is a FIFO", _special_file("config.json", "fifo"), "not a regular file"),
    Case("checkpoint: vocab.json links to /dev/zero", _special_file("vocab.json", "zero"), "not a regular file"),
    Case("checkpoint: vocab.json without its symbols field", _vocab_edit("no symbols"), "symbols"),
    Case("checkpoint: vocab.json symbols is a string", _vocab_edit("symbols as text"), "symbols"),
    Case("checkpoint: vocab.json one symbol short of n_token", _vocab_edit("short"), "n_token"),
    Case("convert --from hf: config d_model is the string \"16\"", _hf_config_string, "d_model"),
    Case("cache: meta.json is a FIFO", _meta_fifo, "not a regular file"),
    Case("train --data FILE (a text file, not a prepared directory)",
         lambda e: ["train", "--data", str(_write(e, "c.txt", b"a b c\n" * 50)), "--out", str(e.tmp / "r"),
                    "--no-progress"], "is a file"),
    Case("train --resume on other training data", _resume_other_data, "--allow-new-data"),
    Case("prepare: a one-line word corpus (no line end to cut at)",
         lambda e: ["prepare", "--corpus", "text", "--level", "word", "--path",
                    str(_write(e, "one.txt", b"word " * 4000)), "--out", str(e.tmp / "p")], "no line end"),
    Case("prepare --out inside --path, run again (reads only the corpus)", _prepare_out_inside_path, "",
         accepted=True),
    Case("score: symbols outside the vocabulary", _score_file("u.txt", "def f(x):\n    return ☃ + €\n".encode()),
         "scored as <unk>", accepted=True),
    Case("score: one 30 KB line without a line end", _score_file("line.txt", b"x = 1 " * 5_000, "--seg-len", "256"), "",
         accepted=True, heavy=True),
]
