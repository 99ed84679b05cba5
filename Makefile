# Two entry points for a fresh machine: `make demo` and `make test` (`make lint`: ruff's checks and format check, as CI runs them first).
# Each creates .venv (once; again when pyproject.toml or constraints.txt change) and then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gnerf-installed

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# ns-render needs an ffmpeg on PATH: use the system's, else the binary imageio-ffmpeg ships
	$(PY) -c 'import os, pathlib, gnerf.demo as d; d.with_ffmpeg(os.environ["PATH"], pathlib.Path("$(VENV)/bin"))'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf outputs .pytest_cache
