# opsdeck.stack: the two commands of the README are `make up` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
ENV   ?= dev
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/build/collections
export PYTHONPATH := $(CURDIR)/build/collections

.PHONY: help setup link up down test lint sanity unit integration molecule bench build clean model-docs k8s-build k8s-up k8s-down k8s-status examples

help:
	@echo "make up      set everything up and deploy the $(ENV) stack to the local Docker engine"
	@echo "make test    run the whole test suite (what .ci/run runs)"
	@echo "make down    remove the dev stack"
	@echo "make bench   print the benchmark figures"
	@echo "make k8s-up  a local one-node Kubernetes (built from Debian's source on first use); make k8s-down / k8s-status"
	@echo "make examples  render the seed platforms of examples/ for every target into build/examples/ (fidelity reports)"

setup:
	bash scripts/setup.sh

link:
	@mkdir -p build/collections/ansible_collections/opsdeck
	@ln -sfn $(CURDIR) build/collections/ansible_collections/opsdeck/stack

up: setup link
	$(BIN)/ansible-playbook playbooks/deploy.yml -i inventories/$(ENV)

down: link
	$(BIN)/ansible-playbook playbooks/destroy.yml -i inventories/$(ENV)

test:
	bash scripts/test.sh

lint: link
	bash scripts/lint.sh

bench: setup link
	bash scripts/bench.sh

build:
	$(BIN)/ansible-galaxy collection build --force --output-path build/

# The stack model's JSON Schema and field reference, generated from its declaration.
model-docs: link
	$(PY) -c "from ansible_collections.opsdeck.stack.plugins.module_utils.model import export; export.write('.')"

# The seed platforms of examples/, rendered for compose, swarm and kubernetes (no host touched).
examples: link
	$(PY) scripts/render-examples.py

# A real one-node Kubernetes on this machine (scripts/k8s-local.sh): built once from Debian's
# source package (cached outside the clone), run on the local Docker engine.
k8s-build:
	bash scripts/k8s-local.sh build

k8s-up:
	bash scripts/k8s-local.sh up

k8s-down:
	bash scripts/k8s-local.sh down

k8s-status:
	bash scripts/k8s-local.sh status
