# Set-up and checks. `make demo` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Two install stamps: the demo needs the package with its CLI and report extras (no torch);
# the tests need every extra (`.[test]`, torch included). A test install also satisfies
# the demo.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install demo test lint bench tables clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEMO_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[cli,reports]"
	touch $(DEMO_STAMP)

$(TEST_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP) $(DEMO_STAMP)

install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	bash examples/demo_cli.sh

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .

# Two pytest processes: the Keras 2 (tf_keras / TFRS) suite, then the Keras 3 flavour's tests
# (tests/keras3), which cannot share a process with it.
test: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=15
	LCRON_TEST_FLAVOUR=keras3 $(PY) -m pytest -q tests/keras3

bench: $(DEMO_STAMP)
	$(PY) benchmarks/bench_loss.py

# Rebuild every generated reproduction table of benchmarks/RESULTS.md (and each folder's
# results.md and charts) from the committed per-run JSON files; no training.
RESULT_DIRS := benchmarks/results benchmarks/results/long-1m benchmarks/results/long-68ep
tables: $(DEMO_STAMP)
	for d in $(RESULT_DIRS); do \
	    $(PY) benchmarks/reproduce.py --table-only --out $$d --results-md benchmarks/RESULTS.md \
	        > /dev/null || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
