"""DHPE (Eq. 1): shapes of every intermediate, the masked branch of Eq. 2, configs, errors."""
import dataclasses

import pytest
import torch

from handlib.config import profile
from handlib.data.batch import normalize_image
from handlib.hand_model import HandModel
from handlib.heatmaps import HeatmapConfig
from handlib.model import DHPE, EvidenceEstimator, ModelConfig, mask_image


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DHPE(ModelConfig.from_profile(profile("ci")))


def _inputs(B=2, S=64):
    K = torch.tensor([[80.0, 0, 31.5], [0, 80.0, 31.5], [0, 0, 1]]).expand(B, 3, 3)
    return torch.randn(B, 3, S, S), K


def test_forward_returns_every_intermediate(model):
    x, K = _inputs()
    out = model(x, K)
    prof = profile("ci")
    assert out.evidence.features.shape == (2, model.evidence.feat_dim)
    assert len(out.evidence.heatmaps) == prof.heatmap_stages
    assert out.evidence.heatmaps[-1].shape == (2, 21, prof.heatmap_size, prof.heatmap_size)
    assert out.evidence.j2d.shape == (2, 21, 2)
    assert len(out.reg.h) == 4 and out.h.shape == (2, 63)
    assert out.verts.shape == (2, model.hand_model.num_verts, 3) and out.joints.shape == (2, 21, 3)
    sil = out.silhouette.detach()
    assert sil.shape == (2, 64, 64) and 0 <= float(sil.min()) <= float(sil.max()) <= 1
    assert torch.equal(out.h, out.reg.h[-1]) and torch.equal(out.j2d, out.reg.j2d_proj[-1])
    assert model(x, K, render=False).silhouette is None


def test_evidence_only_and_masked_branch(model):
    x, K = _inputs(3)
    model.eval()
    mask = torch.zeros(3, 64, 64, dtype=torch.bool)
    mask[:, 16:48, 16:48] = True
    xm = mask_image(x[:2], mask[:2])
    out = model(x, K, masked=xm, evidence_only=True)
    assert out.reg is None and out.h is None
    # in eval mode BatchNorm is per-sample, so the shared pass equals separate passes
    assert torch.allclose(out.masked_features, model.evidence.features(xm), atol=1e-5)
    assert torch.allclose(out.evidence.features, model.evidence.features(x), atol=1e-5)
    model.train()


def test_mask_image_blacks_out_background():
    img = torch.full((1, 4, 4, 3), 200, dtype=torch.uint8)
    x = normalize_image(img)
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 1:3, 1:3] = True
    black = normalize_image(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))
    xm = mask_image(x, m)
    assert torch.allclose(xm[:, :, 1:3, 1:3], x[:, :, 1:3, 1:3])
    assert torch.allclose(xm[:, :, 0], black[:, :, 0])


def test_config_round_trip_and_profile_sizes():
    for name in ("ci", "cpu", "gpu"):
        prof = profile(name)
        cfg = ModelConfig.from_profile(prof)
        assert cfg.image_size == prof.image_size and cfg.backbone == prof.backbone
        assert cfg.heatmap.heatmap_size == prof.heatmap_size
        assert cfg.render.image_size == (prof.image_size,) * 2
        assert ModelConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    gpu = ModelConfig.from_profile(profile("gpu"))
    assert (gpu.image_size, gpu.backbone, gpu.heatmap.heatmap_size) == (224, "resnet50", 32)  # the paper's


def test_errors(model):
    x, K = _inputs()
    with pytest.raises(ValueError, match="x"):
        model(x[:, :, :32], K)
    with pytest.raises(ValueError, match="masked"):
        model(x, K, masked=x[:, :, :32])
    with pytest.raises(ValueError, match="right"):
        DHPE(ModelConfig.from_profile(profile("ci")), hand_model=HandModel("left"))
    ev = EvidenceEstimator("resnet_tiny", 64, HeatmapConfig(heatmap_size=16))
    assert ev(x).j2d.shape == (2, 21, 2)


def test_feat_dim_without_building():
    for name, c in (("resnet50", 2048), ("resnet18", 512), ("resnet18_half", 256), ("resnet_tiny", 128)):
        assert dataclasses.replace(ModelConfig(), backbone=name).feat_dim == c
    ci = ModelConfig.from_profile(profile("ci"))
    assert ci.feat_dim == DHPE(ci).evidence.feat_dim
