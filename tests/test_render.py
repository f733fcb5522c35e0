"""Tests of handlib.render: soft silhouette (SoftRas) and the hard RGB rasteriser.

Kinds (STYLE.md §12): (a) shape and error contracts; (b) equality with independent references
(brute-force point-in-triangle loop, the dense implementation, ray–plane intersection, finite
differences); (c) float64 gradcheck on tiny inputs.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from handlib import render
from handlib.camera import intrinsics
from handlib.render import (
    RenderConfig,
    SoftRenderer,
    render_rgb,
    sigma_pixels,
    soft_silhouette,
    soft_silhouette_dense,
)

D64 = torch.float64
OPEN_HAND = Path(__file__).resolve().parents[1] / "handlib" / "assets" / "open_hand_v1.npz"


# ------------------------------------------------------------------------------------------------
# meshes and references written plainly for the tests
# ------------------------------------------------------------------------------------------------

def icosphere(level: int = 2):
    """Unit icosphere: 12 → 42 → 162 vertices (level 0, 1, 2)."""
    t = (1 + 5 ** 0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    v = [np.array(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(level):
        mids, nf = {}, []

        def mid(i, j, mids=mids):
            key = (min(i, j), max(i, j))
            if key not in mids:
                m = v[i] + v[j]
                v.append(m / np.linalg.norm(m))
                mids[key] = len(v) - 1
            return mids[key]
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = nf
    return torch.tensor(np.array(v), dtype=D64), torch.tensor(f)


def ellipsoid(center, radii, angle=0.0, rings=9, segs=16):
    """UV ellipsoid, (rings − 1)·segs + 2 vertices, rotated by ``angle`` about z."""
    th = torch.arange(1, rings, dtype=D64)[:, None] * math.pi / rings
    ph = torch.arange(segs, dtype=D64)[None] * 2 * math.pi / segs
    ring = torch.stack([th.sin() * ph.cos(), -th.cos().expand(-1, segs), th.sin() * ph.sin()], -1)
    v = torch.cat([torch.tensor([[0.0, -1, 0]], dtype=D64), ring.reshape(-1, 3),
                   torch.tensor([[0.0, 1, 0]], dtype=D64)]) * torch.tensor(radii, dtype=D64)
    c, s = math.cos(angle), math.sin(angle)
    v = v @ torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=D64).T + torch.tensor(center, dtype=D64)
    f, last = [], len(v) - 1
    for j in range(segs):
        f.append([0, 1 + (j + 1) % segs, 1 + j])
        base = 1 + (rings - 2) * segs
        f.append([last, base + j, base + (j + 1) % segs])
        for i in range(rings - 2):
            a, b = 1 + i * segs + j, 1 + i * segs + (j + 1) % segs
            f += [[a, b, b + segs], [a, b + segs, a + segs]]
    return v, torch.tensor(f)


def blob_hand():
    """A hand-sized closed mesh with overlapping parts: palm + 4 fingers + thumb, 780 V / 1536 F."""
    parts = [ellipsoid((0, 0, 0), (0.045, 0.05, 0.015))]
    parts += [ellipsoid((x, -0.085, 0), (0.009, 0.04, 0.009)) for x in (-0.033, -0.011, 0.011, 0.033)]
    parts.append(ellipsoid((0.06, -0.02, -0.01), (0.011, 0.035, 0.011), angle=0.8))
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + off)
        off += len(v)
    return torch.cat(verts) + torch.tensor([0.0, 0.02, 0.4], dtype=D64), torch.cat(faces)


def coverage_loop(verts, faces, K, H, W):
    """Brute-force hard silhouette: is each pixel centre inside any projected face? (H, W) bool."""
    v = verts.numpy()
    k = K.numpy()
    uv = (v @ k.T)[:, :2] / v[:, 2:]
    pu, pv = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    out = np.zeros((H, W), bool)
    for a, b, c in faces.tolist():
        (ax, ay), (bx, by), (cx, cy) = uv[a], uv[b], uv[c]
        e0 = (bx - ax) * (pv - ay) - (by - ay) * (pu - ax)
        e1 = (cx - bx) * (pv - by) - (cy - by) * (pu - bx)
        e2 = (ax - cx) * (pv - cy) - (ay - cy) * (pu - cx)
        out |= ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
    return out


def iou(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max((a | b).sum(), 1)


def cam(size, focal=None, dtype=D64):
    H, W = (size, size) if isinstance(size, int) else size
    return intrinsics(focal or max(H, W), (W - 1) / 2, (H - 1) / 2, dtype=dtype)


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
    if not OPEN_HAND.exists():
        pytest.skip(f"OpenHand asset not built yet ({OPEN_HAND.name})")
    data = np.load(OPEN_HAND)
    vkey = next((k for k in ("v_template", "verts", "vertices") if k in data), None)
    fkey = next((k for k in ("faces", "f") if k in data), None)
    if vkey is None or fkey is None:
        pytest.skip(f"OpenHand asset has no vertex/face arrays I know: {sorted(data.files)}")
    v = torch.tensor(data[vkey], dtype=D64)
    f = torch.tensor(data[fkey].astype(np.int64))
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


def test_pytorch3d_backend_agrees():
    try:
        import pytorch3d  # noqa: F401
    except ImportError:
        pytest.skip("pytorch3d not installed")
    v, f = blob_hand()
    K = cam(64, dtype=torch.float32)
    ours = soft_silhouette(v[None].float(), f, K, (64, 64), sigma=1e-4)
    theirs = soft_silhouette(v[None].float(), f, K, (64, 64), sigma=1e-4, backend="pytorch3d")
    # PyTorch3D keeps only the faces_per_pixel nearest faces: allow small differences
    assert (ours - theirs).abs().mean() < 2e-3 and (ours - theirs).abs().max() < 5e-2


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
