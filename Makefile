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

.PHONY: demo test test-all test-slow docs bench bench-smoke bench-e2e bench-scaling gradcheck clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,interop]'
	# the page tests' browser: Debian's chromium, where it is missing and apt-get can install it
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    { apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } >/dev/null 2>&1; } || \
	  echo "chromium not installed: the page tests (tests/test_pages.py) will be skipped"
	touch $@

demo: $(STAMP)
	$(PY) -m fnnet demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadscope

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto

# the slow end-to-end runs that pin the README's figures (~25 minutes; CI runs them after make test)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow -n auto

gradcheck: $(STAMP)
	$(PY) -m fnnet gradcheck

# the documentation site (docs/ + an API reference from the docstrings) into build/site; --strict: a
# broken link or reference fails the build
docs: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	$(PY) -m mkdocs build --strict

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]' || echo "bench extra not installed: peers will be skipped"
	$(PY) benchmarks/run.py

bench-smoke: $(STAMP)
	$(PY) benchmarks/run.py --smoke

bench-e2e: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]' || echo "bench extra not installed: PyTorch will be skipped"
	$(PY) benchmarks/e2e_mnist.py
	$(PY) benchmarks/e2e_shakespeare.py
	$(PY) benchmarks/e2e_cnn.py
	$(PY) benchmarks/e2e_small.py
	$(PY) benchmarks/speedrun.py
	$(PY) benchmarks/speedrun.py --ablations --seeds 2

bench-scaling: $(STAMP)
	$(PY) benchmarks/scaling.py

clean:
	rm -rf $(VENV) runs build *.egg-info
