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

.PHONY: setup data data-check run test test-fast lint bench gpu-check loadtest clean-venv

$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

setup: $(STAMP) data

# prepare-data checks every file (MD5s, the morpho-mnist render, the certificate teachers: 2-3 s). `make run` skips it
# once it has passed with this .venv and the files are still there; `rm $(DATA_STAMP)` (or `make data-check`) redoes it.
DATA_STAMP := $(VENV)/.data-prepared
DATA_FILES := .data/MNIST/raw/train-images-idx3-ubyte .data/MNIST/raw/t10k-labels-idx1-ubyte .data/morpho-mnist/v1-seed0.npz

data: $(STAMP)
	@if [ -z "$$CVAE_DATA_DIR" ] && [ "$(DATA_STAMP)" -nt "$(STAMP)" ] && ls $(DATA_FILES) >/dev/null 2>&1; then \
		echo "data: prepared and checked before ($(DATA_STAMP)); make data-check checks it again"; \
	else \
		$(PY) -m cvae_core prepare-data && touch $(DATA_STAMP); \
	fi

data-check: $(STAMP)
	$(PY) -m cvae_core prepare-data && touch $(DATA_STAMP)

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

# On a machine with a CUDA GPU: every gpu-marked test, then the benchmarks on CUDA (not yet run on a GPU: no GPU was
# lent to the sessions that wrote it; see docs/benchmarks.md)
gpu-check: setup
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make gpu-check: no CUDA GPU here')"
	$(PY) -m pytest -m gpu -q -p no:cacheprovider
	timeout 480 $(PY) bench/run_all.py

# 8 browser sessions at once against a real server (about 3 minutes; needs chromium): docs/app.md#load-test
loadtest: setup
	$(PY) bench/load_test.py --sessions 8 $(LOADTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
