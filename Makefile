# edgefleet developer commands. The two a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgefleet-installed
PYTEST_ARGS ?=

.PHONY: demo test lint fmt venv mosquitto postgresql prometheus chromium clean help lock lock-upgrade test-latest audit sbom wheel

help:
	@echo "make demo         set up .venv from locks/dev.lock.txt and run the end-to-end demo on embedded defaults"
	@echo "make test         set up .venv (+ Mosquitto, PostgreSQL and Prometheus when root), lint, and run the whole test suite"
	@echo "make lint         ruff (lint + format check) and mypy"
	@echo "make fmt          apply ruff formatting and safe fixes"
	@echo "make lock         regenerate every lock in locks/ (keeps current pins where the ranges allow)"
	@echo "make lock-upgrade regenerate every lock with the newest versions the ranges allow"
	@echo "make test-latest  the suite in a throw-away venv with the newest releases (not the locks)"
	@echo "make audit        pip-audit every lock against PyPI's advisory database"
	@echo "make sbom         a CycloneDX SBOM per role in sbom/"
	@echo "make wheel        build the edgefleet wheel into dist/ (what a camera box installs with the device lock)"
	@echo "make clean        remove .venv and caches"

# The development environment is exactly locks/dev.lock.txt (hash-checked) plus edgefleet
# itself, editable; rebuilt from scratch when the lock or pyproject.toml changes, so
# nothing that left the lock stays behind.
$(STAMP): locks/dev.lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys, platform; ok = (3, 10) <= sys.version_info[:2] <= (3, 12) and sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64"); ok or sys.exit("error: the locks cover Linux x86_64/aarch64 with Python 3.10 to 3.12; this is %s %s with Python %s (set PYTHON=python3.11)" % (sys.platform, platform.machine(), platform.python_version()))'
	rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed; install python3-venv" >&2; exit 1; fi; }
	$(BIN)/python -m pip install --quiet --progress-bar off --require-hashes -r locks/dev.lock.txt
	$(BIN)/python -m pip install --quiet --progress-bar off --no-deps --no-build-isolation -e .
	$(BIN)/edgefleet device doctor --lock locks/dev.lock.txt --packages-only
	@touch $@

venv: $(STAMP)

# Locks: one per role, universal for Linux x86_64/aarch64 and Python 3.10-3.12
# ([tool.uv] in pyproject.toml), with hashes. dev is resolved first and the roles
# are constrained by it, so a camera box runs the versions the suite tested.
UV_COMPILE = UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile --quiet --universal --python-version 3.10 \
	--generate-hashes --index-url https://pypi.org/simple --custom-compile-command "make lock"
LOCK_UPGRADE ?=
lock: venv
	$(UV_COMPILE) $(LOCK_UPGRADE) pyproject.toml locks/build.in --extra dev -c locks/constraints.in -o locks/dev.lock.txt
	for role in device device-litert server convert; do \
	  $(UV_COMPILE) $(LOCK_UPGRADE) pyproject.toml --extra $$role -c locks/dev.lock.txt -o locks/$$role.lock.txt || exit 1; done
	@# a camera box may be a Raspberry Pi or a Jetson: every device pin needs a wheel there
	for target in x86_64-manylinux_2_28 aarch64-manylinux_2_35; do for py in 3.10 3.11 3.12; do \
	  for lock in device device-litert; do \
	  echo "$$lock lock: wheels for $$target, Python $$py"; \
	  UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile --quiet --no-deps --only-binary :all: \
	    --python-platform $$target --python-version $$py --index-url https://pypi.org/simple \
	    locks/$$lock.lock.txt -o /dev/null || exit 1; done; done; done

lock-upgrade:
	$(MAKE) lock LOCK_UPGRADE=--upgrade

# The same suite on the newest releases the ranges in pyproject.toml allow, in a
# throw-away venv: breakage from new releases shows up here, on purpose.
LATEST_VENV ?= $(or $(TMPDIR),/tmp)/edgefleet-latest-venv
test-latest: mosquitto postgresql prometheus chromium
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --progress-bar off --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet --progress-bar off '.[dev]'
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | tee $(LATEST_VENV)/freeze.txt
	$(LATEST_VENV)/bin/ruff check . && $(LATEST_VENV)/bin/ruff format --check . && $(LATEST_VENV)/bin/mypy
	$(LATEST_VENV)/bin/python -m pytest -p no:cacheprovider -m "not locked_env" $(PYTEST_ARGS)

# Known vulnerabilities in every locked set (PyPI's advisory data; needs the network).
audit: venv
	for role in device device-litert server convert dev; do echo "== locks/$$role.lock.txt"; \
	  $(BIN)/pip-audit --strict --progress-spinner off --disable-pip --require-hashes -r locks/$$role.lock.txt || status=1; done; exit $${status:-0}

# One CycloneDX SBOM per role, from its lock.
sbom: venv
	mkdir -p sbom
	for role in device device-litert server convert dev; do \
	  $(BIN)/cyclonedx-py requirements --pyproject pyproject.toml --output-reproducible --of JSON -o sbom/$$role.cdx.json locks/$$role.lock.txt || exit 1; \
	  echo "sbom/$$role.cdx.json"; done

wheel: venv
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w dist .
	@ls dist/*.whl

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

# The metrics tests check both /metrics with promtool, a real Prometheus scrapes the fleet
# server and a device, and promtool checks and unit-tests the example alert rules
# (devices/prometheus/): Debian's prometheus package ships both programs. Install it when
# we can, otherwise those tests skip.
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing prometheus and promtool (the prometheus package) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	else echo "warning: prometheus is not installed and this is not root; the Prometheus tests will skip (sudo apt-get install prometheus)"; fi

# The operator console is tested in a real browser: Playwright drives Debian's chromium
# (never a browser Playwright downloads itself). Install it when we can, otherwise
# the browser tests fail saying so (as a missing Mosquitto does).
chromium:
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; \
	else echo "warning: chromium is not installed and this is not root; the browser tests will fail (sudo apt-get install chromium)"; fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# As root the targets above install Mosquitto and PostgreSQL, so the tests must find them:
# A missing Mosquitto or PostgreSQL fails the tests that need it (tests/services.py).
test: venv mosquitto postgresql prometheus chromium lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# DEMO_ARGS: e.g. --fast (about 75 s), --data ../shared/datasets/trashnet, --workdir DIR
DEMO_ARGS ?=
demo: venv
	$(BIN)/edgefleet demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
