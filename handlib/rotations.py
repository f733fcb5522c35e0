"""Rotation conversions: axis-angle, unit quaternion (w, x, y, z) and 3×3 matrix.

All functions are batched over leading dimensions, differentiable, and dtype/device agnostic.
Rotations act on column vectors: ``x' = R @ x``. Quaternions are scalar-first ``(w, x, y, z)``,
the convention of the paper's 4-d global rotation in h (Baek et al. 2019, Sec. 3.2).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

# smplx's Rodrigues guard: angle = ||r + 1e-8||. Keeping it makes handlib.lbs equal smplx.lbs.lbs
# to float64 round-off and keeps the gradient finite at r = 0; its bias is below 1e-8 rad.
SMPLX_EPS = 1e-8


class _Consts(NamedTuple):
    basis: torch.Tensor  # (3, 9): (k @ basis).reshape(3, 3) = [k]_×, the cross-product matrix of k
    eye: torch.Tensor  # (3, 3)
    vee: torch.Tensor  # (9, 4): vec(G) @ vee = (vee(G − Gᵀ), 2 tr G), vee([k]_×) = k
    one: torch.Tensor  # () 1, so that 1 − cos θ is a tensor–tensor op
    eps: torch.Tensor  # () the Rodrigues guard


_CONSTS: dict = {}


def _constants(dtype, device, eps: float = SMPLX_EPS) -> _Consts:
    """Cached constant tensors. Python scalars in tensor arithmetic are wrapped into a new tensor
    on every call (~2 µs each), which shows at batch 1, so the hot paths use these instead."""
    key = (dtype, device, eps)
    if key not in _CONSTS:
        with torch.inference_mode(False):  # usable by autograd even if first made in inference mode
            _CONSTS[key] = _make_constants(dtype, device, eps)
    return _CONSTS[key]


def _make_constants(dtype, device, eps: float) -> _Consts:
    """The tensors of :class:`_Consts` (uncached)."""
    m = torch.zeros(3, 3, 3, dtype=dtype, device=device)
    m[0, 2, 1], m[0, 1, 2] = 1.0, -1.0  # x
    m[1, 0, 2], m[1, 2, 0] = 1.0, -1.0  # y
    m[2, 1, 0], m[2, 0, 1] = 1.0, -1.0  # z
    vee = torch.cat([m.reshape(3, 9).T, 2.0 * torch.eye(3, dtype=dtype, device=device).reshape(9, 1)], 1)
    one = torch.ones((), dtype=dtype, device=device)
    return _Consts(m.reshape(3, 9), torch.eye(3, dtype=dtype, device=device), vee, one, one * eps)


def _rodrigues(rot_vecs: torch.Tensor, eps: float):
    """R = I + sin θ K + (1 − cos θ) K² with θ = ‖r + ε‖, K = [r / θ]_×, and what its gradient needs:
    (s = r + ε, θ, k = r / θ, sin θ, 1 − cos θ, ∂R/∂θ at fixed K = cos θ K + sin θ K²)."""
    c = _constants(rot_vecs.dtype, rot_vecs.device, eps)
    s = rot_vecs + c.eps
    theta = torch.linalg.vector_norm(s, dim=-1, keepdim=True)  # (..., 1)
    k = rot_vecs / theta
    K = (k @ c.basis).unflatten(-1, (3, 3))
    sin, cos = theta.sin(), theta.cos()
    omc = c.one - cos
    K2 = K @ K
    R = torch.addcmul(torch.addcmul(c.eye, sin[..., None], K), omc[..., None], K2)
    dR = torch.addcmul(cos[..., None] * K, sin[..., None], K2)
    return R, (s, theta, k, sin, omc, dR)


class _AxisAngleToMatrix(torch.autograd.Function):
    """Rodrigues with a closed-form backward (one graph node instead of a dozen).

    With s = r + ε, θ = ‖s‖, k = r / θ, K = [k]_×, R = I + sin θ K + (1 − cos θ) K² and G = ∂L/∂R:
        ∂L/∂θ|_K = ⟨G, cos θ K + sin θ K²⟩,   ∂L/∂K = sin θ G + (1 − cos θ)(G Kᵀ + Kᵀ G),
        ∂L/∂k = vee(∂L/∂K − ∂L/∂Kᵀ) = sin θ vee(G − Gᵀ) + (1 − cos θ)((G + Gᵀ) k − 2 tr(G) k)
            (the skew part read back as a vector; for symmetric M, MK + KM = [(tr M − M) k]_×),
        ∂L/∂r = (∂L/∂k + (∂L/∂θ|_K − ⟨∂L/∂k, k⟩ / θ) s) / θ.
    The backward is written in differentiable ops; under ``create_graph=True`` it recomputes the
    intermediates from r, so double backward works.
    """

    @staticmethod
    def forward(ctx, rot_vecs, eps):
        R, aux = _rodrigues(rot_vecs, eps)
        ctx.eps, ctx.aux = eps, aux
        ctx.save_for_backward(rot_vecs)
        return R

    @staticmethod
    def backward(ctx, G):
        r, = ctx.saved_tensors
        aux = _rodrigues(r, ctx.eps)[1] if torch.is_grad_enabled() else ctx.aux  # create_graph=True
        return _rodrigues_backward(G, aux), None


def _rodrigues_backward(G, aux):
    """∂L/∂r from G = ∂L/∂R (see :class:`_AxisAngleToMatrix`); aux is :func:`_rodrigues`'s."""
    s, theta, k, sin, omc, dR = aux
    c = _constants(G.dtype, G.device)
    Gf = G.flatten(-2)  # (..., 9)
    w_tr = Gf @ c.vee  # (..., 4): vee(G − Gᵀ), 2 tr G
    Mk = ((G + G.transpose(-1, -2)) @ k[..., None])[..., 0]
    g_k = torch.addcmul(sin * w_tr[..., :3], omc, Mk - w_tr[..., 3:] * k)
    g_theta = (Gf * dR.flatten(-2)).sum(-1, keepdim=True) - (g_k * k).sum(-1, keepdim=True) / theta
    return torch.addcmul(g_k, g_theta, s) / theta


