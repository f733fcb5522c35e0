"""Tests of handlib.losses: each loss against an independent loop / numpy computation, masking,
invariances, float64 gradcheck, and Eq. 7's bookkeeping."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from handlib import losses
from handlib.losses import (
    LossWeights,
    articulation_loss,
    feature_consistency_loss,
    heatmap_loss,
    laplacian_loss,
    laplacian_matrix,
    nonfinite_terms,
    refiner_loss,
    shape_loss_weight,
    silhouette_loss,
    total_loss,
)

D = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _hand(B, seed=0, dtype=D):
    """Random 21-keypoint 'hands' ~ 0.6 m in front of the camera, a few cm across."""
    g = _gen(seed)
    centre = torch.tensor([0.02, -0.01, 0.6], dtype=dtype)
    return centre + 0.04 * torch.randn(B, 21, 3, generator=g, dtype=dtype)


def _K(B, f=300.0, cx=64.0, cy=60.0, dtype=D):
    return torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=dtype).expand(B, 3, 3).clone()


# ------------------------------------------------------------------------------------------ Eq. 2
def test_feature_consistency_matches_loop():
    g = _gen(1)
    a, b = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    ref = np.mean([sum((a[i, c].item() - b[i, c].item()) ** 2 for c in range(7)) for i in range(4)])
    assert feature_consistency_loss(a, b).item() == pytest.approx(ref, rel=1e-5)
    assert feature_consistency_loss(a, a).item() == 0.0
    # hand-made: one sample differs by (3, 4) → ‖·‖² = 25, mean over 2 samples = 12.5
    x = torch.zeros(2, 2)
    y = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert feature_consistency_loss(x, y).item() == pytest.approx(12.5)


def test_feature_consistency_shape_error_and_gradcheck():
    with pytest.raises(ValueError, match="F_xm"):
        feature_consistency_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    g = _gen(2)
    a = torch.randn(2, 3, generator=g, dtype=D, requires_grad=True)
    b = torch.randn(2, 3, generator=g, dtype=D, requires_grad=True)
    assert gradcheck(feature_consistency_loss, (a, b))


# ------------------------------------------------------------------------------------------ Eq. 3
def _heatmap_ref(pred, target, valid):
    B, K, H, W = target.shape
    tot, n = 0.0, 0
    for b in range(B):
        for k in range(K):
            if valid is not None and not valid[b, k]:
                continue
            n += 1
            tot += sum((pred[b, k, i, j].item() - target[b, k, i, j].item()) ** 2
                       for i in range(H) for j in range(W)) / (H * W)
    return tot / max(n, 1)


def test_heatmap_loss_matches_loop_and_masks():
    g = _gen(3)
    p, t = torch.rand(2, 21, 4, 5, generator=g), torch.rand(2, 21, 4, 5, generator=g)
    valid = torch.rand(2, 21, generator=g) > 0.3
    valid[0, 4] = False
    assert heatmap_loss(p, t).item() == pytest.approx(_heatmap_ref(p, t, None), rel=1e-5)
    got = heatmap_loss(p, t, valid)
    assert got.item() == pytest.approx(_heatmap_ref(p, t, valid), rel=1e-5)
    p2 = p.clone()
    p2[0, 4] += 100.0  # an invalid keypoint
    p2[0, 4, 0, 0] = float("nan")
    assert heatmap_loss(p2, t, valid).item() == got.item()
    p2[valid] += 1.0
    assert heatmap_loss(p2, t, valid).item() != pytest.approx(got.item())


def test_heatmap_loss_stages_and_gradcheck():
    g = _gen(4)
    t = torch.rand(1, 21, 3, 3, generator=g)
    s1, s2 = torch.rand(1, 21, 3, 3, generator=g), torch.rand(1, 21, 3, 3, generator=g)
    l1, l2 = heatmap_loss(s1, t), heatmap_loss(s2, t)
    assert heatmap_loss([s1, s2], t).item() == pytest.approx((l1 + l2).item())
    assert heatmap_loss([s1, s2], t, stages="mean").item() == pytest.approx(((l1 + l2) / 2).item())
    with pytest.raises(ValueError, match="stages"):
        heatmap_loss(s1, t, stages="max")
    with pytest.raises(ValueError, match="pred"):
        heatmap_loss(torch.zeros(1, 21, 3, 4), t)
    # hand-made: a single valid keypoint off by 1 everywhere → loss 1
    valid = torch.zeros(1, 21, dtype=torch.bool)
    valid[0, 7] = True
    assert heatmap_loss(t + 1.0, t, valid).item() == pytest.approx(1.0)
    p = torch.rand(1, 21, 2, 2, generator=g, dtype=D, requires_grad=True)
    tt = torch.rand(1, 21, 2, 2, generator=g, dtype=D)
    assert gradcheck(lambda x: heatmap_loss([x, 2 * x], tt, valid), (p,))


# ------------------------------------------------------------------------------------------ Eq. 6
def test_refiner_loss_matches_loop_masks_and_sums_iterations():
    g = _gen(5)
    gt = 64 * torch.rand(3, 21, 2, generator=g)
    its = [gt + 5 * torch.randn(3, 21, 2, generator=g) for _ in range(3)]
    valid = torch.rand(3, 21, generator=g) > 0.2
    valid[1, 2] = False

    def ref(pred, size=1.0):
        errs = [((pred[b, k, 0] - gt[b, k, 0]) ** 2 + (pred[b, k, 1] - gt[b, k, 1]) ** 2).item() / size ** 2
                for b in range(3) for k in range(21) if valid[b, k]]
        return sum(errs) / len(errs)

    assert refiner_loss(its[0], gt, valid).item() == pytest.approx(ref(its[0]), rel=1e-5)
    assert refiner_loss(its, gt, valid).item() == pytest.approx(sum(ref(p) for p in its), rel=1e-5)
    assert refiner_loss(its, gt, valid, image_size=64).item() == pytest.approx(
        sum(ref(p, 64.0) for p in its), rel=1e-5)
    before = refiner_loss(its, gt, valid)
    its[1][1, 2] += 1000.0  # invalid keypoint
    assert refiner_loss(its, gt, valid).item() == before.item()
    assert refiner_loss(gt, gt, valid).item() == 0.0


def test_refiner_loss_gradcheck():
    g = _gen(6)
    gt = torch.rand(1, 21, 2, generator=g, dtype=D)
    p = torch.rand(1, 21, 2, generator=g, dtype=D, requires_grad=True)
    valid = torch.rand(1, 21, generator=g) > 0.5
    assert gradcheck(lambda x: refiner_loss([x, x * 1.5], gt, valid, image_size=2.0), (p,))


# ------------------------------------------------------------------------------------------ Eq. 8
def _normalise_np(kp3d, K, valid):
    """Independent numpy version of Eq. 8's normalisation for one skeleton (21, 3)."""
    f = K[0, 0]
    uv = np.array([(K @ p)[:2] / p[2] for p in kp3d])
    vv = uv[valid]
    s = 1.5 * max(vv[:, 0].max() - vv[:, 0].min(), vv[:, 1].max() - vv[:, 1].min())
    c, z0 = uv[9], kp3d[9, 2]
    out = np.zeros((21, 3))
    for k in range(21):
        out[k, :2] = (uv[k] - c) / s
        out[k, 2] = (kp3d[k, 2] - z0) * f / z0 / s
    return out


