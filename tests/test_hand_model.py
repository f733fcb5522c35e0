"""Hand model: LBS against smplx, the safe MANO loader, and the HandModel contract."""
import pickle
import warnings

import numpy as np
import pytest
import smplx
import torch
from smplx.lbs import lbs as smplx_lbs

from handlib import fixtures
from handlib.hand_model import (
    H_DIM,
    HandModel,
    fix_left_shapedirs,
    identity_h,
    lbs,
    load_mano_pkl,
    mirror_arrays,
    pack_h,
    rigid_transform,
    tree_levels,
    unpack_h,
)
from handlib.rotations import axis_angle_to_quaternion
from handlib.skeleton import MANO_PARENTS

F64 = torch.float64


def load_asset():
    from handlib.open_hand import load_asset as load

    return load()


def _torch_model(arrays, dtype=F64):
    """smplx-layout tensors from MANO-pickle-layout or asset arrays."""
    V = arrays["v_template"].shape[0]
    posedirs = arrays["posedirs"]
    if posedirs.ndim == 3:  # pickle layout (V, 3, P)
        posedirs = posedirs.reshape(V * 3, -1).T
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
    return dict(v_template=t(arrays["v_template"]), shapedirs=t(arrays["shapedirs"]),
                posedirs=t(posedirs), J_regressor=t(arrays["J_regressor"]),
                parents=torch.tensor(MANO_PARENTS), lbs_weights=t(arrays["weights"]))


@pytest.fixture(scope="module")
def mano_arrays():
    return fixtures.random_mano_arrays(seed=1)


@pytest.fixture(scope="module")
def openhand():
    return HandModel(dtype=F64)


# -------------------------------------------------------------------------------- LBS ---------
@pytest.mark.parametrize("pose2rot", [True, False])
@pytest.mark.parametrize("source", ["random_mano", "openhand"])
def test_lbs_equals_smplx(source, pose2rot, mano_arrays):
    arrays = mano_arrays if source == "random_mano" else load_asset()
    m = _torch_model(arrays)
    g = torch.Generator().manual_seed(0)
    for B in (1, 5):
        betas = torch.randn(B, 10, generator=g, dtype=F64)
        pose = torch.randn(B, 48, generator=g, dtype=F64) * 0.8
        if not pose2rot:
            from handlib.rotations import axis_angle_to_matrix
            pose = axis_angle_to_matrix(pose.reshape(B, 16, 3), eps=0.0)  # (B, 16, 3, 3)
        v, j = lbs(betas, pose, **m, pose2rot=pose2rot)
        v_ref, j_ref = smplx_lbs(betas, pose, **m, pose2rot=pose2rot)
        assert v.shape == (B, arrays["v_template"].shape[0], 3) and j.shape == (B, 16, 3)
        assert (v - v_ref).abs().max() <= 1e-10
        assert (j - j_ref).abs().max() <= 1e-10


def test_lbs_gradients_equal_smplx(mano_arrays):
    m = _torch_model(mano_arrays)
    m["lbs_weights"].requires_grad_(True)
    m["v_template"].requires_grad_(True)
    betas = torch.randn(3, 10, dtype=F64, requires_grad=True)
    pose = (torch.randn(3, 48, dtype=F64) * 0.5).requires_grad_(True)
    probe_v = torch.randn(3, 778, 3, dtype=F64)
    probe_j = torch.randn(3, 16, 3, dtype=F64)
    grads = []
    for fn in (lbs, smplx_lbs):
        v, j = fn(betas, pose, **m)
        inputs = (betas, pose, m["lbs_weights"], m["v_template"])
        grads.append(torch.autograd.grad((v * probe_v).sum() + (j * probe_j).sum(), inputs))
    for ours, ref in zip(*grads):
        assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("broadcast_betas,B", [(False, 3), (True, 3), (False, 12)])
