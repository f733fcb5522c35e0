"""Tests of handlib.metrics: errors, PCK and AUC against naive loops, alignments against known
transforms and scipy's Kabsch, valid masks, shape errors, mask IoU / precision / recall / F against
numpy loops, mesh F-scores against scipy's cKDTree, the evaluator."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from handlib.metrics import (
    THRESHOLDS_2D_PX,
    THRESHOLDS_3D_MM,
    PoseEvaluator,
    align,
    align_procrustes,
    align_root,
    align_scale,
    auc,
    evaluate_3d,
    fscore,
    keypoint_errors,
    mask_iou,
    mask_scores,
    mesh_scores,
    pck_curve,
    similarity_transform,
)

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-9, torch.float32: 1e-5}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _hand(B, seed=0, dtype=torch.float64, D=3):
    """Random 21-keypoint 'hands' ~ 0.6 m in front of the camera, a few cm across."""
    centre = torch.tensor([0.02, -0.01, 0.6][:D], dtype=dtype)
    return centre + 0.04 * torch.randn(B, 21, D, generator=_gen(seed), dtype=dtype)


def _rotations(B, seed=0, dtype=torch.float64, D=3):
    q, r = torch.linalg.qr(torch.randn(B, D, D, generator=_gen(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None]
    q[:, :, 0] *= torch.sign(torch.linalg.det(q))[:, None]  # proper: det +1
    return q.to(dtype)


def _valid(B, K=21, seed=0, p=0.7):
    v = torch.rand(B, K, generator=_gen(seed)) < p
    v[:, [0, 9, 10]] = True
    return v


# ---------------------------------------------------------------- keypoint_errors


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [2, 3])
def test_keypoint_errors_match_loop(dtype, D):
    pred, gt = _hand(3, 0, dtype, D), _hand(3, 1, dtype, D)
    e = keypoint_errors(pred, gt)
    assert e.shape == (3, 21) and e.dtype == dtype
    for b in range(3):
        for k in range(21):
            ref = math.sqrt(sum((float(pred[b, k, d]) - float(gt[b, k, d])) ** 2 for d in range(D)))
            assert abs(float(e[b, k]) - ref) < TOL[dtype]


def test_keypoint_errors_invalid_entries_are_zero_not_nan():
    pred, gt, v = _hand(4, 0), _hand(4, 1), _valid(4)
    gt[~v] = float("nan")  # missing annotations
    e = keypoint_errors(pred, gt, v)
    assert torch.isfinite(e).all() and (e[~v] == 0).all()
    assert torch.allclose(e[v], keypoint_errors(pred, _hand(4, 1))[v])


# ---------------------------------------------------------------- PCK and AUC


def _pck_loop(errors, valid, thresholds, per_keypoint):
    B, K = errors.shape
    out = []
    for t in thresholds:
        if per_keypoint:
            vals = []
            for k in range(K):
                n = sum(bool(valid[b, k]) for b in range(B))
                if n:
                    vals.append(sum(bool(valid[b, k]) and float(errors[b, k]) <= t for b in range(B)) / n)
            out.append(sum(vals) / len(vals))
        else:
            n = sum(bool(x) for x in valid.flatten())
            hits = sum(bool(vv) and float(ee) <= t for ee, vv in zip(errors.flatten(), valid.flatten()))
            out.append(hits / n)
    return out


@pytest.mark.parametrize("per_keypoint", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pck_matches_loop(per_keypoint, dtype):
    errors = (60 * torch.rand(8, 21, generator=_gen(2), dtype=torch.float64)).to(dtype)
    valid = _valid(8, seed=3)
    valid[:, 4] = False  # a keypoint never seen is skipped by the per-keypoint mean
    pck = pck_curve(errors, valid, THRESHOLDS_3D_MM, per_keypoint=per_keypoint)
    ref = _pck_loop(errors, valid, THRESHOLDS_3D_MM, per_keypoint)
    assert pck.shape == (31,) and np.allclose(pck.numpy(), ref)
    if dtype == torch.float64:  # numpy in, same curve out
        from_numpy = pck_curve(errors.numpy(), valid.numpy(), THRESHOLDS_3D_MM, per_keypoint=per_keypoint)
        assert torch.equal(from_numpy, pck)


def test_pck_modes_differ_with_uneven_valid_and_agree_without():
    errors = 60 * torch.rand(8, 21, generator=_gen(4), dtype=torch.float64)
    valid = _valid(8, seed=5, p=0.4)
    a = pck_curve(errors, valid, THRESHOLDS_3D_MM, per_keypoint=True)
    b = pck_curve(errors, valid, THRESHOLDS_3D_MM, per_keypoint=False)
    assert not torch.allclose(a, b)
    a = pck_curve(errors, None, THRESHOLDS_3D_MM, per_keypoint=True)
    b = pck_curve(errors, None, THRESHOLDS_3D_MM, per_keypoint=False)
    assert torch.allclose(a, b)


def test_auc_matches_loop_and_analytic_areas():
    t = list(THRESHOLDS_3D_MM)
    p = list(np.random.default_rng(0).random(31))
    ref = sum((t[i + 1] - t[i]) * (p[i + 1] + p[i]) / 2 for i in range(30)) / (t[-1] - t[0])
    assert abs(auc(t, p) - ref) < 1e-12
    # linear PCK: the trapezoid rule is exact; mean of t/50 over [20, 50] is 35/50
    assert abs(auc(t, [x / 50 for x in t]) - 0.7) < 1e-12
    assert abs(auc(t, [(x - 20) / 30 for x in t]) - 0.5) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_auc_perfect_is_one_and_off_by_100mm_is_zero(dtype):
    gt = _hand(5, 0, dtype)
    for mode in ("none", "root", "scale", "procrustes"):
        assert evaluate_3d(gt.clone(), gt, mode=mode)["auc"] == pytest.approx(1.0)
    off = gt + torch.tensor([0.1, 0.0, 0.0], dtype=dtype)
    s = evaluate_3d(off, gt, mode="none")
    assert s["auc"] == 0.0 and s["mean_mm"] == pytest.approx(100.0, rel=1e-5)
    assert evaluate_3d(off, gt, mode="root")["auc"] == pytest.approx(1.0)  # a translation only


# ---------------------------------------------------------------- alignments


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [2, 3])
def test_procrustes_recovers_similarity(dtype, D):
    gt = _hand(6, 0, torch.float64, D)
    R = _rotations(6, 1, torch.float64, D)
    s = 0.5 + 1.5 * torch.rand(6, generator=_gen(2), dtype=torch.float64)
    t = torch.randn(6, D, generator=_gen(3), dtype=torch.float64)
    pred = s[:, None, None] * gt @ R.transpose(1, 2) + t[:, None]
    aligned = align_procrustes(pred.to(dtype), gt.to(dtype))
    assert aligned.dtype == dtype
    assert keypoint_errors(aligned, gt.to(dtype)).max() < TOL[dtype] * 10
    s_hat, R_hat, _ = similarity_transform(pred.to(dtype), gt.to(dtype))
    assert torch.allclose(s_hat.double(), 1 / s, atol=TOL[dtype] * 10)
    assert torch.allclose(R_hat.double(), R.transpose(1, 2), atol=TOL[dtype] * 10)


def test_procrustes_planar_hand_gets_a_rotation_not_a_reflection():
    # a flat hand: a reflection through its plane fits exactly too, the det correction picks R
    gt = _hand(8, 0)
    gt[..., 2] = 0.6
    R = _rotations(8, 1)
    pred = 1.3 * gt @ R.transpose(1, 2) + 0.2
    s, R_hat, _ = similarity_transform(pred, gt)
    assert torch.allclose(torch.linalg.det(R_hat), torch.ones(8, dtype=torch.float64))
    assert keypoint_errors(align_procrustes(pred, gt), gt).max() < 1e-9


def test_procrustes_reflected_prediction_matches_scipy_kabsch():
    gt = _hand(4, 0)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    pred = 0.8 * gt @ mirror.T @ _rotations(4, 1).transpose(1, 2) + 0.05  # det -1: not a similarity
    s, R, t = similarity_transform(pred, gt)
    assert torch.allclose(torch.linalg.det(R), torch.ones(4, dtype=torch.float64))
    aligned = align_procrustes(pred, gt)
    assert keypoint_errors(aligned, gt).min() > 1e-4  # a reflection would have fitted exactly
    for b in range(4):
        x = (pred[b] - pred[b].mean(0)).numpy()
        y = (gt[b] - gt[b].mean(0)).numpy()
        rot, _ = Rotation.align_vectors(y, x)  # y ≈ R x, a proper rotation
        Rb = rot.as_matrix()
        sb = np.sum(y * (x @ Rb.T)) / np.sum(x * x)
        ref = sb * x @ Rb.T + gt[b].mean(0).numpy()
        assert np.allclose(aligned[b].numpy(), ref, atol=1e-9)


def test_procrustes_ignores_invalid_keypoints():
    gt, v = _hand(3, 0), _valid(3, seed=1)
    pred = 1.2 * gt @ _rotations(3, 2).transpose(1, 2) + 0.1
    pred2 = pred.clone()
    pred2[~v] = float("nan")
    a, b = align_procrustes(pred, gt, v), align_procrustes(pred2, gt, v)
    assert torch.allclose(a[v], b[v]) and keypoint_errors(b, gt, v).max() < 1e-9


@pytest.mark.parametrize("dtype", DTYPES)
def test_align_scale_equalises_bone_and_root(dtype):
    gt, pred = _hand(5, 0, dtype), _hand(5, 1, dtype)
    out = align_scale(pred, gt)
    def bone(x, i=9, j=10):
        return torch.linalg.vector_norm(x[:, j] - x[:, i], dim=-1)

    assert torch.allclose(bone(out), bone(gt), atol=TOL[dtype])
    assert torch.allclose(out[:, 0], gt[:, 0], atol=TOL[dtype])
    # invariant to the prediction's scale and position
    again = align_scale(3.0 * pred + 1.0, gt)
    assert torch.allclose(out, again, atol=TOL[dtype] * 10)
    other = align_scale(pred, gt, bone=(5, 6), root=9)
    assert torch.allclose(bone(other, 5, 6), bone(gt, 5, 6), atol=TOL[dtype])
    assert torch.allclose(other[:, 9], gt[:, 9], atol=TOL[dtype])


def test_align_root_and_dispatch():
    gt, pred = _hand(3, 0), _hand(3, 1)
    out = align_root(pred, gt)
    assert torch.allclose(out[:, 0], gt[:, 0])
    assert torch.allclose(out - out[:, :1], pred - pred[:, :1])
    assert torch.equal(align(pred, gt, "root"), out)
    assert torch.equal(align(pred, gt, "scale"), align_scale(pred, gt))
    assert torch.equal(align(pred, gt, "procrustes"), align_procrustes(pred, gt))
    assert align(pred, gt, "none") is pred


# ---------------------------------------------------------------- valid masks


def test_changing_an_invalid_keypoint_changes_nothing():
    gt, pred, v = _hand(6, 0), _hand(6, 1) * 0.9, _valid(6, seed=2)
    pred2 = pred.clone()
    pred2[~v] += 1.0
    for mode in ("none", "root", "scale", "procrustes"):
        a, b = evaluate_3d(pred, gt, v, mode=mode), evaluate_3d(pred2, gt, v, mode=mode)
        assert a["mean_mm"] == pytest.approx(b["mean_mm"]) and a["auc"] == pytest.approx(b["auc"])
        assert torch.allclose(a["pck"], b["pck"]) and a["count"] == int(v.sum())
    e = keypoint_errors(pred, gt) * 1000
    assert evaluate_3d(pred, gt, v, mode="none")["mean_mm"] == pytest.approx(float(e[v].mean()))
    assert evaluate_3d(pred, gt, v, mode="none")["median_mm"] == pytest.approx(float(np.median(e[v])))


# ---------------------------------------------------------------- errors named


def test_errors_name_the_argument():
    p = _hand(2)
    with pytest.raises(ValueError, match="gt"):
        keypoint_errors(p, p[:, :20])
    with pytest.raises(ValueError, match="pred"):
        keypoint_errors(torch.zeros(2, 21, 4), torch.zeros(2, 21, 4))
    with pytest.raises(ValueError, match="valid"):
        keypoint_errors(p, p, torch.ones(2, 20, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode"):
        align(p, p, "similarity")
    with pytest.raises(ValueError, match="mode"):
        PoseEvaluator(mode="rigid")
    with pytest.raises(ValueError, match="bone"):
        align_scale(p, p, bone=(9, 21))
    v = torch.ones(2, 21, dtype=torch.bool)
    v[1, 0] = False
    with pytest.raises(ValueError, match="valid"):
        align_root(p, p, valid=v)
    v[:, 2:] = False
    with pytest.raises(ValueError, match="valid"):
        align_procrustes(p, p, v)
    with pytest.raises(ValueError, match="errors"):
        pck_curve(torch.zeros(2, 21, 3), None, THRESHOLDS_3D_MM)
    with pytest.raises(ValueError, match="valid"):
        pck_curve(torch.zeros(2, 21), torch.zeros(2, 21, dtype=torch.bool), THRESHOLDS_3D_MM)
    with pytest.raises(ValueError, match="pck"):
        auc(THRESHOLDS_3D_MM, [0.0] * 30)
    with pytest.raises(ValueError, match="thresholds"):
        auc([2.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="gt"):
        mask_iou(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match="PoseEvaluator"):
        PoseEvaluator().summary()


# ---------------------------------------------------------------- mask IoU


def test_mask_iou_matches_numpy_and_empty_is_one():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((5, 16, 12)), rng.random((5, 16, 12)) > 0.6
    pred[4], gt[4] = 0.0, False  # empty union
    iou = mask_iou(torch.from_numpy(pred), torch.from_numpy(gt))
    for b in range(4):
        p = pred[b] > 0.5
        ref = np.logical_and(p, gt[b]).sum() / np.logical_or(p, gt[b]).sum()
        assert abs(float(iou[b]) - ref) < 1e-12
    assert float(iou[4]) == 1.0
    g = torch.from_numpy(gt)
    assert torch.allclose(mask_iou(g, g), torch.ones(5))


# ---------------------------------------------------------------- evaluator


@pytest.mark.parametrize("dtype", DTYPES)
def test_evaluator_batches_equal_one_call(dtype):
    gt, pred, v = _hand(10, 0, dtype), _hand(10, 1, dtype), _valid(10, seed=3)
    ev = PoseEvaluator(mode="procrustes")
    ev.update(pred[:4], gt[:4], v[:4])
    ev.update(pred[4:].numpy(), gt[4:].numpy(), v[4:].numpy())  # numpy works too
    a, b = ev.summary(), evaluate_3d(pred, gt, v, mode="procrustes")
    assert a.keys() == b.keys() and a["count"] == b["count"] and a["num_samples"] == 10
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.allclose(a[k], b[k], equal_nan=True)
        else:
            assert a[k] == pytest.approx(b[k])
    assert a["per_keypoint_mean_mm"].shape == (21,)


def test_evaluator_in_pixels_and_single_threshold():
    gt = 100 * torch.rand(3, 21, 2, generator=_gen(0), dtype=torch.float64)
    pred = gt + torch.tensor([3.3, 4.4], dtype=torch.float64)  # 5.5 px everywhere
    ev = PoseEvaluator(unit=1.0, unit_name="px", thresholds=THRESHOLDS_2D_PX)
    ev.update(pred, gt)
    s = ev.summary()
    assert s["mean_px"] == pytest.approx(5.5) and s["median_px"] == pytest.approx(5.5)
    # PCK steps from 0 (5 px) to 1 (6 px): the trapezoid gives the step's exact area
    assert s["auc"] == pytest.approx(1 - 5.5 / 30)
    one = ev.summary(thresholds=[6.0])
    assert one["auc"] is None and float(one["pck"][0]) == 1.0


def test_pck_auc_matches_a_plain_per_keypoint_computation():
    import numpy as np

    from handlib.metrics import pck_auc

    rng = np.random.default_rng(0)
    d = rng.uniform(0, 70, (40, 21))
    v = rng.random((40, 21)) > 0.2
    a, curve = pck_auc(d, v, 20, 50, 31)
    t = np.linspace(20, 50, 31)
    per_kp = [[(d[v[:, k], k] <= th).mean() for th in t] for k in range(21)]
    ref_curve = np.mean(per_kp, axis=0)
    ref_auc = np.mean([np.trapezoid(c, t) / 30.0 for c in per_kp])
    assert np.allclose(curve.numpy(), ref_curve) and abs(a - ref_auc) < 1e-12
    a0, _ = pck_auc(torch.zeros(3, 21), None, 0, 50, 20)
    assert a0 == 1.0


# ---------------------------------------------------------------- mask precision / recall / F


def _mask_scores_loop(pred, gt):
    """Plain per-pixel counts; a ratio with an empty denominator is 1 if both masks are empty, else 0."""
    out = {k: [] for k in ("iou", "precision", "recall", "f")}
    for p, g in zip(pred, gt):
        tp = fp = fn = 0
        for a, b in zip(p.ravel().tolist(), g.ravel().tolist()):
            tp += a and b
            fp += a and not b
            fn += b and not a
        both_empty = 1.0 if tp + fp + fn == 0 else 0.0
        prec = tp / (tp + fp) if tp + fp else both_empty
        rec = tp / (tp + fn) if tp + fn else both_empty
        out["iou"].append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
        out["precision"].append(prec)
        out["recall"].append(rec)
        out["f"].append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return out


def test_mask_scores_match_loop_on_random_and_hand_made_masks():
    rng = np.random.default_rng(1)
    pred, gt = rng.random((9, 10, 7)), rng.random((9, 10, 7)) > 0.55
    pred[3], gt[3] = 0.0, False  # both empty: all 1
    pred[4], gt[4] = 0.0, True  # empty prediction: all 0 (no free precision)
    pred[5], gt[5] = 0.9, False  # empty ground truth: all 0
    pred[6], gt[6] = 0.0, False
    pred[6, :5], gt[6, :] = 0.9, True  # prediction inside the ground truth: precision 1, recall 1/2
    pred[7], gt[7] = 0.0, False
    pred[7, :3], gt[7, 5:] = 0.9, True  # disjoint
    gt[8] = pred[8] > 0.5  # identical
    out = mask_scores(torch.from_numpy(pred), torch.from_numpy(gt))
    ref = _mask_scores_loop(pred > 0.5, gt)
    for k in ref:
        assert out[k].shape == (9,) and out[k].dtype == torch.float64
        assert np.allclose(out[k].numpy(), ref[k], atol=1e-12), k
    expect = {3: (1, 1, 1, 1), 4: (0, 0, 0, 0), 5: (0, 0, 0, 0), 6: (0.5, 1, 0.5, 2 / 3),
              7: (0, 0, 0, 0), 8: (1, 1, 1, 1)}
    for b, vals in expect.items():
        got = tuple(float(out[k][b]) for k in ("iou", "precision", "recall", "f"))
        assert got == pytest.approx(vals), b
    # F is the Dice coefficient wherever a mask is non-empty
    p, g = pred > 0.5, gt
    inter, size = (p & g).sum((1, 2)), p.sum((1, 2)) + g.sum((1, 2))
    nz = size > 0
    assert np.allclose(out["f"].numpy()[nz], 2 * inter[nz] / size[nz])


def test_mask_iou_is_mask_scores_iou_and_keeps_its_dtype():
    rng = np.random.default_rng(2)
    pred = torch.from_numpy(rng.random((4, 8, 8))).float()
    gt = torch.from_numpy(rng.random((4, 8, 8)) > 0.5)
    iou = mask_iou(pred, gt)
    assert iou.dtype == torch.float32 and torch.equal(iou, mask_scores(pred, gt)["iou"])
    assert mask_scores(gt, gt)["f"].dtype == torch.float32  # bool prediction
    assert torch.equal(mask_scores(pred, gt, threshold=0.2)["recall"],
                       mask_scores(pred > 0.2, gt)["recall"])


# ---------------------------------------------------------------- point-set F-score


def _fscore_kdtree(pred, gt, thresholds):
    """scipy nearest neighbours; strict < as FreiHAND's calculate_fscore."""
    f, prec, rec = [], [], []
    for x, y in zip(pred, gt):
        d_pred, _ = cKDTree(y).query(x)  # each prediction to its nearest ground truth
        d_gt, _ = cKDTree(x).query(y)
        p = [float(np.mean(d_pred < t)) for t in thresholds]
        r = [float(np.mean(d_gt < t)) for t in thresholds]
        prec.append(p)
        rec.append(r)
        f.append([2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(p, r)])
    return np.array(f), np.array(prec), np.array(rec)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fscore_matches_kdtree(dtype):
    g = _gen(5)
    gt = 0.6 + 0.04 * torch.randn(4, 300, 3, generator=g, dtype=torch.float64)  # 0.6 m away
    pred = gt[:, :250] + 0.006 * torch.randn(4, 250, 3, generator=g, dtype=torch.float64)  # N != M
    pred[0] += 0.03  # far off: F = 0 at 5 mm
    pred, gt = pred.to(dtype), gt.to(dtype)
    th = (0.002, 0.005, 0.01, 0.015)
    out = fscore(pred, gt, th)
    f, p, r = _fscore_kdtree(pred.double().numpy(), gt.double().numpy(), th)
    assert out["f"].shape == (4, 4) and out["precision"].shape == (4, 4)
    assert np.allclose(out["precision"].numpy(), p) and np.allclose(out["recall"].numpy(), r)
    assert np.allclose(out["f"].numpy(), f)
    assert float(out["f"][0, 0]) == 0.0 and 0 < float(out["f"][1, 1]) < 1
    assert np.allclose(out["thresholds"].numpy(), th)