def test_articulation_loss_matches_numpy():
    B = 3
    pred, gt, K = _hand(B, 7), _hand(B, 8), _K(B)
    valid = torch.rand(B, 21, generator=_gen(9)) > 0.2
    valid[:, 9] = True
    tot, n = 0.0, 0
    for b in range(B):
        v = valid[b].numpy()
        npd = _normalise_np(pred[b].numpy(), K[b].numpy(), v)
        ngt = _normalise_np(gt[b].numpy(), K[b].numpy(), v)
        for k in range(21):
            if v[k]:
                tot += ((npd[k] - ngt[k]) ** 2).sum()
                n += 1
    assert articulation_loss(pred, gt, K, valid).item() == pytest.approx(tot / n, rel=1e-9)


def test_articulation_loss_zero_positive_and_invariant():
    B = 2
    gt, K = _hand(B, 10), _K(B)
    assert articulation_loss(gt.clone(), gt, K).item() == pytest.approx(0.0, abs=1e-20)
    pred = gt + 0.01 * torch.randn(B, 21, 3, generator=_gen(11), dtype=D)
    base = articulation_loss(pred, gt, K)
    assert base.item() > 1e-6
    # slide the predicted hand along the optical ray and scale it proportionally: same image, same
    # normalised skeleton (the scale-depth ambiguity Eq. 8 removes)
    for c in (0.5, 1.7, 3.0):
        assert articulation_loss(c * pred, gt, K).item() == pytest.approx(base.item(), rel=1e-9)
    assert articulation_loss(2.0 * gt, gt, K).item() == pytest.approx(0.0, abs=1e-20)
    # a translation along z without scaling changes the projection and hence the loss
    assert articulation_loss(pred + torch.tensor([0, 0, 0.3], dtype=D), gt, K).item() != pytest.approx(
        base.item(), rel=1e-3)
    # a (3, 3) K is accepted
    assert articulation_loss(pred, gt, K[0]).item() == pytest.approx(base.item())