def test_fused_path_gradients_equal_smplx(mano_arrays, broadcast_betas, B):
    """Only β and θ need gradients: lbs runs as one fused node; its gradients equal smplx's (joints
    and ∂β come from the cached joint basis, whatever B)."""
    m = _torch_model(mano_arrays)
    betas = torch.randn(1 if broadcast_betas else B, 10, dtype=F64, requires_grad=True)
    pose = (torch.randn(B, 48, dtype=F64) * 0.5).requires_grad_(True)
    probe_v, probe_j = torch.randn(B, 778, 3, dtype=F64), torch.randn(B, 16, 3, dtype=F64)
    v, j = lbs(betas, pose, **m)
    assert type(v.grad_fn).__name__.startswith("_LBS")
    ours = torch.autograd.grad((v * probe_v).sum() + (j * probe_j).sum(), (betas, pose))
    v_ref, j_ref = smplx_lbs(betas.expand(B, -1), pose, **m)
    ref = torch.autograd.grad((v_ref * probe_v).sum() + (j_ref * probe_j).sum(), (betas, pose))
    assert (v - v_ref).abs().max() <= 1e-10
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)
    # all-zero pose blend shapes skipped (posedirs=None) give the same gradients as zeros
    m0 = dict(m, posedirs=torch.zeros_like(m["posedirs"]))
    g_zero = torch.autograd.grad(lbs(betas, pose, **m0)[0].sum(), (betas, pose))
    g_none = torch.autograd.grad(lbs(betas, pose, **dict(m, posedirs=None))[0].sum(), (betas, pose))
    for a, b in zip(g_zero, g_none):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_fused_path_gradcheck_float64():
    rng = np.random.default_rng(4)
    V, J = 9, 4
    parents = torch.tensor([-1, 0, 1, 0])
    W = torch.tensor(rng.random((V, J)), dtype=F64)
    W = W / W.sum(1, keepdim=True)
    args = [torch.tensor(x, dtype=F64) for x in (rng.normal(size=(V, 3)), rng.normal(size=(V, 3, 2)) * 0.1,
                                                  rng.normal(size=((J - 1) * 9, V * 3)) * 0.1,
                                                  rng.random((J, V)))]
    betas = torch.randn(2, 2, dtype=F64, requires_grad=True)
    pose = (torch.randn(2, J * 3, dtype=F64) * 0.7).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda b, p: lbs(b, p, *args, parents, W), (betas, pose))


def test_lbs_gradcheck_float64():
    rng = np.random.default_rng(3)
    V, J = 9, 4
    parents = torch.tensor([-1, 0, 1, 0])
    W = torch.tensor(rng.random((V, J)), dtype=F64)
    W = (W / W.sum(1, keepdim=True)).requires_grad_(True)
    vt = torch.tensor(rng.normal(size=(V, 3)), dtype=F64, requires_grad=True)
    sd = torch.tensor(rng.normal(size=(V, 3, 2)) * 0.1, dtype=F64)
    pd = torch.tensor(rng.normal(size=((J - 1) * 9, V * 3)) * 0.1, dtype=F64)
    Jr = torch.tensor(rng.random((J, V)), dtype=F64)
    betas = torch.randn(2, 2, dtype=F64, requires_grad=True)
    pose = (torch.randn(2, J * 3, dtype=F64) * 0.7).requires_grad_(True)

    def f(betas, pose, vt, W):
        return lbs(betas, pose, vt, sd, pd, Jr, parents, W)

    assert torch.autograd.gradcheck(f, (betas, pose, vt, W))


def test_rigid_transform_gradcheck_float64():
    """The hand-derived backward of the batched chain, on a small unbalanced tree."""
    parents = torch.tensor([-1, 0, 1, 2, 0, 4, 1])
    rot = torch.linalg.qr(torch.randn(2, 7, 3, 3, dtype=F64))[0].requires_grad_(True)
    joints = torch.randn(2, 7, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r, j: rigid_transform(r, j, parents), (rot, joints))


def test_posedirs_none_equals_zero(mano_arrays):
    m = _torch_model(mano_arrays)
    betas, pose = torch.randn(2, 10, dtype=F64), torch.randn(2, 48, dtype=F64)
    m0 = dict(m, posedirs=torch.zeros_like(m["posedirs"]))
    v0, _ = lbs(betas, pose, **m0)
    v1, _ = lbs(betas, pose, **dict(m, posedirs=None))
    assert torch.equal(v0, v1)


