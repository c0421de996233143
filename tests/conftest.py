"""Suite-wide settings.

The tiny networks and the many small tensor ops of these tests are per-op-overhead bound: one
intra-op thread is faster than two on our 2-core machines, and far faster when the cores are shared
(OpenMP threads then wait on each other: 7–30× slower measured). Subprocesses (torchrun, servers
started as programs) choose their own threads.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
