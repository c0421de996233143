import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many small elementwise ops, where intra-op threads only add contention
    (10–30× slower on a loaded 2-core machine); restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