def test_fscore_hand_made_and_perfect():
    gt = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0]]], dtype=torch.float64)
    pred = torch.tensor([[[0.003, 0, 0], [0.2, 0, 0]]], dtype=torch.float64)
    out = fscore(pred, gt, (0.001, 0.005, 0.098))
    # nearest distances: predictions 3 mm and 100 mm, ground truth 3 mm and 97 mm
    assert out["precision"][0].tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert out["recall"][0].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert out["f"][0].tolist() == pytest.approx([0.0, 0.5, 2 / 3])  # 0 where P + R = 0
    x = _hand(3).float()
    same = fscore(x, x.clone())
    assert torch.equal(same["f"], torch.ones(3, 2, dtype=torch.float64))


def test_mesh_scores_undo_a_similarity_and_match_an_independent_alignment():
    g = _gen(6)
    V = 825  # OpenHand's vertex count
    gt = 0.6 + 0.03 * torch.randn(3, V, 3, generator=g, dtype=torch.float64)
    R, s = _rotations(3, 7), torch.tensor([0.7, 1.0, 1.6], dtype=torch.float64)
    pred = s[:, None, None] * gt @ R.transpose(1, 2) + 0.1
    exact = mesh_scores(pred.float(), gt.float())
    assert exact["pa_mm"].max() < 1e-3 and torch.equal(exact["f"], torch.ones(3, 2, dtype=torch.float64))
    noisy = pred + 0.004 * torch.randn(3, V, 3, generator=g, dtype=torch.float64)
    out = mesh_scores(noisy, gt)
    for b in range(3):  # scipy's Kabsch plus the least-squares scale, then scipy's nearest neighbours
        x = (noisy[b] - noisy[b].mean(0)).numpy()
        y = (gt[b] - gt[b].mean(0)).numpy()
        rot, _ = Rotation.align_vectors(y, x)
        xr = x @ rot.as_matrix().T
        al = np.sum(y * xr) / np.sum(xr * xr) * xr + gt[b].mean(0).numpy()
        err = 1000 * np.linalg.norm(al - gt[b].numpy(), axis=1).mean()
        assert float(out["pa_mm"][b]) == pytest.approx(err, rel=1e-9)
        f, p, r = _fscore_kdtree(al[None], gt[b].numpy()[None], (0.005, 0.015))
        assert np.allclose(out["f"][b].numpy(), f[0]) and np.allclose(out["recall"][b].numpy(), r[0])
    assert (out["pa_mm"] > 1).all() and (out["f"][:, 0] < out["f"][:, 1]).all()