def axis_angle_to_matrix(rot_vecs: torch.Tensor, eps: float = SMPLX_EPS) -> torch.Tensor:
    """Rodrigues' formula, R = I + sin θ [k]_× + (1 − cos θ) [k]_×².

    Args:
        rot_vecs: (..., 3) axis-angle vectors, radians.
        eps: added to every component before taking the norm, exactly as smplx's
            ``batch_rodrigues`` does (so both agree to float64 round-off).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    if rot_vecs.requires_grad:
        return _AxisAngleToMatrix.apply(rot_vecs, eps)
    return _rodrigues(rot_vecs, eps)[0]


def quaternion_to_matrix(quat: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Unit quaternion (w, x, y, z) → rotation matrix.

    Args:
        quat: (..., 4). With ``normalize`` (default) any non-zero quaternion is accepted and
            scaled to unit length first, which lets a network regress it freely.
    Returns:
        (..., 3, 3).
    """
    if quat.shape[-1] != 4:
        raise ValueError(f"quat: expected shape (..., 4), got {tuple(quat.shape)}")
    if normalize:
        quat = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = quat.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*quat.shape[:-1], 3, 3)


def matrix_to_quaternion(mat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix → unit quaternion (w, x, y, z) with w ≥ 0.

    Uses the numerically best of the four Shepperd candidates per element.

    Args:
        mat: (..., 3, 3).
    Returns:
        (..., 4).
    """
    if mat.shape[-2:] != (3, 3):
        raise ValueError(f"mat: expected shape (..., 3, 3), got {tuple(mat.shape)}")
    m = mat.reshape(*mat.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # 4·q_i² for i = w, x, y, z
    q_abs = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                         1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    q_abs = torch.sqrt(torch.clamp(q_abs, min=0.0))  # (..., 4) = 2|q_i|
    # Row i: the quaternion computed from candidate i (multiplied by 2 q_i).
    cands = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)  # (..., 4, 4)
    cands = cands / (2.0 * q_abs[..., :, None]).clamp_min(0.1)
    best = q_abs.argmax(dim=-1)  # (...,)
    quat = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def axis_angle_to_quaternion(rot_vecs: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle → (..., 4) unit quaternion (w, x, y, z); exact near zero."""
    angle = torch.linalg.vector_norm(rot_vecs, dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(θ/2)/θ with its Taylor series near 0 (no division by zero, smooth gradient).
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    k = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(half) / safe)
    return torch.cat([torch.cos(half), rot_vecs * k], dim=-1)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (w, x, y, z) → (..., 3) axis-angle with angle in [0, π]."""
    quat = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    xyz = quat[..., 1:]
    sin_half = torch.linalg.vector_norm(xyz, dim=-1, keepdim=True)
    half = torch.atan2(sin_half, quat[..., :1])
    small = sin_half < 1e-6
    safe = torch.where(small, torch.ones_like(sin_half), sin_half)
    k = torch.where(small, 2.0 + 2.0 * sin_half ** 2 / 3.0, 2.0 * half / safe)
    return xyz * k


def matrix_to_axis_angle(mat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix → (..., 3) axis-angle."""
    return quaternion_to_axis_angle(matrix_to_quaternion(mat))


def rotation_6d_to_matrix(d6: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zhou et al. 2019's continuous 6-d representation → rotation matrix.

    The six numbers are two 3-vectors a₁, a₂ (the first two *columns* of R when it is exact);
    Gram–Schmidt makes them orthonormal and the cross product adds the third column:
    b₁ = a₁/‖a₁‖, b₂ = normalise(a₂ − (b₁·a₂) b₁), b₃ = b₁ × b₂. Unlike a quaternion (q and −q are
    one rotation, so any map from images to quaternions has a seam) the map SO(3) → 6-d is continuous,
    which is why regressors learn it better (Zhou et al., CVPR 2019, "On the Continuity of Rotation
    Representations in Neural Networks").

    Args:
        d6: (..., 6) [a₁, a₂] (any scale; a₁ and a₂ must not be parallel).
    Returns:
        (..., 3, 3) rotation matrix with columns b₁, b₂, b₃.
    """
    if d6.shape[-1] != 6:
        raise ValueError(f"d6: expected shape (..., 6), got {tuple(d6.shape)}")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / torch.linalg.vector_norm(a1, dim=-1, keepdim=True).clamp_min(eps)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / torch.linalg.vector_norm(a2, dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(mat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) → its 6-d representation (..., 6): the first two columns."""
    if mat.shape[-2:] != (3, 3):
        raise ValueError(f"mat: expected shape (..., 3, 3), got {tuple(mat.shape)}")
    return torch.cat([mat[..., :, 0], mat[..., :, 1]], dim=-1)
