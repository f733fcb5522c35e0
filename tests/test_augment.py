"""Sec. 3.5's self-supervised augmentation: view/shape perturbation, texture transfer, labels, mixing."""
import math

import numpy as np
import pytest
import torch

from handlib.augment import (
    AugmentBuffer,
    AugmentConfig,
    augment_seeds,
    crop_camera,
    mix_into,
    perturb_view,
    vertex_colors,
)
from handlib.camera import intrinsics, project
from handlib.data.batch import denormalize_image, normalize_image
from handlib.hand_model import HandModel, identity_h
from handlib.raster import render_rgb
from handlib.skeleton import MIDDLE_MCP

S = 64


@pytest.fixture(scope="module")
def hand():
    return HandModel(dtype=torch.float64)


def _seeds(hand, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = identity_h(n, trans=(0.0, 0.0, 0.45), dtype=torch.float64)
    h[:, 4:49] = 0.3 * torch.randn(n, 45, generator=g, dtype=torch.float64)
    h[:, 49:59] = torch.randn(n, 10, generator=g, dtype=torch.float64).clamp(-2, 2)
    rv = torch.randn(n, 3, generator=g, dtype=torch.float64)
    from handlib.rotations import axis_angle_to_quaternion
    h[:, :4] = axis_angle_to_quaternion(rv)
    K0 = intrinsics(150.0, 32.0, 32.0).to(torch.float64).expand(n, 3, 3)
    K = crop_camera(K0, project(hand.from_h(h).joints, K0), S)
    return h, K


def _rot(angles):
    """R = R_z R_y R_x from elementary matrices (independent of the quaternion code)."""
    out = []
    for ax, ay, az in angles.tolist():
        (cx, sx), (cy, sy), (cz, sz) = [(math.cos(a), math.sin(a)) for a in (ax, ay, az)]
        Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
        Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
        Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
        out.append(Rz @ Ry @ Rx)
    return torch.stack(out)


def test_perturb_view_rotates_about_the_mcp_and_resamples_shape(hand):
    h, _ = _seeds(hand)
    base = hand.from_h(h)
    same, out = perturb_view(hand, h, h[:, 49:59], torch.zeros(3, 3, dtype=torch.float64))
    assert torch.allclose(same, h, atol=1e-12) and torch.allclose(out.verts, base.verts, atol=1e-12)
    angles = torch.tensor([[0.3, -0.2, 1.0], [0.0, 0.5, 0.0], [-0.4, 0.1, -2.0]], dtype=torch.float64)
    h2, out = perturb_view(hand, h, h[:, 49:59], angles)
    c = base.joints[:, MIDDLE_MCP:MIDDLE_MCP + 1]
    expect = (base.verts - c) @ _rot(angles).transpose(1, 2) + c  # X' = R (X − c) + c
    assert torch.allclose(out.verts, expect, atol=1e-10)
    betas = torch.full((3, 10), 2.5, dtype=torch.float64)
    h3, out3 = perturb_view(hand, h, betas, angles)
    assert torch.equal(h3[:, 49:59], betas) and torch.equal(h3[:, 4:49], h[:, 4:49])
    assert torch.allclose(out3.joints[:, MIDDLE_MCP], c[:, 0], atol=1e-12)  # the MCP stays put
    assert not torch.allclose(out3.verts, out.verts, atol=1e-3)  # and the shape did change


def test_crop_camera_frames_the_hand_like_the_crops(hand):
    h, _ = _seeds(hand)
    K0 = intrinsics(300.0, 100.0, 90.0).to(torch.float64).expand(3, 3, 3)
    kp = project(hand.from_h(h).joints, K0)
    K = crop_camera(K0, kp, S, margin=1.5)
    uv = project(hand.from_h(h).joints, K)
    assert torch.allclose(uv[:, MIDDLE_MCP], torch.full((3, 2), (S - 1) / 2, dtype=torch.float64), atol=1e-9)
    side = (uv.amax(1) - uv.amin(1)).amax(-1)
    assert torch.allclose(side * 1.5, torch.full((3,), float(S), dtype=torch.float64), atol=1e-9)


def test_vertex_colors_read_back_what_was_rendered(hand):
    h, K = _seeds(hand)
    verts = hand.from_h(h).verts
    truth = 0.5 + 0.3 * torch.sin(verts * 30.0)  # smooth colours over the surface, in [0, 1]
    img = render_rgb(verts, hand.faces, K, S, vert_colors=truth, ambient=1.0)["rgb"]
    cols, vis = vertex_colors(img, verts, hand.faces, K)
    frac = vis.double().mean(1)
    assert ((frac > 0.2) & (frac < 0.8)).all()  # about one side of the hand is seen
    err = (cols - truth).abs().amax(-1)
    assert err[vis].median() < 0.02 and err[vis].quantile(0.9) < 0.06  # tail: silhouette edges
    assert ((cols >= 0) & (cols <= 1)).all()
    # hidden vertices are filled from their neighbours, not left at the mean
    assert (cols[~vis] - cols[~vis].mean(0)).abs().amax() > 0.05


def test_augmented_samples_have_exact_labels_and_are_deterministic(hand):
    h, K = _seeds(hand, n=2)
    x = normalize_image(torch.randint(0, 255, (2, S, S, 3), dtype=torch.uint8))
    hf = HandModel()  # the float32 model the network uses
    cfg = AugmentConfig(photo_fraction=0.5)
    a = augment_seeds(hf, x, K.float(), h.float(), np.random.default_rng(3), cfg)
    b = augment_seeds(hf, x, K.float(), h.float(), np.random.default_rng(3), cfg)
    c = augment_seeds(hf, x, K.float(), h.float(), np.random.default_rng(4), cfg)
    assert a["image"].shape == (6, 3, S, S) and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["image"], c["image"])
    out = hf.from_h(a["h"])
    assert torch.allclose(out.joints, a["kp3d"], atol=1e-6)
    assert torch.allclose(project(a["kp3d"], a["K"]), a["kp2d"], atol=1e-4)
    assert (a["h"][:, 49:59].abs() <= 3.0).all() and a["h"][:, 49:59].std() > 1.0  # U(−3, 3)
    assert torch.equal(a["h"][:, 4:49], h.float().repeat_interleave(3, 0)[:, 4:49])  # pose kept
    assert a["mask"].any(-1).any(-1).all() and a["has_mask"].all() and not a["mirrored"].any()
    sil = render_rgb(out.verts, hf.faces, a["K"], S)["mask"]
    assert (sil == a["mask"]).double().mean() > 0.999


