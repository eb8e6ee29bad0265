# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck imports pytest examples bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,amqp,bench,reports]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fxcrm demo --db .demo/broker.sqlite

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict src tests

imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

pytest: $(STAMP)
	$(BIN)/pytest -n auto --dist worksteal

examples: $(STAMP)
	@set -e; for f in examples/*.py; do echo "--- $$f"; $(BIN)/python $$f; done

test: lint typecheck imports pytest examples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_event_store.py
	$(BIN)/python benchmarks/bench_postgres.py
	$(BIN)/python benchmarks/bench_encryption.py
	$(BIN)/python benchmarks/bench_ledger.py
	$(BIN)/python benchmarks/bench_rebates.py
	$(BIN)/python benchmarks/bench_loyalty.py
	$(BIN)/python benchmarks/bench_engagement.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis
