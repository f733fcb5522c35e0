"""OpenHand: mesh validity, skinning, regressor, shape basis, pose prior, determinism, asset IO."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh
from smplx.lbs import lbs

from handlib import open_hand as oh
from handlib.skeleton import MANO_PARENTS, TIP_FINGERS


@pytest.fixture(scope="module")
def built():
    return oh.build_open_hand()


@pytest.fixture(scope="module")
def shipped():
    return oh.load_asset()


def _pose(a, aa45=None, betas=None):
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    pose = torch.zeros(1, 48, dtype=torch.float64)
    if aa45 is not None:
        pose[0, 3:] = t(aa45)
    b = torch.zeros(1, 10, dtype=torch.float64) if betas is None else t(betas)[None]
    v, j = lbs(b, pose, t(a["v_template"]), t(a["shapedirs"]), t(a["posedirs"]), t(a["J_regressor"]),
               torch.as_tensor(a["parents"]), t(a["weights"]))
    return v[0].numpy(), j[0].numpy()


def _pose_index(a, name):
    return json.loads(str(a["meta"]))["pose_names"].index(name)


def _hand_length(a, v, j):
    return np.linalg.norm(v[a["tip_vertex_ids"][2]] - j[0])


def test_manifold_and_orientation(shipped):
    v, f = shipped["v_template"].astype(np.float64), shipped["faces"]
    assert f.dtype == np.int32 and 700 <= len(v) <= 900
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_winding_consistent
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert set(counts.tolist()) <= {1, 2}
    area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1) / 2
    assert area.min() > 1e-7  # no degenerate faces (> 0.1 mm^2)
    assert np.degrees(m.face_angles.min()) > 10.0  # reasonably even triangles
    # Signed volume with the wrist opening capped by a fan around its centroid: outward faces.
    loop = oh.boundary_loops(f)[0]
    c = len(v)
    cap = np.stack([loop[1:], loop[:-1], np.full(len(loop) - 1, c)], 1)
    cap = np.concatenate([cap, [[loop[0], loop[-1], c]]])
    closed = trimesh.Trimesh(np.vstack([v, v[loop].mean(0)]), np.vstack([f, cap]), process=False)
    assert closed.is_watertight and closed.is_winding_consistent
    assert closed.volume > 2e-4  # > 200 ml: a real hand, outward-facing


def test_one_boundary_loop_at_the_wrist(shipped):
    loops = oh.boundary_loops(shipped["faces"])
    assert len(loops) == 1
    # The opening is proximal of the wrist joint (MANO frame: distal = -x).
    assert np.all(shipped["v_template"][loops[0], 0] > shipped["J"][0, 0])


@pytest.mark.parametrize("pose", ["rest", "mean", "fist"])
def test_no_self_intersection(shipped, pose):
    aa = {"rest": None, "mean": shipped["hands_mean"],
          "fist": shipped["pose_library"][_pose_index(shipped, "fist")] if pose == "fist" else None}[pose]
    v, _ = _pose(shipped, aa)
    assert len(oh.self_intersections(v, shipped["faces"])) == 0


def test_self_intersection_detects_a_crossing():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -0.5], [0.3, 0.2, 0.5], [0.2, 0.3, 0.5]], float)
    assert oh.self_intersections(v, np.array([[0, 1, 2], [3, 4, 5]])).tolist() == [[0, 1]]
    v[3:, 0] += 5.0  # move the second triangle away
    assert len(oh.self_intersections(v, np.array([[0, 1, 2], [3, 4, 5]]))) == 0


def test_weights(shipped):
    w = shipped["weights"].astype(np.float64)
    assert w.min() >= 0 and np.allclose(w.sum(1), 1, atol=1e-5)
    assert np.all(np.bincount(w.argmax(1), minlength=16) > 5)  # every joint drives some vertices
    # A vertex next to bone j -> child is dominated by joint j (LBS convention).
    j_rest = shipped["J"].astype(np.float64)
    v = shipped["v_template"].astype(np.float64)
    for j in range(1, 16):
        child = [c for c, p in enumerate(MANO_PARENTS) if p == j]
        if not child:
            continue
        mid = (j_rest[j] + j_rest[child[0]]) / 2
        assert w[np.argmin(np.linalg.norm(v - mid, axis=1))].argmax() == j


def test_regressor(shipped):
    r = shipped["J_regressor"].astype(np.float64)
    assert r.min() >= 0 and np.allclose(r.sum(1), 1, atol=1e-6)
    assert (r > 0).sum(1).max() <= 24
    assert np.abs(r @ shipped["v_template"].astype(np.float64) - shipped["J"]).max() < 1e-6
    j_local, _ = oh.rest_skeleton()
    assert np.allclose(oh._to_world(j_local, oh.OpenHandParams()), shipped["J"], atol=1e-6)
    assert np.array_equal(shipped["parents"], np.array(MANO_PARENTS))


def test_joints_inside_mesh(shipped):
    v = shipped["v_template"].astype(np.float64)
    f = shipped["faces"]
    loop = oh.boundary_loops(f)[0]
    cap = np.stack([loop[1:], loop[:-1], np.full(len(loop) - 1, len(v))], 1)
    closed = trimesh.Trimesh(np.vstack([v, v[loop].mean(0)]),
                             np.vstack([f, cap, [[loop[0], loop[-1], len(v)]]]), process=False)
    # Winding number of each joint w.r.t. the closed surface (solid-angle sum) is 1 inside.
    for p in shipped["J"].astype(np.float64):
        a, b, c = (closed.vertices[closed.faces[:, k]] - p for k in range(3))
        na, nb, nc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = na * nb * nc + np.einsum("ij,ij->i", a, b) * nc + np.einsum("ij,ij->i", b, c) * na \
            + np.einsum("ij,ij->i", c, a) * nb
        assert abs(np.sum(2 * np.arctan2(num, den)) / (4 * np.pi) - 1) < 1e-3


def test_shape_basis_orthogonal(shipped):
    s = shipped["shapedirs"].astype(np.float64).reshape(-1, 10)
    g = s.T @ s
    d = np.sqrt(np.diag(g))
    assert np.abs(g / np.outer(d, d) - np.eye(10)).max() < 1e-5


def _bones(a, v, j):
    tips = v[a["tip_vertex_ids"]]
    out = {}
    for f in ("index", "middle", "pinky", "ring", "thumb"):
        js = oh.FINGER_JOINTS[f]
        pts = [j[0], j[js[0]], j[js[1]], j[js[2]], tips[TIP_FINGERS.index(f)]]
        out[f] = [np.linalg.norm(pts[k + 1] - pts[k]) * 1000 for k in range(4)]
    return out


@pytest.mark.parametrize("beta0", [0.0, -3.0, 3.0])
def test_bone_lengths_and_hand_length(shipped, beta0):
    betas = np.zeros(10)
    betas[0] = beta0
    v, j = _pose(shipped, betas=betas)
    scale = 1 + 0.05 * beta0  # beta_0 is +-5 % overall size per SD
    for f, lengths in _bones(shipped, v, j).items():
        for k, x in enumerate(lengths):
            lo, hi = oh.BONE_LENGTH_RANGES_MM[f][k]
            assert lo * scale <= x <= hi * scale, (f, k, x)
    length = _hand_length(shipped, v, j)
    assert 0.15 <= length <= 0.23
    if beta0 == 0:
        assert 0.18 <= length <= 0.19


@pytest.mark.parametrize("i", range(10))
def test_shape_extremes_stay_hands(shipped, i):
    v0 = shipped["v_template"].astype(np.float64)
    f = shipped["faces"]
    n0 = np.cross(v0[f[:, 1]] - v0[f[:, 0]], v0[f[:, 2]] - v0[f[:, 0]])
    for s in (-3.0, 3.0):
        betas = np.zeros(10)
        betas[i] = s
        v, j = _pose(shipped, betas=betas)
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        assert np.all(np.einsum("ij,ij->i", n, n0) > 0)  # no inverted face
        assert 0.15 <= _hand_length(shipped, v, j) <= 0.23


def test_fingertips_at_distal_ends(shipped):
    v = shipped["v_template"].astype(np.float64)
    w = shipped["weights"]
    j = shipped["J"].astype(np.float64)
    for k, f in enumerate(TIP_FINGERS):
        last = oh.FINGER_JOINTS[f][2]
        tip = v[shipped["tip_vertex_ids"][k]]
        u = (tip - j[last]) / np.linalg.norm(tip - j[last])
        mine = w[:, last] > 0.5
        assert ((v[mine] - j[last]) @ u).max() <= (tip - j[last]) @ u + 1e-4  # the most distal one


def test_pose_components_and_library(shipped):
    c = shipped["hands_components"].astype(np.float64)
    assert np.abs(c @ c.T - np.eye(45)).max() < 1e-5
    std = shipped["hands_std"]
    assert np.all(np.diff(std) <= 1e-7) and std[0] > 0
    meta = json.loads(str(shipped["meta"]))
    axes = np.array(meta["joint_axes"])  # (15, 3, 3)
    lim = np.array(meta["joint_limits_deg"])
    ang = np.degrees(np.einsum("pjl,jkl->pjk", shipped["pose_library"].reshape(-1, 15, 3), axes))
    assert np.all(ang >= lim[..., 0] - 0.01) and np.all(ang <= lim[..., 1] + 0.01)
    assert len(meta["pose_names"]) == len(shipped["pose_library"])
    # hands_mean is a relaxed hand: fingers flexed 10..60 deg at MCP and PIP (cf. MANO's mean).
    mean = np.degrees(np.einsum("jl,jkl->jk", shipped["hands_mean"].reshape(15, 3), axes))
    assert np.all((mean[:12:3, 0] > 10) & (mean[:12:3, 0] < 60))
    # Positive z-rotation of the index MCP flexes toward the palm (-y), as in MANO.
    aa = np.zeros(45)
    aa[2] = 1.0
    v, j = _pose(shipped, aa)
    assert j[3, 1] < shipped["J"][3, 1] - 0.01


def test_rebuild_matches_shipped(built):
    """Integers and meta bit for bit; float arrays within one float32 step (see asset_difference)."""
    diff = oh.asset_difference(built, oh.load_asset())
    assert set(diff) == set(oh.ASSET_SHAPES)
    for k, ulps in diff.items():
        assert ulps <= (1.0 if built[k].dtype == np.float32 else 0.0), (k, ulps)
    assert oh.ASSET_PATH.stat().st_size < 1.5e6


# Each rebuild runs in its own process under another BLAS kernel (OPENBLAS_CORETYPE: FMA or not,
# AVX2/AVX/SSE3 widths), thread count, numpy SIMD level and torch CPU capability. Before the pose
# prior used fixed-order arithmetic, Haswell vs Prescott differed by 2.4e-4 in hands_components.
_REBUILD = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from handlib import open_hand
open_hand.save_asset(open_hand.build_open_hand(), sys.argv[1])
"""
_VARIANTS = [
    {"OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
     "ATEN_CPU_CAPABILITY": "default", "torch_threads": "1"},
    {"OPENBLAS_CORETYPE": "Sandybridge", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
     "NPY_DISABLE_CPU_FEATURES": "X86_V3", "torch_threads": "2"},
    {"OPENBLAS_CORETYPE": "Prescott", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
     "ATEN_CPU_CAPABILITY": "avx2", "torch_threads": "1"},
]


