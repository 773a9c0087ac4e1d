"""Encoding benchmark (issue 4, item 3): word-level vocabulary + encoding of N copies of WikiText-2's
training file (50 copies: ~540 MB, ~104M tokens, the size of WikiText-103), against Hugging Face's
TransfoXLCorpus (transformers 4.37.2) on the same file in the same run.

    .venv/bin/python benchmarks/bench_encoding.py --wikitext2 ../shared/data/wikitext-2 \
        --copies 50 --repeats 3 --baseline-copies 1 --baseline-repeats 1

Each measurement runs in a fresh subprocess, which reports its wall time and its own peak RSS
(ru_maxrss), so one run's memory cannot hide in another's. Ours: ``prepare_corpus("wikitext-103", ...)``
(vocabulary from train, <eos> per line, train/valid/test to .npy). Baseline: ``TransfoXLCorpus(special=
["<eos>"]).build_corpus(dir, "wt103")``, the code path of HF's ``get_lm_corpus`` for WikiText-103
(needs the ``bench`` extra: transformers and sacremoses). The baseline runs the Moses tokenizer in pure
Python, so by default it is measured on fewer copies; ours is measured on those same files too, and the
ratio is taken there, on identical input.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
kind, folder, out = sys.argv[1], sys.argv[2], sys.argv[3]
# Imports happen before the clock starts: the work is timed, not loading torch or transformers.
if kind == "ours":
    from transformer_xl.data.cache import prepare_corpus
    t0 = time.perf_counter()
    p = prepare_corpus("wikitext-103", folder, out, progress=False, force=True)
    tokens, vocab = p.tokens["train"], len(p.vocab)
else:
    import logging
    logging.disable(logging.CRITICAL)
    from transformers.models.deprecated.transfo_xl.tokenization_transfo_xl import TransfoXLCorpus
    t0 = time.perf_counter()
    corpus = TransfoXLCorpus(special=["<eos>"], lower_case=False)
    corpus.build_corpus(folder, "wt103")
    tokens, vocab = len(corpus.train), len(corpus.vocab)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_tokens": tokens, "vocab": vocab}))
"""


def make_folder(root: Path, wikitext2: Path, copies: int) -> Path:
    """A WikiText-103-style folder whose train file is `copies` copies of wiki.train.tokens; HF's reader
    wants train.txt / valid.txt / test.txt, ours wiki.*.tokens: both names point at the same files."""
    folder = root / f"x{copies}"
    folder.mkdir()
    with open(folder / "wiki.train.tokens", "wb") as out:
        data = (wikitext2 / "wiki.train.tokens").read_bytes()
        for _ in range(copies):
            out.write(data)
    for split in ("valid", "test"):
        shutil.copy(wikitext2 / f"wiki.{split}.tokens", folder / f"wiki.{split}.tokens")
    for split in ("train", "valid", "test"):
        os.link(folder / f"wiki.{split}.tokens", folder / f"{split}.txt")
    return folder


def measure(kind: str, folder: Path, repeats: int, timeout: float) -> list[dict]:
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=folder.parent) as out:
            proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(folder), out], capture_output=True,
                                  text=True, timeout=timeout)
        if proc.returncode:
            raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {kind:8} {folder.name}: {runs[-1]}", flush=True)
    return runs


def summary(runs: list[dict]) -> dict:
    return {"median_s": statistics.median(r["seconds"] for r in runs), "runs_s": [round(r["seconds"], 2) for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "train_tokens": runs[0]["train_tokens"],
            "vocab": runs[0]["vocab"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wikitext2", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/wikitext-2")
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-copies", type=int, default=1)
    ap.add_argument("--baseline-repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (needs ~1.2 GB for 50 copies)")
    args = ap.parse_args()
    load = os.getloadavg()
    result = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}", "loadavg_before": load}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        small = make_folder(Path(tmp), args.wikitext2, args.baseline_copies)
        result["same_file"] = {"copies": args.baseline_copies,
                               "hf": summary(measure("hf", small, args.baseline_repeats, args.timeout)),
                               "ours": summary(measure("ours", small, args.repeats, args.timeout))}
        big = make_folder(Path(tmp), args.wikitext2, args.copies)
        result["bound"] = {"copies": args.copies, "bytes": (big / "wiki.train.tokens").stat().st_size,
                           "ours": summary(measure("ours", big, args.repeats, args.timeout))}
    same = result["same_file"]
    result["speedup_same_file"] = same["hf"]["median_s"] / same["ours"]["median_s"]
    result["hf_extrapolated_s_for_bound"] = same["hf"]["median_s"] * args.copies / args.baseline_copies
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
