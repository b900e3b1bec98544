# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Each creates .venv (if missing) and installs fnnet into it first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fnnet-installed

# The shared data folder beside the checkout, when present and FNNET_DATA is not set.
ifeq ($(origin FNNET_DATA), undefined)
  ifneq ($(wildcard ../shared/data/mnist),)
    export FNNET_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: demo test test-all bench bench-smoke gradcheck clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(PY) -m fnnet demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

gradcheck: $(STAMP)
	$(PY) -m fnnet gradcheck

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]' || echo "bench extra not installed: peers will be skipped"
	$(PY) benchmarks/run.py

bench-smoke: $(STAMP)
	$(PY) benchmarks/run.py --smoke

clean:
	rm -rf $(VENV) runs build *.egg-info
