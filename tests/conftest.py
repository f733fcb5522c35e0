"""Shared fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core machine, with mediapipe's own threads in the
    process, a second torch thread mostly waits (measured: detect_hands 0.06 s → 0.3–4 s per frame)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
