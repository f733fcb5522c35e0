"""Linear blend skinning (MANO / SMPL, Loper et al. 2015; Romero et al. 2017), fast and exact.

    1. shape blend:  v_shaped = v_template + shapedirs · β
    2. joints:       J = J_regressor · v_shaped                             (16 joints)
    3. pose blend:   v_posed = v_shaped + posedirs · (R(θ) − I)
    4. chain:        G_k = G_parent(k) · [R_k | J_k − J_parent(k)]           (batched by tree depth)
    5. skinning:     v = Σ_k w_k · (G_k − [0 | G_k J_k]) · v_posed

:func:`lbs` has ``smplx.lbs.lbs``'s signature and semantics (equal to it to float64 round-off) and
is faster (``benchmarks/bench_hand_model.py``: ≥ 2× at batch 1, ~2.8× at batch 1024, fwd+bwd):

- the chain is composed one tree level at a time (MANO's tree has 4 levels) with a hand-derived
  backward, gathering parents only where the tree needs it;
- skinning uses homogeneous vertices and works in cache-sized batch chunks;
- Rodrigues has a closed-form backward (:mod:`handlib.rotations`);
- when only β and θ need gradients the whole of LBS is one autograd node (``_LBS``) run under
  inference mode, and joints come from a joint shape basis cached per model (``_model_basis``).

At batch 1 everything is bound by per-op overhead, so the code prefers fewer, larger tensor ops
and cached constant tensors over Python scalars. :mod:`handlib.hand_model` wraps it in the
:class:`~handlib.hand_model.HandModel` module.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch

from .rotations import (
    SMPLX_EPS,
    _constants,
    _rodrigues,
    _rodrigues_backward,
    axis_angle_to_matrix,
)

__all__ = ["blend_shapes", "vertices2joints", "tree_levels", "rigid_transform", "skin", "lbs"]


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


def _version(t: torch.Tensor) -> int:
    """A tensor's in-place edit counter, for caches keyed on tensors (inference tensors have none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


_CACHE_SIZE = 16  # entries kept by the caches keyed on tensor identity (oldest dropped first)
_PLAN_CACHE: dict[tuple, tuple] = {}  # (tree, device) → plan
_PLAN_OF_TENSOR: dict[int, tuple] = {}  # id(parents) → (weakref, version, plan)


def _level_plan(parents: torch.Tensor) -> tuple:
    """How to walk the tree one level at a time. Returns (order, sizes, links, inv, parent_pos,
    diff, consts):

    - order (J,): the joints level by level (None when that is already joint order), sizes: the
      level lengths, inv: the permutation back to joint order (None likewise);
    - links: per level below the root, the positions of the joints' parents in the level above,
      or None when no gather is needed: the parents are the level above in order (MANO's finger
      chains) or one shared parent that broadcasts (the wrist under the five finger roots);
    - parent_pos (J,): each joint's parent in level order (the root's is itself);
    - diff (J, J): diff @ J gives J_k − J_parent(k) (the root keeps J_0); consts: per-dtype cache.

    Cached per tree, and per ``parents`` tensor so that repeated calls never read it back (a sync
    on CUDA)."""
    hit = _PLAN_OF_TENSOR.get(id(parents))
    if hit is not None and hit[0]() is parents and hit[1] == _version(parents):
        return hit[2]
    key = (tuple(parents.tolist()), str(parents.device))
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        with torch.inference_mode(False):  # cached: usable by autograd even if first made in inference mode
            plan = _PLAN_CACHE[key] = _make_level_plan(key[0], parents.device)
    if len(_PLAN_OF_TENSOR) >= _CACHE_SIZE:  # bounded: a process may make many parents tensors
        _PLAN_OF_TENSOR.pop(next(iter(_PLAN_OF_TENSOR)), None)
    _PLAN_OF_TENSOR[id(parents)] = (weakref.ref(parents), _version(parents), plan)
    return plan


def _make_level_plan(parents: tuple, dev) -> tuple:
    """:func:`_level_plan` for a tree given as a tuple of parent indices."""
    par = np.asarray(parents)
    levels = tree_levels(par)
    order = np.concatenate(levels)
    pos_of = np.empty_like(order)
    pos_of[order] = np.arange(len(order))
    starts = np.cumsum([0] + [len(lv) for lv in levels])
    links = []
    for d in range(1, len(levels)):
        pos = pos_of[par[levels[d]]] - starts[d - 1]  # parents' positions in level d − 1
        direct = np.array_equal(pos, np.arange(len(levels[d - 1]))) or (len(levels[d - 1]) == 1)
        links.append(None if direct else torch.as_tensor(pos, device=dev))
    identity = np.array_equal(order, np.arange(len(par)))
    diff = np.eye(len(par))  # (diff @ J)_k = J_k − J_parent(k), the root's row keeps J_0
    diff[np.arange(1, len(par)), par[1:]] = -1.0
    return (None if identity else torch.as_tensor(order, device=dev), [len(lv) for lv in levels], links,
            None if identity else torch.as_tensor(np.argsort(order), device=dev),
            torch.as_tensor(pos_of[np.maximum(par[order], 0)], device=dev),
            torch.as_tensor(diff, device=dev), {})


