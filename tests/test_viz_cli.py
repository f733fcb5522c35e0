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
    assert main(["demo", "--out", str(tmp_path), "--no-build"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.17 < summary["hand_length_m"] < 0.20
    for name in ("hand_mean.png", "hand_fist.png", "hand_fist.obj", "hand_fist.ply", "hand.html"):
        assert (tmp_path / name).stat().st_size > 1000, name
    import trimesh

    mesh = trimesh.load(tmp_path / "hand_fist.obj", process=False)
    assert len(mesh.vertices) == summary["vertices"] and len(mesh.faces) == summary["faces"]
