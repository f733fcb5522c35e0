"""Hand crops: 2D, 3D, K, mask and MANO root stay consistent under rotation/scale/shift jitter."""
import dataclasses

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handlib.camera import project
from handlib.data import CropConfig, CropTransform, DexterObject, FreiHAND, crop_to_hand, make_sample
from handlib.data import fixtures as fx
from handlib.data.common import project_np
from handlib.skeleton import MIDDLE_MCP

JITTER = CropConfig(size=64, rotation=180.0, scale_jitter=0.3, shift_jitter=0.15)
COLOURS = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)


def _sample(seed=0, fx_=500.0, fy_=500.0, size=(320, 240), with_mask=True):
    rng = np.random.default_rng(seed)
    K = np.array([[fx_, 0, 150.0], [0, fy_, 110.0], [0, 0, 1]])
    kp3d = fx.random_hand(rng, K, size, "right")
    kp2d = project_np(kp3d, K)
    img = fx._picture(rng, size[1], size[0], kp2d)
    mask = fx._disks((size[1], size[0]), kp2d, 6).astype(bool) if with_mask else None
    return make_sample(img, mask, kp2d, kp3d, K, np.ones(21, bool), "right", seed, "fake.png")


def _reproj_error(s):
    kp3d, K = (torch.tensor(s[k], dtype=torch.float64) for k in ("kp3d", "K"))
    pr = project(kp3d[None], K)
    return float(np.abs(pr[0].numpy() - s["kp2d"])[s["valid"]].max())


@pytest.mark.parametrize("fxy", [(500.0, 500.0), (587.45, 600.67)])  # square pixels, and D+O's
def test_crop_keeps_2d_3d_and_K_consistent(fxy):
    rng = np.random.default_rng(0)
    for seed in range(20):
        s = _sample(seed, *fxy)
        c = crop_to_hand(s, JITTER, rng)
        assert _reproj_error(c) < 1e-4
        K = c["K"]
        assert K[0, 1] == K[1, 0] == 0 and K[0, 0] == pytest.approx(K[1, 1], rel=1e-6)  # plain intrinsics
        assert np.allclose(K[2], [0, 0, 1])
        # rotation about the optical axis keeps depths and bone lengths
        np.testing.assert_allclose(c["kp3d"][:, 2], s["kp3d"][:, 2], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(c["kp3d"] - c["kp3d"][0], axis=1),
                                   np.linalg.norm(s["kp3d"] - s["kp3d"][0], axis=1), atol=1e-6)
        assert c["image"].shape == (64, 64, 3) and c["mask"].shape == (64, 64)


def test_plain_crop_follows_eq8():
    s = _sample(3)
    c = crop_to_hand(s, CropConfig(size=96))
    np.testing.assert_allclose(c["kp2d"][MIDDLE_MCP], [47.5, 47.5], atol=1e-4)  # (S − 1) / 2
    extent = (c["kp2d"].max(0) - c["kp2d"].min(0)).max()
    assert extent == pytest.approx(96 / 1.5, rel=1e-5)  # crop side = 1.5 × the tight box
    np.testing.assert_allclose(c["kp3d"], s["kp3d"], atol=1e-7)  # no rotation: 3D unchanged
    np.testing.assert_allclose(c["affine"][:2, :2], np.eye(2) * c["affine"][0, 0], atol=1e-6)


def test_upright_crop_turns_wrist_to_middle_mcp_up_and_centres_the_turned_box():
    for seed in range(10):
        s = _sample(seed)
        c = crop_to_hand(s, CropConfig(size=96, orient="upright", margin=2.0))
        assert _reproj_error(c) < 1e-4
        d = c["kp2d"][MIDDLE_MCP] - c["kp2d"][0]
        assert d[1] < 0 and abs(d[0]) < 1e-3 * np.linalg.norm(d)  # straight up (image y points down)
        lo, hi = c["kp2d"].min(0), c["kp2d"].max(0)
        np.testing.assert_allclose(0.5 * (lo + hi), [47.5, 47.5], atol=1e-3)  # the box is centred
        assert (hi - lo).max() == pytest.approx(96 / 2.0, rel=1e-5)  # side = margin × the turned box
        # a roll of the camera: depths and bone lengths are kept
        np.testing.assert_allclose(c["kp3d"][:, 2], s["kp3d"][:, 2], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(c["kp3d"] - c["kp3d"][0], axis=1),
                                   np.linalg.norm(s["kp3d"] - s["kp3d"][0], axis=1), atol=1e-6)
    # rotation jitter is around upright: the wrist → middle MCP axis stays within ±r of straight up
    rng = np.random.default_rng(1)
    for seed in range(10):
        c = crop_to_hand(_sample(seed), CropConfig(size=96, orient="upright", rotation=20.0), rng)
        d = c["kp2d"][MIDDLE_MCP] - c["kp2d"][0]
        assert abs(np.degrees(np.arctan2(d[0], -d[1]))) <= 20.0 + 1e-3


