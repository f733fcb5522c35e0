"""2D keypoint heat maps: targets, decoding and the CPM-style head of the 2D evidence estimator f_E2D.

Baek et al. 2019 (Sec. 3.2) estimate K=21 keypoint heat maps from the image with a convolutional
pose machine (Wei et al. 2016); at 224 px input these are 21×32×32. The heat maps are both an
output (2D evidence, Eq. 6's 2D term) and an input to the mesh regressor.

Coordinate convention (same as ``handlib.camera``): pixel centres sit at integer coordinates in both
the image and the heat map. With scale s = image_size / heatmap_size, heat-map pixel (i, j) covers
image pixels [j·s − ½, (j+1)·s − ½) horizontally, so its centre is

    u = (j + ½)·s − ½,        and conversely    j = (u + ½)/s − ½.

``image_to_heatmap`` and ``heatmap_to_image`` apply these maps to (u, v) and are exact inverses.
Heat maps are indexed ``[..., v, u]``; every (B, K, 2) coordinate is (u, v).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HeatmapConfig", "KeypointHead", "gaussian_heatmaps", "heatmap_argmax", "heatmap_to_image",
           "image_to_heatmap", "pick_stride", "soft_argmax_2d"]


@dataclasses.dataclass(frozen=True)
class HeatmapConfig:
    """Settings of the 2D keypoint head and its targets."""

    heatmap_size: int = 32  # heat-map side; paper: 32 at 224 px (21×32×32), profile().heatmap_size
    # target Gaussian std in heat-map pixels. 1.5 (ours; paper silent): sharp, yet wide enough
    # that soft-argmax with beta=20 decodes a target to within 0.15 px (1.0 would give 0.3 px)
    sigma: float = 1.5
    stages: int = 3  # CPM stages; each refines the previous belief with more context (Wei et al.)
    channels: int = 128  # width of every stage; the head is small next to the backbone
    num_keypoints: int = 21  # K: wrist + 4 joints × 5 fingers
    # soft-argmax inverse temperature on the predicted maps (peak ≈ 1): with sigma=1.5, β·h is close
    # to a log-Gaussian of std ≈ 0.5 px near the peak, and a background of ~0 weighs e^0 ≪ e^20
    beta: float = 20.0


def image_to_heatmap(uv: torch.Tensor, scale: float) -> torch.Tensor:
    """Image pixel coordinates → heat-map pixel coordinates, j = (u + ½)/s − ½.

    Args:
        uv: (..., 2) image (u, v). scale: s = image_size / heatmap_size.
    Returns:
        (..., 2) heat-map (u, v).
    """
    return (uv + 0.5) / scale - 0.5


def heatmap_to_image(uv: torch.Tensor, scale: float) -> torch.Tensor:
    """Heat-map pixel coordinates → image pixel coordinates, u = (j + ½)·s − ½ (inverse of above)."""
    return (uv + 0.5) * scale - 0.5


def _grid(H: int, W: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates: u (W,) and v (H,), integers."""
    return (torch.arange(W, dtype=dtype, device=device), torch.arange(H, dtype=dtype, device=device))


def _check_heatmaps(h: torch.Tensor, name: str = "h") -> None:
    if h.dim() != 4:
        raise ValueError(f"{name}: expected shape (B, K, H, W), got {tuple(h.shape)}")