def test_articulation_loss_masks_invalid_keypoints():
    B = 2
    gt, K = _hand(B, 12), _K(B)
    pred = gt + 0.01 * torch.randn(B, 21, 3, generator=_gen(13), dtype=D)
    valid = torch.ones(B, 21, dtype=torch.bool)
    valid[0, 20] = valid[1, 4] = False
    base = articulation_loss(pred, gt, K, valid)
    pred2 = pred.clone()
    pred2[0, 20] += torch.tensor([0.3, -0.2, 0.1], dtype=D)  # far outside the box: box must ignore it
    pred2[1, 4] += torch.tensor([-0.2, 0.2, 0.05], dtype=D)
    assert articulation_loss(pred2, gt, K, valid).item() == pytest.approx(base.item(), rel=1e-12)
    assert articulation_loss(pred2, gt, K).item() != pytest.approx(base.item(), rel=1e-3)


def test_articulation_loss_gradcheck_and_shapes():
    gt, K = _hand(1, 14), _K(1)
    pred = (gt + 0.01 * torch.randn(1, 21, 3, generator=_gen(15), dtype=D)).requires_grad_()
    assert gradcheck(lambda x: articulation_loss(x, gt, K), (pred,))
    with pytest.raises(ValueError, match="kp3d_pred"):
        articulation_loss(torch.zeros(1, 20, 3), torch.zeros(1, 20, 3), K)


# ------------------------------------------------------------------------------------------ Eq. 9
def test_silhouette_l2_and_iou_match_loops():
    g = _gen(16)
    r = torch.rand(3, 5, 6, generator=g)
    m = torch.rand(3, 5, 6, generator=g) > 0.5
    w = torch.tensor([1.0, 0.0, 1.0])
    l2 = [sum((r[b, i, j].item() - float(m[b, i, j])) ** 2 for i in range(5) for j in range(6)) / 30
          for b in range(3)]
    iou = []
    for b in range(3):
        inter = sum(r[b, i, j].item() * float(m[b, i, j]) for i in range(5) for j in range(6))
        union = sum(max(r[b, i, j].item(), float(m[b, i, j])) if m[b, i, j] else r[b, i, j].item()
                    for i in range(5) for j in range(6))
        iou.append(1 - inter / union)
    assert silhouette_loss(r, m).item() == pytest.approx(np.mean(l2), rel=1e-5)
    assert silhouette_loss(r, m, kind="iou").item() == pytest.approx(np.mean(iou), rel=1e-5)
    assert silhouette_loss(r, m, w).item() == pytest.approx((l2[0] + l2[2]) / 3, rel=1e-5)
    assert silhouette_loss(r, m, w, kind="iou").item() == pytest.approx((iou[0] + iou[2]) / 3, rel=1e-5)


def test_silhouette_hand_made_and_errors():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, :2, :2] = True  # 4 of 16 pixels
    perfect = m.float()
    assert silhouette_loss(perfect, m).item() == 0.0
    assert silhouette_loss(perfect, m, kind="iou").item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 4, 4)
    assert silhouette_loss(empty, m).item() == pytest.approx(4 / 16)
    assert silhouette_loss(empty, m, kind="iou").item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind"):
        silhouette_loss(empty, m, kind="l1")
    with pytest.raises(ValueError, match="mask"):
        silhouette_loss(empty, torch.zeros(1, 4, 5))


