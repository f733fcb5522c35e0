"""Hand-centred crops (Eq. 8 conventions) with consistent keypoints, mask and intrinsics.

:func:`crop_to_hand` cuts a square around the middle-finger MCP whose side is
``margin`` (1.5, Eq. 8's ``skeleton.BOX_MARGIN``) × the larger side of the tight box of the valid
2D keypoints, resizes it to ``size``, and optionally rotates it in the image plane, jitters its
scale and centre, and jitters the colours (image only).

The key invariant: ``project(kp3d', K') == kp2d'`` (to float precision) for every valid keypoint.
Let W be the 3×3 affine map from source pixels to crop pixels (returned as ``sample["affine"]``):

    W = A · N,   N = K_sq · K⁻¹,   A = [[σR, t], [0, 1]],   σ = size / side,
    t = (size − 1)/2 − σ R c        (pixel centres at integers: the crop's centre pixel is (size−1)/2)

N makes pixels square (fx = fy := (fx + fy)/2, no skew; the identity for FreiHAND, RHD, BB), R is
the in-plane rotation and c the crop centre. An image-plane rotation is a rotation of the camera
about its optical axis, so we **apply it to the 3D points**: kp3d' = R₃ kp3d with R₃ = diag(R, 1),
and K' = A · K_sq · R₃ᵀ, which is again a plain intrinsics matrix [[σf, 0, cx'], [0, σf, cy'],
[0, 0, 1]] (its top-left block is σR(fI)Rᵀ = σfI). FreiHAND's MANO global rotation (pose[:3]) and
weak-perspective root (cam) are updated the same way, as are ``verts`` and handlib's 63-d ``h``
(quaternion and wrist translation) if a sample has them.
Images are warped with ``cv2.warpAffine`` (bilinear, black border), masks with nearest neighbour.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from ..skeleton import BOX_MARGIN, MIDDLE_MCP
from ..skeleton import ROOT as WRIST


@dataclasses.dataclass(frozen=True)
class CropConfig:
    """How to crop. Jitter ranges of 0 switch that augmentation off (the default: a plain crop)."""

    size: int = 128  # output side in pixels (paper: 224; see config.profile().image_size)
    margin: float = BOX_MARGIN  # Eq. 8: crop side = 1.5 × larger side of the tight keypoint box
    min_box: float = 16.0  # px: floor for the box side (a sample with one or two valid keypoints)
    scale_jitter: float = 0.0  # crop side × U(1 − s, 1 + s)
    shift_jitter: float = 0.0  # centre += U(−s, s) × crop side, per axis
    rotation: float = 0.0  # degrees: in-plane angle ~ U(−r, r)
    brightness: float = 0.0  # image × U(1 − b, 1 + b)
    contrast: float = 0.0  # (image − mean grey) × U(1 − c, 1 + c) + mean grey
    saturation: float = 0.0  # blend with the grey image by U(1 − s, 1 + s)
    hue: float = 0.0  # hue shift ~ U(−h, h) turns of the colour circle (0.5 = 180°)
    # Without an explicit rng, seed=None draws fresh randomness; an int makes the jitter a fixed
    # function of (seed, sample index): repeatable, but the same every epoch (for evaluation).
    seed: int | None = None
    # "box" (Eq. 8, the paper's): axis-aligned, centred on the middle MCP. "upright" (ours, MediaPipe's
    # convention): first turned so that wrist → middle MCP points straight up, then centred on the
    # keypoints' box in that turned frame; ``rotation`` jitters around upright. Needs a valid wrist
    # and middle MCP (else the crop falls back to "box").
    orient: str = "box"

    def __post_init__(self):
        if self.orient not in ORIENTS:
            raise ValueError(f"CropConfig.orient: expected one of {ORIENTS}, got {self.orient!r}")


ORIENTS = ("box", "upright")


def upright_angle(uv: np.ndarray) -> float:
    """Degrees θ such that R(θ) turns wrist → middle MCP of ``uv`` (21, 2) to point up (−y)."""
    d = uv[MIDDLE_MCP] - uv[WRIST]
    return float(-90.0 - np.degrees(np.arctan2(d[1], d[0])))


def turned_box(uv: np.ndarray, angle: float) -> tuple[np.ndarray, float]:
    """The keypoints' tight box in the frame turned by ``angle`` degrees: its centre (2,), back in
    source pixels, and its larger side."""
    R = _rotation2(angle)
    turned = uv @ R.T
    lo, hi = turned.min(0), turned.max(0)
    return R.T @ (0.5 * (lo + hi)), float((hi - lo).max())


def roll_h(h: np.ndarray, R3: np.ndarray) -> np.ndarray:
    """handlib's h = [q, θ, β, s, t] after a rotation R3 of the camera frame: M = s R(q)(LBS − wrist)
    + t, so q ← R3 q and t ← R3 t (float64 copy)."""
    h = np.array(h, np.float64)
    w, x, y, z = h[:4]
    q = Rotation.from_matrix(R3) * Rotation.from_quat([x, y, z, w])  # scipy: (x, y, z, w)
    qx, qy, qz, qw = q.as_quat()
    h[:4] = [qw, qx, qy, qz]
    h[60:63] = R3 @ h[60:63]
    return h


def _rotation2(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _apply(W: np.ndarray, uv: np.ndarray) -> np.ndarray:
    return uv @ W[:2, :2].T + W[:2, 2]


def color_jitter(image: np.ndarray, cfg: CropConfig, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB → jittered copy (brightness, contrast, saturation, hue, in that order)."""
    if not (cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue):
        return image
    img = image.astype(np.float32) / 255.0
    grey_w = np.array([0.299, 0.587, 0.114], np.float32)
    if cfg.brightness:
        img = img * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast:
        m = float((img @ grey_w).mean())
        img = (img - m) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + m
    if cfg.saturation:
        g = (img @ grey_w)[..., None]
        img = (img - g) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + g
    img = np.clip(img, 0.0, 1.0)
    if cfg.hue:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # float32: H in degrees [0, 360)
        hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-cfg.hue, cfg.hue)) % 360.0
        img = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)
    return np.round(img * 255.0).astype(np.uint8)


