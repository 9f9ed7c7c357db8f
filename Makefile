# The two commands a fresh machine needs (Python 3.11+ and this repo): `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint types pytest bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("taskwarden needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# two platform SDKs for the fidelity tests pin what the project cannot have (see the test
	# extra): the last Descartes Labs SDK with vector jobs wants a numpy that Python 3.11 cannot
	# build, UP42's wants an older packaging than kombu; both run fine on today's versions
	$(BIN)/python -m pip install --quiet --no-deps "descarteslabs==1.12.1" "up42-py==4.3.0"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/taskwarden demo

# everything CI checks: lint, types, the whole test suite
test: lint types pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/polls.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
