"""Pinhole camera: intrinsics K, perspective projection, and the rotations it uses.

Convention everywhere in handlib (OpenCV): camera looks along +z, x right, y down, metres;
K maps camera coordinates to pixels, pixel (u, v) covers [u−½, u+½] × [v−½, v+½] with its centre
at the integer (u, v); images are indexed ``[v, u]``.
"""
from __future__ import annotations

import torch

from .rotations import matrix_to_quaternion, quaternion_to_matrix

__all__ = ["intrinsics", "project", "unproject", "quaternion_to_matrix", "matrix_to_quaternion",
           "look_at"]


def intrinsics(focal: float | torch.Tensor, cx: float | torch.Tensor, cy: float | torch.Tensor,
               batch: int | None = None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Build K = [[f, 0, cx], [0, f, cy], [0, 0, 1]].

    Args:
        focal, cx, cy: scalars or (B,) tensors, pixels.
        batch: if given, return (batch, 3, 3); otherwise (3, 3) or (B, 3, 3) for tensor inputs.
    Returns:
        K: (3, 3) or (B, 3, 3).
    """
    f, cx, cy = (torch.as_tensor(v, dtype=dtype, device=device) for v in (focal, cx, cy))
    f, cx, cy = torch.broadcast_tensors(f, cx, cy)
    zero, one = torch.zeros_like(f), torch.ones_like(f)
    K = torch.stack([f, zero, cx, zero, f, cy, zero, zero, one], dim=-1).reshape(*f.shape, 3, 3)
    if batch is not None:
        K = K.expand(batch, 3, 3).clone()
    return K


def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Perspective projection of camera-space points to pixels.

    Args:
        points: (B, N, 3) camera coordinates, metres, z > 0 in front of the camera.
        K: (B, 3, 3) or (3, 3) intrinsics.
        eps: depths are clamped to at least ``eps`` to avoid division by zero.
    Returns:
        (B, N, 2) pixel coordinates (u, v).
    """
    if points.shape[-1] != 3:
        raise ValueError(f"points: expected shape (B, N, 3), got {tuple(points.shape)}")
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K: expected shape (B, 3, 3) or (3, 3), got {tuple(K.shape)}")
    if K.dim() == 2:
        K = K.expand(points.shape[0], 3, 3)
    uvw = points @ K.transpose(-1, -2)  # (B, N, 3)
    return uvw[..., :2] / uvw[..., 2:].clamp_min(eps)


def unproject(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`project` given depth.

    Args:
        uv: (B, N, 2) pixels; depth: (B, N) camera-space Z; K: (B, 3, 3) or (3, 3).
    Returns:
        (B, N, 3) camera-space points.
    """
    if K.dim() == 2:
        K = K.expand(uv.shape[0], 3, 3)
    ones = torch.ones_like(uv[..., :1])
    rays = torch.cat([uv, ones], dim=-1) @ torch.linalg.inv(K).transpose(-1, -2)  # (B, N, 3)
    return rays * depth[..., None]


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World→camera rotation whose +z axis points from ``eye`` to ``target`` (y down).

    Args:
        eye, target: (B, 3). up: (B, 3) world "up" direction (default −y, image up).
    Returns:
        R: (B, 3, 3) so that x_cam = R (x_world − eye).
    """
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    if up is None:
        up = torch.tensor([0.0, -1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    x = torch.nn.functional.normalize(torch.cross(-up, z, dim=-1), dim=-1)  # image right
    y = torch.cross(z, x, dim=-1)  # image down
    return torch.stack([x, y, z], dim=-2)
