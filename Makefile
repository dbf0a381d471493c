# Two commands do all set-up on a fresh machine with Python 3.10+:
#   make demo   - create .venv, install avatarlink, run the main job on the built-in input
#   make test   - create .venv, install avatarlink + test tools and system parts, run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/avatarlink demo --seconds 20 $(DEMO_ARGS)

test: $(STAMP)
	VENV_PY=$(BIN)/python bash tools/test-setup.sh
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
