"""Shared test setup: CUDA tests carry the `cuda` marker and are skipped without a GPU; every test gets
its RNG state restored afterwards so tests cannot leak randomness into each other."""
from __future__ import annotations

import os
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("ROBUSTKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_rng_state():
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    yield
    torch.set_rng_state(cpu_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored afterwards. Tests of tiny tensors use it: spinning up
    intra-op threads costs more than their work, and on a loaded 2-core machine two threads per process
    made steps 10-40x slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def devices():
    """CPU always; CUDA as a marked parameter (skipped without a GPU)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_lenet(request):
    """``(model, x, y)``: the default LeNet trained on MNIST train (seed 0, 1 epoch, >= 98% test accuracy),
    eval mode, on CPU; and the first 256 MNIST *test* images (float32 [256, 1, 28, 28] in [0, 1]) with their
    int64 labels [256] among those the model classifies correctly. Trained once, then loaded from
    ``$ROBUSTKIT_CACHE`` when set, else from the pytest cache dir. Shared by the session: do not modify it."""
    from robustkit.datasets import mnist
    from robustkit.zoo import trained_mnist_model

    cache_dir = None
    pytest_cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if "ROBUSTKIT_CACHE" not in os.environ and pytest_cache is not None:
        cache_dir = pytest_cache.mkdir("robustkit-models")
    # Training runs ~1000 small batches; with 2 intra-op threads on a busy 2-core machine each op's OpenMP
    # sync turned 12 ms steps into 0.5-1.4 s ones (measured), so the one-off training runs on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = trained_mnist_model("lenet", seed=0, cache_dir=cache_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    x, y = mnist("test")[:1024]
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).nonzero().squeeze(1)[:256]
    assert correct.numel() == 256, "the trained LeNet misclassifies too many of the first 1024 test images"
    return model, x[correct].contiguous(), y[correct].contiguous()


@pytest.fixture(scope="session")
def mnist_test_batch():
    """``(x, y)``: the first 256 MNIST test images (float32 [256, 1, 28, 28] in [0, 1]) and labels (int64)."""
    from robustkit.datasets import mnist

    x, y = mnist("test")[:256]
    return x, y
