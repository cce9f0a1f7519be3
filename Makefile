# The two commands: `make run` and `make test` (see README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench fuzz clean e2e-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mailgate --config config/mailgate.toml db upgrade
	$(BIN)/mailgate --config config/mailgate.toml serve

test: $(STAMP)
	$(BIN)/ruff check mailgate tests bench
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check mailgate tests bench
	$(BIN)/ruff format --check mailgate

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

fuzz: $(STAMP)
	$(BIN)/pip install -q -e '.[fuzz]' || echo "atheris did not install: hypothesis fallback"
	$(BIN)/python tests/fuzz/fuzz_ingest.py -atheris_runs=20000

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
