"""The evaluation tests run their tiny models on one intra-op thread: on the shared 2-core machine two
threads per process oversubscribe the cores and made each step 10-40x slower (measured); the thread count is
restored afterwards."""
import pytest


@pytest.fixture(autouse=True)
def _eval_tests_on_one_thread(one_thread):
    yield