def gaussian_heatmaps(kp: torch.Tensor, size: tuple[int, int], sigma: float = 1.0,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian target heat maps, peak 1 at each keypoint (Wei et al. 2016; Tompson et al. 2014).

    Args:
        kp: (B, K, 2) keypoints (u, v) in heat-map pixels (see ``image_to_heatmap``).
        size: (H, W) heat-map size.
        sigma: std in heat-map pixels.
        valid: (B, K) bool/float, optional; invalid keypoints get an all-zero map.
    Returns:
        (B, K, H, W) targets in [0, 1].
    """
    if kp.dim() != 3 or kp.shape[-1] != 2:
        raise ValueError(f"kp: expected shape (B, K, 2), got {tuple(kp.shape)}")
    H, W = size
    us, vs = _grid(H, W, kp.dtype, kp.device)
    du = (us - kp[..., 0:1]) ** 2  # (B, K, W)
    dv = (vs - kp[..., 1:2]) ** 2  # (B, K, H)
    h = torch.exp(-(dv[..., :, None] + du[..., None, :]) / (2 * sigma**2))  # (B, K, H, W)
    if valid is not None:
        if valid.shape != kp.shape[:2]:
            raise ValueError(f"valid: expected shape {tuple(kp.shape[:2])}, got {tuple(valid.shape)}")
        h = h * valid.to(h.dtype)[..., None, None]
    return h


def heatmap_argmax(h: torch.Tensor) -> torch.Tensor:
    """Hard argmax with the classic quarter-pixel refinement (Newell et al. 2016, stacked hourglass).

    The integer peak (u, v) is moved by ±¼ px along each axis toward the higher of its two
    neighbours (no move if they are equal or the peak lies on the border). For a smooth peak whose
    true location lies within ½ px of the integer argmax this halves the worst-case error to ¼ px.
    Not differentiable; use :func:`soft_argmax_2d` for training.

    Args:
        h: (B, K, H, W) heat maps.
    Returns:
        (B, K, 2) (u, v) in heat-map pixels.
    """
    _check_heatmaps(h)
    B, K, H, W = h.shape
    flat = h.detach().reshape(B, K, H * W)
    idx = flat.argmax(dim=-1)  # (B, K)
    v, u = idx // W, idx % W
    hp = F.pad(h.detach(), (1, 1, 1, 1)).reshape(B, K, -1)  # (B, K, (H+2)(W+2)), safe gathers
    Wp = W + 2

    def at(dv: int, du: int) -> torch.Tensor:
        return hp.gather(-1, ((v + 1 + dv) * Wp + (u + 1 + du))[..., None])[..., 0]

    inner_u = ((u > 0) & (u < W - 1)).to(h.dtype)  # refine only when both neighbours exist
    inner_v = ((v > 0) & (v < H - 1)).to(h.dtype)
    du = 0.25 * torch.sign(at(0, 1) - at(0, -1)) * inner_u
    dv = 0.25 * torch.sign(at(1, 0) - at(-1, 0)) * inner_v
    return torch.stack([u.to(h.dtype) + du, v.to(h.dtype) + dv], dim=-1)


def soft_argmax_2d(h: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Differentiable argmax: softmax over β·h on each map, then the expected pixel-centre position.

    Integral regression (Sun et al. 2018). ``h`` is treated as logits; decoding is exact (to
    ~1e-8 px away from borders) when β·h is a log-Gaussian, −r²/2σ² + const with σ ≳ 0.6 px. For a
    peak-1 target map of std σ, β·h ≈ β − β·r²/2σ² near the peak, i.e. a Gaussian of std σ/√β: too
    large a β snaps the estimate toward the integer peak (std < ~0.6 px), too small a β lets the flat
    background (weight exp(0) per pixel) pull it toward the map centre. E.g. σ=2, β=10 on 16×16
    decodes within 0.05 px; σ=1, β=20 only within ~0.3 px.

    Args:
        h: (B, K, H, W) heat maps (logits).
        beta: inverse temperature.
    Returns:
        (B, K, 2) expected (u, v) in heat-map pixels.
    """
    _check_heatmaps(h)
    B, K, H, W = h.shape
    p = torch.softmax(beta * h.reshape(B, K, H * W), dim=-1).reshape(B, K, H, W)
    us, vs = _grid(H, W, h.dtype, h.device)
    u = (p.sum(dim=2) * us).sum(dim=-1)  # marginal over rows, then E[u]
    v = (p.sum(dim=3) * vs).sum(dim=-1)
    return torch.stack([u, v], dim=-1)


def pick_stride(image_size: int, heatmap_size: int, strides=(4, 8, 16, 32), min_stride: int = 8) -> int:
    """Index of the backbone map fed to the keypoint head: the one whose stride is closest (in log
    scale) to image_size/heatmap_size, but at least ``min_stride``.

    The floor (ours): layer1's stride-4 map has seen only the stem and two blocks (a ~35 px
    receptive field), too shallow to tell a fingertip from a knuckle; a head on it sat on the
    all-zero plateau of Eq. 3 in cpu runs. ``ci`` 64/16 and ``cpu`` 128/32 → stride 8 (8×8 and
    16×16, upsampled); paper 224/32 = 7 → stride 8 (28×28, resized to 32×32 by the head).
    """
    ratio = math.log(image_size / heatmap_size)
    errors = [abs(ratio - math.log(s)) if s >= min_stride else math.inf for s in strides]
    return errors.index(min(errors))


def _conv_block(cin: int, ch: int, n: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(cin if i == 0 else ch, ch, 3, padding=1), nn.ReLU(inplace=True)]
    return layers


class KeypointHead(nn.Module):
    """CPM-style multi-stage keypoint head (Wei et al. 2016), part of f_E2D (Baek et al. Sec. 3.2).

    The chosen backbone map is resized (bilinear, ``align_corners=False``, which is the same
    pixel-centre convention as ``image_to_heatmap``) to ``heatmap_size`` and reduced to ``channels``.
    Stage 1 maps these features to K heat maps; each later stage sees [features, previous heat maps]
    and refines them, so long-range context between fingers can correct ambiguous joints. Every
    stage is supervised (intermediate supervision), hence all stage outputs are returned.

    Args:
        in_channels: channels of the backbone map fed in (``ResNet.map_channels[i]``).
        num_keypoints: K.
        stages: number of CPM stages (≥ 1).
        channels: width of each stage.
        heatmap_size: output side; 32 at 224 px in the paper.
    """

    def __init__(self, in_channels: int, num_keypoints: int = 21, stages: int = 3, channels: int = 128,
                 heatmap_size: int = 32):
        super().__init__()
        if stages < 1:
            raise ValueError(f"stages: expected ≥ 1, got {stages}")
        self.in_channels, self.num_keypoints, self.heatmap_size = in_channels, num_keypoints, heatmap_size
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        self.stages = nn.ModuleList()
        for t in range(stages):
            cin = channels if t == 0 else channels + num_keypoints
            head = nn.Conv2d(channels, num_keypoints, 1)  # belief maps of stage t
            self.stages.append(nn.Sequential(*_conv_block(cin, channels, 3), head))

    @classmethod
    def from_config(cls, in_channels: int, cfg: HeatmapConfig) -> KeypointHead:
        return cls(in_channels, cfg.num_keypoints, cfg.stages, cfg.channels, cfg.heatmap_size)

    def forward(self, feat: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            feat: (B, C_in, h, w) backbone map (any h, w; resized to heat-map size).
        Returns:
            list of ``stages`` tensors (B, K, heatmap_size, heatmap_size); the last is the estimate.
        """
        if feat.dim() != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(f"feat: expected shape (B, {self.in_channels}, h, w), got {tuple(feat.shape)}")
        S = self.heatmap_size
        if feat.shape[-2:] != (S, S):
            feat = F.interpolate(feat, size=(S, S), mode="bilinear", align_corners=False)
        feat = self.reduce(feat)
        outs: list[torch.Tensor] = []
        for t, stage in enumerate(self.stages):
            x = feat if t == 0 else torch.cat([feat, outs[-1]], dim=1)
            outs.append(stage(x))
        return outs
