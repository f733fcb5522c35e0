"""The hand model of Sec. 3.2: MANO's linear blend skinning with a 63-d parameter h.

``h = [q (4), θ (45), β (10), s (1), t (3)]``: a unit quaternion q for the global rotation, 45
axis-angle finger-joint rotations θ, 10 shape coefficients β, a scale s and a translation t
(Baek et al. 2019, Sec. 3.2). The mesh is

    M(h) = s · R(q) · (LBS(θ, β) − j_wrist) + t,

so ``t`` is the wrist position in camera space (metres). ``LBS`` is MANO's (Romero et al. 2017):

1. shape blend:  v_shaped = v_template + shapedirs · β
2. joints:       J = J_regressor · v_shaped                             (16 joints)
3. pose blend:   v_posed = v_shaped + posedirs · (R(θ) − I)
4. chain:        G_k = G_parent(k) · [R_k | J_k − J_parent(k)]           (batched by tree depth)
5. skinning:     v = Σ_k w_k · (G_k − [0 | G_k J_k]) · v_posed

Two assets provide the arrays: OpenHand (``handlib.open_hand``, the open default) and the
official MANO pickle (``HandModel.from_mano``), loaded without chumpy and without plain
``pickle.load`` (:func:`load_mano_pkl`).
"""
from __future__ import annotations

import dataclasses
import os
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import safe_pickle, skeleton
from .rotations import (
    SMPLX_EPS,
    _constants,
    _rodrigues,
    _rodrigues_backward,
    axis_angle_to_matrix,
    quaternion_to_matrix,
)
from .safe_pickle import UnsafePickleError  # noqa: F401  (re-exported: the loader's refusal error)

H_SLICES = {"rot": slice(0, 4), "pose": slice(4, 49), "betas": slice(49, 59),
            "scale": slice(59, 60), "trans": slice(60, 63)}
H_DIM = 63

# Fingertip vertex conventions for the official MANO topology (thumb, index, middle, ring, pinky).
# manopth (Hasson et al. 2019) uses 745, 317, 444, 556, 673; its left hand uses 445 for the middle
# finger. smplx uses 744, 320, 443, 554, 671. See ../shared/hand-anatomy.md §5.
MANO_TIP_CONVENTIONS = {
    "manopth": {"right": (745, 317, 444, 556, 673), "left": (745, 317, 445, 556, 673)},
    "smplx": {"right": (744, 320, 443, 554, 671), "left": (744, 320, 443, 554, 671)},
}