@pytest.mark.parametrize("kind", ["l2", "iou"])
def test_silhouette_gradcheck(kind):
    g = _gen(17)
    r = torch.rand(2, 3, 3, generator=g, dtype=D).requires_grad_()
    m = torch.rand(2, 3, 3, generator=g) > 0.5
    w = torch.tensor([1.0, 0.5], dtype=D)
    assert gradcheck(lambda x: silhouette_loss(x, m, w, kind=kind), (r,))


# -------------------------------------------------------------------------------------- Laplacian
def _dense_laplacian(faces, V):
    nbrs = [set() for _ in range(V)]
    for f in faces.tolist():
        for a in f:
            for b in f:
                if a != b:
                    nbrs[a].add(b)
    L = np.zeros((V, V))
    for i in range(V):
        if nbrs[i]:
            L[i, i] = 1.0
            for j in nbrs[i]:
                L[i, j] = -1.0 / len(nbrs[i])
    return L


def _mesh():
    """An octahedron (6 vertices, 8 faces) plus an unused vertex 6 and a square fan."""
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                          [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5],
                          [7, 8, 9], [7, 9, 10]])
    return faces, 11


def test_laplacian_matrix_matches_dense_loop_and_rows_sum_to_zero():
    faces, V = _mesh()
    L = laplacian_matrix(faces, V, dtype=D)
    assert L.is_sparse and L.shape == (V, V)
    dense = L.to_dense().numpy()
    np.testing.assert_allclose(dense, _dense_laplacian(faces, V), atol=1e-7)
    np.testing.assert_allclose(dense.sum(axis=1), 0.0, atol=1e-6)
    assert dense[0, 0] == 1.0 and dense[0, 2] == pytest.approx(-0.25)  # octahedron vertex: 4 neighbours
    assert not dense[6].any()  # unused vertex
    with pytest.raises(ValueError, match="faces"):
        laplacian_matrix(faces, 5)


def test_laplacian_loss_values_and_invariance():
    faces, V = _mesh()
    g = _gen(18)
    ref = torch.randn(V, 3, generator=g, dtype=D)
    v = ref + 0.1 * torch.randn(2, V, 3, generator=g, dtype=D)
    Ld = torch.as_tensor(_dense_laplacian(faces, V))
    want = np.mean([(Ld @ (v[b] - ref)).pow(2).sum(-1).numpy() for b in range(2)])
    assert laplacian_loss(v, faces, ref).item() == pytest.approx(want, rel=1e-10)
    want0 = np.mean([(Ld @ v[b]).pow(2).sum(-1).numpy() for b in range(2)])
    assert laplacian_loss(v, faces).item() == pytest.approx(want0, rel=1e-10)
    assert laplacian_loss(ref[None].expand(2, V, 3), faces, ref).item() == 0.0
    t = torch.tensor([0.3, -1.0, 2.0], dtype=D)
    assert laplacian_loss(ref[None] + t, faces, ref).item() == pytest.approx(0.0, abs=1e-24)
    assert laplacian_loss(v, faces, ref[None].expand(2, V, 3)).item() == pytest.approx(want, rel=1e-10)
    L = laplacian_matrix(faces, V, dtype=D)
    assert laplacian_loss(v, faces, ref, L=L).item() == pytest.approx(want, rel=1e-10)
    assert laplacian_loss(v, faces, ref).item() > 0


def test_laplacian_loss_gradcheck():
    faces, V = _mesh()
    g = _gen(19)
    ref = torch.randn(V, 3, generator=g, dtype=D)
    v = torch.randn(1, V, 3, generator=g, dtype=D, requires_grad=True)
    assert gradcheck(lambda x: laplacian_loss(x, faces, ref), (v,))


# ----------------------------------------------------------------------------------------- Eq. 12
def test_shape_weight_switches_exactly_at_threshold():
    gt = torch.zeros(3, 21, 2)
    pred = gt.clone()
    pred[0, :, 0] = 4.0  # mean error exactly 4 px
    pred[1, :, 0] = 3.5  # below
    pred[2, :, 1] = 4.5  # above
    w = shape_loss_weight(pred, gt, None, threshold_px=4.0)
    assert w.tolist() == [0.0, 1.0, 0.0]
    assert shape_loss_weight(pred, gt, None, threshold_px=4.0 + 1e-4).tolist() == [1.0, 1.0, 0.0]
    # (3, 4) offsets → 5 px Euclidean, not 7 (L1) and not 25 (squared)
    pred2 = gt.clone()
    pred2[..., 0], pred2[..., 1] = 3.0, 4.0
    assert shape_loss_weight(pred2, gt, None, 5.0).tolist() == [0.0] * 3
    assert shape_loss_weight(pred2, gt, None, 5.01).tolist() == [1.0] * 3


