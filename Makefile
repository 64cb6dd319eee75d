# genaiops: every target is a thin wrapper over the `genaiops` CLI (release/cli.py).
# Works on a fresh machine: `make install` creates .venv with the pinned dependencies.
#
#   make release FLOW=web_classification ENV=local   the main job, on this machine
#   make test                                        the whole test suite
#   make plan ENV=dev / make apply ENV=dev           infrastructure on Azure

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GENAIOPS := $(BIN)/genaiops
STAMP := $(VENV)/.installed
ENV ?=
FLOW ?= web_classification
PYTEST_ARGS ?=

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHON_KEYRING_BACKEND := keyrings.alt.file.PlaintextKeyring
export BC_SKIP_MAPPING := TRUE
export PIP_DISABLE_PIP_VERSION_CHECK := 1

env_arg = $(if $(ENV),--env $(ENV),)
env_or_local = --env $(if $(ENV),$(ENV),local)

.PHONY: help install lint test bench config local-up local-down local-status \
        synth scan plan apply experiment evaluate gate build push release status rollback promote new-flow clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (PYTHON=$(PYTHON))")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: about 3 minutes)"
	@$(BIN)/pip install -qq --upgrade "pip==24.3.1"
	@$(BIN)/pip install -qq -c requirements.lock -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv with every pinned dependency (no-op when done)

lint: install ## ruff and mypy over release/ and infra/
	$(BIN)/ruff check release infra tests bench
	$(BIN)/ruff format --check release infra
	$(BIN)/mypy

test: install ## run the test suite (starts the local environment it needs)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install ## run every benchmark in bench/ and print the ratios
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

config: install ## validate every config/<env>.yaml
	$(GENAIOPS) config validate $(env_arg)

local-up: install ## start the local environment (Docker engine, registry, nginx, model endpoint)
	$(GENAIOPS) local up

local-down: install ## stop exactly what local-up started
	$(GENAIOPS) local down

local-status: install ## what runs on which port, with health
	$(GENAIOPS) local status

synth: install ## synthesize Terraform JSON (ENV=x, or every environment)
	$(GENAIOPS) synth $(env_arg)

scan: install ## checkov policy gate on the synthesized stack (ENV=x)
	$(GENAIOPS) scan $(env_or_local)

plan: install ## synth + scan + terraform init/plan (ENV=x)
	$(GENAIOPS) plan $(env_or_local)

apply: install ## apply the saved plan of `make plan` (ENV=x)
	$(GENAIOPS) apply $(env_or_local)

experiment: install ## run a flow's experiment (FLOW=x ENV=x)
	$(GENAIOPS) experiment --flow $(FLOW) $(env_or_local)

evaluate: install ## evaluate the experiment's runs and apply the gate (FLOW=x ENV=x)
	$(GENAIOPS) evaluate --flow $(FLOW) $(env_or_local)

gate: install ## apply the quality gate to the latest evaluation again (FLOW=x ENV=x)
	$(GENAIOPS) gate --flow $(FLOW) $(env_or_local)

build: install ## build the flow image (FLOW=x ENV=x)
	$(GENAIOPS) build --flow $(FLOW) $(env_or_local)

push: install ## push the built flow image to the environment's registry (FLOW=x ENV=x)
	$(GENAIOPS) push --flow $(FLOW) $(env_or_local)

release: install ## the main job: experiment..gate..build..deploy..smoke..traffic (FLOW=x ENV=x)
	$(GENAIOPS) release --flow $(FLOW) $(env_or_local)

status: install ## deployments, images, traffic and health (FLOW=x ENV=x)
	$(GENAIOPS) status $(env_or_local)

rollback: install ## put traffic back on the previous release (FLOW=x ENV=x)
	$(GENAIOPS) rollback --flow $(FLOW) $(env_or_local)

promote: install ## copy the image gated for this commit from dev to prod by digest (FLOW=x [COMMIT=sha])
	$(GENAIOPS) promote --flow $(FLOW) --from dev --to prod $(if $(COMMIT),--commit $(COMMIT),)

new-flow: install ## scaffold a new use case (NAME=x, KIND=dag|flex): docs/new-flow.md
	$(if $(NAME),,$(error NAME is required: make new-flow NAME=my_flow [KIND=dag|flex]))
	$(GENAIOPS) new-flow $(NAME) --kind $(or $(KIND),dag)

.PHONY: doctor integration cleanup
OLDER_THAN ?=

doctor: install ## preflight on Azure: roles, network, providers, quota, AOAI deployments (ENV=x)
	$(GENAIOPS) doctor $(env_or_local)

integration: install ## apply/doctor/release/rollback/destroy in a real subscription (ENV=dev; skips without credentials)
	GENAIOPS_INTEGRATION=1 GENAIOPS_ENV=$(if $(ENV),$(ENV),dev) $(BIN)/pytest tests/integration -m integration $(PYTEST_ARGS)

cleanup: install ## delete expired integration-test resource groups by tag (ENV=x [OLDER_THAN=6h])
	$(GENAIOPS) cleanup $(env_or_local) $(if $(OLDER_THAN),--older-than $(OLDER_THAN),)

clean: ## remove build output (keeps .venv and the local environment's state)
	rm -rf cdktf.out reports .pytest_cache .mypy_cache .ruff_cache
