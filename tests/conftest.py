import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread is faster, and the test machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
