"""handlib.backbone_pretrained: MediaPipe's landmark network as f_E2D's backbone (backbone="mediapipe"):
equality with HandLandmarkNet, the four maps, DHPE shapes, gradients, state_dict, config checks."""
import glob
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from handlib.backbone import BackboneOutput, build_backbone, fold_batchnorm
from handlib.data.batch import normalize_image
from handlib.evidence_pretrained import default_model_path
from handlib.heatmaps import HeatmapConfig
from handlib.model import DHPE, EvidenceEstimator, ModelConfig

pytest.importorskip("tflite")
pytestmark = pytest.mark.skipif(not default_model_path().is_file(),
                                reason=f"{default_model_path()} absent: run data_scripts/get_pretrained.py")

FREIHAND = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "mmpose_testdata" / "freihand"
# a small head and regressor: the backbone is what is tested, and they dominate neither time nor memory
CFG = ModelConfig(backbone="mediapipe", image_size=224, heatmap=HeatmapConfig(channels=32, stages=2))


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """The whole module runs with one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("mediapipe").eval()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DHPE(CFG)


def _crops() -> torch.Tensor:
    """(N, 224, 224, 3) uint8: one seeded random image, plus one FreiHAND frame when ../shared has it."""
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (224, 224, 3), generator=g, dtype=torch.uint8)]
    files = sorted(glob.glob(str(FREIHAND / "*.jpg")))
    if files:
        from PIL import Image

        images.append(torch.from_numpy(np.asarray(Image.open(files[0]).convert("RGB")).copy()))
    return torch.stack(images)


def _K(B: int) -> torch.Tensor:
    return torch.tensor([[300.0, 0, 111.5], [0, 300.0, 111.5], [0, 0, 1]]).expand(B, 3, 3)


def test_pooled_equals_hand_landmark_net_after_normalisation(backbone):
    from handlib.pretrained import HandLandmarkNet

    u8 = _crops()
    net = HandLandmarkNet.from_task().eval()  # an independent copy of the weights
    with torch.no_grad():
        out = backbone(normalize_image(u8))  # ImageNet-normalised, as the data pipeline gives
        ref = net(u8.permute(0, 3, 1, 2).float() / 255)  # RGB in [0, 1], MediaPipe's input
    assert isinstance(out, BackboneOutput)
    assert out.pooled.shape == (len(u8), 1152)
    assert torch.allclose(out.pooled, ref.feature, rtol=0, atol=1e-5)
    assert torch.allclose(out.features, ref.feature_map, rtol=0, atol=1e-4)
    assert out.maps[-1] is out.features
    # the by-product landmarks: MediaPipe's crop pixels moved to handlib's (pixel centres at integers)
    assert out.landmarks.shape == (len(u8), 21, 2)
    assert torch.allclose(out.landmarks, ref.landmarks[..., :2] - 0.5, rtol=0, atol=1e-3)


def test_maps_at_strides_4_8_16_32(backbone):
    assert backbone.out_dim == 1152
    assert backbone.map_channels == (144, 240, 672, 1152)  # documented in backbone_pretrained.py
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 224, 224))
    for m, c, s in zip(out.maps, backbone.map_channels, (4, 8, 16, 32), strict=True):
        assert m.shape == (2, c, 224 // s, 224 // s)
    # the last tensor of each size: the expansion feeding a stride-2 depthwise conv (ReLU6, so in [0, 6])
    assert all(float(m.min()) >= 0 and float(m.max()) <= 6 for m in out.maps)


def test_weights_are_float32_trainable_and_fold_batchnorm_passes_through(backbone):
    params = list(backbone.parameters())
    assert sum(p.numel() for p in params) == 2_715_680  # hand_landmark_full, heads included
    assert all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    folded = fold_batchnorm(backbone)  # refine.py does this; nothing to fold, same network
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(folded(x).pooled, backbone(x).pooled, rtol=0, atol=1e-6)


def test_errors_name_the_input_and_the_file(backbone, tmp_path):
    for bad in (torch.randn(1, 3, 128, 128), torch.randn(1, 4, 224, 224), torch.randn(3, 224, 224)):
        with pytest.raises(ValueError, match=r"^x: expected shape \(B, 3, 224, 224\)"):
            backbone(bad)
    missing = tmp_path / "missing.task"
    with pytest.raises(FileNotFoundError, match="missing.task"):
        build_backbone("mediapipe", path=missing)


def test_model_config_feat_dim_and_image_size_check():
    assert CFG.feat_dim == 1152  # read without building anything
    with pytest.raises(ValueError, match="image_size: backbone 'mediapipe' .* 224×224 .* got image_size=128"):
        ModelConfig(backbone="mediapipe", image_size=128)
    with pytest.raises(ValueError, match="image_size=64"):
        EvidenceEstimator("mediapipe", 64)
    assert ModelConfig(backbone="resnet_tiny", image_size=64).feat_dim == 128  # others: unchanged


def test_dhpe_forward_shapes_and_gradients(model):
    model.train()
    B = 2
    x = torch.randn(B, 3, 224, 224)
    out = model(x, _K(B))
    assert model.evidence.feat_dim == 1152
    assert out.evidence.features.shape == (B, 1152)
    assert out.evidence.heatmaps[-1].shape == (B, 21, 32, 32)  # head on the 28×28 stride-8 map, resized
    assert out.evidence.j2d.shape == out.j2d.shape == (B, 21, 2)
    assert out.h.shape == (B, 63) and out.joints.shape == (B, 21, 3)
    assert out.silhouette.shape == (B, 224, 224)
    model.zero_grad(set_to_none=True)
    (out.evidence.heatmaps[-1].square().mean() + out.h.square().mean()).backward()
    first_conv = next(m for m in model.evidence.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 3  # the image's first layer
    for p in (first_conv.weight, next(model.evidence.head.parameters())):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_state_dict_round_trip(model):
    model.eval()
    with torch.no_grad():  # move the backbone off its file weights: the round trip must carry them
        next(model.evidence.backbone.parameters()).add_(0.01 * torch.randn_like(
            next(model.evidence.backbone.parameters())))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    x, K = torch.randn(2, 3, 224, 224), _K(2)
    torch.manual_seed(1)
    fresh = DHPE(CFG).eval()
    with torch.no_grad():
        want = model(x, K, render=False)
        before = fresh(x, K, render=False)
        assert not torch.allclose(before.evidence.features, want.evidence.features, atol=1e-4)
        buf.seek(0)
        fresh.load_state_dict(torch.load(buf))
        got = fresh(x, K, render=False)
    assert torch.equal(got.evidence.features, want.evidence.features)
    assert torch.equal(got.h, want.h)
