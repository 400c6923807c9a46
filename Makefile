# Every target bootstraps the virtualenv first, so each works on a fresh machine.
# The interpreter the virtualenv is made from. The services spend most of their CPU in the
# interpreter itself, so how it was built shows in every figure: a release build, optimized with
# profiles and at link time as the production image's (python:3.11-slim) and Debian's python3 are,
# ran them on about a quarter less CPU than a CPython built without those options, as version
# managers such as pyenv build it by default (README, "The interpreter"). So the system's
# /usr/bin/python3 is taken when it is 3.11 or newer and can make a virtualenv, else the first
# python3 on PATH (`SYSTEM_PYTHON=` names another candidate). `make PYTHON=...` picks another
# outright; an existing .venv keeps its own until removed.
SYSTEM_PYTHON := /usr/bin/python3
USABLE_SYSTEM_PYTHON := $(shell $(SYSTEM_PYTHON) -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo $(SYSTEM_PYTHON))
PYTHON ?= $(or $(USABLE_SYSTEM_PYTHON),python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint protos check-protos clean bench chaos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,dev]'
	touch $(STAMP)

## run: the whole stack locally (PostgreSQL found or started, simulator, both services)
run: $(STAMP)
	$(BIN)/python -m devstack run

## test: unit, integration (real PostgreSQL) and end-to-end tests
test: $(STAMP)
	$(BIN)/python -m pytest

# Test support and the tests whose fakes stand in for a real interface: type-checked against it.
TYPED_TESTS := tests/support/*.py tests/unit/test_event_batches.py tests/unit/test_rpc_pipeline.py \
	tests/unit/test_generic_handlers.py

## lint: ruff, mypy (strict on the rules, use cases and shared packages; fakes against their interfaces), the
## architecture's import rules, buf lint (comments required), buf breaking against main, generated code up to date
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy selfserve/client catalog_rules entitlement_service checkout_service service_runtime devstack provider_sim chaos $(TYPED_TESTS)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_architecture.py
	$(BIN)/buf lint
	@if [ -z "$$(git rev-parse --show-prefix 2>/dev/null || echo none)" ] \
	    && git rev-parse --verify --quiet refs/heads/main >/dev/null; then \
	  echo "$(BIN)/buf breaking --against '$$(git rev-parse --git-common-dir)#branch=main'"; \
	  $(BIN)/buf breaking --against "$$(git rev-parse --git-common-dir)#branch=main"; \
	else \
	  echo "buf breaking: skipped, no git branch main here to compare proto/ with"; \
	fi
	$(BIN)/python -m devstack protos --check

## bench: benchmarks on loopback against same-run baselines (needs wrk, h2load, pgbench); see README
bench: $(STAMP)
	$(BIN)/python -m bench

## chaos: the fault-injection run against the real stack (1,000 accounts, every fault); see README
chaos: $(STAMP)
	$(BIN)/python -m chaos

## protos: regenerate selfserve/ (Python code and type stubs) from proto/
protos: $(STAMP)
	$(BIN)/python -m devstack protos

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
