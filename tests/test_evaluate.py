"""evaluate_model and `python -m handlib eval`: keys, refinement scores, mask and mesh scores, errors."""
import json
import math

import pytest
import torch

from handlib import cli
from handlib.config import profile
from handlib.data.batch import collate
from handlib.evaluate import dataset_for_eval, evaluate_model, ground_truth_verts, score_batch
from handlib.metrics import align_scale, evaluate_3d, keypoint_errors, mask_scores, mesh_scores, pck_auc
from handlib.model import DHPE, ModelConfig
from handlib.refine import RefineConfig
from handlib.train import TrainConfig, save_checkpoint


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DHPE(ModelConfig.from_profile(profile("ci"))).eval()


def test_scores_match_metrics_and_refinement_keys(model):
    data = dataset_for_eval("synthetic", 64, seed=1, num=6)
    res = evaluate_model(model, data, batch_size=4, refine=RefineConfig(iterations=3))
    assert res["num_samples"] == 6
    for key in ("auc_20_50", "mpjpe_mm", "pa_mpjpe_mm", "mean_px", "mask_iou"):
        assert key in res and key + "_refined" in res
    assert res["pa_mpjpe_mm"] <= res["mpjpe_mm"] + 1e-6
    # the same numbers from the metrics module directly
    from handlib.data.batch import collate

    batch = collate([data[i] for i in range(6)])
    with torch.no_grad():
        out = model(batch["image"], batch["K"], render=False)
    ref = evaluate_3d(out.joints, batch["kp3d"], batch["valid"], mode="scale")
    assert res["auc_20_50"] == pytest.approx(ref["auc"], abs=1e-9)
    assert res["mean_mm"] == pytest.approx(ref["mean_mm"], rel=1e-5)


def test_dataset_errors():
    with pytest.raises(ValueError, match="dataset"):
        dataset_for_eval("nope", 64)
    with pytest.raises(ValueError, match="--root"):
        dataset_for_eval("rhd", 64)


def test_eval_cli_writes_json(tmp_path, model, monkeypatch, capsys):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(tmp_path / "c.pt", model, opt, sched, 0, TrainConfig(), 0)
    rc = cli.main(["eval", "--checkpoint", str(tmp_path / "c.pt"), "--num", "4", "--refine-steps", "2",
                   "--json", str(tmp_path / "e.json")])
    assert rc == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert {"auc_20_50", "mpjpe_mm", "pa_mpjpe_mm", "auc_20_50_refined", "mpjpe_mm_refined",
            "pa_mpjpe_mm_refined"} <= set(res)
    assert "AUC 20–50 mm" in capsys.readouterr().out
    assert res["refine_config"]["feature_every"] == 1 and res["refine_config"]["fold_bn"]
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "c.pt"), "--num", "4", "--refine-steps", "2",
                     "--fast-refine", "--json", str(tmp_path / "f.json")]) == 0
    fast = json.loads((tmp_path / "f.json").read_text())
    assert fast["refine_config"]["feature_every"] == 2 and fast["refine_config"]["silhouette_scale"] == 0.5
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


NEW_KEYS = ("auc_0_50", "pck_0_50", "mask_precision", "mask_recall", "mask_f", "mesh_pa_mm", "mesh_f5",
            "mesh_f15")


def test_new_keys_match_the_metrics_functions(model):
    data = dataset_for_eval("synthetic", 64, seed=1, num=6)
    res = evaluate_model(model, data, batch_size=4, refine=RefineConfig(iterations=2))
    for key in NEW_KEYS:
        assert key in res and key + "_refined" in res
    assert res["thresholds_0_50_mm"] == pytest.approx([float(t) for t in range(51)])
    assert len(res["pck_0_50"]) == 51 and len(res["pck_0_50_refined"]) == 51
    for key in ("auc_0_50", "mask_precision", "mask_recall", "mask_f", "mesh_f5", "mesh_f15"):
        for k in (key, key + "_refined"):
            assert 0.0 <= res[k] <= 1.0, k
    assert res["mesh_f5"] <= res["mesh_f15"] and 0 < res["mesh_pa_mm"] < 100
    assert math.isfinite(res["mesh_pa_mm_refined"])
    # the same numbers from the metrics functions on one batch of all six
    batch = collate([data[i] for i in range(6)])
    with torch.no_grad():
        out = model(batch["image"], batch["K"], render=True)
    e = 1000 * keypoint_errors(align_scale(out.joints, batch["kp3d"]), batch["kp3d"], batch["valid"])
    a, curve = pck_auc(e, batch["valid"], 0, 50, 51)
    assert res["auc_0_50"] == pytest.approx(a, abs=1e-9)
    assert res["pck_0_50"] == pytest.approx(curve.tolist(), abs=1e-9)
    m = mask_scores(out.silhouette, batch["mask"])
    for k in ("iou", "precision", "recall", "f"):
        assert res[f"mask_{k}"] == pytest.approx(float(m[k].mean()), abs=1e-5)
    gt = model.hand_model.from_h(batch["h"]).verts
    ms = mesh_scores(out.verts, gt)
    assert res["mesh_pa_mm"] == pytest.approx(float(ms["pa_mm"].mean()), rel=1e-4)
    assert res["mesh_f5"] == pytest.approx(float(ms["f"][:, 0].mean()), abs=0.01)
    assert res["mesh_f15"] == pytest.approx(float(ms["f"][:, 1].mean()), abs=0.01)
    # per-keypoint errors: a plain masked mean per column, in handlib order
    v = batch["valid"].bool()
    per_kp = [float(e[:, k][v[:, k]].mean()) if v[:, k].any() else math.nan for k in range(21)]
    assert res["per_keypoint_mm"] == pytest.approx(per_kp, rel=1e-5, nan_ok=True)
    assert res["per_keypoint_mm"][0] == pytest.approx(0.0, abs=1e-6)  # the root, aligned by definition
    e2d = keypoint_errors(out.j2d, batch["kp2d"], batch["valid"])
    assert res["per_keypoint_px"] == pytest.approx(
        [float(e2d[:, k][v[:, k]].mean()) for k in range(21)], rel=1e-5)
    assert len(res["per_keypoint_mm_refined"]) == 21


