# Two commands do all the set-up on a fresh machine (no internet except the package registries):
#   make run    create .venv, install, prepare the offline data, start the app on http://localhost:8501
#   make test   the same set-up, then the test suite (browser tests when /usr/bin/chromium is present)
# Both are idempotent: a second call reinstalls nothing unless requirements*.txt changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: setup data run test test-fast lint bench loadtest clean-venv

$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

setup: $(STAMP) data

data: $(STAMP)
	$(PY) -m cvae_core prepare-data

run: setup
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: setup
	@if [ -x "$(CHROMIUM)" ] && $(PY) -c "import playwright" 2>/dev/null; then \
		echo "Chromium found at $(CHROMIUM): running the full suite including browser tests"; \
		$(PY) -m pytest $(PYTEST_ARGS); \
	else \
		echo "################################################################################"; \
		echo "## WARNING: $(CHROMIUM) not found: SKIPPING THE REAL-BROWSER TESTS.            ##"; \
		echo "## Install it with: apt-get install chromium   (never 'playwright install')     ##"; \
		echo "################################################################################"; \
		$(PY) -m pytest -m "not browser and not slow" $(PYTEST_ARGS); \
	fi

test-fast: setup
	$(PY) -m pytest -m "not browser and not slow" -x -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check cvae_core app.py pages tests bench scripts

bench: setup
	$(PY) bench/run_all.py

# 8 browser sessions at once against a real server (about 3 minutes; needs chromium): docs/app.md#load-test
loadtest: setup
	$(PY) bench/load_test.py --sessions 8 $(LOADTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
