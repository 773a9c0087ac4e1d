# Every target creates .venv if missing and installs the pinned versions from constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Train a small byte-level model on the embedded Python-stdlib corpus (~3 minutes on 2 CPU cores),
# print test bits per character with no memory and with memory side by side, and sample from it.
DEMO_OUT ?= runs/demo
demo: $(STAMP)
	$(PY) -m transformer_xl.cli.demo --config configs/demo.toml --out $(DEMO_OUT)

bench: $(STAMP)
	$(PY) benchmarks/bench.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
