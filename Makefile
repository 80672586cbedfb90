# The newcomer's two commands: `make demo` (the main job end to end) and `make test`.
# Offline, point GPTZOO_DATA_SOURCE at a folder holding tinyshakespeare.txt and gpt2.tiktoken; a ../shared/data
# folder beside the checkout is picked up by itself.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extra index for torch, e.g. https://download.pytorch.org/whl/cpu to get the CPU build on a machine without one.
TORCH_INDEX ?=
EXTRAS ?= train,export,serve,otel,cpu,report,interop,dev
DEMO_HOME ?= $(CURDIR)/demo
# The lock every install here uses (exact versions the suite passed on); `LOCK=` installs the newest allowed instead.
LOCK ?= constraints.txt
# Exported, so the fresh venvs some tests build install from the same lock.
ifneq ($(LOCK),)
  export PIP_CONSTRAINT := $(abspath $(LOCK))
else
  unexport PIP_CONSTRAINT
endif

ifeq ($(origin GPTZOO_DATA_SOURCE), undefined)
  ifneq ($(wildcard ../shared/data/tinyshakespeare.txt),)
    export GPTZOO_DATA_SOURCE := $(abspath ../shared/data)
  endif
endif

.PHONY: install demo test test-latest lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# Main job (scripts/demo.sh): prepare tiny-Shakespeare, train the 4-layer cpu-preset variant (2400 iterations,
# ~4 min), check its val loss against its card, export it (and an int8 copy), generate, then serve it and ask for a
# completion over HTTP. Everything lands in $(DEMO_HOME).
demo: install
	GPTZOO_HOME=$(DEMO_HOME) BIN=$(BIN) scripts/demo.sh

# The venv's bin on PATH: tests find the tools installed with the dev extra (hadolint) as a user's shell would.
test: install
	$(BIN)/ruff check .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# The suite on the newest versions pyproject.toml allows, in its own venv; the lock is left alone (scripts/lock.sh
# re-locks once this passes).
test-latest:
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest LOCK=

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .venv-latest $(DEMO_HOME) .pytest_cache