def test_shape_weight_masks_blocks_gradients_and_constant():
    g = _gen(20)
    gt = 64 * torch.rand(2, 21, 2, generator=g)
    pred = (gt + 0.5 * torch.randn(2, 21, 2, generator=g)).requires_grad_()
    valid = torch.ones(2, 21, dtype=torch.bool)
    valid[0, 3] = False
    valid[1] = False  # nothing valid → weight 0
    w = shape_loss_weight(pred, gt, valid, 3.0)
    assert not w.requires_grad and w.tolist() == [1.0, 0.0]
    with torch.no_grad():
        pred[0, 3] += 500.0  # invalid keypoint: no effect
    assert shape_loss_weight(pred, gt, valid, 3.0).tolist() == [1.0, 0.0]
    assert shape_loss_weight(pred, gt, None, 3.0).tolist() == [0.0, 1.0]
    # a gradient through a silhouette loss weighted by w reaches the mask only, never the joints
    r = torch.rand(2, 3, 3, requires_grad=True)
    silhouette_loss(r, torch.ones(2, 3, 3), shape_loss_weight(pred, gt, valid, 3.0)).backward()
    assert pred.grad is None and r.grad is not None
    assert shape_loss_weight(pred, gt, valid, 3.0, constant=True).tolist() == [1.0, 1.0]
    cfg = LossWeights()
    assert cfg.shape_threshold_px(224) == pytest.approx(0.05 * 224)


# ------------------------------------------------------------------------------------------ Eq. 7
def test_total_loss_weights_skips_missing_and_logs():
    cfg = dataclasses.replace(LossWeights(), articulation=2.0, laplacian=0.5, silhouette=0.0)
    a = torch.tensor(3.0, requires_grad=True)
    terms = {"articulation": a, "laplacian": torch.tensor(4.0), "silhouette": torch.tensor(float("nan"))}
    total, logs = total_loss(terms, cfg)
    assert total.item() == pytest.approx(2 * 3 + 0.5 * 4)  # zero-weight NaN term not added
    assert logs["articulation"].item() == 6.0 and logs["laplacian"].item() == 2.0
    assert math.isnan(logs["silhouette"].item())  # but reported
    assert set(logs) == {"articulation", "laplacian", "silhouette", "total"}
    total.backward()
    assert a.grad.item() == 2.0


def test_total_loss_reports_nan_and_inf_and_rejects_unknown():
    cfg = LossWeights()
    total, logs = total_loss({"heatmap": torch.tensor(1.0), "refiner": torch.tensor(float("nan")),
                              "feature": torch.tensor(float("inf"))}, cfg)
    assert not torch.isfinite(total)
    assert sorted(nonfinite_terms(logs)) == ["feature", "refiner", "total"]
    assert logs["heatmap"].item() == cfg.heatmap * 1.0
    with pytest.raises(KeyError, match="silhoutte"):
        total_loss({"silhoutte": torch.tensor(1.0)}, cfg)
    with pytest.raises(ValueError, match="scalar"):
        total_loss({"heatmap": torch.ones(2)}, cfg)
    assert set(losses.TERMS) <= {f.name for f in dataclasses.fields(LossWeights)}


