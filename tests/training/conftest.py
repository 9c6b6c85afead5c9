"""Fixtures of the training tests."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():  # noqa: ANN201
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