class _ForwardKinematics(torch.autograd.Function):
    """Step 4 of LBS with a hand-derived backward, batched by tree depth.

    With local transforms L_k = [[R_k, J_k − J_p], [0, 1]] (4×4) and global ones G_k = [R^G_k | t^G_k]
    (3×4), each level is one product G_k = G_p L_k (root: G_0 = L_0's top rows). Outputs: posed
    joints t^G and A = [R^G | t^G − R^G J]. Backward walks the levels in reverse:
        ∂L_k = R^G_pᵀ ∂G_k   (top rows: [∂R_k | ∂rel_k]),
        ∂G_p += ∂G_k L_kᵀ    (= [∂R^G_k R_kᵀ + ∂t^G_k rel_kᵀ | ∂t^G_k], summed over children).
    Intermediates are kept on ``ctx`` rather than through ``save_for_backward`` (PyTorch's advice
    for tensors that are neither inputs nor outputs, and cheaper at batch 1); the input goes
    through ``save_for_backward`` so that an in-place edit of it before backward is caught.
    """

    @staticmethod
    def forward(ctx, rot_mats, joints, plan):
        posed, A, saved = _fk_forward(rot_mats, joints, plan)
        ctx.plan, ctx.saved = plan, saved[:3]
        ctx.save_for_backward(joints)
        return posed, A

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_posed, g_A):
        return (*_fk_backward((*ctx.saved, *ctx.saved_tensors), ctx.plan, g_posed, g_A), None)


def _fk_forward(rot_mats, joints, plan):
    """Forward of :class:`_ForwardKinematics`: (posed joints, A, tensors for the backward)."""
    order, sizes, links, inv, _, diff, bottom = plan
    B, J = joints.shape[:2]
    rel = diff @ joints  # (B, J, 3) J_k − J_parent(k); the root keeps J_0
    L = torch.cat([torch.cat([rot_mats, rel[..., None]], dim=-1), bottom.expand(B, J, 1, 4)], dim=-2)
    Ls = (L if order is None else L[:, order]).split(sizes, dim=1)  # (B, n_d, 4, 4) per level
    G = [Ls[0][:, :, :3]]  # global [R^G | t^G] per level, the root's is its local one
    for L_d, link in zip(Ls[1:], links):  # a shared parent (B, 1, 3, 4) broadcasts
        G.append((G[-1] if link is None else G[-1][:, link]) @ L_d)
    G_l = torch.cat(G, dim=1)
    Gj = G_l if inv is None else G_l[:, inv]  # (B, J, 3, 4) joint order
    A = Gj.clone()
    A[..., 3].sub_((Gj[..., :3] @ joints[..., None])[..., 0])
    return Gj[..., 3], A, (Ls, G_l, Gj, joints)


def _fk_backward(saved, plan, g_posed, g_A, overwrite: bool = False):
    """Backward of :class:`_ForwardKinematics`: (∂L/∂rot_mats, ∂L/∂joints). ``overwrite`` lets it
    reuse g_A's memory (when the caller made g_A and has no other use for it)."""
    Ls, G_l, Gj, joints = saved
    order, sizes, links, inv, parent_pos, diff, _ = plan
    g_RGJ = Gj[..., :3].transpose(-1, -2) @ g_A[..., 3:]  # (B, J, 3, 1) from −R^G J, for ∂J
    gG = g_A if overwrite else g_A.clone()
    gG[..., :3].sub_(gG[..., 3:] * joints[..., None, :])  # from −R^G J, for ∂R^G
    gG[..., 3].add_(g_posed)
    if order is not None:
        gG = gG[:, order]
    gGs = gG.split(sizes, dim=1)  # views: adding into one level adds into gG
    for d in range(len(Ls) - 1, 0, -1):  # children before parents: ∂G_p += ∂G_k L_kᵀ
        g_parent = gGs[d] @ Ls[d].transpose(-1, -2)
        if links[d - 1] is not None:
            gGs[d - 1].index_add_(1, links[d - 1], g_parent)
        else:
            gGs[d - 1].add_(g_parent if gGs[d - 1].shape[1] == g_parent.shape[1] else g_parent.sum(1, True))
    gL = G_l[:, parent_pos, :, :3].transpose(-1, -2) @ gG  # all levels at once: R^G_pᵀ ∂G_k
    gL[:, 0] = gG[:, 0]  # the root's local transform is its global one
    if inv is not None:
        gL = gL[:, inv]
    return gL[..., :3], torch.sub(diff.T @ gL[..., 3], g_RGJ[..., 0])  # rel = diff · J


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
    """The level plan with its per-dtype constants (``diff`` in ``dtype``, the homogeneous row)."""
    order, sizes, links, inv, parent_pos, diff, consts = _level_plan(parents)
    key = (dtype, parents.device)
    if key not in consts:
        with torch.inference_mode(False):
            bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, device=parents.device)
            consts[key] = (order, sizes, links, inv, parent_pos, diff.to(dtype), bottom)
    return consts[key]


