"""DHPE(x) = f_Proj(f_E3D(f_E2D(x))): the whole network of Baek, Kim & Kim 2019 (Eq. 1).

* f_E2D, :class:`EvidenceEstimator`: ResNet features F(x) (``backbone.py``; or MediaPipe's pretrained
  landmark network, ``backbone_pretrained.py``) and a CPM keypoint head
  (``heatmaps.py``) → 21 heat maps → j2D by soft-argmax (differentiable, so the 3D losses reach the
  heat maps too). With MediaPipe, ``keypoints="landmarks"`` takes j2D from its own landmark head
  instead, and ``crop="upright"`` gives it the upright crops it was trained on.
* f_E3D, :class:`~handlib.regressor.IterativeRegressor`: Eqs. 4–6.
* f_Proj: the hand model (OpenHand or MANO, no trainable weights) → mesh and 21 joints, their
  projection with the crop camera K, and the soft silhouette (``render.py``, Eq. 9's input).

:class:`DHPE` returns every intermediate (:class:`DHPEOutput`) so notebooks can draw them. Left hands
are mirrored to right ones before they reach the network (``data.batch.to_right_hand``).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .backbone import STRIDES, build_backbone, check_image_size
from .config import Profile, profile
from .hand_model import HandModel
from .heatmaps import HeatmapConfig, KeypointHead, heatmap_to_image, pick_stride, soft_argmax_2d
from .regressor import IterativeRegressor, RegressorConfig, RegressorOutput
from .render import RenderConfig, SoftRenderer

KEYPOINT_SOURCES = ("heatmap", "landmarks")

__all__ = ["ModelConfig", "Evidence", "EvidenceEstimator", "DHPEOutput", "DHPE", "mask_image"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and stage configs of the network; :meth:`from_profile` fills them from a profile."""

    image_size: int = 224  # crop side S (paper: 224)
    # paper: ResNet-50, F(x) 2048-d; "mediapipe": MediaPipe's pretrained landmark network, F(x) 1152-d,
    # which takes 224 px crops only (backbone_pretrained.py)
    backbone: str = "resnet50"
    heatmap: HeatmapConfig = HeatmapConfig()  # paper: 21×32×32 at 224 px
    regressor: RegressorConfig = RegressorConfig()
    # Eq. 9's renderer; σ is in squared NDC units (render.py). 2e-4 (ours): ≈0.2 px² at 64 px,
    # 2.5 px² at 224 px, soft enough to give gradients a pixel or two off the edge at every size.
    render: RenderConfig = RenderConfig(sigma=2e-4)
    # Where j2D_0 comes from. "heatmap": the CPM head on a backbone map, Eq. 3 (the paper's).
    # "landmarks" (backbone="mediapipe" only; ours): the pretrained network's own 21 landmarks,
    # trained further by Eq. 6's t = 0 term. Why: its landmark head learnt 2D hands from real photos;
    # a heat-map head would start from random weights and learn from synthetic renders alone.
    keypoints: str = "heatmap"
    # The crop the network is trained and run on (data.CropConfig.orient / margin). The paper's: an
    # axis-aligned box 1.5 × the keypoints' box ("box", Eq. 8). MediaPipe's network was trained on
    # upright, hand-centred regions: on 128 synthetic test hands its landmarks are 37.3 px off
    # (mean, 224 px crops) on "box" crops and 15.2 px on "upright" ones of margin 1.8 (ours).
    crop: str = "box"
    crop_margin: float = 1.5

    def __post_init__(self):
        check_image_size(self.backbone, self.image_size)
        if self.keypoints not in KEYPOINT_SOURCES:
            raise ValueError(f"ModelConfig.keypoints: expected one of {KEYPOINT_SOURCES}, "
                             f"got {self.keypoints!r}")
        if self.keypoints == "landmarks" and self.backbone != "mediapipe":
            raise ValueError(f"ModelConfig.keypoints='landmarks' needs backbone='mediapipe' (the only "
                             f"backbone with a landmark head), got backbone={self.backbone!r}")
        from .data.transforms import ORIENTS

        if self.crop not in ORIENTS:
            raise ValueError(f"ModelConfig.crop: expected one of {ORIENTS}, got {self.crop!r}")

    def crop_config(self, **jitter):
        """The :class:`~handlib.data.CropConfig` of this network's crops (``jitter``: its jitter fields)."""
        from .data.transforms import CropConfig

        return CropConfig(size=self.image_size, margin=self.crop_margin, orient=self.crop, **jitter)

    @classmethod
    def from_profile(cls, prof: Profile | None = None, **overrides) -> ModelConfig:
        prof = prof or profile()
        cfg = cls(image_size=prof.image_size, backbone=prof.backbone,
                  heatmap=HeatmapConfig(heatmap_size=prof.heatmap_size, channels=prof.heatmap_channels,
                                        stages=prof.heatmap_stages),
                  render=RenderConfig(image_size=(prof.image_size, prof.image_size), sigma=2e-4),
                  keypoints=prof.keypoints, crop=prof.crop, crop_margin=prof.crop_margin,
                  regressor=RegressorConfig(hidden=tuple(prof.regressor_hidden),
                                            refiner_hidden=tuple(prof.refiner_hidden)))
        return dataclasses.replace(cfg, **overrides)

    @property
    def feat_dim(self) -> int:
        """C, the length of F(x), read from the backbone's config (nothing is built)."""
        from .backbone import BACKBONES, PRETRAINED

        if self.backbone in PRETRAINED:
            return PRETRAINED[self.backbone].out_dim
        b = BACKBONES[self.backbone]
        return b.widths[-1] * (4 if b.block == "bottleneck" else 1)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of ``dataclasses.asdict`` (as stored in checkpoints)."""
        def tup(x):
            return tuple(x) if isinstance(x, list) else x
        reg = {k: tup(v) for k, v in d["regressor"].items()}
        ren = {k: tup(v) for k, v in d["render"].items()}
        extra = {k: d[k] for k in ("keypoints", "crop", "crop_margin") if k in d}  # absent before v0.7
        return cls(image_size=d["image_size"], backbone=d["backbone"], heatmap=HeatmapConfig(**d["heatmap"]),
                   regressor=RegressorConfig(**reg), render=RenderConfig(**ren), **extra)


def mask_image(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x ⊙ m of Eq. 2 for a *normalised* image: background pixels become black (0 before normalising).

    Args:
        image: (B, 3, S, S) normalised (``data.batch.normalize_image``). mask: (B, S, S) bool/float.
    Returns:
        (B, 3, S, S): image where m = 1, the normalised value of black elsewhere.
    """
    from .data.batch import image_stats

    mean, std = image_stats(image.device)
    black = (-mean / std).to(image.dtype)  # (1, 3, 1, 1) the normalised value of 0
    m = mask.to(image.dtype)[:, None]
    return image * m + black * (1 - m)


