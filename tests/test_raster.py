"""Tests of handlib.raster: the hard z-buffer RGB rasteriser (mask, depth order, interpolation)."""
from __future__ import annotations

import pytest
import torch
from render_refs import D64, cam, coverage_loop, iou

from handlib.fixtures import blob_hand
from handlib.raster import render_rgb

# ------------------------------------------------------------------------------------------------
# RGB renderer
# ------------------------------------------------------------------------------------------------

def test_rgb_mask_is_hard_silhouette():
    v, f = blob_hand()
    K = cam(64)
    out = render_rgb(v[None], f, K, 64)
    assert out["rgb"].shape == (1, 64, 64, 3) and out["mask"].dtype == torch.bool
    assert iou(out["mask"][0], coverage_loop(v, f, K, 64, 64)) >= 0.99
    assert out["rgb"].min() >= 0 and out["rgb"].max() <= 1
    assert torch.isinf(out["depth"][~out["mask"]]).all()
    assert (out["pix_to_face"][~out["mask"]] == -1).all() and (out["pix_to_face"][out["mask"]] >= 0).all()


def _plane_triangles():
    """Two large overlapping triangles, a tilted near one (red) and a farther one (blue)."""
    near = torch.tensor([[-0.3, -0.3, 0.9], [0.3, -0.25, 1.1], [0.0, 0.35, 1.0]], dtype=D64)
    far = torch.tensor([[-0.2, -0.4, 1.5], [0.5, 0.1, 1.5], [-0.3, 0.4, 1.6]], dtype=D64)
    return near, far


@pytest.mark.parametrize("near_first", [True, False])
def test_rgb_depth_order_and_plane_depth(near_first):
    near, far = _plane_triangles()
    verts = torch.cat([near, far] if near_first else [far, near])[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    red, blue = torch.tensor([1.0, 0, 0], dtype=D64), torch.tensor([0, 0, 1.0], dtype=D64)
    cols = torch.stack([red] * 3 + [blue] * 3) if near_first else torch.stack([blue] * 3 + [red] * 3)
    K = cam(40, focal=40)
    out = render_rgb(verts, faces, K, 40, vert_colors=cols, ambient=1.0)
    in_near = torch.tensor(coverage_loop(near, torch.tensor([[0, 1, 2]]), K, 40, 40))
    in_far = torch.tensor(coverage_loop(far, torch.tensor([[0, 1, 2]]), K, 40, 40))
    both = in_near & in_far
    assert both.sum() > 50
    rgb = out["rgb"][0]
    assert torch.allclose(rgb[in_near], red.expand(int(in_near.sum()), 3))  # nearer colour wins
    assert torch.allclose(rgb[in_far & ~in_near], blue.expand(int((in_far & ~in_near).sum()), 3))
    # depth at each pixel centre = ray–plane intersection of the visible triangle
    for tri, sel in ((near, in_near), (far, in_far & ~in_near)):
        n = torch.linalg.cross(tri[1] - tri[0], tri[2] - tri[0])
        vv, uu = torch.nonzero(sel, as_tuple=True)
        rays = torch.stack([uu, vv, torch.ones_like(uu)], -1).to(D64) @ torch.linalg.inv(K).T  # z = 1
        z = (n @ tri[0]) / (rays @ n)
        assert torch.allclose(out["depth"][0][sel], z, atol=1e-9)


def test_rgb_perspective_correct_interpolation_and_background():
    near, _ = _plane_triangles()
    cols = 0.5 + 0.8 * (near - near.mean(0))  # colour = affine function of the 3D point
    K = cam(40, focal=40)
    bg = torch.full((1, 40, 40, 3), 0.25, dtype=D64)
    out = render_rgb(near[None], torch.tensor([[0, 1, 2]]), K, 40, vert_colors=cols, ambient=1.0,
                     background=bg)
    m = out["mask"][0]
    vv, uu = torch.nonzero(m, as_tuple=True)
    rays = torch.stack([uu, vv, torch.ones_like(uu)], -1).to(D64) @ torch.linalg.inv(K).T
    points = rays * out["depth"][0][m][:, None]
    assert torch.allclose(out["rgb"][0][m], 0.5 + 0.8 * (points - near.mean(0)), atol=1e-9)
    assert torch.equal(out["rgb"][0][~m], bg[0][~m])


def test_rgb_texture_and_lighting():
    v, f = blob_hand()
    K = cam(32)
    tex = torch.tensor([0.2, 0.6, 0.9], dtype=D64).expand(8, 8, 3)
    uvs = torch.rand(len(v), 2, dtype=D64, generator=torch.Generator().manual_seed(3))
    uvs[::2] = uvs[::2].round()  # texture borders (0 and 1) must not fade to black
    out = render_rgb(v[None], f, K, 32, texture=tex, verts_uvs=uvs, ambient=1.0)
    m = out["mask"][0]
    assert torch.allclose(out["rgb"][0][m], tex[0, 0].expand(int(m.sum()), 3))
    lit = render_rgb(v[None], f, K, 32, texture=tex, verts_uvs=uvs, ambient=0.2)["rgb"][0][m]
    assert (lit <= out["rgb"][0][m] + 1e-12).all() and lit[:, 2].std() > 0.01  # Lambert varies
