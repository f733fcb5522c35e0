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


def test_one_render_size_rule_for_eval_and_demo():
    """A network of the profile's crop size is scored on the renders its training cut from; one of
    another size (a checkpoint from another profile) on renders twice its crop; dataset_for_eval
    follows the rule."""
    from handlib.config import PROFILES
    from handlib.evaluate import dataset_for_eval

    cpu, ci = PROFILES["cpu"], PROFILES["ci"]
    assert cpu.render_size_for(cpu.image_size) == cpu.synthetic_size == 256 != 2 * cpu.image_size
    assert cpu.render_size_for(ci.image_size) == 2 * ci.image_size
    assert ci.render_size_for(ci.image_size) == ci.synthetic_size
    data = dataset_for_eval("synthetic", ci.image_size, num=1)
    assert data.cfg.image_size == handlib.config.profile().render_size_for(ci.image_size)