class _Skin(torch.autograd.Function):
    """Step 5 of LBS: v = Σ_k w_k (R_k v_posed + t_k), with a hand-written backward.

    The blended transforms T = W·A form a (B, V, 12) tensor; autograd through the obvious
    expression writes it out whole and keeps it (plus broadcast products) for backward. Here the
    batch is processed in chunks small enough for T to stay in cache, and backward recomputes T
    instead of storing it (unless it is small). Vertices are homogeneous, [v; 1], so that the
    per-vertex 3×4 product is one multiply and one sum.
    """

    CACHE_FLOATS = 160_000  # ~640 kB of T per chunk (float32): fits in L2 on common CPUs
    KEEP_FLOATS = 1_000_000  # below this, forward keeps T for backward instead of recomputing it

    @staticmethod
    def _chunks(B: int, V: int):
        step = max(1, _Skin.CACHE_FLOATS // (12 * V))
        return [(s, min(B, s + step)) for s in range(0, B, step)]

    @staticmethod
    def forward(ctx, weights, A, v_posed):
        out, (_, *ctx.saved) = _skin_forward(weights, A, v_posed)  # intermediates on ctx
        ctx.save_for_backward(weights)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _skin_backward((*ctx.saved_tensors, *ctx.saved), grad, *ctx.needs_input_grad)


def _skin_forward(weights, A, v_posed):
    """Forward of :class:`_Skin`: ((B, V, 3) vertices, tensors for the backward)."""
    B, J = A.shape[:2]
    V = weights.shape[0]
    At = A.reshape(B, J, 12).transpose(1, 2).reshape(B * 12, J)  # rows (b, i, j)
    one = _constants(v_posed.dtype, v_posed.device).one
    vh = torch.cat([v_posed.transpose(1, 2), one.expand(B, 1, V)], dim=1)  # (B, 4, V) homogeneous
    out = torch.empty(B, 3, V, dtype=v_posed.dtype, device=v_posed.device)
    for s, e in _Skin._chunks(B, V):
        T = (At[s * 12:e * 12] @ weights.T).view(e - s, 3, 4, V)  # blended [R | t] per vertex
        torch.sum(T * vh[s:e, None], dim=2, out=out[s:e])  # v[b, i] = Σ_j T[b, i, j] vh[b, j]
    kept = T if B * 12 * V <= _Skin.KEEP_FLOATS and e - s == B else None  # one chunk: T is all
    return out.transpose(1, 2), (weights, At, vh, kept)


def _skin_backward(saved, grad, need_w: bool, need_A: bool, need_v: bool):
    """Backward of :class:`_Skin`: (∂L/∂weights, ∂L/∂A, ∂L/∂v_posed), None where not needed."""
    weights, At, vh, kept = saved
    B, V, J = vh.shape[0], weights.shape[0], weights.shape[1]
    gT = grad.transpose(1, 2)[:, :, None]  # (B, 3, 1, V)
    g_At = torch.empty(B * 12, J, dtype=At.dtype, device=At.device) if need_A else None
    g_w = torch.zeros_like(weights) if need_w else None
    g_v = torch.empty(B, 3, V, dtype=vh.dtype, device=vh.device) if need_v else None
    for s, e in _Skin._chunks(B, V):
        if need_A or need_w:
            dT = (gT[s:e] * vh[s:e, None]).reshape((e - s) * 12, V)  # ∂L/∂T[b, i, j] = g[b, i] vh[b, j]
            if need_A:
                torch.mm(dT, weights, out=g_At[s * 12:e * 12])
            if need_w:
                g_w.addmm_(dT.T, At[s * 12:e * 12])
        if need_v:
            T = kept if kept is not None else (At[s * 12:e * 12] @ weights.T).view(e - s, 3, 4, V)
            torch.sum(T[:, :, :3] * gT[s:e], dim=1, out=g_v[s:e])  # ∂L/∂v[b, j] = Σ_i T[b, i, j] g[b, i]
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


_BASIS_CACHE: dict[tuple, tuple] = {}  # ((id, version) of the arrays) → (weakrefs, basis)


def _model_basis(v_template, shapedirs, J_regressor) -> tuple:
    """What LBS needs from the model arrays alone: shapedirs as S (V·3, L) and Sᵀ (contiguous),
    the rest joints J_regressor · v_template (1, J·3) and the joint shape basis
    J_regressor · shapedirs (J·3, L). Joints are linear in β, so with these they cost one
    (B, L)·(L, J·3) product instead of a (J, V)·(V, 3) one per mesh (step 2), and ∂β from the
    joints one (B, J·3)·(J·3, L) product. Cached per set of arrays (identity and version), so a
    model pays for it once; at most ``_CACHE_SIZE`` sets are kept."""
    arrays = (v_template, shapedirs, J_regressor)
    key = tuple((id(t), _version(t)) for t in arrays)
    hit = _BASIS_CACHE.get(key)
    if hit is not None and all(ref() is t for ref, t in zip(hit[0], arrays)):
        return hit[1]
    V, C, L = shapedirs.shape
    with torch.inference_mode(False), torch.no_grad():
        S = shapedirs.reshape(V * C, L)
        basis = (S, S.T.contiguous(), (J_regressor @ v_template).reshape(1, -1),
                 (J_regressor @ shapedirs.reshape(V, C * L)).reshape(-1, L))
    if len(_BASIS_CACHE) >= _CACHE_SIZE:  # oldest first
        _BASIS_CACHE.pop(next(iter(_BASIS_CACHE)), None)
    _BASIS_CACHE[key] = (tuple(weakref.ref(t) for t in arrays), basis)
    return basis


class _LBS(torch.autograd.Function):
    """All of LBS as one graph node, for the common case where only β and θ need gradients.

    Forward runs steps 1–5 (:func:`_lbs_forward`) without recording a graph; backward
    (:func:`_lbs_backward`) chains the hand-derived backwards of each step. At batch 1 this
    replaces ~20 autograd nodes by one; the maths is the modular path's.

    Both run under ``torch.inference_mode``: nothing inside needs autograd, and inference mode
    also skips view tracking and version counters, which is ~15% of the time at batch 1. Only
    copies leave it (outputs and gradients must be ordinary tensors); the intermediates kept for
    backward stay on ``ctx`` (PyTorch's advice for tensors that are neither inputs nor outputs).
    """

    @staticmethod
    def forward(ctx, betas, pose, v_template, shapedirs, posedirs, J_regressor, lbs_weights, plan):
        with torch.inference_mode():
            verts, posed, ctx.saved = _lbs_forward(betas, pose, v_template, shapedirs, posedirs,
                                                   J_regressor, lbs_weights, plan)
        ctx.plan = plan
        # the arrays backward reads (directly or through _model_basis): unpacking them checks
        # that none was edited in place in between
        ctx.save_for_backward(posedirs, lbs_weights, shapedirs, J_regressor)
        return verts.clone(), posed.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_verts, g_posed):
        with torch.inference_mode():
            g_betas, g_pose = _lbs_backward(ctx.saved, *ctx.saved_tensors[:2], ctx.plan, g_verts, g_posed)
        need = ctx.needs_input_grad
        return (g_betas.clone() if need[0] else None), (g_pose.clone() if need[1] else None), *[None] * 6


