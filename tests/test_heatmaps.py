import dataclasses

import pytest
import torch
import torch.nn.functional as F

from handlib.backbone import STRIDES, build_backbone
from handlib.config import PROFILES
from handlib.heatmaps import (
    HeatmapConfig,
    KeypointHead,
    gaussian_heatmaps,
    heatmap_argmax,
    heatmap_to_image,
    image_to_heatmap,
    pick_stride,
    soft_argmax_2d,
)


def test_coordinate_maps_round_trip_and_convention():
    uv = torch.rand(2, 21, 2, dtype=torch.float64) * 224
    for s in (7.0, 4.0, 224 / 32):
        assert torch.allclose(heatmap_to_image(image_to_heatmap(uv, s), s), uv)
        assert torch.allclose(image_to_heatmap(heatmap_to_image(uv, s), s), uv)
    # heat-map pixel 0 at s=4 covers image pixels 0..3 -> centre 1.5; last cell (15) -> 61.5
    assert heatmap_to_image(torch.tensor([0.0, 15.0]), 4.0).tolist() == [1.5, 61.5]
    # the image's outer edges (-0.5, S-0.5) map to the heat map's outer edges
    assert image_to_heatmap(torch.tensor([-0.5, 63.5]), 4.0).tolist() == [-0.5, 15.5]


def test_coordinate_convention_matches_bilinear_resize():
    # a ramp holding each pixel's own u, box-averaged or bilinearly resized (align_corners=False),
    # gives every heat-map cell the image u of its centre
    S, hm = 64, 16
    ramp = torch.arange(S, dtype=torch.float64).expand(1, 1, S, S)
    centres = heatmap_to_image(torch.arange(hm, dtype=torch.float64), S / hm)
    assert torch.allclose(F.avg_pool2d(ramp, S // hm)[0, 0, 0], centres)
    small = F.interpolate(ramp, size=(hm, hm), mode="bilinear", align_corners=False)
    assert torch.allclose(small[0, 0, 0], centres)
    # and upsampling the paper's 28×28 stride-8 map to 32×32 follows the same convention
    ramp28 = torch.arange(28, dtype=torch.float64).expand(1, 1, 28, 28)
    big = F.interpolate(ramp28, size=(32, 32), mode="bilinear", align_corners=False)[0, 0, 0]
    expected = image_to_heatmap(heatmap_to_image(torch.arange(32.0, dtype=torch.float64), 224 / 32), 8.0)
    inner = (expected >= 0) & (expected <= 27)  # bilinear clamps outside the outer centres
    assert torch.allclose(big[inner], expected[inner])


def test_gaussian_targets_peak_and_invalid():
    kp = torch.tensor([[[3.0, 5.0], [10.0, 2.0]]])
    valid = torch.tensor([[True, False]])
    h = gaussian_heatmaps(kp, (16, 12), sigma=1.5, valid=valid)
    assert h.shape == (1, 2, 16, 12)
    assert h[0, 0, 5, 3] == 1.0 and h[0, 0].max() == 1.0  # indexed [v, u]
    assert torch.isclose(h[0, 0, 5, 4], torch.exp(torch.tensor(-1 / (2 * 1.5**2))))
    assert (h[0, 1] == 0).all()
    with pytest.raises(ValueError, match="kp: expected shape"):
        gaussian_heatmaps(torch.zeros(2, 3), (8, 8))
    with pytest.raises(ValueError, match="valid: expected shape"):
        gaussian_heatmaps(kp, (8, 8), valid=torch.ones(1, 3))


def test_argmax_integer_peak_exact():
    torch.manual_seed(0)
    kp = torch.randint(0, 16, (3, 21, 2)).double()
    h = gaussian_heatmaps(kp, (16, 16), sigma=1.0)
    assert torch.equal(heatmap_argmax(h), kp)  # border peaks included: no refinement there


def test_argmax_subpixel_within_quarter_pixel():
    torch.manual_seed(1)
    kp = torch.rand(4, 21, 2, dtype=torch.float64) * 12 + 2
    h = gaussian_heatmaps(kp, (16, 16), sigma=1.0)
    err = (heatmap_argmax(h) - kp).abs()
    assert err.max() <= 0.25 + 1e-9
    # the refinement helps: plain integer argmax has a larger worst case on the same peaks
    assert err.max() < (kp.round() - kp).abs().max()


def test_soft_argmax_recovers_subpixel_location():
    torch.manual_seed(2)
    kp = torch.rand(2, 21, 2, dtype=torch.float64) * 8 + 4
    # log-Gaussian logits: softmax is exactly a discrete Gaussian, whose mean is the true location
    r2 = -torch.log(gaussian_heatmaps(kp, (16, 16), sigma=1.0))
    assert (soft_argmax_2d(-r2, beta=1.0) - kp).abs().max() < 1e-3  # border truncation only
    # a peak-1 target map needs β matched to its width (see docstring)
    h = gaussian_heatmaps(kp, (16, 16), sigma=2.0)
    assert (soft_argmax_2d(h, beta=10.0) - kp).abs().max() < 0.05


def test_soft_argmax_gradcheck():
    h = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_argmax_2d(x, beta=2.0), (h,))


def test_decoders_reject_bad_shapes():
    with pytest.raises(ValueError, match="h: expected shape"):
        heatmap_argmax(torch.zeros(21, 16, 16))
    with pytest.raises(ValueError, match="h: expected shape"):
        soft_argmax_2d(torch.zeros(21, 16, 16))


def test_pick_stride_per_profile():
    assert [STRIDES[pick_stride(p.image_size, p.heatmap_size)] for p in PROFILES.values()] == [8, 8, 8]
    closest = [STRIDES[pick_stride(p.image_size, p.heatmap_size, min_stride=1)] for p in PROFILES.values()]
    assert closest == [4, 8, 8]  # ci 64/16; cpu 224/28 (its network reads landmarks, not maps); gpu 224/32


def test_head_shapes_and_gradients_ci_profile():
    torch.manual_seed(0)
    p = PROFILES["ci"]
    cfg = dataclasses.replace(HeatmapConfig(), heatmap_size=p.heatmap_size, channels=32)
    net = build_backbone(p.backbone)
    i = pick_stride(p.image_size, p.heatmap_size)
    head = KeypointHead.from_config(net.map_channels[i], cfg)
    x = torch.randn(2, 3, p.image_size, p.image_size)
    outs = head(net(x).maps[i])
    hm = p.heatmap_size
    assert len(outs) == cfg.stages and all(o.shape == (2, 21, hm, hm) for o in outs)
    # two optimiser steps on the intermediate-supervision loss (CPM)
    target = gaussian_heatmaps(torch.rand(2, 21, 2) * (hm - 1), (hm, hm), cfg.sigma)
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        loss = sum(F.mse_loss(o, target) for o in head(net(x).maps[i]))
        loss.backward()
        assert net.conv1.weight.grad.abs().sum() > 0
        assert all(s[0].weight.grad.abs().sum() > 0 for s in head.stages)
        opt.step()


def test_head_resizes_paper_map_and_checks_shape():
    head = KeypointHead(in_channels=16, num_keypoints=21, stages=2, channels=8, heatmap_size=32)
    outs = head(torch.randn(1, 16, 28, 28))  # 224 px / stride 8 -> 28, resized to the paper's 32
    assert [o.shape for o in outs] == [(1, 21, 32, 32)] * 2
    with pytest.raises(ValueError, match=r"feat: expected shape \(B, 16, h, w\)"):
        head(torch.randn(1, 8, 28, 28))
    with pytest.raises(ValueError, match="stages"):
        KeypointHead(16, stages=0)
