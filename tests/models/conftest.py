"""The tiny networks here are per-op-overhead bound: one intra-op thread is faster than two, and far
faster when the 2 cores are shared with other jobs (OpenMP threads then wait on each other)."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
