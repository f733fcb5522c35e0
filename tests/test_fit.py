"""fit: the keypoint twin model, closed-form translation, and recovering known hands."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handlib import fit
from handlib.metrics import align_procrustes

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("side", ["right", "left"])
def test_keypoint_model_equals_full_model(side):
    full, small, _ = fit._models(side)
    g = torch.Generator().manual_seed(1)
    pose = 0.4 * torch.randn(5, 45, generator=g, dtype=torch.float64)
    betas = torch.randn(5, 10, generator=g, dtype=torch.float64)
    a, b = full(pose=pose, betas=betas).joints, small(pose=pose, betas=betas).joints
    assert small.num_verts == 21 and full.num_verts > 700
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_kabsch_recovers_a_rotation():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(21, 3))
    A -= A.mean(0)
    R = Rotation.random(random_state=3).as_matrix()
    np.testing.assert_allclose(fit.kabsch(A, A @ R.T), R, atol=1e-12)
    assert np.linalg.det(fit.kabsch(A, -A)) == pytest.approx(1.0)  # a reflection is never returned


def test_solve_translation_is_exact_for_a_perfect_hand():
    rng = np.random.default_rng(0)
    rel = rng.normal(scale=0.05, size=(21, 3))
    rel -= rel[0]
    t = np.array([0.05, -0.03, 0.45])
    X = rel + t
    uv = X[:, :2] / X[:, 2:] * 600.0 + K[:2, 2]
    np.testing.assert_allclose(fit.solve_translation(rel, uv, K), t, atol=1e-12)


def _hand(side, seed):
    """A known hand: (kp2d, world in a rotated detector frame, true camera joints)."""
    full, _, std = fit._models(side)
    rng = np.random.default_rng(seed)
    x = np.zeros(fit.N_PARAMS)
    x[fit._POSE] = (rng.normal(size=10) * std[:10]) @ full.hands_components.numpy()[:10]
    x[fit._BETA] = rng.normal(scale=0.8, size=10)
    x[fit._ROT] = Rotation.random(random_state=seed).as_rotvec()
    x[fit._TRANS] = [0.02, -0.01, 0.5]
    with torch.no_grad():
        J = fit._posed(full, torch.as_tensor(x[None]))[0].numpy()
    kp2d = J[:, :2] / J[:, 2:] * 600.0 + K[:2, 2]
    tilt = Rotation.from_rotvec([0.1, -0.05, 0.08]).as_matrix()  # the detector's frame is not the camera's
    world = (J - J[0]) @ tilt.T
    return kp2d, world, J


@pytest.mark.parametrize("side,seed", [("right", 0), ("left", 1), ("right", 2)])
def test_fit_recovers_a_known_hand(side, seed):
    kp2d, world, J = _hand(side, seed)
    res = fit.fit_hand(kp2d, K, world, side=side)
    err2d = np.linalg.norm(res.j2d - kp2d, axis=1).mean()
    pa = (align_procrustes(torch.as_tensor(res.joints)[None], torch.as_tensor(J)[None])[0]
          - torch.as_tensor(J)).norm(dim=-1).mean()
    assert err2d < 1.0, err2d
    assert 1000 * float(pa) < 3.0
    assert np.linalg.norm(res.joints - J, axis=1).mean() < 0.02  # depth within ~2 cm at 0.5 m
    assert res.verts.shape[1] == 3 and res.iterations >= 1 and set(res.costs) >= {"2d", "world"}


@pytest.mark.parametrize("seed", [0, 3])
def test_fit_converges_before_its_cap_whatever_the_landmarks_frame(seed):
    """The world term takes the best rotation inside the residual: LM sees the exact objective, stops
    by its tolerance long before the cap, and another tilt of the landmarks' frame (the detector's 3D
    frame is the camera's up to a tilt; the start comes from it) gives the same hand."""
    kp2d, world, J = _hand("right", seed)
    cfg = fit.FitConfig(iterations=60)
    res = fit.fit_hand(kp2d, K, world, cfg=cfg)
    assert res.iterations < 25, res.iterations
    spin = Rotation.from_rotvec([0.12, -0.1, 0.05]).as_matrix()  # 9°
    turned = fit.fit_hand(kp2d, K, world @ spin.T, cfg=cfg)
    np.testing.assert_allclose(turned.joints, res.joints, atol=1e-5)  # 0.01 mm
    assert turned.costs["world"] == pytest.approx(res.costs["world"], rel=1e-3, abs=1e-6)


