# Two entry points: `make demo` (the main job, end to end) and `make test` (the test suite).
# Both create .venv on first use; torch is pinned to the CPU build (see pyproject.toml).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= $(if $(UNLEARNREC_DATA),$(UNLEARNREC_DATA),$(abspath ../shared/data))

$(BIN)/unlearnrec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: install test demo lint bench
install: $(BIN)/unlearnrec

test: install
	UNLEARNREC_DATA=$(DATA) $(BIN)/python -m pytest

demo: install
	UNLEARNREC_DATA=$(DATA) bash scripts/demo.sh

lint: install
	$(BIN)/ruff check src tests benchmarks && $(BIN)/ruff format --check src tests benchmarks
