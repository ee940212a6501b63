# Encours. On a fresh Debian machine:
#   make demo   install into .venv, create the SQLite demo, serve it
#   make test   install what the tests need (Debian's chromium included) and run them all

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.encours-installed
DEMO_STAMP := $(VENV)/.encours-demo-installed
# What CI, the tests, the demo and production install, pinned with hashes (make lock rewrites them
# from pyproject.toml): every extra, the demo's, and the dependencies alone.
DEV_LOCK := requirements/dev.txt
DEMO_LOCK := requirements/demo.txt
PROD_LOCK := requirements/prod.txt
PYTEST_WORKERS ?= 2

# Runtime: WeasyPrint's libraries (PDF statements) and a font.
RUNTIME_DEBS := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
# Tests: the browser, pdftotext, the PostgreSQL server the test set-up starts itself, and
# systemd-analyze (the deploy/ units are verified with it).
TEST_DEBS := chromium poppler-utils postgresql systemd
# Benchmarks: the load generator (bench/loadgen.py, the open-loop one, is ours).
BENCH_DEBS := wrk
BENCH_ARGS ?=
# make bench-postgres: this database (a PostgreSQL URL) instead of a throwaway server.
BENCH_POSTGRES ?=
BENCH_OUT := var/bench

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# $(call install_debs,PACKAGES): install those of PACKAGES that are missing, and nothing
# when all are there (no apt-get update either).
define install_debs
missing=""; \
for pkg in $(1); do \
	case "$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null || true)" in \
		*" ok installed") ;; \
		*) missing="$$missing $$pkg" ;; \
	esac; \
done; \
if [ -n "$$missing" ]; then \
	echo "Installing Debian packages:$$missing"; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
fi
endef

.PHONY: help venv system-deps test-deps demo test lint lock screenshots bench bench-postgres bench-api i18n clean

help:
	@echo "make demo         install into $(VENV), create the SQLite demo and serve it"
	@echo "make test         install what the tests need and run every test (browser ones too)"
	@echo "make venv         (re)install the Python packages into $(VENV) when pyproject.toml changed"
	@echo "make system-deps  install the Debian packages needed at runtime, if missing"
	@echo "make test-deps    ... and those the tests need (chromium, poppler-utils, postgresql, systemd)"
	@echo "make lint         import layers, ruff and mypy (make test runs it first)"
	@echo "make lock         re-pin requirements/*.txt from pyproject.toml (uv, with hashes)"
	@echo "make screenshots  take the README's pictures of the portal anew into docs/ (a browser test)"
	@echo "make bench        build (once, cached in var/bench/) a 50,000-customer book and run the benchmarks;"
	@echo "                  not tests: prints a table and JSON (BENCH_ARGS='--small' for a quick run), SQLite"
	@echo "make bench-postgres  the same on PostgreSQL: a throwaway server (fsync on), or BENCH_POSTGRES=URL;"
	@echo "                  then both engines side by side (bench/compare.py) when make bench ran before"
	@echo "make i18n         extract, update and compile the translation catalogs"
	@echo "make clean        remove $(VENV) and caches (databases are kept)"

venv: $(STAMP)

# $(call python_venv): make $(VENV) with a Python 3.11+ (installing Debian's python3-venv if needed).
define python_venv
if ! command -v $(PYTHON) >/dev/null || ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	$(call install_debs,python3 python3-venv); \
fi; \
$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	|| { echo "Encours needs Python 3.11 or newer ($(PYTHON) is $$($(PYTHON) -V))" >&2; exit 1; }; \
test -x $(BIN)/python || { echo "Creating $(VENV)"; $(PYTHON) -m venv $(VENV); }; \
$(BIN)/python -c 'import pip, sys; sys.exit(int(pip.__version__.split(".")[0]) < 25)' \
	|| $(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25'
endef
# Debian 12's venv brings pip 23.2, which refuses a hash-locked install once a dependency asked with
# an extra (weasyprint's fonttools[woff]) has a release newer than the lock's pin: it resolves the
# extra on its own, to the newest. pip 25 reads the pin for it.

# Re-run only when pyproject.toml or the lock is newer than the stamp. The test tools include the
# sandbox's (`test` lists localstripe as `demo` does).
$(STAMP): pyproject.toml $(DEV_LOCK)
	@$(call python_venv)
	@echo "Installing Encours and its test tools into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(DEV_LOCK)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# The demo needs Encours and its sandbox (the `demo` extra), not the test tools.
$(DEMO_STAMP): pyproject.toml $(DEMO_LOCK)
	@$(call python_venv)
	@echo "Installing Encours and its sandbox into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(DEMO_LOCK)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

system-deps:
	@$(call install_debs,$(RUNTIME_DEBS))

test-deps:
	@$(call install_debs,$(RUNTIME_DEBS) $(TEST_DEBS))

demo: $(DEMO_STAMP) system-deps
	$(BIN)/encours demo

test: venv test-deps lint
	$(BIN)/pytest -p xdist -n $(PYTEST_WORKERS) --durations=30

# The README's pictures of the portal, taken anew into docs/ (the test run alone writes them to a
# temporary directory).
screenshots: venv test-deps
	ENCOURS_README_SCREENSHOTS=1 $(BIN)/pytest tests/e2e/test_portal_browser.py::test_readme_screenshots

# The layers (.importlinter), pyflakes (ruff) and strict typing (mypy): fast, and first.
lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy kernel ledger links mail payments sandbox

# Every extra for development and CI, the sandbox's for the demo, and the dependencies alone for
# production (deploy/Dockerfile, the wheel test).
lock: venv
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 --generate-hashes --quiet -o $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml --extra demo --python-version 3.11 --generate-hashes --quiet -o $(DEMO_LOCK)
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes --quiet -o $(PROD_LOCK)

bench: venv system-deps
	@$(call install_debs,$(BENCH_DEBS))
	@mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/run.py --output $(BENCH_OUT)/last-sqlite.json $(BENCH_ARGS)

# Every scenario of `make bench` on PostgreSQL (the full book is built there once: long on a
# throwaway server), then both columns side by side.
bench-postgres: venv system-deps
	@$(call install_debs,$(BENCH_DEBS) $(if $(BENCH_POSTGRES),,postgresql))
	@mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/run.py $(if $(BENCH_POSTGRES),--postgres $(BENCH_POSTGRES),--postgres-throwaway) \
		--output $(BENCH_OUT)/last-postgresql.json $(BENCH_ARGS)
	@if [ -f $(BENCH_OUT)/last-sqlite.json ]; then \
		$(BIN)/python bench/compare.py $(BENCH_OUT)/last-sqlite.json $(BENCH_OUT)/last-postgresql.json; fi

# The ERP API (issue 18): 100,000 invoices through the bulk endpoint, list endpoints on the book; SQLite, then PostgreSQL.
bench-api: venv system-deps
	$(BIN)/python bench/api.py $(BENCH_ARGS)
	$(BIN)/python bench/api.py --postgres-throwaway $(BENCH_ARGS)

i18n: venv
	$(BIN)/pybabel extract -F babel.cfg -k _t:2 -k N_ -k gettext:1,1t -k gettext:2,2t -k CheckoutError --no-location --sort-output \
		-o kernel/locale/messages.pot kernel encours portal links ledger mail dunning admin payments reconciliation
	$(BIN)/pybabel update -i kernel/locale/messages.pot -d kernel/locale --no-fuzzy-matching
	$(BIN)/pybabel compile -d kernel/locale

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis test-results
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
