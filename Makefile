# Every target creates .venv if missing and installs the pinned versions from constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench speedrun lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Train a small byte-level model on the embedded Python-stdlib corpus (~3 minutes on 2 CPU cores),
# print test bits per character with no memory and with memory side by side, and sample from it.
# Sized on the measured speed (threads too); says so plainly when the machine was too busy (exit 3).
# DEMO_ARGS='--train-seconds 600' gives it longer. Writes runs/demo/loss.png when matplotlib is installed.
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m transformer_xl.cli.demo --config configs/demo.toml --out $(DEMO_OUT) $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench.py

# Test bits per character after 7 minutes of training per recipe (ours, the paper's small settings, a
# nanoGPT-style baseline) on the enwik8 and text8 samples (../shared/data) and the demo corpus: ~70 minutes.
SPEEDRUN_OUT ?= runs/speedrun
speedrun: $(STAMP)
	$(PY) benchmarks/time_to_quality.py --out $(SPEEDRUN_OUT)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
