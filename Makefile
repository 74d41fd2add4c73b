# The README's two commands are `make demo` (the main job) and `make test` (the suite). Both set up first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
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

# Every torch-free .cu must compile on its own for sm_80 and sm_90, and the CUDA glue must parse
# (see ARCHITECTURE.md: the CPU torch here has no CUDA, but nvcc is installed).
cuda-check:
	bash tools/cuda_check.sh

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
