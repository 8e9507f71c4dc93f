# Two commands: `make demo` and `make test`. Both first make sure .venv matches pyproject.toml and
# constraints.txt; the stamp file is named after their hash, so a second run installs nothing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(ENV_HASH)
# pip on these machines prints one harmless line per package about an absent local index folder.
PIP_FILTER := { grep -v "neither a file nor a directory" || true; }

.PHONY: env demo test bench clean

env: $(STAMP)

$(STAMP):
	@echo "[env] setting up $(VENV) (torch pinned by constraints.txt)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip 2>&1 | $(PIP_FILTER)
	@$(PY) -m pip install --quiet -c constraints.txt -e '.[test]' 2>&1 | $(PIP_FILTER)
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "[env] ready"

demo: env
	$(VENV)/bin/vlp demo

test: env
	$(PY) -m pytest -q

bench: env
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs data/scenes data/scenes_tiny
