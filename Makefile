# vlmdrive: `make demo` and `make test` are the only commands a user types;
# both depend on `setup`, which is idempotent and quick once done.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= outputs

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

# torch is installed first and pinned to the CPU build on this disk (torch==2.13.0);
# a torch range resolved by another package would otherwise pull several GB of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,carla,distributed,bench]"
	touch $(STAMP)

demo: setup
	$(BIN)/vlmdrive demo --out $(OUT)/demo

test: setup
	$(BIN)/pytest -q -m "not slow"

test-all: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sim scenarios agent

bench: setup
	$(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