def test_fuse_landmarks_turns_the_network_onto_the_world_landmarks_then_mixes():
    _, world, J = _hand("right", 5)
    spin = Rotation.random(random_state=9).as_matrix()
    far = world @ spin.T + [0.3, -0.2, 0.1]  # any rotation and origin of the detector's frame
    rel = far - far[0]
    np.testing.assert_allclose(fit.fuse_landmarks(far, J, 0.0), rel, atol=1e-12)
    np.testing.assert_allclose(fit.fuse_landmarks(far, J + 1.0, 1.0), rel, atol=1e-12)  # same shape, turned
    bent = J.copy()
    bent[8] += [0.01, 0.0, 0.0]  # the network's index tip 1 cm off
    mixed = fit.fuse_landmarks(far, bent, 0.3)
    assert mixed[0] == pytest.approx([0, 0, 0]) and 0.001 < np.linalg.norm(mixed[8] - rel[8]) < 0.004
    with pytest.raises(ValueError, match="network_share"):
        fit.FitConfig(network_share=1.5)
    with pytest.raises(ValueError, match="orientation_robust_deg"):
        fit.FitConfig(orientation_robust_deg=0.0)


def test_a_good_network_estimate_helps_a_noisy_world_shape():
    """The fit's world term with the network's joints mixed in: a better 3D target, a better hand."""
    kp2d, world, J = _hand("right", 6)
    noisy = world + np.random.default_rng(0).normal(scale=0.008, size=world.shape)  # 8 mm per point
    noisy[0] = world[0]

    def pa(res):
        p, g = torch.as_tensor(res.joints)[None], torch.as_tensor(J)[None]
        return 1000 * float((align_procrustes(p, g)[0] - g[0]).norm(dim=-1).mean())

    alone = fit.fit_hand(kp2d, K, noisy, network=J, cfg=fit.FitConfig(network_share=0.0))
    mixed = fit.fit_hand(kp2d, K, noisy, network=J)
    assert pa(mixed) < pa(alone) - 0.3, (pa(mixed), pa(alone))
    assert np.linalg.norm(mixed.j2d - kp2d, axis=1).mean() < 1.5  # still on its 2D evidence


def test_the_networks_orientation_steers_a_poorly_determined_rotation():
    """With noisy keypoints the rotation out of the image plane is loose; the network's camera-frame
    orientation (its joints) pulls the fit toward it, and only through that term."""
    kp2d, world, J = _hand("right", 8)
    rng = np.random.default_rng(1)
    noisy2d = kp2d + rng.normal(scale=4.0, size=kp2d.shape)
    spin = Rotation.from_rotvec([0.0, 0.5, 0.0]).as_matrix()  # the network turned 29° about y
    net_true, net_turned = J, (J - J[0]) @ spin.T + J[0]
    np.testing.assert_allclose(fit._network_rotation(world, net_turned, fit.FitConfig()),
                               spin @ fit.kabsch(world, J - J[0]), atol=1e-9)

    def angle(res):  # degrees between the fitted and the true root-relative joints
        R = fit.kabsch(res.joints - res.joints[0], J - J[0])
        return np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))

    cfg, free = fit.FitConfig(network_share=0.0), fit.FitConfig(network_share=0.0, network_orientation=0.0)
    off = fit.fit_hand(noisy2d, K, world, network=net_true, cfg=free)
    good = fit.fit_hand(noisy2d, K, world, network=net_true, cfg=cfg)
    bad = fit.fit_hand(noisy2d, K, world, network=net_turned, cfg=cfg)
    assert "orientation" not in off.costs and "orientation" in good.costs
    a_good, a_off, a_bad = angle(good), angle(off), angle(bad)
    assert a_good < a_off - 0.2 and a_bad > a_off + 3.0, (a_good, a_off, a_bad)
    # a network turned 150° (an untrained one) fades out (Cauchy, orientation_robust_deg): the fit
    # stays on its keypoints instead of turning the hand away from them
    wild = (J - J[0]) @ Rotation.from_rotvec([0.0, 2.6, 0.0]).as_matrix().T + J[0]
    res = fit.fit_hand(kp2d, K, world, network=wild, cfg=cfg)
    assert np.linalg.norm(res.j2d - kp2d, axis=1).mean() < 1.5 and angle(res) < 5.0


def test_an_outlier_keypoint_does_not_drag_the_rest():
    kp2d, world, J = _hand("right", 4)
    bad = kp2d.copy()
    bad[8] += 60.0  # the index tip 60 px off (a detector mistake)
    clean = fit.fit_hand(kp2d, K, world).j2d
    res = fit.fit_hand(bad, K, world)
    others = np.delete(np.arange(21), 8)
    assert np.linalg.norm(res.j2d[others] - clean[others], axis=1).mean() < 1.5
    assert np.linalg.norm(res.j2d[8] - kp2d[8]) < 15.0  # the model, not the outlier, places the tip