def test_new_scores_name_the_argument():
    x = _hand(2)
    with pytest.raises(ValueError, match="gt"):
        fscore(x, x[:1])
    with pytest.raises(ValueError, match="pred"):
        fscore(x[..., :2], x[..., :2])
    with pytest.raises(ValueError, match="thresholds"):
        fscore(x, x, (0.0, 0.005))
    with pytest.raises(ValueError, match="thresholds"):
        fscore(x, x, ())
    with pytest.raises(ValueError, match="pred"):
        fscore(x[:, :0], x)
    with pytest.raises(ValueError, match="gt"):
        mesh_scores(x, x[:, :20])
    with pytest.raises(ValueError, match="gt"):
        mask_scores(torch.zeros(2, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="pred"):
        mask_scores(torch.zeros(8, 8), torch.zeros(8, 8))


def test_align_rotation_undoes_a_rotation_about_the_root_and_sits_between_root_and_procrustes():
    from handlib.metrics import align_rotation

    g = torch.Generator().manual_seed(0)
    gt = torch.randn(4, 21, 3, generator=g, dtype=torch.float64)
    R = torch.as_tensor(Rotation.random(4, random_state=1).as_matrix())
    pred = (gt - gt[:, :1]) @ R.transpose(1, 2) + 5.0  # turned about the root and moved
    torch.testing.assert_close(align_rotation(pred, gt), gt, rtol=0, atol=1e-10)
    mirrored = pred * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # a reflection is not undone
    assert (align_rotation(mirrored, gt) - gt).norm(dim=-1).mean() > 0.1
    noisy = pred * 1.2 + 0.1 * torch.randn(4, 21, 3, generator=g, dtype=torch.float64)
    sse = lambda a: (a - gt).square().sum((1, 2))  # noqa: E731
    assert (sse(align_rotation(noisy, gt)) <= sse(align_root(noisy, gt)) + 1e-9).all()
    assert (sse(align_procrustes(noisy, gt)) <= sse(align_rotation(noisy, gt)) + 1e-9).all()
