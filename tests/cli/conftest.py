"""Prepared tiny corpora and a trained tiny checkpoint shared by the CLI tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from transformer_xl.cli import main

# 1 layer, 16 wide: a step takes milliseconds
TINY_MODEL = ["--model.n_layer", "1", "--model.d_model", "16", "--model.n_head", "2", "--model.d_head", "8",
              "--model.d_inner", "32", "--model.seg_len", "8", "--model.mem_len", "8", "--model.dropout", "0.1"]
TINY_TRAIN = ["--train.batch_size", "4", "--train.log_every", "1", "--train.eval_every", "2",
              "--train.save_every", "2", "--train.eval_max_tokens", "200", "--train.tensorboard", "false",
              "--no-progress"]


def _corpus_text() -> str:
    lines = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(120)]
    return "".join(lines)


def _prepare(root: Path, level: str) -> Path:
    from transformer_xl.data.cache import prepare_corpus

    source = root / "corpus.txt"
    source.write_text(_corpus_text(), encoding="utf-8")
    out = root / f"data-{level}"
    prepare_corpus("text", source, out, level=level, progress=False, valid_fraction=0.1, test_fraction=0.1)
    return out


@pytest.fixture(scope="session")
def char_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(tmp_path_factory.mktemp("char"), "char")


@pytest.fixture(scope="session")
def byte_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(tmp_path_factory.mktemp("byte"), "byte")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, char_data: Path) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    code = main(["train", "--data", str(char_data), "--out", str(out), *TINY_MODEL, *TINY_TRAIN,
                 "--train.max_steps", "4", "--eval.seg_len", "4", "--eval.mem_len", "12"])
    assert code == 0
    return out


def with_saved_eval(run: Path, dst: Path, **fields: object) -> Path:
    """A copy of ``run``'s last checkpoint whose run.json [eval] section has ``fields`` set (as a preset or
    ``txl train --eval.FIELD`` would have saved them)."""
    import json
    import shutil

    shutil.copytree(run / "last", dst)
    config = json.loads((dst / "run.json").read_text(encoding="utf-8"))
    config["eval"].update(fields)
    (dst / "run.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return dst