def test_round_trip_reproduces_the_seed_image(hand):
    """The seed's shape kept, no rotation: the new sample is the seed image again inside the hand."""
    h, K = _seeds(hand, n=2)
    verts = hand.from_h(h).verts
    cols = (0.3 + 0.5 * torch.sigmoid(verts * 40.0)).clamp(0, 1)
    r = render_rgb(verts, hand.faces, K, S, vert_colors=cols, ambient=1.0)
    x = normalize_image(torch.round(r["rgb"] * 255).to(torch.uint8))
    cfg = AugmentConfig(instances=1, shape_range=None, rotation_deg=(0.0, 0.0, 0.0))
    a = augment_seeds(HandModel(), x, K.float(), h.float(), np.random.default_rng(0), cfg)
    assert torch.allclose(a["K"].double(), K, atol=1e-3) and torch.allclose(a["h"].double(), h, atol=1e-5)
    both = a["mask"] & r["mask"]
    assert both.sum() > 0.95 * r["mask"].sum()
    diff = (denormalize_image(a["image"]).double() - r["rgb"]).abs().amax(-1)[both]
    assert diff.mean() < 0.03


def test_buffer_is_fifo_bounded_and_survives_a_state_dict():
    def samples(start, n):
        idx = torch.arange(start, start + n)
        yes = torch.ones(n, dtype=torch.bool)
        return {"image": idx.float().view(n, 1, 1, 1).expand(n, 3, 2, 2), "mask": torch.zeros(n, 2, 2) > 0,
                "has_mask": yes, "kp2d": torch.zeros(n, 21, 2), "kp3d": torch.zeros(n, 21, 3),
                "K": torch.eye(3).expand(n, 3, 3), "valid": torch.ones(n, 21) > 0, "mirrored": ~yes,
                "index": idx, "h": torch.zeros(n, 63), "has_h": yes}
    buf = AugmentBuffer(capacity=5)
    assert buf.pop(2) is None
    buf.push(samples(0, 3))
    buf.push(samples(3, 4))  # 7 > 5: the two oldest go
    assert len(buf) == 5 and buf.pop(2)["index"].tolist() == [2, 3]
    other = AugmentBuffer()
    other.load_state_dict(buf.state_dict())
    assert other.capacity == 5 and other.pop(10)["index"].tolist() == [4, 5, 6] and len(other) == 0
    batch = samples(100, 4)
    batch["index"] = batch["index"].clone()
    mixed = mix_into(batch, samples(0, 1))
    assert mixed["index"].tolist() == [100, 101, 102, 0] and batch["index"].tolist() == [100, 101, 102, 103]
    with pytest.raises(ValueError, match="do not fit"):
        mix_into(batch, samples(0, 5))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="instances"):
        AugmentConfig(instances=0)
    with pytest.raises(ValueError, match="rotation_deg"):
        AugmentConfig(rotation_deg=(10.0, 10.0))
    with pytest.raises(ValueError, match="mix_fraction"):
        AugmentConfig(mix_fraction=1.5)
    assert AugmentConfig().per_step(32) == (8, 3) and AugmentConfig().per_step(4) == (1, 1)
