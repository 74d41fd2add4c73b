"""The evaluation tests run their tiny models on one intra-op thread: on the shared 2-core machine two
threads per process oversubscribe the cores and made each step 10-40x slower (measured); the thread count is
restored afterwards."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
