"""Keypoint orders, bones, and the skeleton normalisation of Eq. 8.

handlib's 21-keypoint order is the FreiHAND / OpenPose order::

    0 wrist
    1-4   thumb  CMC, MCP, IP, tip      (MANO's thumb1, thumb2, thumb3, tip)
    5-8   index  MCP, PIP, DIP, tip
    9-12  middle MCP, PIP, DIP, tip
    13-16 ring   MCP, PIP, DIP, tip
    17-20 pinky  MCP, PIP, DIP, tip

Other orders are given as ``ORDERS[name][j] = handlib index of that dataset's j-th keypoint``:

* ``"mano"``: MANO's 16 joints (wrist; index, middle, pinky, ring, thumb × 3) then the five
  tips (thumb, index, middle, ring, pinky), as manopth appends them.
* ``"rhd"``: wrist, then thumb, index, middle, ring, pinky, each from tip to MCP
  (Zimmermann & Brox 2017).
* ``"stb"``: palm centre, then pinky, ring, middle, index, thumb, each from MCP to tip
  (Zhang et al. 2016). STB's keypoint 0 is the *palm centre*, not the wrist: ``convert`` only
  permutes, so the dataset reader is responsible for moving it to the wrist if wanted.
* ``"interhand"``: InterHand2.6M's per-hand order: thumb, index, middle, ring, pinky, each from
  tip to MCP (thumb: tip to CMC), then the wrist *last* (its annotations' skeleton.txt; mmpose's
  interhand3d dataset_info).
* ``"freihand"`` and ``"handlib"``: the identity.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

NUM_KEYPOINTS = 21
NUM_JOINTS = 16  # MANO's articulated joints

# MANO kinematic tree (16 joints). Names and parents as in the official model's kintree_table.
MANO_JOINT_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# Fingertip order in which the five tip vertices are appended (manopth's convention).
TIP_FINGERS = ("thumb", "index", "middle", "ring", "pinky")

KEYPOINT_NAMES = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
ROOT = 0  # wrist
MIDDLE_MCP = 9  # the centre of Eq. 8's normalisation
FINGERS = {"thumb": (1, 2, 3, 4), "index": (5, 6, 7, 8), "middle": (9, 10, 11, 12),
           "ring": (13, 14, 15, 16), "pinky": (17, 18, 19, 20)}
# Parent of each keypoint in handlib order (the wrist has none): used for bones and drawing.
KEYPOINT_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)
BONES = tuple((p, c) for c, p in enumerate(KEYPOINT_PARENTS) if p >= 0)  # 20 (parent, child)
FINGER_COLORS = {"thumb": "#e6194b", "index": "#f58231", "middle": "#3cb44b", "ring": "#4363d8",
                 "pinky": "#911eb4"}

ORDERS = {
    "handlib": tuple(range(21)),
    "freihand": tuple(range(21)),
    "mano": (0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3, 4, 8, 12, 16, 20),
    "rhd": (0, 4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17),
    "stb": (0, 17, 18, 19, 20, 13, 14, 15, 16, 9, 10, 11, 12, 5, 6, 7, 8, 1, 2, 3, 4),
    "interhand": (4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17, 0),
}
# Handlib keypoint of each MANO joint 0..15 (the first 16 entries of the "mano" order).
MANO_JOINT_TO_KEYPOINT = ORDERS["mano"][:16]


def order_index(src: str, dst: str) -> np.ndarray:
    """Index ``idx`` such that ``kp_dst = kp_src[..., idx, :]``.

    Args:
        src, dst: order names, keys of :data:`ORDERS`.
    Returns:
        (21,) int64 array.
    """
    for name in (src, dst):
        if name not in ORDERS:
            raise ValueError(f"unknown keypoint order {name!r}; expected one of {sorted(ORDERS)}")
    src_order = np.asarray(ORDERS[src])
    to_handlib = np.argsort(src_order)  # handlib index i lives at src position to_handlib[i]
    return to_handlib[np.asarray(ORDERS[dst])]


def convert(kp, src: str, dst: str):
    """Reorder keypoints from one dataset's order to another's.

    Args:
        kp: (..., 21, D) numpy array or tensor (D = 2 or 3, or any trailing size).
        src, dst: order names: "handlib", "freihand", "mano", "rhd", "stb", "interhand".
    Returns:
        The same type and shape, reordered.
    """
    if kp.shape[-2] != NUM_KEYPOINTS:
        raise ValueError(f"kp: expected shape (..., 21, D), got {tuple(kp.shape)}")
    idx = order_index(src, dst)
    if isinstance(kp, torch.Tensor):
        return kp[..., torch.as_tensor(idx, device=kp.device), :]
    return kp[..., idx, :]


# ----------------------------------------------------------------------------------------------
# Eq. 8: skeleton normalisation
# ----------------------------------------------------------------------------------------------
BOX_MARGIN = 1.5  # Eq. 8: x, y are divided by 1.5 × the larger side of the tight 2D box


@dataclasses.dataclass(frozen=True)
class NormParams:
    """What Eq. 8's normalisation removed, so that :func:`denormalize_skeleton` can restore it.

    Attributes:
        center_uv: (B, 2) pixel position of the middle-finger MCP.
        scale: (B,) 1.5 × the larger side of the tight 2D keypoint box, pixels.
        root_depth: (B,) camera-space depth Z of the middle-finger MCP, metres.
        focal: (B,) focal length in pixels used to turn depth into pixel units.
    """

    center_uv: torch.Tensor
    scale: torch.Tensor
    root_depth: torch.Tensor
    focal: torch.Tensor


def normalize_skeleton(kp2d: torch.Tensor, kp3d: torch.Tensor, focal: torch.Tensor,
                       valid: torch.Tensor | None = None) -> tuple[torch.Tensor, NormParams]:
    """Eq. 8's normalisation of a skeleton, in 2.5D.

    The skeleton is centred at the middle-finger MCP; image coordinates are divided by
    s = 1.5 × the larger side of the tight 2D box of the keypoints; depth relative to the MCP is
    first converted to pixels at the MCP's depth (× focal / Z_mcp) and then divided by s, so all
    three axes share one unit and the result is invariant to image scale and camera distance.
    The paper states the centre and the 1.5 margin but not the depth unit; the MCP depth / focal
    choice is ours (see README's paper table).

    Args:
        kp2d: (B, 21, 2) pixel coordinates (u, v).
        kp3d: (B, 21, 3) camera-space coordinates, metres (only Z is used).
        focal: (B,) or scalar focal length in pixels (use fx; fx = fy for the datasets here).
        valid: optional (B, 21) bool; invalid keypoints are ignored by the tight box.
    Returns:
        normed: (B, 21, 3) normalised (x, y, z).
        params: :class:`NormParams` to invert it.
    """
    if kp2d.shape[-2:] != (21, 2) or kp3d.shape[-2:] != (21, 3) or kp2d.shape[:-2] != kp3d.shape[:-2]:
        raise ValueError(f"kp2d (B,21,2) and kp3d (B,21,3) expected, got {tuple(kp2d.shape)} "
                         f"and {tuple(kp3d.shape)}")
    focal = torch.as_tensor(focal, dtype=kp3d.dtype, device=kp3d.device).expand(kp3d.shape[0])
    if valid is None:
        lo, hi = kp2d.amin(dim=1), kp2d.amax(dim=1)  # (B, 2)
    else:
        big = torch.finfo(kp2d.dtype).max
        m = valid[..., None]
        lo = torch.where(m, kp2d, big).amin(dim=1)
        hi = torch.where(m, kp2d, -big).amax(dim=1)
    scale = BOX_MARGIN * (hi - lo).amax(dim=-1)  # (B,)
    center = kp2d[:, MIDDLE_MCP]  # (B, 2)
    root_depth = kp3d[:, MIDDLE_MCP, 2]  # (B,)
    xy = (kp2d - center[:, None]) / scale[:, None, None]
    z = (kp3d[..., 2] - root_depth[:, None]) * (focal / root_depth)[:, None] / scale[:, None]
    return torch.cat([xy, z[..., None]], dim=-1), NormParams(center, scale, root_depth, focal)


def denormalize_skeleton(normed: torch.Tensor, params: NormParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact inverse of :func:`normalize_skeleton`.

    Args:
        normed: (B, 21, 3).
        params: what :func:`normalize_skeleton` returned.
    Returns:
        kp2d: (B, 21, 2) pixels; depth: (B, 21) camera-space Z, metres.
    """
    s = params.scale[:, None, None]
    kp2d = normed[..., :2] * s + params.center_uv[:, None]
    depth = normed[..., 2] * params.scale[:, None] * (params.root_depth / params.focal)[:, None] \
        + params.root_depth[:, None]
    return kp2d, depth


def bone_lengths(kp3d: torch.Tensor) -> torch.Tensor:
    """(B, 21, 3) keypoints in handlib order → (B, 20) bone lengths in :data:`BONES` order."""
    p, c = zip(*BONES)
    return torch.linalg.vector_norm(kp3d[..., list(c), :] - kp3d[..., list(p), :], dim=-1)


def keypoint_box(kp2d: np.ndarray, margin: float = 1.0, min_side: float = 0.0) -> tuple:
    """(x, y, w, h) pixels: the tight axis-aligned box of (N, 2) keypoints, each side scaled by
    ``margin`` about the box centre, then raised to at least ``min_side``.

    The one box rule of the package: ``predict`` cuts crops around the tight box (margin 1, at least
    1 px), MediaPipe's detections carry it with their margin (``PretrainedConfig.box_margin``), and
    mmpose writes RHD's and InterHand's boxes as the tight box × 1.2 (``mmpose_frames.BOX_SCALE``).
    """
    kp2d = np.asarray(kp2d, np.float64)
    lo, hi = kp2d.min(0), kp2d.max(0)
    c, half = (lo + hi) / 2.0, np.maximum((hi - lo) * margin, min_side) / 2.0
    return (float(c[0] - half[0]), float(c[1] - half[1]), float(2 * half[0]), float(2 * half[1]))