def test_upright_crop_falls_back_to_the_box_without_a_wrist_and_rejects_unknown_orients():
    s = _sample(2)
    s["valid"] = s["valid"].copy()
    s["valid"][0] = False
    up, box = crop_to_hand(s, CropConfig(size=64, orient="upright")), crop_to_hand(s, CropConfig(size=64))
    np.testing.assert_array_equal(up["image"], box["image"])
    with pytest.raises(ValueError, match="orient"):
        CropConfig(orient="sideways")


def test_pixel_centres_are_integers():
    """At scale 1 an integer shift moves a lit pixel exactly to its transformed keypoint."""
    img = np.zeros((60, 80, 3), np.uint8)
    img[30, 20] = 255
    kp2d = np.zeros((21, 2))
    kp2d[:] = [20.0, 30.0]
    kp2d[0], kp2d[MIDDLE_MCP] = [10.0, 30.0], [20.0, 30.0]  # box side 10 → crop side 15 → σ = 1
    K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
    kp3d = np.c_[(kp2d - K[:2, 2]) / 100.0, np.ones(21)]
    s = make_sample(img, None, kp2d, kp3d, K, np.ones(21, bool), "left", 0, "dot.png")
    c = crop_to_hand(s, CropConfig(size=15))
    v, u = np.unravel_index(c["image"][..., 0].argmax(), (15, 15))
    assert (u, v) == (7, 7) and c["kp2d"][MIDDLE_MCP].tolist() == [7.0, 7.0]
    assert c["image"][7, 7, 0] == 255


def test_mask_warps_with_image():
    s = _sample(5)
    s["image"] = np.repeat(s["mask"][..., None].astype(np.uint8) * 255, 3, -1)
    for seed in range(5):
        c = crop_to_hand(s, dataclasses.replace(JITTER, size=96), np.random.default_rng(seed))
        lit = c["image"][..., 0] > 127
        assert c["mask"].sum() > 100 and (lit == c["mask"]).mean() > 0.98
        on = c["kp2d"].round().astype(int)
        inside = ((on >= 0) & (on < 96)).all(1)
        assert c["mask"][on[inside, 1], on[inside, 0]].all()  # disks were centred on the keypoints


def test_colour_jitter_is_seeded_and_leaves_geometry():
    s = _sample(7)
    cfg = dataclasses.replace(JITTER, **COLOURS)
    a = crop_to_hand(s, cfg, np.random.default_rng(1))
    b = crop_to_hand(s, cfg, np.random.default_rng(1))
    c = crop_to_hand(s, cfg, np.random.default_rng(2))
    geo = crop_to_hand(s, JITTER, np.random.default_rng(1))  # same geometric draws, no colour
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"], geo["image"])
    for key in ("kp2d", "kp3d", "K", "mask"):
        np.testing.assert_array_equal(a[key], geo[key])
    np.testing.assert_array_equal(s["image"], _sample(7)["image"])  # input untouched


def test_seed_in_config_makes_crops_repeatable_per_sample():
    s = _sample(8)
    cfg = dataclasses.replace(JITTER, seed=123, **COLOURS)
    a, b = crop_to_hand(s, cfg), crop_to_hand(s, cfg)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["K"], b["K"])
    other = crop_to_hand({**s, "index": 9}, cfg)
    assert not np.array_equal(a["K"], other["K"])


def test_mano_root_and_orientation_follow_the_roll(tmp_path):
    fx.write_freihand(tmp_path, unique=2, versions=1, evaluation=1)
    s = FreiHAND(tmp_path, versions=("gs",))[0]
    s["cam"] = np.array([100.0, 90.0, 2000.0], np.float32)
    c = crop_to_hand(s, JITTER, np.random.default_rng(4))
    R3 = np.linalg.lstsq(s["kp3d"].astype(np.float64), c["kp3d"].astype(np.float64), rcond=None)[0].T
    assert np.allclose(R3 @ R3.T, np.eye(3), atol=1e-5) and abs(R3[2, 2] - 1) < 1e-5  # a roll about z
    Rg = Rotation.from_rotvec(s["pose"][:3]).as_matrix()
    np.testing.assert_allclose(Rotation.from_rotvec(c["pose"][:3]).as_matrix(), R3 @ Rg, atol=1e-4)

    def root(cam, K):  # FreiHAND's weak-perspective root: ((u, v) − pp, f) / scale
        f = 0.5 * (K[0, 0] + K[1, 1])
        return np.r_[cam[:2] - K[:2, 2], f] / cam[2]

    np.testing.assert_allclose(root(c["cam"], c["K"]), R3 @ root(s["cam"], s["K"]), atol=1e-5)
    np.testing.assert_array_equal(c["betas"], s["betas"])


def test_fingertip_only_crop_and_reader_transform(tmp_path):
    fx.write_dexter_object(tmp_path, frames=2, sequences=("Grasp1",))
    ds = DexterObject(tmp_path, sequences=("Grasp1",), transform=CropTransform(JITTER))
    for i in range(len(ds)):
        c = ds[i]
        assert c["image"].shape == (64, 64, 3) and c["mask"] is None
        assert _reproj_error(c) < 1e-4
        assert (c["kp2d"][~c["valid"]] == 0).all()
    with pytest.raises(ValueError, match="no valid keypoint"):
        crop_to_hand({**_sample(0), "valid": np.zeros(21, bool)})