def test_tree_levels_and_errors():
    levels = tree_levels(MANO_PARENTS)
    assert [lv.tolist() for lv in levels] == [[0], [1, 4, 7, 10, 13], [2, 5, 8, 11, 14], [3, 6, 9, 12, 15]]
    with pytest.raises(ValueError, match="parents"):
        tree_levels([-1, 2, 0])
    # a deeper, unbalanced tree still matches a per-joint loop
    parents = torch.tensor([-1, 0, 1, 2, 0, 4, 1])
    rot = torch.linalg.qr(torch.randn(2, 7, 3, 3, dtype=F64))[0]  # orthonormal
    joints = torch.randn(2, 7, 3, dtype=F64)
    posed, A = rigid_transform(rot, joints, parents)
    G = [None] * 7
    for k in range(7):  # naive chain, one joint at a time
        T = torch.eye(4, dtype=F64).repeat(2, 1, 1)
        T[:, :3, :3] = rot[:, k]
        T[:, :3, 3] = joints[:, k] - (joints[:, parents[k]] if k else 0)
        G[k] = T if k == 0 else G[parents[k]] @ T
    for k in range(7):
        assert torch.allclose(posed[:, k], G[k][:, :3, 3], atol=1e-12)
        assert torch.allclose(A[:, k, :, :3], G[k][:, :3, :3], atol=1e-12)


# ------------------------------------------------------------------------- MANO pickle --------
@pytest.mark.parametrize("python2", [True, False])
def test_mano_pickle_loads_without_chumpy(tmp_path, mano_arrays, python2):
    path = fixtures.write_mano_pkl(tmp_path / "MANO_RIGHT.pkl", mano_arrays, python2=python2)
    assert "chumpy" not in __import__("sys").modules
    a = load_mano_pkl(path)
    assert np.array_equal(a["shapedirs"], mano_arrays["shapedirs"])
    assert np.array_equal(a["J_regressor"], mano_arrays["J_regressor"])
    assert np.array_equal(a["posedirs"], mano_arrays["posedirs"].reshape(-1, 135).T)
    assert a["parents"].tolist() == list(MANO_PARENTS)
    assert a["faces"].shape == (1538, 3)