def _lbs_forward(betas, pose, v_template, shapedirs, posedirs, J_regressor, lbs_weights, plan):
    """Steps 1–5 in sequence: (verts, posed joints, what :func:`_lbs_backward` needs)."""
    B = max(betas.shape[0], pose.shape[0])
    basis = _model_basis(v_template, shapedirs, J_regressor)
    v_shaped = _shape_blend(betas, v_template, shapedirs, basis)  # 1.
    J = _regress_joints(betas, v_shaped, J_regressor, basis)  # 2.
    R, rodrigues = _rodrigues(pose.reshape(B, -1, 3), SMPLX_EPS)
    v_posed = _pose_blend(R, v_shaped, posedirs)  # 3.
    posed, A, fk_saved = _fk_forward(R, J, plan)  # 4.
    verts, skin_saved = _skin_forward(lbs_weights, A, v_posed)  # 5.
    return verts, posed, (basis[0], basis[3], rodrigues, fk_saved, skin_saved[1:])


def _lbs_backward(saved, posedirs, lbs_weights, plan, g_verts, g_posed):
    """(∂L/∂β, ∂L/∂θ) from ∂L/∂verts and ∂L/∂posed joints: skinning (:func:`_skin_backward`), the
    chain (:func:`_fk_backward`), pose blend shapes (∂pose_feature = ∂v_posed · posedirsᵀ), shape
    blend shapes and joint regression (∂β = ∂v_posed · S + ∂J · J_dirs, see :func:`_model_basis`)
    and Rodrigues (:func:`~handlib.rotations._rodrigues_backward`)."""
    S, J_dirs, rodrigues, fk_saved, skin_saved = saved
    B = g_verts.shape[0]
    _, g_A, g_vposed = _skin_backward((lbs_weights, *skin_saved), g_verts, False, True, True)
    g_R, g_J = _fk_backward(fk_saved, plan, g_posed, g_A, overwrite=True)
    g_v = g_vposed.reshape(B, -1)
    if posedirs is not None:
        g_R[:, 1:].add_((g_v @ posedirs.T).view(B, -1, 3, 3))
    g_betas = torch.addmm(g_v @ S, g_J.reshape(B, -1), J_dirs)
    return g_betas, _rodrigues_backward(g_R, rodrigues).reshape(B, -1)


