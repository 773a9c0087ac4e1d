"""Every bad input of bad_inputs.py: a clear one-line error and exit status 2, or, for the inputs that
are valid by design, exit 0; never a traceback (benchmarks/bad_input.py runs them as real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.bad_inputs import CASES, Env, error_lines
from transformer_xl.cli import main


@pytest.mark.slow
def test_bad_inputs(char_data: Path, byte_data: Path, trained_run: Path, tmp_path: Path, capsys) -> None:
    failures = []
    for i, case in enumerate(c for c in CASES if not c.heavy):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        argv = case.argv(Env(char_data=char_data, byte_data=byte_data, run=trained_run, tmp=tmp))
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        err = capsys.readouterr().err
        lines = error_lines(err)
        if case.accepted:
            good = code == 0 and case.needle in err
        else:
            good = code == 2 and len(lines) == 1 and case.needle.lower() in err.lower()
        if not good or "Traceback" in err:
            failures.append(f"{case.name}: exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)
