# make book   set up .venv (first time), fetch + verify data, execute every notebook (full mode), build the book
# make test   set up .venv (first time), lint (ruff), run the test-suite in fast mode (notebooks and
#             book build included), then the mutation harness
# make mutants  every mutant of tests/mutants/registry.py against the tests that must catch it
# make lint   ruff over the library, tests, scripts and notebooks
# make readme rewrite the README's notebook table from the last `make book`
# make lab    set up .venv (first time), open the notebooks in JupyterLab
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
CRYPTEN := crypten==0.4.1
LAB_ARGS ?=
PYTEST_ARGS ?= --durations=25

# The development and CI machines have no route to the data hosts: use the shared, verified copies
# when they sit beside the checkout. On a user's machine nothing is set and the data is downloaded.
SHARED_DATA := $(abspath ../shared/data/medmnist)
ifeq ($(strip $(PETS_DATA_DIR)),)
ifneq ($(wildcard $(SHARED_DATA)/pneumoniamnist.npz),)
export PETS_DATA_DIR := $(SHARED_DATA)
endif
endif

.PHONY: book test lab data install clean mutants lint readme

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 not found)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: on Linux a plain `pip install torch` pulls a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PIP) install --quiet -e .
	# CrypTen's metadata requires the deprecated `sklearn` package and torchvision (which cannot be
	# imported beside the CPU torch); its real runtime dependencies are pinned in pyproject.toml.
	$(PIP) install --quiet --no-deps $(CRYPTEN)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

data: $(STAMP)
	$(PY) data_scripts/fetch_data.py

book: data
	$(PY) book/build.py $(BOOK_ARGS)

test: lint
	PETS_FAST=1 $(PY) -m pytest $(PYTEST_ARGS)
	$(PY) tests/mutants/run.py

mutants: $(STAMP)
	$(PY) tests/mutants/run.py $(MUTANT_ARGS)

readme: $(STAMP)
	$(PY) book/readme_table.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

clean:
	rm -rf book/_build book/notebooks .pytest_cache
