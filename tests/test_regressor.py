"""f_E3D (Eqs. 4–6): the code of h, h_0, iteration bookkeeping, paper dimensions."""
import dataclasses

import pytest
import torch

from handlib.camera import intrinsics, project
from handlib.hand_model import HandModel, identity_h
from handlib.regressor import (
    R_UPRIGHT,
    IterativeRegressor,
    RegressorConfig,
    code_dim,
    code_to_h,
    denormalize_uv,
    h_to_code,
    initial_code,
    normalize_uv,
)
from handlib.rotations import quaternion_to_matrix

S = 64


def _K(B, f=90.0, c=(30.0, 33.0), dtype=torch.float32):
    return intrinsics(f, *c).to(dtype).expand(B, 3, 3).clone()


@pytest.fixture(scope="module")
def hand():
    return HandModel("right")


def test_code_round_trip_float64():
    B = 5
    g = torch.Generator().manual_seed(0)
    h = identity_h(B, dtype=torch.float64)
    h[:, :4] = torch.nn.functional.normalize(torch.randn(B, 4, generator=g, dtype=torch.float64), dim=-1)
    h[:, 4:59] = torch.randn(B, 55, generator=g, dtype=torch.float64) * 0.3
    h[:, 59] = 1.0 + 0.1 * torch.rand(B, generator=g, dtype=torch.float64)
    noise = torch.randn(B, 3, generator=g, dtype=torch.float64)
    h[:, 60:63] = torch.tensor([0.02, -0.03, 0.4], dtype=torch.float64) + 0.01 * noise
    K = _K(B, dtype=torch.float64)
    code = h_to_code(h, K, S)
    assert torch.allclose(code_to_h(code, K, S), h, atol=1e-12)
    # the code's translation is the wrist's pixel position in half-crop units
    uv = project(h[:, None, 60:63], K)[:, 0]
    assert torch.allclose(denormalize_uv(code[:, 60:62], S), uv, atol=1e-10)
    assert torch.allclose(normalize_uv(denormalize_uv(code[:, 60:62], S), S), code[:, 60:62])


def test_initial_code_is_mean_hand_at_crop_centre_at_reference_depth():
    K = _K(2)
    h0 = code_to_h(initial_code(2), K, S, ref_extent=0.2)
    assert torch.equal(h0[:, :4], torch.tensor([[1.0, 0, 0, 0]] * 2))
    assert torch.all(h0[:, 4:59] == 0) and torch.all(h0[:, 59] == 1)
    z_ref = 90.0 * 0.2 / S
    assert torch.allclose(h0[:, 62], torch.full((2,), z_ref))
    assert torch.allclose(project(h0[:, None, 60:63], K)[:, 0], torch.full((2, 2), (S - 1) / 2), atol=1e-4)


def test_code_to_h_gradcheck():
    code = initial_code(2, torch.float64) + 0.1 * torch.randn(2, 63, dtype=torch.float64)
    code.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: code_to_h(c, _K(2, dtype=torch.float64), S), (code,))


