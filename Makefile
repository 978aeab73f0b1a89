# make demo: a whole labeling job offline on the embedded sample bucket.
# make test: the full test suite. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Root installs system packages directly; anyone else through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test lint chromium reliability clean

$(VENV)/.runtime: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: $(VENV)/.runtime
	$(BIN)/labeljob demo --dir labeljob-demo

# The browser test drives Debian's chromium; it is installed here, never downloaded by a test tool.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.dev chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile -rs

# Crash injection, transient faults and concurrent polls on every backend; writes docs/reliability.md.
reliability: $(VENV)/.dev
	$(BIN)/python -m tests.reliability

lint: $(VENV)/.dev
	$(BIN)/ruff check orchestrator tests benchmarks

clean:
	rm -rf $(VENV) labeljob-demo test-artifacts
