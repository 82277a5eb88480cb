# The two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest run clean bench

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: install
	$(BIN)/rapport demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy handlers storage bot tests bench

pytest: install
	scripts/with-postgres.sh $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: lint typecheck pytest

run: install
	$(BIN)/rapport run

bench: install
	$(BIN)/python bench/detector.py
	$(BIN)/python bench/discord_ingest.py
	$(BIN)/python bench/flag_latency.py
	$(BIN)/python bench/drafting.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
