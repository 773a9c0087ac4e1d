"""Every bad input of tests/cli/bad_inputs.py through the real `txl` command, each in its own process
with a timeout: exit status, stderr lines, traceback or not. Prints the markdown table of RESULTS.md.

    .venv/bin/python benchmarks/bad_input.py --out /tmp/txl-bad-input [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cli.bad_inputs import CASES, Env, error_lines  # noqa: E402
from cli.conftest import TINY_MODEL, TINY_TRAIN, _prepare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="/tmp/txl-bad-input")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    args = parser.parse_args(argv)
    from transformer_xl.cli import main as txl

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "char").mkdir(parents=True)
    (out / "byte").mkdir()
    char_data, byte_data = _prepare(out / "char", "char"), _prepare(out / "byte", "byte")
    run = out / "run"
    assert txl(["train", "--data", str(char_data), "--out", str(run), *TINY_MODEL, *TINY_TRAIN,
                "--train.max_steps", "4"]) == 0
    env_vars = dict(os.environ, OMP_NUM_THREADS="1")
    rows, ok = [], True
    for i, case in enumerate(CASES):
        tmp = out / "cases" / str(i)
        tmp.mkdir(parents=True)
        argv_ = case.argv(Env(char_data=char_data, byte_data=byte_data, run=run, tmp=tmp))
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", "import sys; from transformer_xl.cli import main; "
                                   "sys.exit(main())", *argv_], capture_output=True, text=True,
                                  timeout=args.timeout, env=env_vars)
            code, err = proc.returncode, proc.stderr.strip()
        except subprocess.TimeoutExpired:
            code, err = None, f"HANG: no exit within {args.timeout:.0f} s"
        seconds = time.perf_counter() - start
        lines = error_lines(err)
        if case.accepted:
            good = code == 0 and "Traceback" not in err and case.needle.lower() in err.lower()
        else:
            good = (code not in (None, 0) and len(lines) == 1 and "Traceback" not in err
                    and case.needle.lower() in err.lower())
        ok &= good
        rows.append({"case": case.name, "exit": code, "stderr": lines[-1] if lines else "", "lines": len(lines),
                     "seconds": round(seconds, 1), "ok": good})
        print(json.dumps(rows[-1]), flush=True)
    (out / "bad_input.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| Input tried | Exit | What the user sees (stderr, one line) | OK |")
    print("|---|---:|---|---|")
    for r in rows:
        message = r["stderr"].replace("|", "\\|")
        if len(message) > 160:
            message = message[:157] + "..."
        verdict = ("yes (accepted by design)" if CASES[rows.index(r)].accepted else "yes") if r["ok"] else "NO"
        print(f"| {r['case']} | {r['exit']} | {message or '(nothing: exit 0)'} | {verdict} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