def test_loss_weights_validation():
    with pytest.raises(ValueError, match="silhouette_kind"):
        LossWeights(silhouette_kind="l1")
    with pytest.raises(ValueError, match="heatmap_stages"):
        LossWeights(heatmap_stages="max")
    with pytest.raises(ValueError, match="shape_threshold"):
        LossWeights(shape_threshold=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LossWeights().heatmap = 2.0  # type: ignore[misc]


def test_feature_loss_reductions():
    a, b = torch.randn(3, 7), torch.randn(3, 7)
    s = feature_consistency_loss(a, b)
    assert s.item() == pytest.approx(((a - b) ** 2).sum(1).mean().item(), rel=1e-6)
    assert feature_consistency_loss(a, b, "mean").item() == pytest.approx(s.item() / 7, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        feature_consistency_loss(a, b, "max")
    with pytest.raises(ValueError, match="feature_reduction"):
        LossWeights(feature_reduction="max")


def test_shape_prior_is_mean_beta_squared():
    from handlib.losses import shape_prior_loss

    b = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    assert shape_prior_loss(b).item() == pytest.approx((b.detach() ** 2).mean().item())
    assert torch.autograd.gradcheck(shape_prior_loss, (b,))
    with pytest.raises(ValueError, match="betas"):
        shape_prior_loss(torch.zeros(3))


# ----------------------------------------------------------------------------------------------
# mesh (ours): root-relative mean per-vertex error against the true mesh
# ----------------------------------------------------------------------------------------------
def _cloud(B, V=50, seed=0):
    g = _gen(seed)
    verts = torch.tensor([0.0, 0.0, 0.5], dtype=D) + 0.05 * torch.randn(B, V, 3, generator=g, dtype=D)
    root = verts[:, 0] + 0.01 * torch.randn(B, 3, generator=g, dtype=D)
    return verts, root


def test_mesh_loss_matches_a_loop_and_masks_samples():
    vp, rp = _cloud(4, seed=1)
    vt, rt = _cloud(4, seed=2)
    w = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=D)
    per = []
    for b in range(4):
        d = [math.dist((vp[b, v] - rp[b]).tolist(), (vt[b, v] - rt[b]).tolist()) for v in range(vp.shape[1])]
        per.append(sum(d) / len(d) / 0.01)
    assert losses.mesh_loss(vp, rp, vt, rt).item() == pytest.approx(sum(per) / 4, rel=1e-12)
    kept = (per[0] + per[2] + per[3]) / 3
    assert losses.mesh_loss(vp, rp, vt, rt, w).item() == pytest.approx(kept, rel=1e-12)
    assert losses.mesh_loss(vp, rp, vt, rt, w, unit=0.001).item() == pytest.approx(
        10 * kept, rel=1e-12)
    # a sample without a true mesh changes nothing; none at all gives 0, not 0/0
    vp2 = vp.clone()
    vp2[1] += 1.0
    assert losses.mesh_loss(vp2, rp, vt, rt, w).item() == pytest.approx(kept, rel=1e-12)
    assert losses.mesh_loss(vp, rp, vt, rt, torch.zeros(4, dtype=D)).item() == 0.0


def test_mesh_loss_is_root_relative_and_measures_the_rotation():
    vt, rt = _cloud(3, seed=3)
    assert losses.mesh_loss(vt, rt, vt, rt).item() == 0.0
    # moved as a whole (translation, the 2D terms' business): no cost
    shift = torch.tensor([0.1, -0.2, 0.3], dtype=D)
    assert losses.mesh_loss(vt + shift, rt + shift, vt, rt).item() == pytest.approx(0.0, abs=1e-12)
    # turned by θ about the root: every vertex moves 2 sin(θ/2) × its distance from the axis
    th = math.radians(20.0)
    R = torch.tensor([[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0], [0, 0, 1]], dtype=D)
    rel = vt - rt[:, None]
    turned = rel @ R.T + rt[:, None]
    expect = (2 * math.sin(th / 2) * rel[..., :2].norm(dim=-1)).mean() / 0.01
    assert losses.mesh_loss(turned, rt, vt, rt).item() == pytest.approx(expect.item(), rel=1e-10)


def test_mesh_loss_gradcheck_and_shapes():
    vp, rp = _cloud(2, V=6, seed=4)
    vt, rt = _cloud(2, V=6, seed=5)
    w = torch.tensor([1.0, 0.5], dtype=D)
    assert gradcheck(lambda v, r: losses.mesh_loss(v, r, vt, rt, w),
                     (vp.requires_grad_(), rp.requires_grad_()))
    with pytest.raises(ValueError, match="verts_gt"):
        losses.mesh_loss(vp, rp, vt[:, :5], rt)
    with pytest.raises(ValueError, match="root_pred"):
        losses.mesh_loss(vp, rp[:, :2], vt, rt)
    with pytest.raises(ValueError, match="weight"):
        losses.mesh_loss(vp, rp, vt, rt, w[:1])
