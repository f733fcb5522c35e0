"""collate and to_right_hand: mirrored labels stay consistent with the right-hand model and the camera."""
import numpy as np
import pytest
import torch

from handlib.camera import project
from handlib.data import CropConfig, SyntheticHands, crop_to_hand
from handlib.data.batch import IMAGE_MEAN, collate, denormalize_image, normalize_image, to_right_hand
from handlib.hand_model import HandModel


@pytest.fixture(scope="module")
def samples():
    ds = SyntheticHands(seed=3, num=12, image_size=96)
    return [crop_to_hand(ds[i], CropConfig(size=64)) for i in range(12)]


def test_left_sample_mirrors_to_the_right_model(samples):
    left = [s for s in samples if s["side"] == "left"]
    assert left, "seed 3 should give at least one left hand in 12"
    right_model = HandModel("right").double()
    for s in left:
        r = to_right_hand(s)
        assert r["side"] == "right" and r["mirrored"]
        out = right_model.from_h(torch.as_tensor(r["h"], dtype=torch.float64)[None])
        # the right model with the mirrored h reproduces the mirrored keypoints
        assert torch.allclose(out.joints[0], torch.as_tensor(r["kp3d"], dtype=torch.float64), atol=2e-5)
        # and the mirrored camera projects them onto the flipped 2D keypoints
        uv = project(torch.as_tensor(r["kp3d"])[None], torch.as_tensor(r["K"])[None])[0]
        assert torch.allclose(uv, torch.as_tensor(r["kp2d"]), atol=1e-3)
        S = s["image"].shape[1]
        assert np.array_equal(r["image"][:, 0], s["image"][:, S - 1])
        assert np.array_equal(r["mask"], s["mask"][:, ::-1])


def test_right_sample_unchanged_and_mirror_is_an_involution_on_2d(samples):
    s = next(s for s in samples if s["side"] == "right")
    r = to_right_hand(s)
    assert r["mirrored"] is False and r["kp2d"] is s["kp2d"]
    left = dict(s, side="left")
    back = to_right_hand(dict(to_right_hand(left), side="left"))
    assert np.allclose(back["kp2d"], s["kp2d"], atol=1e-4)
    assert np.allclose(back["h"], s["h"], atol=1e-6)
    assert np.allclose(back["K"], s["K"])


def test_collate_shapes_and_normalisation(samples):
    b = collate(samples[:5])
    assert b["image"].shape == (5, 3, 64, 64) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (5, 64, 64) and b["mask"].dtype == torch.bool
    assert b["kp2d"].shape == (5, 21, 2) and b["kp3d"].shape == (5, 21, 3) and b["K"].shape == (5, 3, 3)
    assert b["valid"].dtype == torch.bool and b["h"].shape == (5, 63) and bool(b["has_h"].all())
    img = torch.as_tensor(np.stack([to_right_hand(s)["image"] for s in samples[:5]]))
    assert torch.allclose(denormalize_image(b["image"]), img.float() / 255, atol=1e-6)
    assert torch.allclose(normalize_image(torch.zeros(1, 2, 2, 3, dtype=torch.uint8))[0, :, 0, 0],
                          -torch.tensor(IMAGE_MEAN) / torch.tensor([0.229, 0.224, 0.225]))


def test_collate_errors(samples):
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    big = crop_to_hand(SyntheticHands(seed=3, num=1, image_size=96)[0], CropConfig(size=32))
    with pytest.raises(ValueError, match="one size"):
        collate([samples[0], big])
    with pytest.raises(ValueError, match="side"):
        to_right_hand(dict(samples[0], side="both"))
