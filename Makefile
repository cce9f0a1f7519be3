# The two commands: `make run` and `make test` (see README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Python writes our modules' bytecode (__pycache__, git-ignored) as it does by default. A
# machine here sets PYTHONDONTWRITEBYTECODE=1: every process then compiled the package from
# source at each start (`mailgate deliver` 190-230 ms instead of 110; every serve, front,
# sender and test subprocess paid the same). An install with `pip install` compiles them.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test lint bench fuzz clean e2e-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m compileall -q mailgate
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