def _perfect(batch, hand_model):
    """A prediction equal to the ground truth: the mesh at h, its joints and the labels."""
    gt = ground_truth_verts(batch, hand_model)
    joints = hand_model.from_h(batch["h"]).joints
    return dict(joints=joints, j2d=batch["kp2d"], verts=gt, silhouette=batch["mask"].float(), gt_verts=gt)


def test_score_batch_perfect_prediction(model):
    data = dataset_for_eval("synthetic", 64, seed=2, num=5)
    batch = collate([data[i] for i in range(5)])
    assert batch["mirrored"].any()  # left hands: h is mirrored with everything else
    pred = _perfect(batch, model.hand_model)
    assert (pred["joints"] - batch["kp3d"]).abs().max() < 1e-5
    res = score_batch(batch, **pred)
    assert res["mesh_pa_mm"] < 1e-3 and res["mesh_f5"] == 1.0 and res["mesh_f15"] == 1.0
    assert res["auc_20_50"] == 1.0 and res["mean_mm"] < 1e-3
    # PCK at 0 mm counts only errors of exactly 0, which rounding in align_scale spoils: the first
    # trapezoid of the 0-50 mm curve is 1/100 of the area
    assert 0.99 <= res["auc_0_50"] <= 1.0 and res["pck_0_50"][1:] == [1.0] * 50
    for k in ("mask_iou", "mask_precision", "mask_recall", "mask_f"):
        assert res[k] == 1.0
    # a rotated, scaled, moved mesh is perfect after Procrustes; 3 mm noise is not
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    R = R * torch.sign(torch.linalg.det(R))
    moved = 1.3 * pred["verts"] @ R.T + 0.05
    res = score_batch(batch, **{**pred, "verts": moved})
    assert res["mesh_pa_mm"] < 1e-3 and res["mesh_f5"] == 1.0
    g = torch.Generator().manual_seed(1)
    noisy = pred["verts"] + 0.003 * torch.randn(pred["verts"].shape, generator=g)
    res = score_batch(batch, **{**pred, "verts": noisy})
    assert 2 < res["mesh_pa_mm"] < 8 and res["mesh_f5"] < res["mesh_f15"] <= 1.0


def test_mesh_and_mask_scores_count_only_labelled_samples(model):
    data = dataset_for_eval("synthetic", 64, seed=2, num=5)
    batch = collate([data[i] for i in range(5)])
    batch["has_h"][[1, 3]] = False
    batch["h"][[1, 3]] = 0.0  # what collate stores for a sample without h
    batch["has_mask"][0] = False
    gt = ground_truth_verts(batch, model.hand_model)
    assert torch.isnan(gt[[1, 3]]).all() and torch.isfinite(gt[[0, 2, 4]]).all()
    noisy = gt.nan_to_num() + 0.004 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(2))
    sil = batch["mask"].float().roll(3, dims=2)
    res = score_batch(batch, batch["kp3d"], batch["kp2d"], verts=noisy, silhouette=sil, gt_verts=gt)
    keep = [0, 2, 4]
    ms = mesh_scores(noisy[keep], gt[keep])
    assert res["mesh_pa_mm"] == pytest.approx(float(ms["pa_mm"].mean()))
    assert res["mesh_f5"] == pytest.approx(float(ms["f"][:, 0].mean()))
    m = mask_scores(sil[1:], batch["mask"][1:])
    assert res["mask_recall"] == pytest.approx(float(m["recall"].mean()))
    # nothing labelled: NaN, not an error
    batch["has_h"][:], batch["has_mask"][:] = False, False
    res = score_batch(batch, batch["kp3d"], batch["kp2d"], verts=noisy, silhouette=sil,
                      gt_verts=ground_truth_verts(batch, model.hand_model))
    for k in ("mesh_pa_mm", "mesh_f5", "mesh_f15", "mask_iou", "mask_f"):
        assert math.isnan(res[k]), k
    res = score_batch(batch, batch["kp3d"], batch["kp2d"])  # no mesh, no silhouette
    assert math.isnan(res["mesh_f15"]) and math.isnan(res["mask_precision"]) and res["auc_0_50"] >= 0.99


class _WithoutH(torch.utils.data.Dataset):
    """A dataset like the real ones: crops without hand parameters h."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return {k: v for k, v in self.ds[i].items() if k != "h"}


def test_mesh_keys_are_nan_without_h(model):
    data = _WithoutH(dataset_for_eval("synthetic", 64, seed=1, num=3))
    assert ground_truth_verts(collate([data[0]]), model.hand_model) is None
    res = evaluate_model(model, data, batch_size=2, refine=RefineConfig(iterations=1))
    for key in ("mesh_pa_mm", "mesh_f5", "mesh_f15"):
        assert math.isnan(res[key]) and math.isnan(res[key + "_refined"])
    assert math.isfinite(res["auc_0_50"]) and math.isfinite(res["mask_f"])