def crop_to_hand(sample: dict, cfg: CropConfig = CropConfig(),
                 rng: np.random.Generator | None = None) -> dict:
    """Crop a sample (see :mod:`handlib.data.common`) around its hand.

    The centre is the middle-finger MCP (``skeleton.MIDDLE_MCP``) when it is valid, else the centre
    of the valid keypoints' box (D+O has fingertips only).

    Args:
        sample: dict with image (H, W, 3) uint8 or None, mask (H, W) bool or None, kp2d (21, 2),
            kp3d (21, 3), K (3, 3), valid (21,); optional pose (48,), cam (3,), verts (V, 3), h (63,).
        cfg: :class:`CropConfig`.
        rng: numpy Generator for the jitter (default: from ``cfg.seed``, see there).
    Returns:
        A new dict: image (size, size, 3), mask (size, size) or None, kp2d, kp3d, K updated so that
        project(kp3d, K) == kp2d; ``affine`` (3, 3) float32 source pixels → crop pixels.
    """
    valid = np.asarray(sample["valid"], bool)
    if not valid.any():
        raise ValueError(f"crop_to_hand: sample {sample.get('index')} ({sample.get('source')}) has no "
                         "valid keypoint to crop around")
    if rng is None:
        rng = np.random.default_rng(None if cfg.seed is None else (cfg.seed, int(sample.get("index", 0))))
    K = np.asarray(sample["K"], np.float64)
    f = 0.5 * (K[0, 0] + K[1, 1])
    K_sq = np.array([[f, 0.0, K[0, 2]], [0.0, f, K[1, 2]], [0.0, 0.0, 1.0]])
    N = K_sq @ np.linalg.inv(K)  # square pixels; identity when fx == fy and no skew
    uv = _apply(N, np.asarray(sample["kp2d"], np.float64))
    base = 0.0
    if cfg.orient == "upright" and valid[WRIST] and valid[MIDDLE_MCP]:
        base = upright_angle(uv)
        centre, extent = turned_box(uv[valid], base)  # the box in the upright frame
    else:
        lo, hi = uv[valid].min(0), uv[valid].max(0)
        centre = uv[MIDDLE_MCP] if valid[MIDDLE_MCP] else 0.5 * (lo + hi)
        extent = float((hi - lo).max())
    side = cfg.margin * max(extent, cfg.min_box)  # Eq. 8 box × 1.5
    if cfg.scale_jitter:
        side *= rng.uniform(1 - cfg.scale_jitter, 1 + cfg.scale_jitter)
    if cfg.shift_jitter:
        centre = centre + rng.uniform(-cfg.shift_jitter, cfg.shift_jitter, size=2) * side
    angle = base + (rng.uniform(-cfg.rotation, cfg.rotation) if cfg.rotation else 0.0)
    S = int(cfg.size)
    sigma, R = S / side, _rotation2(angle)
    A = np.eye(3)
    A[:2, :2] = sigma * R
    A[:2, 2] = (S - 1) / 2.0 - sigma * R @ centre
    W = A @ N  # (3, 3) source pixels → crop pixels
    R3 = np.eye(3)
    R3[:2, :2] = R

    out = dict(sample)
    if sample.get("image") is not None:
        img = cv2.warpAffine(sample["image"], W[:2], (S, S), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out["image"] = color_jitter(img, cfg, rng)
    if sample.get("mask") is not None:
        m = cv2.warpAffine(sample["mask"].astype(np.uint8), W[:2], (S, S), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out["mask"] = m.astype(bool)
    kp2d = _apply(W, np.asarray(sample["kp2d"], np.float64))
    kp2d[~valid] = 0.0
    out["kp2d"] = kp2d.astype(np.float32)
    out["kp3d"] = (np.asarray(sample["kp3d"], np.float64) @ R3.T).astype(np.float32)
    K_new = A @ K_sq @ R3.T
    K_new[0, 1] = K_new[1, 0] = 0.0  # σR(fI)Rᵀ = σfI: zero up to rounding, made exact
    out["K"] = K_new.astype(np.float32)
    out["affine"] = W.astype(np.float32)
    if sample.get("verts") is not None:
        out["verts"] = (np.asarray(sample["verts"], np.float64) @ R3.T).astype(np.float32)
    if angle and sample.get("pose") is not None and len(sample["pose"]) == 48:
        # MANO global orientation (the first 3 of a 48-d pose) follows the camera roll
        pose = np.array(sample["pose"], np.float64)
        pose[:3] = Rotation.from_matrix(R3 @ Rotation.from_rotvec(pose[:3]).as_matrix()).as_rotvec()
        out["pose"] = pose.astype(np.float32)
    if angle and sample.get("h") is not None:
        out["h"] = roll_h(sample["h"], R3).astype(np.float32)
    if sample.get("cam") is not None:  # weak-perspective root (u, v, scale): f' = σf
        cam = np.array(sample["cam"], np.float64)
        cam[:2] = _apply(W, cam[None, :2])[0]
        cam[2] *= sigma
        out["cam"] = cam.astype(np.float32)
    return out


class CropTransform:
    """``transform=`` callable for the readers: ``crop_to_hand`` with one generator per instance.

    The generator is seeded from ``cfg.seed`` once; DataLoader workers each get a copy, so seed
    them differently (``worker_init_fn``) or set ``cfg.seed`` for per-sample repeatable jitter.
    """

    def __init__(self, cfg: CropConfig = CropConfig()):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def __call__(self, sample: dict) -> dict:
        return crop_to_hand(sample, self.cfg, self.rng)

    def __repr__(self) -> str:
        return f"CropTransform({self.cfg})"
