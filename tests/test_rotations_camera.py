"""Rotation conversions against scipy; projection conventions."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handlib import rotations as rot
from handlib.camera import intrinsics, look_at, project, unproject

F64 = torch.float64


@pytest.fixture
def rotvecs():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(500, 3, generator=g, dtype=F64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(500, 1, generator=g, dtype=F64) * 3.1
    v[0] = 0.0
    v[1] = torch.tensor([1e-9, 0.0, 0.0])
    return v


def test_axis_angle_to_matrix_matches_scipy(rotvecs):
    R = rot.axis_angle_to_matrix(rotvecs, eps=0.0)
    R[0] = torch.eye(3, dtype=F64)  # exact formula divides by zero at 0; smplx's eps handles it
    ref = torch.as_tensor(Rotation.from_rotvec(rotvecs.numpy()).as_matrix())
    assert torch.allclose(R[1:], ref[1:], atol=1e-12)
    # with smplx's default guard it is finite at zero and within 1e-7 elsewhere
    R_eps = rot.axis_angle_to_matrix(rotvecs)
    assert torch.isfinite(R_eps).all() and torch.allclose(R_eps, ref, atol=1e-7)


def test_quaternion_round_trips(rotvecs):
    q = rot.axis_angle_to_quaternion(rotvecs)
    ref = Rotation.from_rotvec(rotvecs.numpy()).as_quat()  # x, y, z, w
    ref = torch.as_tensor(np.concatenate([ref[:, 3:], ref[:, :3]], 1))
    ref = ref * torch.sign(ref[:, :1] + 1e-30)
    assert torch.allclose(q * torch.sign(q[:, :1] + 1e-30), ref, atol=1e-12)
    R = rot.quaternion_to_matrix(q)
    assert torch.allclose(R, torch.as_tensor(Rotation.from_rotvec(rotvecs.numpy()).as_matrix()), atol=1e-12)
    q2 = rot.matrix_to_quaternion(R)
    assert torch.allclose(q2, q * torch.sign(q[:, :1] + 1e-30), atol=1e-10)
    assert torch.allclose(rot.matrix_to_axis_angle(R)[2:], rotvecs[2:], atol=1e-8)
    # non-unit quaternions are normalised
    assert torch.allclose(rot.quaternion_to_matrix(3.0 * q), R, atol=1e-12)
    with pytest.raises(ValueError, match="quat"):
        rot.quaternion_to_matrix(torch.zeros(2, 3))


def test_rotation_gradcheck():
    q = torch.randn(3, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(rot.quaternion_to_matrix, (q,))
    v = torch.randn(3, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(rot.axis_angle_to_matrix, (v,))
    assert torch.autograd.gradcheck(rot.axis_angle_to_quaternion, (v,))


def test_rotation_6d_round_trip_and_gram_schmidt(rotvecs):
    R = torch.as_tensor(Rotation.from_rotvec(rotvecs.numpy()).as_matrix())
    d6 = rot.matrix_to_rotation_6d(R)
    assert d6.shape == (500, 6)
    assert torch.allclose(rot.rotation_6d_to_matrix(d6), R, atol=1e-12)
    # any non-degenerate 6 numbers give a rotation whose first column is a₁'s direction
    g = torch.Generator().manual_seed(1)
    raw = torch.randn(200, 6, generator=g, dtype=F64) * 3
    M = rot.rotation_6d_to_matrix(raw)
    assert torch.allclose(M.transpose(-1, -2) @ M, torch.eye(3, dtype=F64).expand(200, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(M), torch.ones(200, dtype=F64), atol=1e-12)
    assert torch.allclose(M[..., 0], raw[:, :3] / raw[:, :3].norm(dim=-1, keepdim=True), atol=1e-12)
    # the second column lies in the plane of a₁ and a₂, on a₂'s side
    assert ((M[..., 1] * raw[:, 3:]).sum(-1) > 0).all()
    # scaling either vector does not change the rotation
    assert torch.allclose(rot.rotation_6d_to_matrix(raw * torch.tensor([2.0] * 3 + [0.5] * 3, dtype=F64)), M,
                          atol=1e-12)
    x = raw[:3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(rot.rotation_6d_to_matrix, (x,))
    with pytest.raises(ValueError, match="d6"):
        rot.rotation_6d_to_matrix(torch.zeros(2, 5))


def test_projection_conventions():
    K = intrinsics(100.0, 31.5, 31.5, dtype=F64)
    # a point on the optical axis lands on the principal point; +x right, +y down
    pts = torch.tensor([[[0.0, 0.0, 1.0], [0.1, 0.0, 1.0], [0.0, 0.1, 1.0]]], dtype=F64)
    uv = project(pts, K)
    assert torch.allclose(uv[0], torch.tensor([[31.5, 31.5], [41.5, 31.5], [31.5, 41.5]], dtype=F64))
    back = unproject(uv, pts[..., 2], K)
    assert torch.allclose(back, pts)
    Kb = intrinsics(torch.tensor([100.0, 200.0]), 0.0, 0.0, dtype=F64)
    assert Kb.shape == (2, 3, 3)
    with pytest.raises(ValueError, match="points"):
        project(torch.zeros(1, 4, 2), K)


def test_look_at():
    eye = torch.tensor([[0.3, -0.2, -1.0]], dtype=F64)
    R = look_at(eye, torch.zeros(1, 3, dtype=F64))
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=F64)[None], atol=1e-12)
    assert torch.isclose(torch.det(R[0]), torch.tensor(1.0, dtype=F64))
    target_cam = R[0] @ (torch.zeros(3, dtype=F64) - eye[0])
    assert torch.allclose(target_cam[:2], torch.zeros(2, dtype=F64), atol=1e-12) and target_cam[2] > 0


def test_rodrigues_closed_form_backward_matches_autograd():
    """The custom backward equals autograd through the plain formula, and supports double backward."""
    v = (torch.randn(64, 3, dtype=F64) * 1.5).requires_grad_(True)
    G = torch.randn(64, 3, 3, dtype=F64)
    ours = torch.autograd.grad((rot.axis_angle_to_matrix(v) * G).sum(), v)[0]
    ref = torch.autograd.grad((rot._rodrigues(v, rot.SMPLX_EPS)[0] * G).sum(), v)[0]
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)
    small = torch.randn(4, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(rot.axis_angle_to_matrix, (small,))
