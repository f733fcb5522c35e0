"""Figures and the demo command produce what they promise (no display needed)."""
import json

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")

from handlib import HandModel, viz  # noqa: E402
from handlib.cli import main  # noqa: E402


def test_figures_and_explorer():
    model = HandModel(flat_hand_mean=True)
    out = model()
    fig = viz.mesh_figure(out.verts[0], model.faces, out.joints[0])
    assert fig.data[0].type == "mesh3d" and len(fig.data) == 6  # mesh + five fingers
    colors = viz.weight_colors(model.lbs_weights)
    assert colors.shape == (model.num_verts, 3) and colors.min() >= 0 and colors.max() <= 1
    kp = torch.rand(21, 2) * 64
    f2 = viz.overlay_2d(np.zeros((64, 64, 3)), kp, mask=np.ones((64, 64), bool))
    assert len(f2.axes[0].lines) == 20  # one segment per bone
    f3 = viz.mesh_views(out.verts[0], model.faces, out.joints[0], views=("palm", "side"))
    assert len(f3.axes) == 2 and all(len(ax.collections) >= 1 for ax in f3.axes)
    box, state = viz.pose_explorer(model, pose_library={"bent": np.full(45, 0.3)})
    x0 = np.array(state["figure"].data[0].x)
    state["shape_sliders"][0].value = 2.0
    x1 = np.array(state["figure"].data[0].x)
    assert not np.allclose(x0, x1)
    assert len(state["pose_sliders"]) == 15 and len(state["shape_sliders"]) == 10


def test_image_row_and_curve():
    grad = torch.randn(8, 8)
    fig = viz.image_row([np.zeros((8, 8), bool), grad, np.ones((8, 8, 3))], ["a", "b", "c"], symmetric=True,
                        polygons=[[np.array([[0, 0], [4, 0], [0, 4]])], [], []], colorbar=True)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["a", "b", "c"]
    lo, hi = axes[1].images[0].get_clim()
    assert lo == -hi == -grad.abs().max().item()  # symmetric range for signed maps
    assert len(axes[0].patches) == 1 and len(fig.axes) == 5  # 3 panels + 2 colour bars (2D panels)
    c = viz.curve([3.0, 2.0, 1.0], logy=True)
    assert c.axes[0].get_yscale() == "log" and len(c.axes[0].lines) == 1


def test_demo_writes_picture_meshes_and_summary(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--no-build", "--hand-only"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.17 < summary["hand_length_m"] < 0.20
    for name in ("hand_mean.png", "hand_fist.png", "hand_fist.obj", "hand_fist.ply", "hand.html"):
        assert (tmp_path / name).stat().st_size > 1000, name
    import trimesh

    mesh = trimesh.load(tmp_path / "hand_fist.obj", process=False)
    assert len(mesh.vertices) == summary["vertices"] and len(mesh.faces) == summary["faces"]


def test_refinement_stepper_strip_and_loss_curves():
    import pytest
    from matplotlib.contour import ContourSet

    from handlib.config import profile
    from handlib.data import CropConfig, SyntheticHands, crop_to_hand
    from handlib.data.batch import collate, denormalize_image
    from handlib.model import DHPE, ModelConfig
    from handlib.refine import RefineConfig, refine

    torch.manual_seed(0)
    model = DHPE(ModelConfig.from_profile(profile("ci"))).eval()
    S = model.cfg.image_size
    ds = SyntheticHands(seed=0, num=2, image_size=2 * S, split="val")
    batch = collate([crop_to_hand(s, CropConfig(size=S)) for s in ds.__getitems__([0, 1])])
    x, K, kp2d = batch["image"], batch["K"], batch["kp2d"]
    res = refine(model, x, K, cfg=RefineConfig(iterations=4, lr=0.05, record_every=2), j2d_target=kp2d)
    crops = denormalize_image(x)  # (2, S, S, 3)

    box, state = viz.refinement_stepper(model, res, crops, K, index=1, target=kp2d)
    assert list(state["slider"].options) == [0, 2, 4] and state["slider"].value == 0
    text0, png0 = state["readout"].value, state["picture"].value
    assert "step 0 of 4" in text0 and " px" in text0 and png0[:4] == b"\x89PNG"
    state["slider"].value = 4  # moving the slider redraws the picture and the readout
    text4 = state["readout"].value
    assert text4 != text0 and "step 4 of 4" in text4 and state["picture"].value != png0
    assert f"{res.losses[4]['total']:.4g}" in text4 and f"{res.losses[0]['total']:.4g}" in text0
    errors = state["errors"]()  # sample 1's mean 2D error vs the target at each recorded step
    assert list(errors) == [0, 2, 4]
    assert errors[4] == pytest.approx(float((res.j2d[1] - kp2d[1]).norm(dim=-1).mean()), rel=1e-4)
    assert errors[4] < errors[0]  # a fixed 2D target: the steps pull the projection onto it

    fig = viz.refinement_strip(model, res, crops, K, index=1, steps=[0, 4], target=kp2d)
    assert len(fig.axes) == 2
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["step 0", "step 4"]
    assert len(fig.axes[1].lines) == 20  # the skeleton's bones
    assert any(isinstance(c, ContourSet) for c in fig.axes[1].collections)  # R(h)'s outline
    assert len(viz.refinement_strip(model, res, crops, K, n=3).axes) == 3  # steps 0, 2, 4
    with pytest.raises(ValueError, match="not recorded"):
        viz.refinement_strip(model, res, crops, K, steps=[1])
    with pytest.raises(ValueError, match="index"):
        viz.refinement_stepper(model, res, crops, K, index=2)
    with pytest.raises(ValueError, match="batch of the result"):  # one crop of the batch: ambiguous
        viz.refinement_strip(model, res, crops[1], K[1], index=1)

    lc = viz.loss_curves(res.losses, logy=True)
    legend = [t.get_text() for t in lc.axes[0].get_legend().get_texts()]
    assert legend == ["joints", "feature", "laplacian", "total"] and len(lc.axes[0].lines) == 4
