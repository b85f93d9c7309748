# The two commands: `make run` (set up and serve) and `make test` (set up and run the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/shepherd migrate
	exec $(BIN)/shepherd serve

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/approvals.py
	$(BIN)/python bench/slack_ack.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check core adapters bot tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .shepherd .pytest_cache
