# The README's two commands are `make demo` (the main job) and `make test` (the suite). Both set up first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CU_SOURCES := $(wildcard csrc/ops/*/*_kernel.cu)
BUILD_LOCK := /tmp/robustkit-build.lock

.PHONY: setup deps build test test-fast cuda-check demo bench clean

# Keeps an installed torch; otherwise installs torch==$(TORCH_VERSION) (the CPU build on machines without
# a GPU: a bare `torch` requirement would pull the multi-GB CUDA build).
setup: deps build

deps:
	@$(PYTHON) -c "import torch; print('using installed torch', torch.__version__)" 2>/dev/null \
	  || $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -q setuptools wheel ninja pybind11 packaging numpy tqdm pillow pytest expecttest \
	  faiss-cpu matplotlib scikit-learn

# In-place build of robustkit._C (ninja, incremental), then an editable install that does not rebuild deps.
build:
	flock $(BUILD_LOCK) $(PYTHON) setup.py -q build_ext --inplace
	@$(PIP) show -q robustkit >/dev/null 2>&1 || flock $(BUILD_LOCK) $(PIP) install -q --no-build-isolation --no-deps -e .
	@$(PYTHON) -c "import robustkit; print('robustkit', robustkit.__version__, robustkit.build_info())"

# Every torch-free .cu must compile on its own for sm_80 and sm_90 (see ARCHITECTURE.md).
cuda-check:
ifeq ($(NVCC),)
	@echo "cuda-check: nvcc not found, skipped"
else
	@set -e; for f in $(CU_SOURCES); do \
	  for arch in sm_80 sm_90; do \
	    echo "nvcc -arch=$$arch $$f"; \
	    $(NVCC) -c -std=c++17 -arch=$$arch -Icsrc -I$$(dirname $$f) $$f -o /tmp/robustkit_cu_check.o; \
	  done; \
	done
endif

test: setup cuda-check
	$(PYTHON) -m pytest -q

test-fast: build
	$(PYTHON) -m pytest -q -m "not slow"

demo: setup
	$(PYTHON) -m robustkit demo --out demo-out

bench: build
	$(PYTHON) bench/ops.py

clean:
	rm -rf build robustkit/_C*.so *.egg-info