def test_6d_code_round_trip_and_gradcheck():
    B = 5
    g = torch.Generator().manual_seed(2)
    h = identity_h(B, dtype=torch.float64)
    h[:, :4] = torch.nn.functional.normalize(torch.randn(B, 4, generator=g, dtype=torch.float64), dim=-1)
    h[:, :4] *= torch.sign(h[:, :1])  # code_to_h returns q with w ≥ 0 (q and −q are one rotation)
    h[:, 4:59] = torch.randn(B, 55, generator=g, dtype=torch.float64) * 0.3
    h[:, 60:63] = torch.tensor([0.02, -0.03, 0.4], dtype=torch.float64)
    K = _K(B, dtype=torch.float64)
    code = h_to_code(h, K, S, rotation="6d")
    assert code.shape == (B, 65) and code_dim("6d") == 65 and code_dim() == 63
    assert torch.allclose(code_to_h(code, K, S, rotation="6d"), h, atol=1e-12)
    # the tail of the code is the quaternion code's tail
    assert torch.allclose(code[:, 6:], h_to_code(h, K, S)[:, 4:], atol=1e-12)
    c = (code + 0.1 * torch.randn(B, 65, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: code_to_h(x, K, S, rotation="6d"), (c,))
    with pytest.raises(ValueError, match=r"code: expected shape \(\*, 65\)"):
        code_to_h(torch.zeros(2, 63), _K(2), S, rotation="6d")


@pytest.mark.parametrize("rotation", ["quaternion", "6d"])
def test_upright_start_points_the_fingers_up(hand, rotation):
    K = _K(2)
    h0 = code_to_h(initial_code(2, rotation=rotation, start="upright"), K, S, rotation=rotation)
    R = quaternion_to_matrix(h0[:, :4])
    assert torch.allclose(R, torch.tensor(R_UPRIGHT).expand(2, 3, 3), atol=1e-6)
    J = hand.from_h(h0).joints[0]
    d = J[9] - J[0]  # wrist → middle MCP of the mean hand
    assert d[1] < -0.9 * d.norm()  # up in the image (−y)
    # the identity start in either representation is the same h_0
    same = code_to_h(initial_code(2, rotation=rotation), K, S, rotation=rotation)
    assert torch.allclose(same, code_to_h(initial_code(2), K, S), atol=1e-7)
    with pytest.raises(ValueError, match="start"):
        initial_code(1, start="sideways")


def test_6d_regressor_code_and_fixed_scale(hand):
    B, C = 2, 8
    cfg = RegressorConfig(rotation="6d", start="upright", init_gain=1.0)
    reg = IterativeRegressor(C, cfg)
    out = reg(torch.randn(B, C), torch.rand(B, 21, 2) * S, _K(B), hand, S)
    assert out.code[0].shape == (B, 65) and out.h[-1].shape == (B, 63)
    assert torch.equal(out.code[-1][:, 61], out.code[0][:, 61])  # log s: not learnt by default
    assert not torch.equal(out.code[-1][:, :6], out.code[0][:, :6])
    assert torch.allclose(reg.code_to_h(reg.h_to_code(out.h[-1], _K(B), S), _K(B), S), out.h[-1], atol=1e-5)
    for bad in (dict(rotation="euler"), dict(start="mean")):
        with pytest.raises(ValueError, match="RegressorConfig"):
            RegressorConfig(**bad)


def test_iterations_bookkeeping_and_zero_updates(hand):
    B, C = 3, 16
    cfg = RegressorConfig(iterations=3, init_gain=0.0)
    reg = IterativeRegressor(C, cfg)
    F, j2d, K = torch.randn(B, C), torch.rand(B, 21, 2) * S, _K(B)
    out = reg(F, j2d, K, hand, S)
    assert len(out.code) == len(out.h) == 4 and len(out.verts) == len(out.joints) == len(out.j2d_proj) == 3
    assert len(out.j2d) == 4 and torch.equal(out.j2d[0], j2d)
    # zero-initialised output layers: every iteration keeps h_0 and j2D_0
    for t in range(4):
        assert torch.allclose(out.code[t], initial_code(B))
        assert torch.allclose(out.j2d[t], j2d)
    assert out.verts[0].shape == (B, hand.num_verts, 3) and out.j2d_proj[0].shape == (B, 21, 2)
    assert torch.allclose(out.j2d_proj[-1], project(out.joints[-1], K))


def test_updates_are_additive_and_scale_is_fixed(hand):
    B, C = 2, 8
    torch.manual_seed(0)
    reg = IterativeRegressor(C, RegressorConfig(iterations=2, init_gain=1.0))
    F, j2d, K = torch.randn(B, C), torch.rand(B, 21, 2) * S, _K(B)
    out = reg(F, j2d, K, hand, S)
    x2d = normalize_uv(j2d, S).flatten(1)
    delta = reg.reg(torch.cat([F, x2d, out.code[0]], -1))
    delta[:, 59] = 0  # learn_scale=False
    assert torch.allclose(out.code[1], out.code[0] + delta, atol=1e-6)  # Eqs. 4–5
    assert torch.all(out.code[2][:, 59] == 0) and torch.allclose(out.h[2][:, 59], torch.ones(B))
    assert not torch.allclose(out.j2d[1], out.j2d[0])  # the refiner moved the 2D pose
    learn = IterativeRegressor(C, RegressorConfig(iterations=1, init_gain=1.0, learn_scale=True))
    assert not torch.all(learn(F, j2d, K, hand, S).code[1][:, 59] == 0)


def test_no_refiner_keeps_evidence(hand):
    reg = IterativeRegressor(8, RegressorConfig(use_refiner=False, init_gain=1.0))
    j2d = torch.rand(2, 21, 2) * S
    out = reg(torch.randn(2, 8), j2d, _K(2), hand, S)
    assert all(torch.equal(j, j2d) for j in out.j2d)


def test_paper_dimensions():
    reg = IterativeRegressor(2048, RegressorConfig())
    assert reg.reg[-1].in_features == 2048 + 42 + 63 == 2153 and reg.reg[-1].out_features == 63
    assert reg.ref[-1].in_features == 2216 and reg.ref[-1].out_features == 42
    assert len(reg.reg) == 1 and len(reg.ref) == 1  # one FC layer each
    hmr = IterativeRegressor(2048, dataclasses.replace(RegressorConfig(), hidden=(1024, 1024), dropout=0.5))
    assert [m.out_features for m in hmr.reg if isinstance(m, torch.nn.Linear)] == [1024, 1024, 63]


def test_errors(hand):
    reg = IterativeRegressor(8)
    with pytest.raises(ValueError, match="F"):
        reg(torch.randn(2, 9), torch.zeros(2, 21, 2), _K(2), hand, S)
    with pytest.raises(ValueError, match="j2d"):
        reg(torch.randn(2, 8), torch.zeros(2, 20, 2), _K(2), hand, S)
    with pytest.raises(ValueError, match="iterations"):
        IterativeRegressor(8, RegressorConfig(iterations=0))
    with pytest.raises(ValueError, match="code"):
        code_to_h(torch.zeros(2, 62), _K(2), S)