def test_laplacian_residual_is_the_trainers_laplacian_term_in_mm():
    """‖A β‖² = the trainer's laplacian_loss of the shaped rest mesh (m² → mm²), for any β."""
    from handlib.losses import laplacian_loss

    full, _, _ = fit._models("right")
    A = fit.laplacian_residual(full)
    betas = torch.randn(3, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shaped = full.v_template + torch.einsum("vck,bk->bvc", full.shapedirs, betas)
    for b in range(3):
        ref = 1e6 * laplacian_loss(shaped[b:b + 1], full.faces, full.v_template)
        assert float((A @ betas[b]).square().sum()) == pytest.approx(float(ref), rel=1e-9)


def test_feature_block_gradient_matches_finite_differences():
    """Step 4's one residual √(λ E) and its autograd Jacobian, against central differences (float64)."""
    full, _, _ = fit._models("right")
    _, _, J = _hand("right", 5)
    rng = np.random.default_rng(5)
    target = torch.as_tensor(rng.normal(scale=0.05, size=(full.num_verts, 3)) + [0.0, 0.0, 0.5])
    energy = lambda V: (V[0] - target).square().mean()  # noqa: E731  (any smooth E ≥ 0 will do)
    x = np.zeros(fit.N_PARAMS)
    x[fit._POSE] = 0.1 * rng.normal(size=45)
    x[fit._BETA], x[fit._TRANS] = rng.normal(size=10), [0.0, 0.0, 0.45]
    r, g = fit._feature_block(full, x, energy, 7.0, True)
    assert r.shape == (1,) and g.shape == (1, fit.N_PARAMS)
    assert float(r[0]) ** 2 == pytest.approx(7.0 * float(energy(fit._posed(full, torch.as_tensor(x[None]),
                                                                             verts=True)[1])), rel=1e-12)
    h, fd = 1e-6, np.zeros(fit.N_PARAMS)
    for i in range(fit.N_PARAMS):
        e = np.zeros(fit.N_PARAMS)
        e[i] = h
        fd[i] = (float(fit._feature_block(full, x + e, energy, 7.0, False)[0][0])
                 - float(fit._feature_block(full, x - e, energy, 7.0, False)[0][0])) / (2 * h)
    np.testing.assert_allclose(g[0].numpy(), fd, rtol=1e-5, atol=1e-8)


def test_step_4_lowers_the_feature_term_and_keeps_the_evidence():
    """A feature function that prefers the hand 1 cm nearer: step 4 moves toward it (E falls) while
    the 2D keypoints, which the move barely changes at this weight, stay on their evidence."""
    kp2d, world, J = _hand("right", 0)
    full, _, _ = fit._models("right")
    plain = fit.fit_hand(kp2d, K, world)
    goal = torch.as_tensor(plain.verts - [0.0, 0.0, 0.01])
    energy = lambda V: (V[0] - goal).square().sum(-1).mean() * 1e4  # noqa: E731  (cm²)
    cfg = fit.FitConfig(feature=50.0, feature_iterations=5)
    res = fit.fit_hand(kp2d, K, world, cfg=cfg, feature=energy)
    before = float(energy(torch.as_tensor(plain.verts)[None]))
    after = float(energy(torch.as_tensor(res.verts)[None]))
    assert res.costs["feature"] == pytest.approx(50.0 * after, rel=1e-6)
    assert after < 0.8 * before, (before, after)
    assert res.iterations > plain.iterations
    assert np.linalg.norm(res.j2d - kp2d, axis=1).mean() < 2.0
    off = fit.fit_hand(kp2d, K, world, cfg=fit.FitConfig(feature=0.0), feature=energy)  # λ_F = 0: no step 4
    np.testing.assert_allclose(off.verts, plain.verts, atol=1e-12)


def test_fit_reports_its_start_and_every_accepted_step():
    """FitResult.start is the hand after steps 1–2, history the cost per term from there to the end."""
    kp2d, world, _ = _hand("left", 6)
    res = fit.fit_hand(kp2d, K, world, side="left")
    assert set(res.start) == {"verts", "joints", "j2d", "costs"}
    assert res.start["verts"].shape == res.verts.shape
    assert res.history[0] == res.start["costs"] and 2 <= len(res.history) <= res.iterations + 1
    # the last accepted step is the end (its "2d" cost may predate one more robust re-weighting)
    assert {k: v for k, v in res.history[-1].items() if k != "2d"} == pytest.approx(
        {k: v for k, v in res.costs.items() if k != "2d"}, rel=1e-9)
    assert res.history[-1]["2d"] == pytest.approx(res.costs["2d"], rel=0.05)
    assert set(res.costs) == {"2d", "world", "pose_prior", "shape_prior", "laplacian"}
    start_px = np.linalg.norm(res.start["j2d"] - kp2d, axis=1).mean()
    end_px = np.linalg.norm(res.j2d - kp2d, axis=1).mean()
    assert end_px < 0.5 * start_px, (start_px, end_px)  # LM improves on the closed-form start
    assert sum(res.costs.values()) < sum(res.start["costs"].values())
