import pytest
import torch

import handlib
from handlib.config import profile


def test_profiles(monkeypatch):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    assert profile().name == "ci" and profile().image_size == 64
    monkeypatch.delenv("HANDLIB_PROFILE")
    assert profile().name == "cpu"
    gpu = profile("gpu")
    assert (gpu.image_size, gpu.heatmap_size, gpu.backbone) == (224, 32, "resnet50")  # paper setting
    assert gpu.device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="HANDLIB_PROFILE='laptop'"):
        profile("laptop")


def test_seed_everything():
    handlib.seed_everything(3)
    a = torch.rand(3)
    handlib.seed_everything(3)
    assert torch.equal(a, torch.rand(3))