@pytest.mark.parametrize("flat,use_pca", [(False, False), (True, False), (False, True)])
def test_from_mano_matches_smplx(tmp_path, mano_arrays, flat, use_pca):
    path = fixtures.write_mano_pkl(tmp_path / "MANO_RIGHT.pkl", mano_arrays)
    ours = HandModel.from_mano(path, flat_hand_mean=flat, use_pca=use_pca, num_pca_comps=6, dtype=F64)
    with fixtures.fake_chumpy(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smplx.MANO(str(path), is_rhand=True, use_pca=use_pca, num_pca_comps=6,
                         flat_hand_mean=flat, dtype=F64)
    B = 4
    g = torch.Generator().manual_seed(5)
    pose = torch.randn(B, 6 if use_pca else 45, generator=g, dtype=F64) * 0.5
    betas = torch.randn(B, 10, generator=g, dtype=F64)
    aa = torch.randn(B, 3, generator=g, dtype=F64)
    transl = torch.randn(B, 3, generator=g, dtype=F64) * 0.1
    out_ref = ref(betas=betas, global_orient=aa, hand_pose=pose, transl=transl)
    # MANO rotates about the wrist joint J0(β) and then adds transl; handlib's trans is the wrist.
    rest = ours(pose=pose, betas=betas)
    out = ours(pose=pose, betas=betas, rot=axis_angle_to_quaternion(aa),
               trans=rest.joints16[:, 0] + transl)
    # smplx.MANO stores the model arrays through float32 (its ``to_np`` default) even with
    # dtype=float64, so the two agree to float32 resolution (~1e-8 m here); the exact 1e-10
    # equality of the LBS itself is test_lbs_equals_smplx.
    assert torch.allclose(out.verts, out_ref.vertices, atol=5e-8)
    assert torch.allclose(out.joints16, out_ref.joints[:, :16], atol=5e-8)
    # tips follow the manopth convention
    assert torch.allclose(out.joints[:, 4], out.verts[:, 745])


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"MANO_RIGHT\.pkl.*refusing.*system"):
        load_mano_pkl(path)
    assert not marker.exists()
    # the same through eval / builtins
    path.write_bytes(b"cbuiltins\neval\n(Vprint(1)\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_mano_pkl(path)


def test_mano_pickle_errors_name_file_and_key(tmp_path, mano_arrays):
    broken = dict(mano_arrays)
    del broken["weights"]
    path = fixtures.write_mano_pkl(tmp_path / "MANO_RIGHT.pkl", broken)
    with pytest.raises(KeyError, match=r"MANO_RIGHT\.pkl.*weights"):
        load_mano_pkl(path)
    bad = dict(mano_arrays, weights=mano_arrays["weights"][:-1])
    path = fixtures.write_mano_pkl(tmp_path / "MANO_RIGHT.pkl", bad)
    with pytest.raises(ValueError, match=r"MANO_RIGHT\.pkl.*'weights'.*shape"):
        load_mano_pkl(path)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.pkl"):
        load_mano_pkl(tmp_path / "junk.pkl")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mano_pkl(tmp_path / "nowhere.pkl")


def test_left_hand_shapedirs_fix(tmp_path):
    right = fixtures.random_mano_arrays(seed=2)
    left_ok = mirror_arrays({**right, "posedirs": right["posedirs"].reshape(778 * 3, -1).T,
                             "faces": right["f"]})
    left_file = dict(right, v_template=left_ok["v_template"], f=left_ok["faces"])
    # The known bug: MANO_LEFT.pkl's shapedirs keep the right hand's x component.
    left_bug = dict(left_file, shapedirs=right["shapedirs"].copy())
    fixtures.write_mano_pkl(tmp_path / "MANO_RIGHT.pkl", right)
    fixtures.write_mano_pkl(tmp_path / "MANO_LEFT.pkl", left_bug)
    model = HandModel.from_mano(tmp_path / "MANO_LEFT.pkl", dtype=F64)
    assert model.side == "left"
    assert np.allclose(model.shapedirs.numpy(), left_ok["shapedirs"])
    # without the right file beside it, the geometric check fixes it too
    alone = tmp_path / "alone"
    alone.mkdir()
    fixtures.write_mano_pkl(alone / "MANO_LEFT.pkl", left_bug)
    model = HandModel.from_mano(alone, side="left", dtype=F64)
    assert np.allclose(model.shapedirs.numpy(), left_ok["shapedirs"])
    # a correct left file is left alone
    a = {"v_template": left_ok["v_template"], "shapedirs": left_ok["shapedirs"].copy()}
    assert not fix_left_shapedirs(a)
    assert np.array_equal(a["shapedirs"], left_ok["shapedirs"])


# ---------------------------------------------------------------------------- HandModel -------
def test_handmodel_contract(openhand):
    m = openhand
    V = m.num_verts
    assert m.v_template.shape == (V, 3) and m.shapedirs.shape == (V, 3, 10)
    assert m.posedirs.shape == (135, V * 3) and m.J_regressor.shape == (16, V)
    assert m.lbs_weights.shape == (V, 16) and m.parents.tolist() == list(MANO_PARENTS)
    assert m.faces.shape[1] == 3 and m.tip_vertex_ids.shape == (5,)
    out = m(pose=torch.zeros(2, 45, dtype=F64))
    assert out.verts.shape == (2, V, 3) and out.joints.shape == (2, 21, 3)
    assert torch.allclose(out.joints[:, 8], out.verts[:, m.tip_vertex_ids[1]])  # index tip
    assert torch.allclose(out.joints[:, 9], out.joints16[:, 4])  # middle MCP = MANO middle1
    with pytest.raises(ValueError, match="pose"):
        m(pose=torch.zeros(2, 44, dtype=F64))
    with pytest.raises(ValueError, match="rot"):
        m(pose=torch.zeros(2, 45, dtype=F64), rot=torch.zeros(3, 4, dtype=F64))


def test_h_packing_and_placement(openhand):
    m = openhand
    g = torch.Generator().manual_seed(0)
    B = 3
    q = torch.randn(B, 4, generator=g, dtype=F64)
    pose = torch.randn(B, 45, generator=g, dtype=F64) * 0.3
    betas = torch.randn(B, 10, generator=g, dtype=F64)
    s = torch.rand(B, 1, generator=g, dtype=F64) + 0.5
    t = torch.randn(B, 3, generator=g, dtype=F64)
    h = pack_h(q, pose, betas, s, t)
    assert h.shape == (B, H_DIM)
    p = unpack_h(h)
    assert torch.equal(p.rot, q) and torch.equal(p.trans, t) and torch.equal(p.scale, s)
    out = m.from_h(h)
    local = m(pose=pose, betas=betas)
    # the wrist lands on t; distances scale by s; the shape is rigidly rotated
    assert torch.allclose(out.joints[:, 0], t, atol=1e-12)
    d = lambda x: torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # noqa: E731
    assert torch.allclose(d(out.verts), d(local.verts) * s[:, :, None], atol=1e-10)
    ident = m.from_h(identity_h(1, trans=(0.1, 0.2, 0.6), dtype=F64))
    rest = m(pose=torch.zeros(1, 45, dtype=F64))
    assert torch.allclose(ident.verts - ident.joints[:, :1], rest.verts - rest.joints[:, :1], atol=1e-12)
    with pytest.raises(ValueError, match="h"):
        m.from_h(torch.zeros(2, 62, dtype=F64))


def test_left_openhand_is_the_mirror(openhand):
    left = HandModel(side="left", dtype=F64)
    pose = torch.randn(2, 45, dtype=F64) * 0.4
    betas = torch.randn(2, 10, dtype=F64)
    r = openhand(pose=pose, betas=betas)
    mirrored = (pose.reshape(2, 15, 3) * torch.tensor([1.0, -1.0, -1.0], dtype=F64)).reshape(2, 45)
    lft = left(pose=mirrored, betas=betas)
    flip = torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    # smplx's Rodrigues guard adds 1e-8 to every component, which is not mirror-symmetric: the
    # mirrored rotation differs by ~1e-8 rad (~1e-9 m). Rotation matrices given directly mirror exactly.
    assert torch.allclose(lft.verts, r.verts * flip, atol=1e-8)
    assert torch.allclose(lft.joints, r.joints * flip, atol=1e-8)
    # mirrored faces still face outwards: signed volume keeps its sign
    def volume(v, f):
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        return (a * torch.cross(b, c, dim=-1)).sum() / 6
    assert torch.sign(volume(lft.verts[0], left.faces)) == torch.sign(volume(r.verts[0], openhand.faces))


def test_pca_and_flat_conventions(openhand):
    arrays = load_asset()
    pca = HandModel(use_pca=True, num_pca_comps=45, dtype=F64)
    flat = HandModel(flat_hand_mean=True, dtype=F64)
    pose = torch.randn(2, 45, dtype=F64) * 0.3
    # components are stored as float32 (orthonormal to ~1e-7), so invert them exactly
    coeffs = torch.linalg.solve(pca.hands_components.T, pose.T).T
    assert torch.allclose(pca(pose=coeffs).verts, openhand(pose=pose).verts, atol=1e-10)
    mean = torch.as_tensor(arrays["hands_mean"], dtype=F64)[None]
    assert torch.allclose(flat(pose=mean).verts, openhand().verts, atol=1e-12)
    with pytest.raises(ValueError, match="num_pca_comps"):
        HandModel(use_pca=True, num_pca_comps=0)


def test_level_plan_follows_the_parents_tensor():
    """The plan is cached per parents tensor, and an in-place edit of that tensor is noticed."""
    from handlib.lbs import _level_plan

    parents = torch.tensor(MANO_PARENTS)
    assert _level_plan(parents) is _level_plan(parents)
    before = _level_plan(parents)
    parents[3] = 1  # index3's parent becomes index1: a different tree
    after = _level_plan(parents)
    assert after is not before and after[1] != before[1]  # level sizes [1, 5, 5, 5] → [1, 5, 6, 4]


def test_level_plan_gathers_only_where_the_tree_needs_it():
    """MANO's finger chains need no gather between levels (the finger roots broadcast from the
    wrist, each later level follows the one above in order); an irregular tree gathers."""
    from handlib.lbs import _level_plan

    order, sizes, links, inv = _level_plan(torch.tensor(MANO_PARENTS))[:4]
    assert order.tolist() == [0, 1, 4, 7, 10, 13, 2, 5, 8, 11, 14, 3, 6, 9, 12, 15]
    assert sizes == [1, 5, 5, 5] and links == [None, None, None] and torch.equal(order[inv], torch.arange(16))
    order, sizes, links, inv = _level_plan(torch.tensor([-1, 0, 1, 2, 0, 4, 1]))[:4]  # the chain test's
    assert sizes == [1, 2, 3, 1] and links[0] is None and links[1].tolist() == [0, 1, 0]
    assert links[2].tolist() == [0]
    chain = _level_plan(torch.tensor([-1, 0, 1]))
    assert chain[0] is None and chain[3] is None  # already in level order: no permutation at all


def test_caches_made_in_inference_mode_still_serve_autograd(mano_arrays):
    """The fused path runs under inference mode internally, and users may call the model under it
    first: cached constants and level plans must still work in autograd afterwards, and what
    leaves the fused path (outputs, gradients) must be ordinary tensors."""
    import importlib

    from handlib import rotations

    lbs_module = importlib.import_module("handlib.lbs")  # handlib.lbs is also the function's name

    lbs_module._PLAN_CACHE.clear()
    lbs_module._PLAN_OF_TENSOR.clear()
    rotations._CONSTS.clear()
    m = _torch_model(mano_arrays)
    betas, pose = torch.randn(2, 10, dtype=F64), torch.randn(2, 48, dtype=F64)
    with torch.inference_mode():
        v_inf, _ = lbs(betas, pose, **m)  # fills the caches inside inference mode
    b, p = betas.clone().requires_grad_(True), pose.clone().requires_grad_(True)
    v, j = lbs(b, p, **m)  # fused path
    assert not v.is_inference() and not j.is_inference() and torch.equal(v, v_inf)
    (v.square().sum() + j.sum()).backward()
    assert not b.grad.is_inference() and not p.grad.is_inference()
    b.grad.add_(1.0)  # an in-place update of .grad outside inference mode must be allowed
    m_grad = dict(m, lbs_weights=m["lbs_weights"].clone().requires_grad_(True))  # modular path
    v2, _ = lbs(betas, pose.requires_grad_(True), **m_grad)
    v2.sum().backward()
    assert m_grad["lbs_weights"].grad is not None and torch.allclose(v2, v)


def test_model_basis_cache_follows_the_arrays(mano_arrays):
    """The fused path caches the joint shape basis per set of model arrays: an in-place edit of
    an array is seen by the next call (it equals smplx on the edited arrays), an edit between
    forward and backward is refused, and arrays made under inference mode still work."""
    m = _torch_model(mano_arrays)
    betas, pose = torch.randn(2, 10, dtype=F64), torch.randn(2, 48, dtype=F64)
    lbs(betas, pose, **m)
    m["shapedirs"].mul_(1.5)  # same tensor, new values
    m["J_regressor"][:, :5] *= 0.5
    ours, ref = lbs(betas, pose, **m), smplx_lbs(betas, pose, **m)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(ours, ref))
    b = betas.clone().requires_grad_(True)
    v, _ = lbs(b, pose, **m)
    m["shapedirs"].mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        v.sum().backward()
    with torch.inference_mode():
        m_inf = {k: t.clone() for k, t in m.items()}
        v_inf, _ = lbs(betas, pose, **m_inf)
    assert torch.allclose(v_inf, smplx_lbs(betas, pose, **m_inf)[0], atol=1e-10)


def test_tensor_keyed_caches_stay_bounded(mano_arrays):
    """Caches keyed on tensor identity keep at most _CACHE_SIZE entries however many models a
    process makes, and an evicted model still gives the right answer."""
    import importlib

    lbs_module = importlib.import_module("handlib.lbs")
    m = _torch_model(mano_arrays)
    betas, pose = torch.randn(1, 10, dtype=F64), torch.randn(1, 48, dtype=F64)
    first = {k: t.clone() for k, t in m.items()}
    for _ in range(3 * lbs_module._CACHE_SIZE):
        lbs(betas, pose, **{k: t.clone() for k, t in m.items()})
    assert len(lbs_module._PLAN_OF_TENSOR) <= lbs_module._CACHE_SIZE
    assert len(lbs_module._BASIS_CACHE) <= lbs_module._CACHE_SIZE
    assert torch.allclose(lbs(betas, pose, **first)[0], smplx_lbs(betas, pose, **first)[0], atol=1e-10)
