"""Tests of handlib.render: the soft silhouette (SoftRas).

Kinds (STYLE.md §12): (a) shape and error contracts; (b) equality with independent references
(brute-force point-in-triangle loop, the dense implementation, ray–plane intersection, finite
differences); (c) float64 gradcheck on tiny inputs.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from render_refs import cam, coverage_loop, iou

from handlib import render
from handlib.camera import intrinsics
from handlib.fixtures import blob_hand, icosphere
from handlib.open_hand import load_asset
from handlib.raster import render_rgb
from handlib.render import (
    RenderConfig,
    SoftRenderer,
    sigma_pixels,
    soft_silhouette,
    soft_silhouette_dense,
)

D64 = torch.float64


# ------------------------------------------------------------------------------------------------
# meshes and references written plainly for the tests
# ------------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------------
# soft silhouette
# ------------------------------------------------------------------------------------------------

def test_sigma_convention():
    assert sigma_pixels(1e-4, 128) == pytest.approx(1e-4 * 64 ** 2)
    assert sigma_pixels(1e-4, (100, 300)) == pytest.approx(1e-4 * 50 ** 2)  # shorter side


def test_sharp_limit_random_triangles():
    g = torch.Generator().manual_seed(0)
    H, W = 40, 56  # not square: catches (u, v) transposition
    K = cam((H, W), focal=45)
    for trial in range(4):
        n = 3
        z = 0.5 + torch.rand(n, 3, 1, generator=g, dtype=D64)
        xy = (torch.rand(n, 3, 2, generator=g, dtype=D64) - 0.5) * 1.2 * z
        verts = torch.cat([xy, z], -1).reshape(1, -1, 3)
        faces = torch.arange(3 * n).reshape(n, 3)
        A = soft_silhouette(verts, faces, K, (H, W), sigma=1e-9)[0]
        ref = coverage_loop(verts[0], faces, K, H, W)
        assert ref.sum() > 20, "degenerate test case"
        assert iou(A > 0.5, ref) >= 0.995, f"trial {trial}"


@pytest.mark.parametrize("mesh", ["icosphere", "blob_hand"])
def test_sharp_limit_closed_mesh(mesh):
    if mesh == "icosphere":
        v, f = icosphere(2)
        v = v * 0.08 + torch.tensor([0.01, -0.02, 0.4], dtype=D64)
    else:
        v, f = blob_hand()
    K = cam(64)
    A = soft_silhouette(v[None], f, K, (64, 64), sigma=1e-9)[0]
    ref = coverage_loop(v, f, K, 64, 64)
    assert iou(A > 0.5, ref) >= 0.995
    # and the soft mask blurs monotonically towards it: larger σ, larger boundary band
    soft = soft_silhouette(v[None], f, K, (64, 64), sigma=1e-3)[0]
    assert ((soft > 0.01) & (soft < 0.99)).sum() > ((A > 0.01) & (A < 0.99)).sum()


def test_sharp_limit_open_hand():
    data = load_asset()
    v = torch.tensor(data["v_template"], dtype=D64)
    f = torch.tensor(data["faces"].astype(np.int64))
    v = (v - v.mean(0)) / (v.max(0).values - v.min(0).values).max() * 0.2  # ~20 cm hand
    v = v + torch.tensor([0.0, 0.0, 0.4], dtype=D64)
    K = cam(64)
    A = soft_silhouette(v[None], f, K, (64, 64), sigma=1e-9)[0]
    assert iou(A > 0.5, coverage_loop(v, f, K, 64, 64)) >= 0.995


@pytest.mark.parametrize("tile_size", [1, 3])
def test_culled_matches_dense(tile_size):
    v, f = blob_hand()
    H, W = 30, 36
    K = torch.stack([cam((H, W)), cam((H, W), focal=44)])  # different K per batch element
    verts = torch.stack([v, v + torch.tensor([0.01, 0.0, 0.05], dtype=D64)]).requires_grad_(True)
    kw = dict(image_size=(H, W), sigma=3e-4)
    A = soft_silhouette(verts, f, K, tile_size=tile_size, cull_threshold=1e-15, **kw)
    Ad = soft_silhouette_dense(verts, f, K, **kw)
    assert A.shape == (2, H, W) and A.dtype == D64
    assert (A - Ad).abs().max() < 1e-6
    w = torch.randn(2, H, W, dtype=D64, generator=torch.Generator().manual_seed(1))
    g, = torch.autograd.grad((A * w).sum(), verts)
    gd, = torch.autograd.grad((Ad * w).sum(), verts)
    assert gd.abs().max() > 1.0  # the comparison is not vacuous
    assert (g - gd).abs().max() < 1e-6


def test_default_threshold_is_close_to_dense():
    v, f = blob_hand()
    A = soft_silhouette(v[None], f, cam(32), (32, 32))
    assert (A - soft_silhouette_dense(v[None], f, cam(32), (32, 32))).abs().max() < 1e-4


def test_gradcheck_tiny():
    verts = torch.tensor([[[-0.3, -0.2, 1.0], [0.35, -0.25, 1.1], [0.0, 0.4, 0.9], [0.5, 0.3, 1.2]]],
                         dtype=D64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    K = cam(6, focal=5.0).requires_grad_(True)

    def fn(verts, K):
        return soft_silhouette(verts, faces, K, (6, 6), sigma=0.1, cull_threshold=1e-15)
    assert torch.autograd.gradcheck(fn, (verts, K), eps=1e-6, atol=1e-5)


def test_finite_differences_hand_mesh():
    v, f = blob_hand()
    K = cam(32)
    w = torch.randn(1, 32, 32, dtype=D64, generator=torch.Generator().manual_seed(2))

    def loss(verts):
        return (soft_silhouette(verts, f, K, (32, 32), sigma=1e-3, cull_threshold=1e-15) * w).sum()
    verts = v[None].clone().requires_grad_(True)
    g, = torch.autograd.grad(loss(verts), verts)
    flat = g.abs().flatten()
    picks = flat.topk(3).indices.tolist() + torch.nonzero(flat > 1e-3 * flat.max())[::97, 0].tolist()[:3]
    for idx in picks:
        e = torch.zeros_like(verts).flatten()
        e[idx] = 1e-7
        e = e.view_as(verts)
        with torch.no_grad():
            fd = (loss(verts + e) - loss(verts - e)) / 2e-7
        assert fd.item() == pytest.approx(g.flatten()[idx].item(), rel=1e-4, abs=1e-6), idx


def test_faces_behind_camera():
    v, f = blob_hand()
    K = cam(32)
    front = soft_silhouette(v[None], f, K, (32, 32))
    # a mirrored copy entirely behind the camera and triangles straddling the camera plane
    # (one corner behind, two in view) are dropped: they must change nothing
    behind = v * torch.tensor([1.0, 1.0, -1.0], dtype=D64)
    straddle = torch.tensor([[[0.0, 0.0, -0.3], [0.05, 0.0, 0.5], [0.0, 0.05, 0.5]],
                             [[0.02, -0.02, 0.5], [-0.05, 0.0, -0.1], [0.0, 0.05, 0.45]]], dtype=D64)
    v2 = torch.cat([v, behind, straddle.reshape(-1, 3)])
    f2 = torch.cat([f, f + len(v), torch.arange(6).reshape(2, 3) + 2 * len(v)])
    verts = v2[None].clone().requires_grad_(True)
    both = soft_silhouette(verts, f2, K, (32, 32))
    both.sum().backward()
    assert torch.isfinite(both).all() and torch.isfinite(verts.grad).all()
    assert (both - front).abs().max() < 1e-12
    assert verts.grad[0, len(v):].abs().max() == 0
    rgb = render_rgb(v2[None], f2, K, 32)
    assert torch.equal(rgb["mask"], render_rgb(v[None], f, K, 32)["mask"])


def test_empty_image():
    v, f = blob_hand()
    K = cam(16)
    off = (v + torch.tensor([5.0, 0.0, 0.0], dtype=D64))[None].requires_grad_(True)  # off-screen
    A = soft_silhouette(off, f, K, (16, 16))
    A.sum().backward()
    assert A.shape == (1, 16, 16) and A.abs().max() == 0 and off.grad.abs().max() == 0
    none = soft_silhouette(v[None], torch.zeros(0, 3, dtype=torch.long), K, (16, 16))
    assert none.abs().max() == 0
    assert render_rgb(off.detach(), f, K, (16, 16))["mask"].sum() == 0


@pytest.mark.parametrize("group_pixels", [None, 600])
def test_batch_with_different_K(group_pixels, monkeypatch):
    if group_pixels:  # force the CPU path that renders the batch one image at a time
        monkeypatch.setattr(render, "_GROUP_PIXELS", group_pixels)
    v, f = blob_hand()
    K = torch.stack([cam(24), cam(24, focal=30), intrinsics(20, 10, 13, dtype=D64)])
    verts = torch.stack([v, v + 0.01, v - 0.01])
    A = soft_silhouette(verts, f, K, (24, 24))
    for b in range(3):
        assert torch.allclose(A[b:b + 1], soft_silhouette(verts[b:b + 1], f, K[b], (24, 24)), atol=1e-12)
    assert (A[0] - A[1]).abs().max() > 0.1  # the per-element K is used


def test_argument_errors():
    v, f = blob_hand()
    K = cam(16)
    with pytest.raises(ValueError, match="verts"):
        soft_silhouette(v, f, K, 16)
    with pytest.raises(TypeError, match="faces"):
        soft_silhouette(v[None], f.double(), K, 16)
    with pytest.raises(ValueError, match="faces"):
        soft_silhouette(v[None], f + 10_000, K, 16)
    with pytest.raises(ValueError, match="K"):
        soft_silhouette(v[None].expand(3, -1, -1), f, K.expand(2, 3, 3), 16)
    with pytest.raises(TypeError, match="verts"):
        soft_silhouette(v[None].numpy(), f, K, 16)
    with pytest.raises(ValueError, match="backend"):
        soft_silhouette(v[None], f, K, 16, backend="opengl")
    with pytest.raises(ValueError, match="vert_colors"):
        render_rgb(v[None], f, K, 16, vert_colors=torch.rand(5, 3, dtype=D64))
    with pytest.raises(ValueError, match="background"):
        render_rgb(v[None], f, K, 16, background=torch.zeros(1, 8, 8, 3))


def test_soft_renderer_module():
    v, f = blob_hand()
    cfg = dataclasses.replace(RenderConfig(), image_size=(20, 24), sigma=2e-4)
    r = SoftRenderer(f, cfg)
    K = cam((20, 24))
    assert torch.equal(r(v[None], K), soft_silhouette(v[None], f, K, (20, 24), sigma=2e-4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sigma = 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    v, f = blob_hand()
    K = cam(48)
    a = soft_silhouette(v[None], f, K, (48, 48))
    b = soft_silhouette(v[None].cuda(), f.cuda(), K.cuda(), (48, 48)).cpu()
    assert (a - b).abs().max() < 1e-9
