# Two commands do everything: `make run` (the main job) and `make test` (the suite). Both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   := /usr/share/datasets/fashion-mnist
PROFILE ?= default
PROTOCOL ?=
ARGS ?=

.PHONY: run test test-fast setup data browser lint clean gpu-check

run: setup data
	$(VENV)/bin/fashion-ensemble run --profile $(PROFILE) $(if $(PROTOCOL),--protocol $(PROTOCOL)) $(ARGS)

# The architecture's contracts (.importlinter), then the suite: one worker per core (pytest-xdist, a test file per
# worker), one thread each: PyTorch's threads spin while they wait, so two-thread workers on two cores would cost
# several times their share (docs/usage.md, "Sharing the cores"). ARGS="-n0" runs it in one process.
test: setup data browser
	$(VENV)/bin/lint-imports --no-cache
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile $(ARGS)

# On a machine with an NVIDIA GPU and PyTorch (nothing else installed, no internet): CUDA checks, then `best`.
gpu-check:
	$(PYTHON) scripts/gpu_check.py $(ARGS)

# The edit-test loop: the suite without the tests marked slow (training, subprocesses, the real data set).
test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile -m "not slow" $(ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests

setup: $(VENV)/.installed

# torch first, pinned: its CPU build lies on this disk; any looser pin can pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The real data set, from Debian's package, when it is missing and we may install it.
data:
	@if [ -n "$$FASHION_MNIST_DIR" ] || [ -f $(DATA)/t10k-labels-idx1-ubyte.gz ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (or set FASHION_MNIST_DIR)"; exit 1; \
	fi

# Headless Chromium and its driver, from Debian, for the web page's end-to-end test.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium and chromium-driver"; \
		(apt-get install -y -qq chromium chromium-driver || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)) >/dev/null; \
	else \
		echo "the web page's test needs Chromium: run 'sudo apt-get install chromium chromium-driver' (it is skipped until then)"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
