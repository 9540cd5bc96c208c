# edgefleet developer commands. The two a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgefleet-installed
PYTEST_ARGS ?=

.PHONY: demo test lint fmt venv mosquitto postgresql clean help

help:
	@echo "make demo   set up .venv and run the end-to-end demo on embedded defaults"
	@echo "make test   set up .venv (+ Mosquitto and PostgreSQL when root), lint, and run the whole test suite"
	@echo "make lint   ruff (lint + format check) and mypy"
	@echo "make fmt    apply ruff formatting and safe fixes"
	@echo "make clean  remove .venv and caches"

# One environment with every extra and the test tools; rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed; install python3-venv" >&2; exit 1; fi; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[all,test]'
	@touch $@

venv: $(STAMP)

# Integration tests run a real Mosquitto on loopback; install it when we can.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing mosquitto with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto; \
	else echo "warning: mosquitto is not installed and this is not root; Mosquitto tests will skip (sudo apt-get install mosquitto)"; fi

# The registry is tested on PostgreSQL too (a throwaway server on loopback); install it when we can.
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing postgresql with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	else echo "warning: PostgreSQL is not installed and this is not root; PostgreSQL tests will skip"; fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# As root the targets above install Mosquitto and PostgreSQL, so the tests must find them:
# A missing Mosquitto or PostgreSQL fails the tests that need it (tests/services.py).
test: venv mosquitto postgresql lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# DEMO_ARGS: e.g. --fast (about 75 s), --data ../shared/datasets/trashnet, --workdir DIR
DEMO_ARGS ?=
demo: venv
	$(BIN)/edgefleet demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
