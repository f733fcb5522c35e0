"""Rendered Handpose Dataset (RHD; Zimmermann & Brox, ICCV 2017), ``RHD_published_v2``.

Official layout (RHD README v1.1, hand3d's ``create_binary_db.py`` / ``data/BinaryDbReader.py``)::

    RHD_published_v2/
      training/    color/%05d.png  mask/%05d.png  depth/%05d.png  anno_training.pickle
      evaluation/  color/%05d.png  mask/%05d.png  depth/%05d.png  anno_evaluation.pickle

* 41,258 training and 2,728 evaluation samples, 320×320 px, synthetic people with two hands.
* ``anno_<split>.pickle`` (Python 2 pickle): dict ``sample_id -> {"xyz": (42, 3) metres, camera
  space; "uv_vis": (42, 3) u, v in pixels and a visibility flag (1 = visible); "K": (3, 3)}``.
  Keypoints 0–20 are the **left** hand, 21–41 the **right** hand, each in RHD order (wrist, then
  thumb, index, middle, ring, pinky from tip to MCP; ``skeleton.ORDERS["rhd"]``). The image file
  is ``color/%05d.png % sample_id``. Read with :func:`handlib.safe_pickle.load`, never
  ``pickle.load``.
* ``mask/%05d.png``: one 8-bit label per pixel: 0 background, 1 person, 2–17 left-hand parts
  (palm and three segments per finger), 18–33 right-hand parts.
* ``depth/%05d.png``: metres = (R · 256 + G) / 65535 · 5 (top byte in red, bottom in green);
  :func:`decode_depth`.

Which hand: like hand3d's reader we keep the hand with **more mask pixels** (left if
#left > #right, else right) and discard the other; ``mask`` is that hand's pixels.
``valid`` is the annotation's visibility flag of the kept hand (hand3d's ``keypoint_vis21``, which
its 2D and 3D evaluation use); the 3D keypoints of occluded joints are still filled in.
Side: both left and right hands occur; nothing is mirrored here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import safe_pickle
from ..skeleton import convert
from .common import DataError, HandDataset, MissingData, check_array, make_sample, read_image, read_label

SPLITS = {"training": "training", "train": "training", "evaluation": "evaluation", "test": "evaluation",
          "eval": "evaluation"}
COUNTS = {"training": 41258, "evaluation": 2728}
LEFT_LABELS = (2, 17)  # inclusive range of left-hand part ids in mask/*.png
RIGHT_LABELS = (18, 33)


def decode_depth(depth_png: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB depth PNG → (H, W) float32 metres (two bytes in R and G, 0–5 m)."""
    top, bottom = depth_png[..., 0].astype(np.float32), depth_png[..., 1].astype(np.float32)
    return (top * 256.0 + bottom) / 65535.0 * 5.0


def hand_pixels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) RHD label map → (left, right) bool masks of the two hands."""
    left = (labels >= LEFT_LABELS[0]) & (labels <= LEFT_LABELS[1])
    right = (labels >= RIGHT_LABELS[0]) & (labels <= RIGHT_LABELS[1])
    return left, right


class RHD(HandDataset):
    """RHD reader. ``RHD(root, "training" | "evaluation")``; see the module docstring for layout.

    Args:
        root: the ``RHD_published_v2`` folder.
        split: "training" / "evaluation" (aliases "train", "test", "eval").
        transform: callable applied last to each sample (e.g. a crop).
        on_error: "raise" (default) or "skip" (see :class:`HandDataset`).
    Returns samples as in :mod:`handlib.data.common`; ``mask`` is the kept hand.
    """

    name = "RHD"

    def __init__(self, root, split: str = "training", transform=None, on_error: str = "raise"):
        super().__init__(transform, on_error)
        if split not in SPLITS:
            raise ValueError(f"RHD split must be one of {sorted(SPLITS)}, got {split!r}")
        self.split = SPLITS[split]
        self.root = Path(root)
        self.dir = self.root / self.split
        self.anno_path = self.dir / f"anno_{self.split}.pickle"
        if not self.anno_path.is_file():
            raise MissingData("RHD annotation file not found; point root at the RHD_published_v2 folder "
                              "(holding training/ and evaluation/)", self.anno_path)
        try:
            anno = safe_pickle.load(self.anno_path, what="RHD annotations")
        except ValueError as err:  # not a readable pickle (the message names the file); a pickle that
            raise DataError(str(err)) from None  # asks for code raises UnsafePickleError as it is
        if not isinstance(anno, dict):
            raise DataError(f"expected a dict of sample id -> annotation, got {type(anno).__name__}",
                            self.anno_path)
        self.ids = sorted(anno)
        self.anno = anno
        self._num = len(self.ids)

    def image_path(self, i: int, kind: str = "color") -> Path:
        """Path of ``color``, ``mask`` or ``depth`` image of sample ``i``."""
        return self.dir / kind / f"{self.ids[i]:05d}.png"

    def _load(self, i: int, image: bool = True) -> dict:
        sid = self.ids[i]
        entry = self.anno[sid]
        src = self.anno_path
        if not isinstance(entry, dict) or not {"xyz", "uv_vis", "K"} <= set(entry):
            raise DataError(f"annotation of id {sid} must be a dict with xyz, uv_vis, K", src, i)
        xyz = check_array(entry["xyz"], (42, 3), f"xyz of id {sid}", src, i)
        uv_vis = check_array(entry["uv_vis"], (42, 3), f"uv_vis of id {sid}", src, i)
        K = check_array(entry["K"], (3, 3), f"K of id {sid}", src, i)
        labels = read_label(self.image_path(i, "mask"), i)
        left, right = hand_pixels(labels)
        side = "left" if left.sum() > right.sum() else "right"  # hand3d: the more prominent hand
        sl = slice(0, 21) if side == "left" else slice(21, 42)
        img = read_image(self.image_path(i), i) if image else None
        if img is not None and img.shape[:2] != labels.shape:
            raise DataError(f"mask {labels.shape} and image {img.shape[:2]} sizes differ",
                            self.image_path(i, "mask"), i)
        return make_sample(
            image=img, mask=left if side == "left" else right,
            kp2d=convert(uv_vis[sl, :2], "rhd", "handlib"), kp3d=convert(xyz[sl], "rhd", "handlib"),
            K=K, valid=convert(uv_vis[sl, 2:] == 1, "rhd", "handlib")[:, 0], side=side, index=i,
            source=self.image_path(i))

    def read_depth(self, i: int) -> np.ndarray:
        """(H, W) float32 depth in metres of sample ``i`` (not part of the sample dict)."""
        return decode_depth(read_image(self.image_path(i, "depth"), i))
