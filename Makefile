# Two commands for a newcomer: `make serve` and `make test`.
PYTHON ?= python3.11
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TEST_TOOLS := $(VENV)/.test-tools
MODEL_DIR := models/default
CHECKPOINT := $(MODEL_DIR)/checkpoint
BUNDLE := $(MODEL_DIR)/bundle

CHECKOV := .venv-checkov/.installed
REWARDBENCH := .venv-rewardbench/.installed

.PHONY: install bundle serve test lint eval clean-model

install: $(INSTALLED) $(TEST_TOOLS) $(CHECKOV) $(REWARDBENCH)

# Everything (serving, training/export, tests) in one venv; torch is pinned in pyproject.toml
# so pip takes the CPU build instead of GBs of CUDA wheels.
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[train,eval,test]'
	# OpenRLHF's and verl's own reward clients, which the tests call: without their dependencies
	# (vLLM, DeepSpeed, SGLang, ...), as importing them needs only what the test extras hold
	$(BIN)/pip install --no-deps 'openrlhf==0.11.2' 'verl==0.9.1'
	touch $@

# What only the tests need, so that `make serve` runs without root and without kubectl.
# Debian's packages: chromium renders the evaluation report; prometheus brings promtool, which
# checks the alert rules and dashboard queries in k8s/monitoring.
$(TEST_TOOLS): | $(INSTALLED)
	command -v chromium >/dev/null && command -v promtool >/dev/null || (apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium prometheus)
	# kubectl (its built-in kustomize) renders k8s/ for the tests
	command -v kubectl >/dev/null || (echo "kubectl is needed to render k8s/: https://kubernetes.io/docs/tasks/tools/" && false)
	touch $@

# checkov scans k8s/ in its own environment: its pinned dependencies would fight the project's.
$(CHECKOV):
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install 'checkov>=3.2,<4'
	touch $@

# RewardBench's own scoring code (the `rewardbench` package), which the tests hold `eval
# --benchmark` to, in its own environment: it pins transformers 4.51. torch pinned as ours, so
# pip takes the CPU build.
$(REWARDBENCH):
	test -x .venv-rewardbench/bin/python || $(PYTHON) -m venv .venv-rewardbench
	.venv-rewardbench/bin/pip install 'rewardbench==0.1.4' 'torch==2.13.0'
	touch $@

# The checkpoint's input-format file is written last by `rewardserve train`: its presence
# means a finished run. Both steps show progress bars.
$(CHECKPOINT)/rewardserve_input_format.json: | $(INSTALLED)
	$(BIN)/rewardserve train --out $(CHECKPOINT)

# fp32, plus each reduced precision this machine can gate (int8; bf16 on a CPU with bf16
# instructions; fp16 with CUDA) that passes the agreement gate on held-out pairs.
$(BUNDLE)/manifest.json: | $(CHECKPOINT)/rewardserve_input_format.json
	$(BIN)/rewardserve export $(CHECKPOINT) --out $(BUNDLE) --name rewardserve-minilm-hh --precision auto

bundle: $(BUNDLE)/manifest.json

serve: $(INSTALLED) $(BUNDLE)/manifest.json
	$(BIN)/rewardserve serve --bundle $(BUNDLE) --port $(PORT)

eval: $(BUNDLE)/manifest.json
	$(BIN)/rewardserve eval --bundle $(BUNDLE) --report $(MODEL_DIR)/eval.html

test: $(INSTALLED) $(TEST_TOOLS) $(CHECKOV) $(REWARDBENCH)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

clean-model:
	rm -rf $(MODEL_DIR)