@dataclasses.dataclass
class Evidence:
    """f_E2D's output. features: (B, C) F(x); heatmaps: list of stages (B, 21, h, h), the last the
    estimate (empty with ``keypoints="landmarks"``);
    j2d: (B, 21, 2) soft-argmax of the last stage in crop pixels; masked_features: (b, C)
    F(x ⊙ m) when masked crops were passed (Eq. 2)."""

    features: torch.Tensor
    heatmaps: list
    j2d: torch.Tensor
    masked_features: torch.Tensor | None = None


class EvidenceEstimator(nn.Module):
    """f_E2D: F(x) and the 2D keypoints (Sec. 3.2).

    Args:
        backbone: a name of ``backbone.BACKBONES`` or ``"mediapipe"`` (pretrained, S = 224 only).
        image_size: crop side S. heatmap: :class:`HeatmapConfig`. keypoints: "heatmap" (the CPM head)
            or "landmarks" (MediaPipe's own landmarks; no head; see :class:`ModelConfig`).
    """

    def __init__(self, backbone: str = "resnet50", image_size: int = 224,
                 heatmap: HeatmapConfig | None = None, keypoints: str = "heatmap"):
        super().__init__()
        heatmap = heatmap or HeatmapConfig()
        check_image_size(backbone, image_size)
        self.backbone = build_backbone(backbone)
        self.image_size, self.hm, self.keypoints = image_size, heatmap, keypoints
        self.map_index = pick_stride(image_size, heatmap.heatmap_size, STRIDES)
        self.head = (KeypointHead.from_config(self.backbone.map_channels[self.map_index], heatmap)
                     if keypoints == "heatmap" else None)

    @property
    def feat_dim(self) -> int:
        return self.backbone.out_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, C) F(x) only (Eq. 2's second branch)."""
        return self.backbone(x).pooled

    def forward(self, x: torch.Tensor, masked: torch.Tensor | None = None) -> Evidence:
        """Args:
            x: (B, 3, S, S) normalised crop.
            masked: optional (b, 3, S, S) masked crops x ⊙ m (Eq. 2); they share one backbone pass
                with x (so BatchNorm sees both) and only their F is kept.
        Returns:
            :class:`Evidence` (``masked_features`` (b, C) when ``masked`` is given).
        """
        S = self.image_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (S, S):
            raise ValueError(f"x: expected shape (B, 3, {S}, {S}), got {tuple(x.shape)}")
        B = x.shape[0]
        if masked is not None:
            if masked.dim() != 4 or masked.shape[1:] != x.shape[1:]:
                raise ValueError(f"masked: expected shape (b, 3, {S}, {S}), got {tuple(masked.shape)}")
            x = torch.cat([x, masked])
        out = self.backbone(x)
        if self.head is None:  # keypoints="landmarks": the pretrained network's own j2D, no heat maps
            return Evidence(out.pooled[:B], [], out.landmarks[:B],
                            out.pooled[B:] if masked is not None else None)
        heatmaps = self.head(out.maps[self.map_index][:B])
        uv = soft_argmax_2d(heatmaps[-1], beta=self.hm.beta)  # heat-map pixels
        return Evidence(out.pooled[:B], heatmaps, heatmap_to_image(uv, S / self.hm.heatmap_size),
                        out.pooled[B:] if masked is not None else None)


@dataclasses.dataclass
class DHPEOutput:
    """Every intermediate of Eq. 1. ``evidence`` (:class:`Evidence`), ``reg`` (:class:`RegressorOutput`:
    h, codes, meshes, joints, projected and refined 2D per iteration), and the final prediction:
    h (B, 63), verts (B, V, 3), joints (B, 21, 3) camera space, j2d (B, 21, 2) projected joints,
    silhouette (B, S, S) soft mask or None. With ``evidence_only`` only ``evidence`` is set."""

    evidence: Evidence
    reg: RegressorOutput | None = None
    h: torch.Tensor | None = None
    verts: torch.Tensor | None = None
    joints: torch.Tensor | None = None
    j2d: torch.Tensor | None = None
    silhouette: torch.Tensor | None = None

    @property
    def masked_features(self) -> torch.Tensor | None:
        return self.evidence.masked_features


class DHPE(nn.Module):
    """The dense hand pose estimator: f_E2D → f_E3D → f_Proj (Eq. 1).

    Args:
        cfg: :class:`ModelConfig` (default: from ``$HANDLIB_PROFILE``).
        hand_model: a right-hand :class:`HandModel` (default OpenHand); its buffers are not trained.
    """

    def __init__(self, cfg: ModelConfig | None = None, hand_model: HandModel | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig.from_profile()
        self.evidence = EvidenceEstimator(cfg.backbone, cfg.image_size, cfg.heatmap, cfg.keypoints)
        self.regressor = IterativeRegressor(self.evidence.feat_dim, cfg.regressor)
        self.hand_model = hand_model or HandModel("right")
        if self.hand_model.side != "right":
            raise ValueError("hand_model: DHPE models a right hand (left inputs are mirrored); "
                             "got a left model")
        render = dataclasses.replace(cfg.render, image_size=(cfg.image_size, cfg.image_size))
        self.renderer = SoftRenderer(self.hand_model.faces, render)

    def forward(self, x: torch.Tensor, K: torch.Tensor, render: bool = True,
                masked: torch.Tensor | None = None, evidence_only: bool = False) -> DHPEOutput:
        """Args:
            x: (B, 3, S, S) normalised crops of right hands. K: (B, 3, 3) crop intrinsics.
            render: also render the final mesh's soft silhouette (Eq. 9's input).
            masked: optional (b, 3, S, S) x ⊙ m for Eq. 2 (see :meth:`EvidenceEstimator.forward`).
            evidence_only: stop after f_E2D (the first training stage).
        Returns:
            :class:`DHPEOutput`.
        """
        ev = self.evidence(x, masked)
        if evidence_only:
            return DHPEOutput(evidence=ev)
        reg = self.regressor(ev.features, ev.j2d, K, self.hand_model, self.cfg.image_size)
        verts = reg.verts[-1]
        sil = self.renderer(verts, K) if render else None
        return DHPEOutput(evidence=ev, reg=reg, h=reg.h[-1], verts=verts, joints=reg.joints[-1],
                          j2d=reg.j2d_proj[-1], silhouette=sil)
