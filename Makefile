# Two set-up commands (see README): `make demo` and `make test`. Both create the virtual
# environment on first use. torch is pinned to the CPU build on purpose: an unpinned torch
# pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv lint bench clean-venv browser-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev,notebook,ray]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xai-audit demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check xai_audit tests bench scripts

bench: $(STAMP)
	$(PY) bench/explainers.py
	$(PY) bench/subgroups.py
	$(PY) bench/quality.py
	$(PY) bench/audit.py --quick
	$(PY) bench/widgets.py

clean-venv:
	rm -rf $(VENV)
