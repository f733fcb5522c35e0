"""Eq. 13 test-time refinement: contracts, errors, descent, a known optimum, frozen network, batching."""
import dataclasses

import pytest
import torch

from handlib import losses as L
from handlib.camera import project
from handlib.config import profile
from handlib.data import CropConfig, SyntheticHands, crop_to_hand
from handlib.data.batch import collate
from handlib.lbs import blend_shapes
from handlib.model import DHPE, ModelConfig
from handlib.refine import (
    RefineConfig,
    RefineResult,
    eq13_terms,
    refine,
    refined_target,
    shape_laplacian_gram,
)
from handlib.regressor import code_to_h, h_to_code

S = 64
FAST = RefineConfig(iterations=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DHPE(ModelConfig.from_profile(profile("ci"))).eval()


@pytest.fixture(scope="module")
def batch():
    ds = SyntheticHands(seed=0, num=2, image_size=2 * S, split="val")
    return collate([crop_to_hand(s, CropConfig(size=S)) for s in ds.__getitems__([0, 1])])


@pytest.fixture(scope="module")
def out(model, batch):
    with torch.no_grad():
        return model(batch["image"], batch["K"], render=False)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------------------------------
# (a) contracts and errors
# ------------------------------------------------------------------------------------------------
def test_result_shapes_records_and_frozen_model(model, batch, out):
    x, K = batch["image"], batch["K"]
    before = _params(model)
    model.train()
    model.regressor.reg[0].weight.requires_grad_(False)  # a caller's own freezing survives
    try:
        with torch.no_grad():  # refine() works inside an evaluation loop's no_grad
            r = refine(model, x, K, out, dataclasses.replace(FAST, iterations=5, record_every=2))
        assert model.training  # the mode it came in
        flags = [p.requires_grad for p in model.parameters()]
        assert flags.count(False) == 1 and not model.regressor.reg[0].weight.requires_grad
    finally:
        model.regressor.reg[0].weight.requires_grad_(True)
        model.eval()
    assert isinstance(r, RefineResult)
    V = model.hand_model.num_verts
    assert r.h.shape == r.code.shape == (2, 63)
    assert r.verts.shape == (2, V, 3) and r.joints.shape == (2, 21, 3)
    assert r.j2d.shape == r.target.shape == (2, 21, 2) and r.silhouette.shape == (2, S, S)
    assert torch.allclose(r.j2d, project(r.joints, K))
    assert len(r.losses) == 6 and set(r.losses[0]) == {"joints", "feature", "laplacian", "total"}
    assert all(isinstance(v, float) for d in r.losses for v in d.values())
    assert r.steps == [0, 2, 4, 5] and len(r.trajectory) == 4
    assert torch.allclose(r.trajectory[0], out.h, atol=1e-5) and torch.equal(r.trajectory[-1], r.h)
    assert not torch.allclose(r.h, out.h)  # the steps moved h
    assert torch.equal(r.h[:, 59], out.h[:, 59])  # s fixed (learn_scale=False)
    # gradients reached h only: no parameter has a .grad, none changed
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_out_is_optional_and_zero_iterations(model, batch, out):
    x, K = batch["image"], batch["K"]
    r0 = refine(model, x, K, out, dataclasses.replace(FAST, iterations=0))
    assert len(r0.losses) == 1 and r0.steps == [0]
    assert torch.allclose(r0.h, out.h, atol=1e-5)
    r1, r2 = refine(model, x, K, None, FAST), refine(model, x, K, out, FAST)
    assert torch.equal(r1.h, r2.h)
    no_f = refine(model, x, K, out, dataclasses.replace(FAST, feature=0.0))
    assert no_f.silhouette is None and all(d["feature"] == 0.0 for d in no_f.losses)


def test_errors(model, batch, out):
    x, K = batch["image"], batch["K"]
    with pytest.raises(ValueError, match="x"):
        refine(model, x[:, :, :32], K)
    with pytest.raises(ValueError, match="K"):
        refine(model, x, K[:1])
    with pytest.raises(ValueError, match="j2d_target"):
        refine(model, x, K, out, FAST, j2d_target=torch.zeros(2, 20, 2))
    with pytest.raises(ValueError, match="out"):
        refine(model, x, K, model(x, K, evidence_only=True), FAST)
    for field, bad in [("iterations", -1), ("optimizer", "lbfgs"), ("lr", 0.0), ("joints", -1.0),
                       ("feature", -0.1), ("laplacian", -1.0), ("sigma", 0.0), ("cull_threshold", 0.7),
                       ("record_every", 0),
                       ("feature_reduction", "max")]:
        with pytest.raises(ValueError, match=field):
            RefineConfig(**{field: bad})


# ------------------------------------------------------------------------------------------------
# (b) against independent references
# ------------------------------------------------------------------------------------------------
def test_refined_target_is_the_regressors_eq6(model, batch, out):
    # t = 1 of IterativeRegressor refines the heat-map evidence with code_1 and j3D_1: the same input
    reg = out.reg
    t = refined_target(model, reg.code[1], out.evidence.features, reg.joints[0], out.evidence.j2d)
    assert torch.allclose(t, reg.j2d[1], atol=1e-5)


def test_laplacian_gram_equals_trainer_term(model):
    hm = model.hand_model
    beta = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    shaped = hm.v_template + blend_shapes(beta, hm.shapedirs)
    ref = L.laplacian_loss(shaped, hm.faces, hm.v_template)  # train.compute_terms' form
    G = shape_laplacian_gram(hm)
    assert G.shape == (10, 10) and shape_laplacian_gram(hm) is G  # cached
    assert torch.allclose(((beta @ G) * beta).sum(-1).mean() / hm.num_verts, ref, rtol=1e-4, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# (d) end-to-end behaviour
# ------------------------------------------------------------------------------------------------
def test_objective_decreases_on_synthetic_crops(model, batch, out):
    r = refine(model, batch["image"], batch["K"], out, RefineConfig(iterations=15))
    totals = [d["total"] for d in r.losses]
    assert totals[-1] < 0.7 * totals[0]
    assert all(torch.isfinite(t).all() for t in (r.h, r.verts, r.target))


def test_fixed_target_recovers_known_projection(model, batch, out):
    # the optimum is known: the target is the projection of a ground-truth h; start 0.1–0.15 away
    K, h_true = batch["K"], batch["h"]
    target = project(model.hand_model.from_h(h_true).joints, K)
    code = h_to_code(h_true, K, S)
    g = torch.Generator().manual_seed(1)
    code[:, 4:49] += 0.15 * torch.randn(2, 45, generator=g)  # θ
    code[:, 60:63] += 0.1 * torch.randn(2, 3, generator=g)  # wrist (u, v), log depth
    start = dataclasses.replace(out, h=code_to_h(code, K, S))
    cfg = RefineConfig(iterations=60, feature=0.0, laplacian=0.0)
    r = refine(model, batch["image"], K, start, cfg, j2d_target=target)
    err0 = (project(model.hand_model.from_h(start.h).joints, K) - target).norm(dim=-1).mean()
    err1 = (r.j2d - target).norm(dim=-1).mean()
    assert err0 > 2.0 and err1 < 0.1 * err0, (float(err0), float(err1))
    assert torch.equal(r.target, target)


def test_options_run(model, batch, out):
    x, K = batch["image"], batch["K"]
    base = refine(model, x, K, out, FAST)
    for change in (dict(optimizer="sgd", lr=1.0), dict(sigma=1e-3), dict(detach_target=False),
                   dict(cull_threshold=1e-3)):
        cfg = dataclasses.replace(FAST, **change)
        r = refine(model, x, K, out, cfg)
        assert torch.isfinite(r.h).all() and not torch.equal(r.h, base.h), cfg
    assert all(p.grad is None for p in model.parameters())
    # the channels-last backbone copy is a layout change only
    plain = refine(model, x, K, out, dataclasses.replace(FAST, channels_last=False))
    assert torch.allclose(plain.h, base.h, atol=1e-5)


@pytest.mark.parametrize("cfg", [RefineConfig(iterations=8), RefineConfig(feature=0.0)],
                         ids=["all-terms-8-steps", "no-feature-50-steps"])
def test_batch_independence(model, batch, out, cfg):
    # Per-sample maths agree to float rounding (BatchNorm in eval mode, objectives summed over the
    # batch). With the feature term over many steps the rounding differences between the batched and
    # single-image convolution kernels are amplified where F(x ⊙ R) is non-smooth (ReLU kinks) and
    # Adam normalises tiny gradients (β): 1e-6 after 8 steps, up to 5e-2 after 50 (random ci weights).
    both = refine(model, batch["image"], batch["K"], out, cfg)
    for i in range(2):
        one = refine(model, batch["image"][i:i + 1], batch["K"][i:i + 1], None, cfg)
        assert torch.allclose(one.h, both.h[i:i + 1], atol=1e-4), (i, float((one.h - both.h[i]).abs().max()))


def test_deterministic(model, batch, out):
    a = refine(model, batch["image"], batch["K"], out, FAST)
    b = refine(model, batch["image"], batch["K"], out, FAST)
    assert torch.equal(a.h, b.h) and a.losses == b.losses
    assert all(torch.equal(p, q) for p, q in zip(a.trajectory, b.trajectory))


def test_eq13_terms_gradient_reaches_code_only(model, batch, out):
    x, K = batch["image"], batch["K"]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        code = h_to_code(out.h, K, S).requires_grad_(True)
        ev = eq13_terms(model, code, x, K, out.evidence.features, out.evidence.j2d)
        sum(ev.terms.values()).backward()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    assert set(ev.terms) == {"joints", "feature", "laplacian"}
    assert code.grad is not None and torch.isfinite(code.grad).all() and code.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_invalid_keypoints_of_a_fixed_target_do_not_pull():
    import dataclasses as dc

    from handlib.config import profile
    from handlib.model import DHPE, ModelConfig
    from handlib.refine import RefineConfig, refine

    torch.manual_seed(0)
    m = DHPE(ModelConfig.from_profile(profile("ci"))).eval()
    x = torch.randn(1, 3, 64, 64)
    K = torch.tensor([[[80.0, 0, 31.5], [0, 80.0, 31.5], [0, 0, 1]]])
    cfg = dc.replace(RefineConfig(iterations=5), feature=0.0, laplacian=0.0)
    with torch.no_grad():
        out = m(x, K, render=False)
    target = out.j2d.clone()
    valid = torch.ones(1, 21, dtype=torch.bool)
    valid[0, 5:] = False
    moved = target.clone()
    moved[0, 5:] = 0.0  # unlabelled keypoints, as crops store them
    a = refine(m, x, K, out=out, cfg=cfg, j2d_target=moved, j2d_valid=valid)
    b = refine(m, x, K, out=out, cfg=cfg, j2d_target=target, j2d_valid=valid)
    assert torch.allclose(a.h, b.h)  # what the invalid keypoints hold does not matter
    c = refine(m, x, K, out=out, cfg=cfg, j2d_target=moved)
    assert not torch.allclose(a.h, c.h)


# ------------------------------------------------------------------------------------------------
# speed knobs: folded BatchNorm (exact), stale feature gradients and half-resolution R(h) (approximate)
# ------------------------------------------------------------------------------------------------
def test_folded_backbone_gives_the_same_refinement(model, batch, out):
    x, K = batch["image"], batch["K"]
    a = refine(model, x, K, out, dataclasses.replace(FAST, fold_bn=False, channels_last=False))
    b = refine(model, x, K, out, dataclasses.replace(FAST, fold_bn=True))
    assert torch.allclose(a.h, b.h, atol=1e-4)
    fa, fb = a.losses[-1]["feature"], b.losses[-1]["feature"]
    assert abs(fa - fb) <= 1e-4 * abs(fa) + 1e-7


def test_feature_every_reuses_the_last_feature_gradient(model, batch, out):
    """Term (b) alone, SGD: with feature_every = 3 steps 1 and 2 repeat step 0's gradient."""
    x, K = batch["image"], batch["K"]
    cfg = RefineConfig(iterations=3, optimizer="sgd", lr=0.5, joints=0.0, laplacian=0.0, feature=1.0,
                       feature_every=3)
    r = refine(model, x, K, out, cfg)
    one = refine(model, x, K, out, dataclasses.replace(cfg, iterations=1, feature_every=1))
    code0 = h_to_code(out.h, K, S, model.regressor.cfg.ref_extent)
    step = one.code - code0  # −lr · g0 (masked)
    assert step.abs().max() > 0
    assert torch.allclose(r.code, code0 + 3 * step, atol=1e-5)
    assert r.losses[1]["feature"] == r.losses[0]["feature"]  # stale steps log the last fresh value
    every = refine(model, x, K, out, dataclasses.replace(cfg, feature_every=1))
    assert not torch.allclose(every.code, r.code, atol=1e-7)  # fresh gradients do differ


def test_half_resolution_silhouette_is_close(model, batch, out):
    from handlib.refine import _silhouette

    verts = model.hand_model.from_h(batch["h"]).verts
    full = _silhouette(model, verts, batch["K"], RefineConfig())
    half = _silhouette(model, verts, batch["K"], RefineConfig(silhouette_scale=0.5))
    assert half.shape == full.shape
    inter = ((full > 0.5) & (half > 0.5)).sum()
    union = ((full > 0.5) | (half > 0.5)).sum()
    assert inter / union > 0.9 and (full - half).abs().mean() < 0.03
    fast = refine(model, batch["image"], batch["K"], out, RefineConfig.fast(iterations=4))
    assert torch.isfinite(fast.h).all() and RefineConfig.fast().feature_every == 2
    with pytest.raises(ValueError, match="silhouette_scale"):
        RefineConfig(silhouette_scale=0.0)
    with pytest.raises(ValueError, match="feature_every"):
        RefineConfig(feature_every=0)
