# iblnm: every target bootstraps what it needs on a fresh machine.
# uv is installed with pip into .tools/ when it is not on the PATH; the environment
# is created from the committed uv.lock (uv sync --locked), with every installed module
# compiled to bytecode once: machines here set PYTHONDONTWRITEBYTECODE, so without it every
# process would recompile pandas, scipy, ibllib ... from source at import (~4 s per process).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
DEMO_CACHE ?= $(if $(IBLNM_ONE_CACHE),$(IBLNM_ONE_CACHE),data/one_cache/demo)

.PHONY: run analyses nwb test lint bench demo-data env clean-outputs

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra dev --compile-bytecode
	@touch $@

env: .venv/.synced

## Run the whole pipeline on the configured data source (the demo dataset when no Alyx is set up).
run: env
	$(PY) -m iblnm run --workers $(WORKERS)

## The analysis scripts, on the outputs of `make run`.
analyses: env
	@for s in responses movement_encoding task_encoding task_performance qc_overview example_session; do \
		echo "== iblnm $$s"; $(PY) -m iblnm $$s || exit 1; done

## Export every processed session as one NWB file (data/nwb/sub-*/..._ophys.nwb), after `make run`.
nwb: env
	$(PY) -m iblnm export-nwb --workers $(WORKERS)

## Run the whole test suite (and the linters).
test: env
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory lint

lint: env
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

## Speed and memory benchmarks (figures go to benchmarks/README.md).
bench: env
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

## Build the simulated demo ONE cache at $$IBLNM_ONE_CACHE (default data/one_cache/demo).
demo-data: env
	$(PY) -m iblnm demo --out $(DEMO_CACHE) --preset demo --jobs 1

clean-outputs:
	rm -rf metadata/*.pqt data/sessions data/*.pqt results figures
