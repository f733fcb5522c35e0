"""Keypoint orders and Eq. 8's normalisation."""
import numpy as np
import pytest
import torch

from handlib import skeleton as sk
from handlib.camera import intrinsics, project


def test_orders_are_permutations_and_round_trip():
    x = np.random.default_rng(0).normal(size=(4, 21, 3))
    for src in sk.ORDERS:
        assert sorted(sk.ORDERS[src]) == list(range(21))
        for dst in sk.ORDERS:
            y = sk.convert(x, src, dst)
            assert np.array_equal(sk.convert(y, dst, src), x)
            # going through handlib is the same as going directly
            assert np.array_equal(sk.convert(sk.convert(x, src, "handlib"), "handlib", dst), y)
    t = torch.as_tensor(x)
    assert torch.equal(sk.convert(t, "rhd", "stb"), torch.as_tensor(sk.convert(x, "rhd", "stb")))


def test_orders_match_their_definitions():
    names = np.array(sk.KEYPOINT_NAMES)
    rhd = sk.convert(names[:, None], "handlib", "rhd")[:, 0]
    assert list(rhd[:5]) == ["wrist", "thumb_tip", "thumb_ip", "thumb_mcp", "thumb_cmc"]
    assert list(rhd[17:]) == ["pinky_tip", "pinky_dip", "pinky_pip", "pinky_mcp"]
    stb = sk.convert(names[:, None], "handlib", "stb")[:, 0]
    assert list(stb[1:5]) == ["pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip"]
    assert list(stb[17:]) == ["thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip"]
    mano = sk.convert(names[:, None], "handlib", "mano")[:, 0]
    # manopth's reorder from MANO+tips to the OpenPose order
    manopth = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    assert list(mano[manopth]) == list(names)
    assert [sk.MANO_JOINT_NAMES[i] for i in range(16)][7:10] == ["pinky1", "pinky2", "pinky3"]
    with pytest.raises(ValueError, match="unknown keypoint order 'coco'"):
        sk.convert(np.zeros((21, 2)), "coco", "handlib")
    with pytest.raises(ValueError, match="21"):
        sk.convert(np.zeros((20, 2)), "rhd", "handlib")


def _random_hand(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp3d = torch.randn(B, 21, 3, generator=g, dtype=torch.float64) * 0.04
    kp3d[..., 2] += 0.5 + torch.rand(B, 1, generator=g, dtype=torch.float64)
    K = intrinsics(torch.full((B,), 600.0), 320.0, 240.0, dtype=torch.float64)
    return kp3d, K


def test_eq8_normalisation_round_trips_and_is_invariant():
    kp3d, K = _random_hand(6)
    kp2d = project(kp3d, K)
    normed, params = sk.normalize_skeleton(kp2d, kp3d, K[:, 0, 0])
    assert torch.allclose(normed[:, sk.MIDDLE_MCP], torch.zeros(6, 3, dtype=torch.float64), atol=1e-12)
    # x, y span at most 1/1.5 of the box side
    span = (normed[..., :2].amax(1) - normed[..., :2].amin(1)).amax(-1)
    assert torch.allclose(span, torch.full((6,), 1 / 1.5, dtype=torch.float64))
    kp2d_back, depth = sk.denormalize_skeleton(normed, params)
    assert (kp2d_back - kp2d).abs().max() < 1e-6 and (depth - kp3d[..., 2]).abs().max() < 1e-6
    # moving the hand away along the optical axis (and scaling it with the distance) leaves the
    # normalised skeleton unchanged: the representation is scale- and depth-free
    far = kp3d * 2.0
    normed_far, _ = sk.normalize_skeleton(project(far, K), far, K[:, 0, 0])
    assert torch.allclose(normed_far, normed, atol=1e-9)


def test_eq8_valid_mask_and_shapes():
    kp3d, K = _random_hand(2)
    kp2d = project(kp3d, K)
    valid = torch.ones(2, 21, dtype=torch.bool)
    outlier = kp2d.clone()
    outlier[:, 20] += 1000.0
    valid[:, 20] = False
    a, pa = sk.normalize_skeleton(kp2d, kp3d, 600.0, valid=valid)
    b, pb = sk.normalize_skeleton(outlier, kp3d, 600.0, valid=valid)
    assert torch.equal(pa.scale, pb.scale)  # an invalid keypoint never changes the box
    assert torch.equal(a[:, :20], b[:, :20])
    _, p_all = sk.normalize_skeleton(outlier, kp3d, 600.0)
    assert (p_all.scale > pa.scale).all()  # without the mask the outlier stretches it
    with pytest.raises(ValueError, match="kp2d"):
        sk.normalize_skeleton(kp2d[:, :20], kp3d, 600.0)


def test_bone_lengths():
    kp = torch.zeros(1, 21, 3)
    kp[0, 5] = torch.tensor([0.0, 0.0, 0.09])
    lengths = sk.bone_lengths(kp)
    assert lengths.shape == (1, 20)
    assert torch.isclose(lengths[0, sk.BONES.index((0, 5))], torch.tensor(0.09))


def test_keypoint_box_margin_and_min_side():
    kp = np.array([[10.0, 10.0], [30.0, 20.0], [20.0, 15.0]])
    assert sk.keypoint_box(kp) == (10.0, 10.0, 20.0, 10.0)  # the tight box
    assert sk.keypoint_box(kp, margin=2.0) == (0.0, 5.0, 40.0, 20.0)  # scaled about its centre
    assert sk.keypoint_box(kp, min_side=16.0) == (10.0, 7.0, 20.0, 16.0)  # the thin side raised, centred
    x, y, w, h = sk.keypoint_box(np.array([[5.0, 5.0], [5.0, 5.0]]), min_side=1.0)  # one point
    assert (w, h) == (1.0, 1.0) and (x + w / 2, y + h / 2) == (5.0, 5.0)