# ----------------------------------------------------------------------------------------------
# Linear blend skinning (pure functions, same signature and semantics as smplx.lbs)
# ----------------------------------------------------------------------------------------------
def blend_shapes(betas: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """Shape blend shapes. betas (B, L), shapedirs (V, 3, L) → offsets (B, V, 3)."""
    V, C, L = shapedirs.shape
    return (betas @ shapedirs.reshape(V * C, L).T).reshape(-1, V, C)


def vertices2joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joint regression. J_regressor (J, V), vertices (B, V, 3) → joints (B, J, 3)."""
    return torch.einsum("jv,bvc->bjc", J_regressor, vertices)


def tree_levels(parents) -> list[np.ndarray]:
    """Group joints by depth in the kinematic tree: MANO's 16 joints form 4 levels.

    Args:
        parents: (J,) parent index per joint, root −1, parents listed before children.
    Returns:
        A list of int arrays, level 0 = [root], level d = joints at depth d.
    """
    parents = np.asarray(parents, dtype=np.int64)
    if parents[0] != -1 or np.any(parents[1:] >= np.arange(1, len(parents))) or np.any(parents[1:] < 0):
        raise ValueError(f"parents: expected root −1 first and each parent before its child, got "
                         f"{parents.tolist()}")
    depth = np.zeros(len(parents), dtype=np.int64)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [np.flatnonzero(depth == d) for d in range(depth.max() + 1)]


_PLAN_CACHE: dict[tuple, tuple] = {}  # (tree, device) → plan
_PLAN_OF_TENSOR: dict[int, tuple] = {}  # id(parents) → (weakref, version, plan)


def _level_plan(parents: torch.Tensor) -> tuple:
    """Joints in level order, each level's slice in it with its parents' positions (also in level
    order), the permutation back to joint order, and a per-dtype constant cache. Cached per tree,
    and per ``parents`` tensor so that repeated calls never read it back (a sync on CUDA)."""
    hit = _PLAN_OF_TENSOR.get(id(parents))
    if hit is not None and hit[0]() is parents and hit[1] == parents._version:
        return hit[2]
    key = (tuple(parents.tolist()), str(parents.device))
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        par = np.asarray(key[0])
        levels = tree_levels(par)
        order = np.concatenate(levels)
        pos_of = np.empty_like(order)
        pos_of[order] = np.arange(len(order))
        starts = np.cumsum([0] + [len(lv) for lv in levels])
        dev = parents.device
        steps = [(int(starts[d]), int(starts[d + 1]), int(starts[d - 1]), int(starts[d]),
                  torch.as_tensor(pos_of[par[levels[d]]] - starts[d - 1], device=dev))
                 for d in range(1, len(levels))]
        parent_pos = torch.as_tensor(pos_of[np.maximum(par[order], 0)], device=dev)  # level order; root → 0
        select = np.zeros((len(par), len(par)))  # row k picks parent(k); the root's row is zero
        select[np.arange(1, len(par)), par[1:]] = 1.0
        plan = (torch.as_tensor(order, device=dev), steps, torch.as_tensor(np.argsort(order), device=dev),
                torch.as_tensor(select, device=dev), parent_pos, {})
        _PLAN_CACHE[key] = plan
    _PLAN_OF_TENSOR[id(parents)] = (weakref.ref(parents), parents._version, plan)
    return plan


class _ForwardKinematics(torch.autograd.Function):
    """Step 4 of LBS with a hand-derived backward, batched by tree depth.

    With local transforms L_k = [[R_k, J_k − J_p], [0, 1]] (4×4) and global ones G_k = [R^G_k | t^G_k]
    (3×4), each level is one product G_k = G_p L_k (root: G_0 = L_0's top rows). Outputs: posed
    joints t^G and A = [R^G | t^G − R^G J]. Backward walks the levels in reverse:
        ∂L_k = R^G_pᵀ ∂G_k   (top rows: [∂R_k | ∂rel_k]),
        ∂G_p += ∂G_k L_kᵀ    (= [∂R^G_k R_kᵀ + ∂t^G_k rel_kᵀ | ∂t^G_k], summed over children).
    """

    @staticmethod
    def forward(ctx, rot_mats, joints, plan):
        posed, A, saved = _fk_forward(rot_mats, joints, plan)
        ctx.plan = plan
        ctx.save_for_backward(*saved)
        return posed, A

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_posed, g_A):
        return (*_fk_backward(ctx.saved_tensors, ctx.plan, g_posed, g_A), None)


def _fk_forward(rot_mats, joints, plan):
    """Forward of :class:`_ForwardKinematics`: (posed joints, A, tensors for the backward)."""
    order, steps, inv, sel, bottom, _ = plan
    B, J = joints.shape[:2]
    rel = joints - sel @ joints  # (B, J, 3) J_k − J_parent(k); the root keeps J_0
    L = torch.cat([torch.cat([rot_mats, rel[..., None]], dim=-1), bottom.expand(B, J, 1, 4)],
                  dim=-2)[:, order]  # (B, J, 4, 4) in level order
    G = [L[:, :1, :3]]
    for start, end, _, _, pos in steps:
        G.append(G[-1][:, pos] @ L[:, start:end])  # (B, n, 3, 4)
    G_l = torch.cat(G, dim=1)
    Gj = G_l[:, inv]  # (B, J, 3, 4) joint order
    A = Gj.clone()
    A[..., 3] -= (Gj[..., :3] @ joints[..., None])[..., 0]
    return Gj[..., 3], A, (L, G_l, Gj, joints)


def _fk_backward(saved, plan, g_posed, g_A):
    """Backward of :class:`_ForwardKinematics`: (∂L/∂rot_mats, ∂L/∂joints)."""
    L, G_l, Gj, joints = saved
    order, steps, inv, sel, _, parent_pos = plan
    g_At = g_A[..., 3]  # (B, J, 3)
    gG = g_A.clone()
    gG[..., :3] -= g_At[..., :, None] * joints[..., None, :]  # from −R^G J
    gG[..., 3] += g_posed
    g_J = -(Gj[..., :3].transpose(-1, -2) @ g_At[..., None])[..., 0]
    gG = gG[:, order]
    for start, end, p_start, p_end, pos in reversed(steps):  # children before parents
        gG[:, p_start:p_end].index_add_(1, pos, gG[:, start:end] @ L[:, start:end].transpose(-1, -2))
    gL = G_l[:, parent_pos, :, :3].transpose(-1, -2) @ gG  # all levels at once: R^G_pᵀ ∂G_k
    gL[:, 0] = gG[:, 0]  # the root's local transform is its global one
    gL = gL[:, inv]
    g_rel = gL[..., 3]
    return gL[..., :3], g_J + g_rel - sel.T @ g_rel


def rigid_transform(rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor):
    """Forward kinematics, batched by tree depth: one matmul per level (MANO: 3), not per joint.

    Args:
        rot_mats: (B, J, 3, 3) local joint rotations.
        joints: (B, J, 3) rest joint locations.
        parents: (J,) long, root −1.
    Returns:
        posed_joints: (B, J, 3) joint locations after posing.
        rel_transforms: (B, J, 3, 4) [R_k | t_k − R_k J_k], the transform applied to a rest-pose
            point skinned to joint k (the top 3 rows of smplx's ``A``).
    """
    return _ForwardKinematics.apply(rot_mats, joints, _fk_plan(parents, joints.dtype))


def _fk_plan(parents: torch.Tensor, dtype) -> tuple:
    """The level plan with its per-dtype constants (parent selection matrix, homogeneous row)."""
    order, steps, inv, select, parent_pos, consts = _level_plan(parents)
    key = (dtype, parents.device)
    if key not in consts:
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, device=parents.device)
        consts[key] = (order, steps, inv, select.to(dtype), bottom, parent_pos)
    return consts[key]


class _Skin(torch.autograd.Function):
    """Step 5 of LBS: v = Σ_k w_k (R_k v_posed + t_k), with a hand-written backward.

    The blended transforms T = W·A form a (B, V, 12) tensor; autograd through the obvious
    expression writes it out whole and keeps it (plus broadcast products) for backward. Here the
    batch is processed in chunks small enough for T to stay in cache, the per-vertex 3×4 product
    is fused into ``addcmul_``, and backward recomputes T instead of storing it.
    """

    CACHE_FLOATS = 160_000  # ~640 kB of T per chunk (float32): fits in L2 on common CPUs
    KEEP_FLOATS = 1_000_000  # below this, forward keeps T for backward instead of recomputing it

    @staticmethod
    def _chunks(B: int, V: int):
        step = max(1, _Skin.CACHE_FLOATS // (12 * V))
        return [(s, min(B, s + step)) for s in range(0, B, step)]

    @staticmethod
    def forward(ctx, weights, A, v_posed):
        out, saved = _skin_forward(weights, A, v_posed)
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _skin_backward(ctx.saved_tensors, grad, *ctx.needs_input_grad)


def _skin_forward(weights, A, v_posed):
    """Forward of :class:`_Skin`: ((B, V, 3) vertices, tensors for the backward)."""
    B, J = A.shape[:2]
    V = weights.shape[0]
    At = A.reshape(B, J, 12).transpose(1, 2).reshape(B * 12, J)  # rows (b, i, j)
    vT = v_posed.transpose(1, 2)  # (B, 3, V), a view
    out = torch.empty(B, 3, V, dtype=v_posed.dtype, device=v_posed.device)
    for s, e in _Skin._chunks(B, V):
        T = (At[s * 12:e * 12] @ weights.T).reshape(e - s, 3, 4, V)  # blended [R | t]
        v, o = vT[s:e, None], out[s:e]  # (c, 1, 3, V), (c, 3, V)
        torch.mul(T[:, :, 0], v[:, :, 0], out=o)
        o.addcmul_(T[:, :, 1], v[:, :, 1]).addcmul_(T[:, :, 2], v[:, :, 2]).add_(T[:, :, 3])
    kept = T if B * 12 * V <= _Skin.KEEP_FLOATS and e - s == B else None  # one chunk: T is all
    return out.transpose(1, 2), (weights, At, v_posed, kept)


def _skin_backward(saved, grad, need_w: bool, need_A: bool, need_v: bool):
    """Backward of :class:`_Skin`: (∂L/∂weights, ∂L/∂A, ∂L/∂v_posed), None where not needed."""
    weights, At, v_posed, kept = saved
    B, V, J = v_posed.shape[0], weights.shape[0], weights.shape[1]
    gT = grad.transpose(1, 2)  # (B, 3, V)
    vT = v_posed.transpose(1, 2)
    g_At = torch.empty(B * 12, J, dtype=At.dtype, device=At.device) if need_A else None
    g_w = torch.zeros_like(weights) if need_w else None
    g_v = torch.empty(B, 3, V, dtype=v_posed.dtype, device=v_posed.device) if need_v else None
    for s, e in _Skin._chunks(B, V):
        g = gT[s:e]  # (c, 3, V)
        if need_A or need_w:
            # dL/dT[b, i, j, v] = g[b, i, v] · [v_posed; 1][b, j, v]
            dT = torch.empty(e - s, 3, 4, V, dtype=g.dtype, device=g.device)
            torch.mul(g[:, :, None], vT[s:e, None], out=dT[:, :, :3])
            dT[:, :, 3] = g
            dT = dT.reshape((e - s) * 12, V)
            if need_A:
                torch.mm(dT, weights, out=g_At[s * 12:e * 12])
            if need_w:
                g_w.addmm_(dT.T, At[s * 12:e * 12])
        if need_v:
            T = kept if kept is not None else (At[s * 12:e * 12] @ weights.T).reshape(e - s, 3, 4, V)
            gv = g_v[s:e]  # dL/dv[b, j, v] = Σ_i T[b, i, j, v] g[b, i, v]
            torch.mul(T[:, 0, :3], g[:, None, 0], out=gv)
            gv.addcmul_(T[:, 1, :3], g[:, None, 1]).addcmul_(T[:, 2, :3], g[:, None, 2])
    g_A = g_At.reshape(B, 12, J).transpose(1, 2).reshape(B, J, 3, 4) if need_A else None
    return g_w, g_A, (g_v.transpose(1, 2) if need_v else None)


def skin(lbs_weights: torch.Tensor, A: torch.Tensor, v_posed: torch.Tensor) -> torch.Tensor:
    """Blend per-joint transforms and apply them (LBS step 5).

    Args:
        lbs_weights: (V, J); A: (B, J, 3, 4) relative transforms; v_posed: (B, V, 3).
    Returns:
        (B, V, 3) skinned vertices.
    """
    return _Skin.apply(lbs_weights, A, v_posed)


class _LBS(torch.autograd.Function):
    """All of LBS as one graph node, for the common case where only β and θ need gradients.

    Forward runs steps 1–5 without recording a graph; backward chains the hand-derived backwards
    of skinning (:func:`_skin_backward`), the kinematic chain (:func:`_fk_backward`), the pose blend
    shapes (∂pose_feature = ∂v_posed · posedirsᵀ), joint regression (∂v_shaped += J_regressorᵀ ∂J),
    shape blend shapes (∂β = ∂v_shaped · shapedirs) and Rodrigues (``rotations._rodrigues_backward``).
    At batch 1 this replaces ~20 autograd nodes by one; the maths is the modular path's.
    """

    @staticmethod
    def forward(ctx, betas, pose, v_template, shapedirs, posedirs, J_regressor, lbs_weights, plan):
        B = max(betas.shape[0], pose.shape[0])
        V, C, L = shapedirs.shape
        v_shaped = v_template + blend_shapes(betas, shapedirs)  # 1.
        J, J_dirs = _regress_joints(betas, v_template, v_shaped, shapedirs, J_regressor)  # 2.
        R, angle, K, K2, sin, cos = _rodrigues(pose.reshape(B, -1, 3), SMPLX_EPS)
        v_posed = _pose_blend(R, v_shaped, posedirs)  # 3.
        posed, A, fk_saved = _fk_forward(R, J, plan)  # 4.
        verts, skin_saved = _skin_forward(lbs_weights, A, v_posed)  # 5.
        ctx.plan = plan
        ctx.save_for_backward(pose, angle, K, K2, sin, cos, shapedirs, posedirs, J_regressor, J_dirs,
                              *fk_saved, *skin_saved)
        return verts, posed

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_verts, g_posed):
        pose, angle, K, K2, sin, cos, shapedirs, posedirs, J_regressor, J_dirs, *rest = ctx.saved_tensors
        B = g_verts.shape[0]
        _, g_A, g_vposed = _skin_backward(rest[4:], g_verts, False, True, True)
        g_R, g_J = _fk_backward(rest[:4], ctx.plan, g_posed, g_A)
        if posedirs is not None:
            g_R[:, 1:] += (g_vposed.reshape(B, -1) @ posedirs.T).reshape(B, -1, 3, 3)
        L = shapedirs.shape[-1]
        if J_dirs is None:  # joints were regressed from the mesh
            g_betas = (g_vposed + J_regressor.T @ g_J).reshape(B, -1) @ shapedirs.reshape(-1, L)
        else:  # joints came from the pre-contracted basis
            g_betas = (g_vposed.reshape(B, -1) @ shapedirs.reshape(-1, L)
                       + g_J.reshape(B, -1) @ J_dirs.reshape(-1, L))
        g_pose = _rodrigues_backward(g_R, pose.reshape(B, -1, 3), SMPLX_EPS, angle, K, K2, sin,
                                     cos).reshape(B, -1)
        need = ctx.needs_input_grad
        return (g_betas if need[0] else None), (g_pose if need[1] else None), *[None] * 6


def _regress_joints(betas, v_template, v_shaped, shapedirs, J_regressor):
    """Step 2: ((B, J, 3) joints, the joint basis J_dirs (J, 3, L) or None).

    Joints are linear in β: for large batches regress the template and the basis once
    (J × V × 3L work) instead of every mesh (J × V × 3B)."""
    if v_template.dim() == 2 and v_shaped.shape[0] > shapedirs.shape[-1]:
        V, C, L = shapedirs.shape
        J_dirs = (J_regressor @ shapedirs.reshape(V, C * L)).reshape(-1, C, L)  # (J, 3, L)
        return (J_regressor @ v_template) + blend_shapes(betas, J_dirs), J_dirs
    return J_regressor @ v_shaped, None


def _pose_blend(rot_mats, v_shaped, posedirs):
    """Step 3: v_posed = v_shaped + posedirs · (R − I) over joints 1.. (skipped when None)."""
    if posedirs is None:
        return v_shaped
    B = rot_mats.shape[0]
    eye = _constants(rot_mats.dtype, rot_mats.device)[1]
    pose_feature = (rot_mats[:, 1:] - eye).reshape(B, -1)  # (B, P)
    return v_shaped + (pose_feature @ posedirs).reshape(B, -1, 3)


def lbs(betas: torch.Tensor, pose: torch.Tensor, v_template: torch.Tensor, shapedirs: torch.Tensor,
        posedirs: torch.Tensor | None, J_regressor: torch.Tensor, parents: torch.Tensor,
        lbs_weights: torch.Tensor, pose2rot: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear blend skinning with smplx's signature and semantics (``smplx.lbs.lbs``).

    Args:
        betas: (B, L) shape coefficients (a batch of 1 broadcasts, unlike smplx).
        pose: (B, J*3) axis-angle including the global rotation first, or with
            ``pose2rot=False`` (B, J, 3, 3) / (B, J*9) rotation matrices.
        v_template: (V, 3) or (B, V, 3) rest template.
        shapedirs: (V, 3, L) shape directions.
        posedirs: (P, V*3) pose blend shapes, P = (J−1)*9; None skips them (all-zero posedirs).
        J_regressor: (J, V) dense joint regressor.
        parents: (J,) long, root −1.
        lbs_weights: (V, J) skinning weights.
        pose2rot: whether ``pose`` is axis-angle.
    Returns:
        verts: (B, V, 3) posed vertices.
        joints: (B, J, 3) posed joints.
    """
    B = max(betas.shape[0], pose.shape[0])
    betas, pose = betas.expand(B, -1), pose.expand(B, *pose.shape[1:])  # a batch of 1 broadcasts
    models = (v_template, shapedirs, posedirs, J_regressor, lbs_weights)
    if pose2rot and v_template.dim() == 2 and not any(t is not None and t.requires_grad for t in models):
        # the common case (gradients for β and θ only): one fused graph node
        return _LBS.apply(betas, pose, v_template, shapedirs, posedirs, J_regressor, lbs_weights,
                          _fk_plan(parents, pose.dtype))
    v_shaped = v_template + blend_shapes(betas, shapedirs)  # 1. (B, V, 3)
    J = _regress_joints(betas, v_template, v_shaped, shapedirs, J_regressor)[0]  # 2. (B, J, 3)
    if pose2rot:
        rot_mats = axis_angle_to_matrix(pose.reshape(B, -1, 3))  # (B, J, 3, 3)
    else:
        rot_mats = pose.reshape(B, -1, 3, 3)
    v_posed = _pose_blend(rot_mats, v_shaped, posedirs)  # 3.
    posed_joints, A = rigid_transform(rot_mats, J, parents)  # 4. (B, J, 3), (B, J, 3, 4)
    return skin(lbs_weights, A, v_posed), posed_joints  # 5.


# ----------------------------------------------------------------------------------------------
# Official MANO pickles, read safely
# ----------------------------------------------------------------------------------------------
MANO_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
             "hands_components", "hands_mean")


def load_mano_pkl(path) -> dict[str, np.ndarray]:
    """Read an official MANO pickle (MANO_RIGHT.pkl / MANO_LEFT.pkl) without chumpy, safely.

    The official files are Python 2 protocol-2 pickles holding numpy arrays, a scipy.sparse
    ``J_regressor`` and chumpy ``Ch`` objects; a copy re-saved under Python 3 with protocol 2
    encodes raw bytes through ``_codecs.encode``, which is admitted too. Any other global (e.g.
    ``os.system``) is refused before it can run.

    Returns:
        dict with ``v_template (V,3)``, ``shapedirs (V,3,10)``, ``posedirs (P, V*3)`` (transposed
        from the file's (V,3,P) as smplx does), ``J_regressor (16,V)`` dense, ``weights (V,16)``,
        ``parents (16,)``, ``faces (F,3)``, ``hands_components (45,45)``, ``hands_mean (45,)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO model not found: {path} (see data_scripts/get_mano.md)")
    raw = safe_pickle.load(path, what="a MANO model")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of arrays, got {type(raw).__name__}")
    missing = [k for k in MANO_KEYS if k not in raw]
    if missing:
        raise KeyError(f"{path}: missing MANO keys {missing}")
    a = {k: safe_pickle.to_array(raw[k], k, str(path)) for k in MANO_KEYS}
    V = a["v_template"].shape[0]
    expect = {"v_template": (V, 3), "weights": (V, None), "f": (None, 3), "J_regressor": (None, V)}
    for k, shp in expect.items():
        if a[k].ndim != len(shp) or any(s is not None and s != d for s, d in zip(shp, a[k].shape)):
            raise ValueError(f"{path}: key {k!r} has shape {a[k].shape}, expected {shp}")
    posedirs = a["posedirs"]
    if posedirs.ndim != 3 or posedirs.shape[:2] != (V, 3):
        raise ValueError(f"{path}: key 'posedirs' has shape {posedirs.shape}, expected (V, 3, P)")
    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # the file stores the root's parent as 2**32 − 1
    return {
        "v_template": a["v_template"].astype(np.float64),
        "shapedirs": a["shapedirs"].astype(np.float64),
        "posedirs": posedirs.reshape(V * 3, -1).T.astype(np.float64),
        "J_regressor": a["J_regressor"].astype(np.float64),
        "weights": a["weights"].astype(np.float64),
        "parents": parents,
        "faces": a["f"].astype(np.int64),
        "hands_components": a["hands_components"].astype(np.float64),
        "hands_mean": a["hands_mean"].reshape(-1).astype(np.float64),
    }


def fix_left_shapedirs(arrays: dict, right: dict | None = None) -> bool:
    """The known MANO_LEFT.pkl bug: its shapedirs' x component was not mirrored.

    With the right model at hand, the classic check applies (left and right x components nearly
    equal ⇒ negate the left one). Without it, a geometric check: shape direction 0 grows the
    hand, so its x displacement must correlate positively with the template's x about its mean;
    a negative correlation means the x component has the wrong sign. Fixes ``arrays`` in place.

    Returns:
        True if the x component was negated.
    """
    sd = arrays["shapedirs"]
    if right is not None and right["shapedirs"].shape == sd.shape:
        broken = np.abs(sd[:, 0, :] - right["shapedirs"][:, 0, :]).sum() < 1.0
    else:
        x = arrays["v_template"][:, 0] - arrays["v_template"][:, 0].mean()
        broken = float(np.dot(x, sd[:, 0, 0])) < 0.0
    if broken:
        sd[:, 0, :] *= -1.0
    return bool(broken)


def mirror_arrays(arrays: dict) -> dict:
    """Mirror a right-hand model to a left hand (x → −x), keeping the joint order.

    The vertex positions, shape directions and pose blend shapes flip their x component, faces
    reverse their winding, and pose-space quantities transform as axis-angle under the
    reflection M = diag(−1, 1, 1): r → det(M)·M r = (x, −y, −z) (MANO's left ``hands_mean`` is the
    right one with y and z negated; ../shared/hand-anatomy.md §5).
    """
    out = dict(arrays)
    flip = np.array([-1.0, 1.0, 1.0])
    out["v_template"] = arrays["v_template"] * flip
    out["shapedirs"] = arrays["shapedirs"] * flip[None, :, None]
    V = arrays["v_template"].shape[0]
    P = arrays["posedirs"].shape[0]
    # pose feature (R − I)_{ik} of each joint transforms as s_i s_k with s = (−1, 1, 1)
    s_feat = np.tile(np.outer(flip, flip).reshape(-1), P // 9)  # (P,)
    pd = arrays["posedirs"].reshape(P, V, 3) * s_feat[:, None, None] * flip
    out["posedirs"] = pd.reshape(P, V * 3)
    out["faces"] = arrays["faces"][:, [0, 2, 1]]
    aa = np.array([1.0, -1.0, -1.0])
    out["hands_mean"] = (arrays["hands_mean"].reshape(-1, 3) * aa).reshape(-1)
    hc = arrays["hands_components"]
    out["hands_components"] = (hc.reshape(hc.shape[0], -1, 3) * aa).reshape(hc.shape)
    for key in ("pose_library",):
        if key in arrays:
            out[key] = (arrays[key].reshape(arrays[key].shape[0], -1, 3) * aa).reshape(arrays[key].shape)
    return out


# ----------------------------------------------------------------------------------------------
# The Module
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HandOutput:
    """What :class:`HandModel` returns.

    Attributes:
        verts: (B, V, 3) mesh vertices, metres.
        joints: (B, 21, 3) keypoints in handlib order (16 regressed joints + 5 tip vertices).
        joints16: (B, 16, 3) MANO's joints in MANO order.
        full_pose: (B, 45) the finger-joint axis-angle actually applied (mean and PCA resolved).
    """

    verts: torch.Tensor
    joints: torch.Tensor
    joints16: torch.Tensor
    full_pose: torch.Tensor


@dataclasses.dataclass(frozen=True)
class HandParams:
    """The 63-d mesh parameter h of Sec. 3.2, unpacked. Shapes (B, 4), (B, 45), (B, 10), (B, 1),
    (B, 3)."""

    rot: torch.Tensor
    pose: torch.Tensor
    betas: torch.Tensor
    scale: torch.Tensor
    trans: torch.Tensor


def unpack_h(h: torch.Tensor) -> HandParams:
    """(B, 63) h → :class:`HandParams` (quaternion, pose, shape, scale, translation)."""
    if h.dim() != 2 or h.shape[-1] != H_DIM:
        raise ValueError(f"h: expected shape (B, {H_DIM}), got {tuple(h.shape)}")
    return HandParams(**{k: h[:, s] for k, s in H_SLICES.items()})


def pack_h(rot, pose, betas, scale, trans) -> torch.Tensor:
    """Inverse of :func:`unpack_h`: (B,4), (B,45), (B,10), (B,1), (B,3) → (B, 63)."""
    return torch.cat([rot, pose, betas, scale, trans], dim=-1)


def identity_h(batch: int = 1, trans=(0.0, 0.0, 0.5), dtype=torch.float32, device=None) -> torch.Tensor:
    """h with identity rotation, zero pose offset and shape, unit scale, wrist at ``trans``."""
    h = torch.zeros(batch, H_DIM, dtype=dtype, device=device)
    h[:, 0] = 1.0
    h[:, 59] = 1.0
    h[:, 60:63] = torch.as_tensor(trans, dtype=dtype, device=device)
    return h


class HandModel(nn.Module):
    """MANO-interface hand model: OpenHand by default, or the official MANO file.

    Args:
        side: "right" (default) or "left" (the mirror of the right OpenHand).
        flat_hand_mean: if False (smplx's default), a zero pose is ``hands_mean`` (a relaxed hand)
            and ``pose`` is an offset from it; if True, a zero pose is the flat template.
        use_pca: if True, ``pose`` holds ``num_pca_comps`` PCA coefficients of the pose prior.
        num_pca_comps: number of PCA components used when ``use_pca`` (manopth/smplx default 6).
        arrays: model arrays (as from :func:`handlib.open_hand.load_asset` or
            :func:`load_mano_pkl`); None loads the shipped OpenHand asset.
        tip_vertex_ids: five fingertip vertices (thumb, index, middle, ring, pinky); default from
            the arrays (OpenHand) or the manopth convention (MANO).
        dtype: float dtype of the buffers.
    """

    def __init__(self, side: str = "right", flat_hand_mean: bool = False, use_pca: bool = False,
                 num_pca_comps: int = 6, arrays: dict | None = None, tip_vertex_ids=None,
                 dtype: torch.dtype = torch.float32, name: str = "OpenHand"):
        super().__init__()
        if side not in ("right", "left"):
            raise ValueError(f"side: expected 'right' or 'left', got {side!r}")
        if arrays is None:
            from .open_hand import load_asset

            arrays = load_asset()
            if side == "left":
                arrays = mirror_arrays(arrays)
        self.side, self.name = side, name
        self.flat_hand_mean, self.use_pca = flat_hand_mean, use_pca
        if tip_vertex_ids is None:
            tip_vertex_ids = arrays.get("tip_vertex_ids")
            if tip_vertex_ids is None:
                raise ValueError("tip_vertex_ids: the arrays carry none; pass the five fingertip "
                                 "vertex ids (thumb, index, middle, ring, pinky)")
        V = arrays["v_template"].shape[0]
        n_comps = arrays["hands_components"].shape[0]
        if use_pca and not 1 <= num_pca_comps <= n_comps:
            raise ValueError(f"num_pca_comps: expected 1..{n_comps}, got {num_pca_comps}")
        self.num_pca_comps = num_pca_comps if use_pca else 45

        def buf(name, value, dt=dtype):
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dt), persistent=False)

        buf("v_template", arrays["v_template"])
        buf("shapedirs", arrays["shapedirs"])
        buf("posedirs", arrays["posedirs"])
        buf("J_regressor", arrays["J_regressor"])
        buf("lbs_weights", arrays["weights"])
        buf("parents", np.asarray(arrays["parents"], dtype=np.int64), torch.long)
        buf("faces", np.asarray(arrays["faces"], dtype=np.int64), torch.long)
        buf("tip_vertex_ids", np.asarray(tip_vertex_ids, dtype=np.int64), torch.long)
        buf("hands_components", arrays["hands_components"])
        buf("hands_mean", arrays["hands_mean"])
        self.posedirs_zero = bool(np.all(np.asarray(arrays["posedirs"]) == 0))
        self.num_betas = self.shapedirs.shape[-1]
        for key, want in (("shapedirs", (V, 3)), ("J_regressor", (16, V)), ("lbs_weights", (V, 16))):
            got = tuple(getattr(self, key).shape[:2])
            if got != want:
                raise ValueError(f"{name}: {key} has shape {got}, expected {want} (V={V})")

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_mano(cls, path=None, side: str | None = None, fingertips: str | tuple = "manopth",
                  fix_shapedirs: bool | None = None, **kwargs) -> HandModel:
        """Load the official MANO model.

        Args:
            path: MANO_RIGHT.pkl / MANO_LEFT.pkl, or a folder holding them; default
                ``$HANDLIB_MANO_DIR``.
            side: "right" or "left"; default inferred from the wrist's x (MANO's right wrist
                sits at x ≈ +0.096 m, the left one at −0.096 m).
            fingertips: "manopth" (745, 317, 444, 556, 673), "smplx" (744, 320, 443, 554, 671),
                or five explicit vertex ids (thumb, index, middle, ring, pinky).
            fix_shapedirs: apply the left-hand shapedirs fix (None: when detected).
            **kwargs: passed to :class:`HandModel` (flat_hand_mean, use_pca, ...).
        """
        path = Path(path or os.environ.get("HANDLIB_MANO_DIR", ""))
        if str(path) in ("", ".") :
            raise FileNotFoundError("HandModel.from_mano: pass a path or set HANDLIB_MANO_DIR "
                                    "(see data_scripts/get_mano.md)")
        if path.is_dir():
            name = f"MANO_{(side or 'right').upper()}.pkl"
            path = path / name
        arrays = load_mano_pkl(path)
        J0 = arrays["J_regressor"][0] @ arrays["v_template"]
        side = side or ("right" if J0[0] > 0 else "left")
        if side == "left" and fix_shapedirs is not False:
            right_path = path.with_name(path.name.replace("LEFT", "RIGHT"))
            right = load_mano_pkl(right_path) if right_path != path and right_path.is_file() else None
            if fix_shapedirs:
                arrays["shapedirs"][:, 0, :] *= -1.0
            else:
                fix_left_shapedirs(arrays, right)
        if isinstance(fingertips, str):
            if fingertips not in MANO_TIP_CONVENTIONS:
                raise ValueError(f"fingertips: expected one of {list(MANO_TIP_CONVENTIONS)} or 5 ids")
            tips = MANO_TIP_CONVENTIONS[fingertips][side]
        else:
            tips = tuple(int(t) for t in fingertips)
            if len(tips) != 5:
                raise ValueError(f"fingertips: expected 5 vertex ids, got {len(tips)}")
        return cls(side=side, arrays=arrays, tip_vertex_ids=tips, name=f"MANO ({path.name})", **kwargs)

    # -- forward -------------------------------------------------------------------------------
    def full_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, 45) axis-angle or (B, ncomps) PCA coefficients → (B, 45) applied axis-angle."""
        if self.use_pca:
            pose = pose @ self.hands_components[: self.num_pca_comps]
        if not self.flat_hand_mean:
            pose = pose + self.hands_mean
        return pose

    def forward(self, pose: torch.Tensor | None = None, betas: torch.Tensor | None = None,
                rot: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                trans: torch.Tensor | None = None) -> HandOutput:
        """Pose, shape and place the hand.

        Args:
            pose: (B, 45) axis-angle of joints 1..15 in MANO order (or (B, ncomps) with use_pca);
                default zeros.
            betas: (B, 10) shape; default zeros.
            rot: (B, 4) global rotation quaternion (w, x, y, z), normalised inside; default identity.
            scale: (B, 1); default 1.
            trans: (B, 3) wrist position; default: where the model's own frame puts it.
        Returns:
            :class:`HandOutput` with verts (B, V, 3), joints (B, 21, 3), joints16, full_pose.
        """
        given = [t for t in (pose, betas, rot, scale, trans) if t is not None]
        B = given[0].shape[0] if given else 1
        dt, dev = self.v_template.dtype, self.v_template.device
        n_pose = self.num_pca_comps
        pose = torch.zeros(B, n_pose, dtype=dt, device=dev) if pose is None else pose
        betas = torch.zeros(B, self.num_betas, dtype=dt, device=dev) if betas is None else betas
        for arg, val, width in (("pose", pose, n_pose), ("betas", betas, self.num_betas),
                                ("rot", rot, 4), ("scale", scale, 1), ("trans", trans, 3)):
            if val is not None and (val.dim() != 2 or val.shape != (B, width)):
                raise ValueError(f"{arg}: expected shape ({B}, {width}), got {tuple(val.shape)}")
        full = self.full_pose(pose)
        full48 = torch.cat([torch.zeros(B, 3, dtype=full.dtype, device=dev), full], dim=1)
        verts, j16 = lbs(betas, full48, self.v_template, self.shapedirs,
                         None if self.posedirs_zero else self.posedirs, self.J_regressor,
                         self.parents, self.lbs_weights)
        tips = verts[:, self.tip_vertex_ids]  # (B, 5, 3)
        kp = torch.cat([j16, tips], dim=1)[:, _MANO21_TO_HANDLIB]  # (B, 21, 3)
        if rot is not None or scale is not None or trans is not None:
            root = j16[:, :1]  # (B, 1, 3) the wrist
            R = quaternion_to_matrix(rot) if rot is not None else None
            s = scale[:, None] if scale is not None else None
            t = trans[:, None] if trans is not None else root

            def place(x):  # s · R (x − wrist) + t
                x = x - root
                if R is not None:
                    x = x @ R.transpose(-1, -2)
                if s is not None:
                    x = x * s
                return x + t

            verts, kp, j16 = place(verts), place(kp), place(j16)
        return HandOutput(verts=verts, joints=kp, joints16=j16, full_pose=full)

    def from_h(self, h: torch.Tensor) -> HandOutput:
        """Forward from the packed 63-d h = [q (4), θ (45), β (10), s (1), t (3)] (Sec. 3.2)."""
        p = unpack_h(h)
        if self.use_pca:
            raise ValueError("from_h: h carries a full 45-d pose; build the model with use_pca=False")
        return self(pose=p.pose, betas=p.betas, rot=p.rot, scale=p.scale, trans=p.trans)

    @property
    def num_verts(self) -> int:
        return self.v_template.shape[0]

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, side={self.side!r}, V={self.num_verts}, F={self.faces.shape[0]}, "
                f"flat_hand_mean={self.flat_hand_mean}, use_pca={self.use_pca}")


# MANO's 16 joints + 5 tips (thumb, index, middle, ring, pinky) → handlib keypoint order.
_MANO21_TO_HANDLIB = torch.as_tensor(skeleton.order_index("mano", "handlib"))
