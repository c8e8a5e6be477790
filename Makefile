# Everything a newcomer needs: `make test`, `make demo` and `make docs` set up .venv from scratch.
#
# Another Python gets its own venv: `make test PYTHON=python3.13 VENV=.venv-3.13`
# (with pyenv: `PYENV_VERSION=3.13.0 make test VENV=.venv-3.13`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# torch: on Python 3.11 the CPU wheel on the machines' local disk, pinned first so that
# the package's `torch>=2.1` is already met and pip does not fetch a multi-GB CUDA build;
# on newer Pythons (no local wheel) the newest torch pip resolves, with ArviZ 1.x.
PY_MINOR := $(shell $(PYTHON) -c 'import sys; print(sys.version_info[1])' 2>/dev/null)
ifeq ($(PY_MINOR),11)
TORCH ?= torch==2.13.0
else
TORCH ?= torch
endif

.PHONY: install test lint demo bench clean versions docs

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --upgrade '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[test,demo,docs]'
	touch $(STAMP)

versions: $(STAMP)
	@$(BIN)/python -W ignore::FutureWarning -c "import sys, torch, pyro, arviz, xarray; print('python', sys.version.split()[0], '| torch', torch.__version__, '| pyro', pyro.__version__, '| arviz', arviz.__version__, '| xarray', xarray.__version__)"

lint: $(STAMP)
	$(BIN)/ruff check .

# One pytest worker per core (pytest-xdist), each with one thread (tests/conftest.py);
# work stealing, as the tests' lengths range from milliseconds to a minute.
# `make test WORKERS=0` runs it in one process.
WORKERS ?= auto
test: $(STAMP) lint versions
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal

# The documentation site, offline: every warning is an error, then every internal link is
# checked. The notebooks are rendered from their stored outputs, never run.
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html -q docs docs/_build/html
	$(BIN)/python docs/check_links.py docs/_build/html
	@echo "The site: docs/_build/html/index.html"

demo: $(STAMP)
	$(BIN)/python -m pyro_csg demo

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/log_likelihood.py

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .ruff_cache *.egg-info docs/_build docs/notebooks
