"""Rotation conversions: axis-angle, unit quaternion (w, x, y, z) and 3×3 matrix.

All functions are batched over leading dimensions, differentiable, and dtype/device agnostic.
Rotations act on column vectors: ``x' = R @ x``. Quaternions are scalar-first ``(w, x, y, z)``,
the convention of the paper's 4-d global rotation in h (Baek et al. 2019, Sec. 3.2).
"""
from __future__ import annotations

import torch

# smplx's Rodrigues guard: angle = ||r + 1e-8||. Keeping it makes handlib.lbs bit-compatible with
# smplx.lbs.lbs and keeps the gradient finite at r = 0; its bias is below 1e-8 rad.
SMPLX_EPS = 1e-8


_CONSTS: dict = {}


def _constants(dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 9) M with (k @ M).reshape(3, 3) = [k]_× (the cross-product matrix of k), and I₃."""
    key = (dtype, device)
    if key not in _CONSTS:
        m = torch.zeros(3, 3, 3, dtype=dtype, device=device)
        m[0, 2, 1], m[0, 1, 2] = 1.0, -1.0  # x
        m[1, 0, 2], m[1, 2, 0] = 1.0, -1.0  # y
        m[2, 1, 0], m[2, 0, 1] = 1.0, -1.0  # z
        _CONSTS[key] = (m.reshape(3, 9), torch.eye(3, dtype=dtype, device=device))
    return _CONSTS[key]


def _rodrigues(rot_vecs: torch.Tensor, eps: float):
    """R and the intermediates its gradient needs: θ = ‖r + ε‖, k = r / θ, [k]_×."""
    angle = torch.linalg.vector_norm(rot_vecs + eps, dim=-1, keepdim=True)[..., None]  # (..., 1, 1)
    basis, eye = _constants(rot_vecs.dtype, rot_vecs.device)
    skew = ((rot_vecs / angle[..., 0]) @ basis).unflatten(-1, (3, 3))  # [k]_×
    sin, cos = torch.sin(angle), torch.cos(angle)
    skew2 = skew @ skew
    return eye + sin * skew + (1.0 - cos) * skew2, angle, skew, skew2, sin, cos


class _AxisAngleToMatrix(torch.autograd.Function):
    """Rodrigues with a closed-form backward (one graph node instead of a dozen).

    With s = r + ε, θ = ‖s‖, k = r / θ, K = [k]_×, R = I + sin θ K + (1 − cos θ) K² and G = ∂L/∂R:
        ∂L/∂θ|_K = cos θ ⟨G, K⟩ + sin θ ⟨G, K²⟩,   ∂L/∂K = sin θ G + (1 − cos θ)(G Kᵀ + Kᵀ G),
        ∂L/∂k = vee(∂L/∂K − ∂L/∂Kᵀ) (the skew part read back as a vector),
        ∂L/∂r = ∂L/∂k / θ + (∂L/∂θ|_K − ⟨∂L/∂k, r⟩ / θ²) s / θ.
    The backward is written in differentiable ops; under ``create_graph=True`` it recomputes the
    intermediates from r, so double backward works.
    """

    @staticmethod
    def forward(ctx, rot_vecs, eps):
        R, angle, skew, skew2, sin, cos = _rodrigues(rot_vecs, eps)
        ctx.eps = eps
        ctx.save_for_backward(rot_vecs, angle, skew, skew2, sin, cos)
        return R

    @staticmethod
    def backward(ctx, G):
        r, angle, K, K2, sin, cos = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: rebuild the intermediates from r
            _, angle, K, K2, sin, cos = _rodrigues(r, ctx.eps)
        return _rodrigues_backward(G, r, ctx.eps, angle, K, K2, sin, cos), None


def _rodrigues_backward(G, r, eps, angle, K, K2, sin, cos):
    """∂L/∂r from G = ∂L/∂R (see :class:`_AxisAngleToMatrix`)."""
    g_theta = (cos * (G * K).sum((-1, -2), keepdim=True) + sin * (G * K2).sum((-1, -2), keepdim=True))
    Kt = K.transpose(-1, -2)
    gK = sin * G + (1.0 - cos) * (G @ Kt + Kt @ G)
    gK = gK - gK.transpose(-1, -2)  # only the skew part of ∂L/∂K acts on k
    g_k = torch.stack([gK[..., 2, 1], gK[..., 0, 2], gK[..., 1, 0]], dim=-1)  # (..., 3)
    theta = angle[..., 0]  # (..., 1)
    g_theta = g_theta[..., 0] - (g_k * r).sum(-1, keepdim=True) / theta**2
    return g_k / theta + g_theta * (r + eps) / theta


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