def _shape_blend(betas, v_template, shapedirs, basis=None):
    """Step 1: v_shaped = v_template + shapedirs · β, (B, V, 3); with the cached
    :func:`_model_basis` one fused multiply-add."""
    if basis is None:
        return v_template + blend_shapes(betas, shapedirs)
    V, C, _ = shapedirs.shape
    return torch.addmm(v_template.reshape(1, V * C), betas, basis[1]).view(-1, V, C)


def _regress_joints(betas, v_shaped, J_regressor, basis=None):
    """Step 2: (B, J, 3) joints, J_regressor · v_shaped; with the cached :func:`_model_basis`
    from the joint shape basis instead (J·3·L work per mesh instead of J·V·3)."""
    if basis is None:
        return J_regressor @ v_shaped
    return torch.addmm(basis[2], betas, basis[3].T).view(v_shaped.shape[0], -1, 3)


def _constant_basis(v_template, shapedirs, J_regressor):
    """:func:`_model_basis` when it is valid to cache (one template, no array needs gradients)."""
    arrays = (v_template, shapedirs, J_regressor)
    if v_template.dim() != 2 or any(t.requires_grad for t in arrays):
        return None
    return _model_basis(*arrays)


def _pose_blend(rot_mats, v_shaped, posedirs):
    """Step 3: v_posed = v_shaped + posedirs · (R − I) over joints 1.. (skipped when None)."""
    if posedirs is None:
        return v_shaped
    B = rot_mats.shape[0]
    eye = _constants(rot_mats.dtype, rot_mats.device).eye
    pose_feature = (rot_mats[:, 1:] - eye).reshape(B, -1)  # (B, P)
    return torch.addmm(v_shaped.reshape(B, -1), pose_feature, posedirs).view(B, -1, 3)


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
    if betas.shape[0] != B or pose.shape[0] != B:  # a batch of 1 broadcasts
        betas, pose = betas.expand(B, -1), pose.expand(B, *pose.shape[1:])
    models = (v_template, shapedirs, posedirs, J_regressor, lbs_weights)
    if pose2rot and v_template.dim() == 2 and not any(t is not None and t.requires_grad for t in models):
        # the common case (gradients for β and θ only): one fused graph node
        return _LBS.apply(betas, pose, v_template, shapedirs, posedirs, J_regressor, lbs_weights,
                          _fk_plan(parents, pose.dtype))
    basis = _constant_basis(v_template, shapedirs, J_regressor)
    v_shaped = _shape_blend(betas, v_template, shapedirs, basis)  # 1. (B, V, 3)
    J = _regress_joints(betas, v_shaped, J_regressor, basis)  # 2. (B, J, 3)
    if pose2rot:
        rot_mats = axis_angle_to_matrix(pose.reshape(B, -1, 3))  # (B, J, 3, 3)
    else:
        rot_mats = pose.reshape(B, -1, 3, 3)
    v_posed = _pose_blend(rot_mats, v_shaped, posedirs)  # 3.
    posed_joints, A = rigid_transform(rot_mats, J, parents)  # 4. (B, J, 3), (B, J, 3, 4)
    return skin(lbs_weights, A, v_posed), posed_joints  # 5.
