# The two commands: `make run` (set up and serve) and `make test` (set up and run the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# the whole suite on every core, up to 4 processes (pytest-xdist), each with its own PostgreSQL cluster; most tests
# wait on subprocesses and sockets, so two processes on two cores take ~60% of the serial time; the 25 slowest are
# listed at the end (the suite must stay under 15 minutes in CI)
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist worksteal --durations=25

.PHONY: run test bench lint clean screenshots

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

# Every bench on SQLite and PostgreSQL, each beside its floor; all of them run even if one fails, and the
# target fails (non-zero) if any request errored or any task failed. About 15 minutes; see bench/README.md.
bench: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }; }; } || \
		{ echo "make bench needs wrk (apt-get install wrk)"; exit 2; }
	@rc=0; \
	$(BIN)/python bench/run.py || rc=1; \
	$(BIN)/python bench/scale.py || rc=1; \
	$(BIN)/python bench/slack_ack.py || rc=1; \
	$(BIN)/python bench/github_ingest.py || rc=1; \
	$(BIN)/python bench/telegram_ingest.py || rc=1; \
	$(BIN)/python bench/tasks.py || rc=1; \
	$(BIN)/python bench/approvals.py || rc=1; \
	$(BIN)/python bench/runners.py || rc=1; \
	exit $$rc

# The README's screenshots of the dashboard, taken by its browser tests (Debian's Chromium: apt-get install chromium)
screenshots: $(VENV)/.installed-dev
	SHEPHERD_SCREENSHOTS=adapters/web/screenshots $(BIN)/python -m pytest -q tests/test_web_*.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check core adapters bot tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .shepherd .pytest_cache
