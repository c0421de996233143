# The two commands of the README: `make demo` and `make test`. Both create the virtual
# environment and install the package on first use (exact pins from constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out
# pytest workers (pytest-xdist): the tests run one torch thread each, so two workers use both cores;
# a file's tests stay in one worker (module fixtures, e.g. the packaging tests' wheel build, run once)
TEST_WORKERS ?= 2

.PHONY: install lint test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

test: lint
	sh tools/ensure_browser.sh
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: install
	$(PY) tools/demo.py --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