def test_rebuild_is_bit_identical_across_kernels_and_threads(built, tmp_path):
    import os
    import subprocess
    import sys

    procs = []
    for i, var in enumerate(_VARIANTS):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env.update({k: v for k, v in var.items() if k != "torch_threads"})
        out = tmp_path / f"rebuild{i}.npz"
        cmd = [sys.executable, "-c", _REBUILD, str(out), var["torch_threads"]]
        procs.append((out, var, subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)))
    here = tmp_path / "here.npz"
    oh.save_asset(built, here)
    for out, var, proc in procs:
        assert proc.wait(timeout=600) == 0, (var, proc.stderr.read()[-2000:])
        assert out.read_bytes() == here.read_bytes(), (var, oh.asset_difference(built, oh.load_asset(out)))


def test_asset_difference_counts_float32_steps(built):
    assert all(v == 0.0 for v in oh.asset_difference(built, built).values())
    bumped = dict(built, hands_mean=np.nextafter(built["hands_mean"], np.float32(np.inf)))
    assert oh.asset_difference(built, bumped)["hands_mean"] == pytest.approx(1.0, abs=1e-6)
    assert oh.asset_difference(built, dict(built, faces=built["faces"][::-1]))["faces"] == np.inf
    no_meta = {k: v for k, v in built.items() if k != "meta"}
    assert oh.asset_difference(built, no_meta)["meta"] == np.inf


def test_load_asset_errors_name_file_and_key(shipped, tmp_path):
    broken = {k: v for k, v in shipped.items() if k != "weights"}
    path = tmp_path / "missing.npz"
    oh.save_asset(broken, path)
    with pytest.raises(KeyError, match=r"missing\.npz.*'weights'"):
        oh.load_asset(path)
    wrong = dict(shipped, J_regressor=shipped["J_regressor"][:, :-1])
    path = tmp_path / "wrong.npz"
    oh.save_asset(wrong, path)
    with pytest.raises(ValueError, match=r"wrong\.npz.*'J_regressor'"):
        oh.load_asset(path)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        oh.load_asset(tmp_path / "nope.npz")
