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
PYTEST_WORKERS ?= 2

# Runtime: WeasyPrint's libraries (PDF statements) and a font.
RUNTIME_DEBS := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
# Tests: the browser, pdftotext, and the PostgreSQL server the test set-up starts itself.
TEST_DEBS := chromium poppler-utils postgresql
# Benchmarks: the load generator.
BENCH_DEBS := wrk
BENCH_ARGS ?=

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

.PHONY: help venv system-deps test-deps demo test lint bench bench-api i18n clean

help:
	@echo "make demo         install into $(VENV), create the SQLite demo and serve it"
	@echo "make test         install what the tests need and run every test (browser ones too)"
	@echo "make venv         (re)install the Python packages into $(VENV) when pyproject.toml changed"
	@echo "make system-deps  install the Debian packages needed at runtime, if missing"
	@echo "make test-deps    ... and those the tests need (chromium, poppler-utils, postgresql)"
	@echo "make lint         import layers, ruff and mypy (make test runs it first)"
	@echo "make bench        build (once, cached in var/bench/) a 50,000-customer book and run the benchmarks;"
	@echo "                  not tests: prints a table and JSON (BENCH_ARGS='--small' for a quick run)"
	@echo "make i18n         extract, update and compile the translation catalogs"
	@echo "make clean        remove $(VENV) and caches (databases are kept)"

venv: $(STAMP)

# Re-run only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@if ! command -v $(PYTHON) >/dev/null || ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
		$(call install_debs,python3 python3-venv); \
	fi
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Encours needs Python 3.11 or newer ($(PYTHON) is $$($(PYTHON) -V))" >&2; exit 1; }
	@test -x $(BIN)/python || { echo "Creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "Installing Encours and its test tools into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

system-deps:
	@$(call install_debs,$(RUNTIME_DEBS))

test-deps:
	@$(call install_debs,$(RUNTIME_DEBS) $(TEST_DEBS))

demo: venv system-deps
	$(BIN)/encours demo

test: venv test-deps lint
	$(BIN)/pytest -p xdist -n $(PYTEST_WORKERS)

# The layers (.importlinter), pyflakes (ruff) and strict typing of the kernel (mypy): fast, and first.
lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy kernel

bench: venv system-deps
	@$(call install_debs,$(BENCH_DEBS))
	$(BIN)/python bench/run.py $(BENCH_ARGS)

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
