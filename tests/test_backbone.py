import dataclasses

import pytest
import torch

from handlib.backbone import (
    BACKBONES,
    BackboneConfig,
    BackboneOutput,
    build_backbone,
    resnet18,
    resnet34,
    resnet50,
    resnet_tiny,
)
from handlib.config import PROFILES


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("ctor, expected", [
    (resnet18, 11_689_512 - 513_000),  # torchvision total minus fc (512·1000 + 1000)
    (resnet34, 21_797_672 - 513_000),
    (resnet50, 25_557_032 - 2_049_000),  # fc: 2048·1000 + 1000
])
def test_parameter_counts_match_torchvision(ctor, expected):
    assert n_params(ctor()) == expected


def test_out_dim_and_config():
    assert resnet50().out_dim == 2048 and resnet18().out_dim == 512 and resnet_tiny().out_dim == 128
    cfg = BACKBONES["resnet_tiny"]
    assert isinstance(cfg, BackboneConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"
    assert build_backbone("resnet18", in_channels=4).conv1.in_channels == 4
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_backbone("vgg")


@pytest.mark.parametrize("prof", ["ci", "cpu", "gpu"])
def test_output_shapes_per_profile(prof):
    p = PROFILES[prof]
    net = build_backbone(p.backbone).eval()
    B, S = (1, p.image_size) if prof == "gpu" else (2, p.image_size)
    with torch.no_grad():
        out = net(torch.randn(B, 3, S, S))
    assert isinstance(out, BackboneOutput)
    C = net.out_dim
    assert out.features.shape == (B, C, S // 32, S // 32)
    assert out.pooled.shape == (B, C)
    assert torch.allclose(out.pooled, out.features.mean(dim=(2, 3)))
    assert len(out.maps) == 4
    for m, c, s in zip(out.maps, net.map_channels, (4, 8, 16, 32)):
        assert m.shape == (B, c, S // s, S // s)
    assert out.maps[-1] is out.features


def test_gradients_reach_stem():
    net = resnet_tiny()
    out = net(torch.randn(2, 3, 64, 64))
    (out.pooled.sum() + out.maps[0].mean()).backward()
    g = net.conv1.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_zero_init_residual_makes_blocks_identity_branches():
    net = resnet_tiny(zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in (net.layer1[0], net.layer4[0]))
    assert n_params(net) == n_params(resnet_tiny())


def test_eval_determinism():
    torch.manual_seed(0)
    net = resnet_tiny().eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = net(x), net(x)
        single = net(x[1:2])
    assert torch.equal(a.pooled, b.pooled)
    assert torch.allclose(single.pooled, a.pooled[1:2], atol=1e-5)  # eval BN: no batch coupling


def test_wrong_input_shape_names_x():
    net = resnet_tiny()
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3, H, W\)"):
        net(torch.randn(2, 64, 64))
    with pytest.raises(ValueError, match="x: expected"):
        net(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="x: H and W"):
        net(torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("name", ["resnet_tiny", "resnet50"])
def test_fold_batchnorm_keeps_outputs_and_gradients(name):
    from handlib.backbone import fold_batchnorm

    torch.manual_seed(0)
    net = build_backbone(name).eval()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            C = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(C, generator=g))
            m.running_var.copy_(0.5 + torch.rand(C, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(C, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(C, generator=g))
    net = net.double()  # fold in float64, so that only the folding itself is compared
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) > 0  # the original is untouched
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    a, b = net(x), folded(x)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-10) and all(
        torch.allclose(p, q, atol=1e-10) for p, q in zip(a.maps, b.maps))
    ga = torch.autograd.grad(a.pooled.square().sum(), x)[0]
    gb = torch.autograd.grad(b.pooled.square().sum(), x)[0]
    assert torch.allclose(ga, gb, atol=1e-10)
