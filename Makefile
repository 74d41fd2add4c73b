# The README's two commands are `make demo` (the main job) and `make test` (the suite). Both set up first.
#
# Which Python: PYTHON=... when given; else the active virtual environment's python ($VIRTUAL_ENV or
# $CONDA_PREFIX); else the project environment .venv, created on first use with
# `python3 -m venv --system-site-packages .venv`, so that an installed torch is reused and nothing big is
# downloaded again. Every pip install goes into that environment, never into a distribution's Python.
BASE_PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ACTIVE_ENV := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))

ifdef PYTHON
  VENV_DEP :=
else ifneq ($(ACTIVE_ENV),)
  PYTHON := python
  VENV_DEP :=
else
  PYTHON := .venv/bin/python
  VENV_DEP := .venv/bin/python
endif
PIP := $(PYTHON) -m pip
export PYTHON

# pip's output goes to build/setup.log; on failure its tail is printed
SETUP_LOG := build/setup.log
logged = { $(1); } >>$(SETUP_LOG) 2>&1 || { echo "setup: failed; the last lines of $(SETUP_LOG):"; tail -n 30 $(SETUP_LOG); exit 1; }

.PHONY: setup venv deps build test test-fast test-asan cuda-check demo bench clean

setup: deps build

venv: $(VENV_DEP)
	@echo "setup: Python $$($(PYTHON) -c 'import platform; print(platform.python_version())') ($(PYTHON))"

.venv/bin/python:
	@echo "setup: creating the project environment .venv (--system-site-packages: an installed torch is reused)"
	@$(BASE_PYTHON) -m venv --system-site-packages .venv \
	  || { echo "setup: '$(BASE_PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv"; exit 1; }

# Keeps an installed torch. With none: torch==$(TORCH_VERSION), from PyTorch's CPU wheel index when no NVIDIA
# GPU answers nvidia-smi (the public index's torch is the CUDA build, with about 18 nvidia/triton packages);
# the default (CUDA) build when one does.
deps: venv
	@mkdir -p build && : > $(SETUP_LOG)
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "setup: torch $$($(PYTHON) -c 'import torch; print(torch.__version__)') (installed, kept)"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "setup: installing torch==$(TORCH_VERSION), CUDA build (NVIDIA GPU found; log $(SETUP_LOG))"; \
	  $(call logged,$(PIP) install "torch==$(TORCH_VERSION)"); \
	else \
	  echo "setup: installing torch==$(TORCH_VERSION), CPU build from $(TORCH_CPU_INDEX) (no NVIDIA GPU; log $(SETUP_LOG))"; \
	  $(call logged,$(PIP) install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX)); \
	fi
	@echo "setup: Python dependencies (pip; log $(SETUP_LOG))"
	@$(call logged,$(PIP) install setuptools wheel ninja pybind11 packaging numpy tqdm pillow pytest \
	  expecttest hypothesis faiss-cpu matplotlib scikit-learn)

# Compiles robustkit._C once (an editable install the first time, build_ext --inplace after), locked per
# checkout on build/.lock; see tools/build.sh.
build: venv
	@bash tools/build.sh

# Every torch-free .cu must compile on its own for the supported architectures, and the CUDA glue must parse
# (see docs/architecture.md: the CPU torch here has no CUDA, but nvcc may be installed). tools/cuda_check.sh
# uses $(PYTHON) for torch's include paths.
cuda-check: venv
	@bash tools/cuda_check.sh

test: setup cuda-check
	@echo "test: pytest (the whole suite)"
	@$(PYTHON) -m pytest -q

# The suite without the tests marked slow (training, long attacks).
test-fast: build
	@echo "test: pytest -m 'not slow'"
	@$(PYTHON) -m pytest -q -m "not slow"

# tests/ops (harness and fuzzers) against an ASan+UBSan build of the extension in a separate copy of the tree
# (/tmp/robustkit-asan-<hash>); not part of `make test`: the instrumented build alone takes many minutes.
test-asan: venv
	@bash tools/asan.sh

demo: setup
	@echo "demo: robustkit demo --out demo-out"
	@$(PYTHON) -m robustkit demo --out demo-out

bench: build
	$(PYTHON) bench/ops.py

clean:
	rm -rf build robustkit/_C*.so *.egg-info
