"""Dexter+Object (D+O; Sridhar et al., ECCV 2016): hands grasping a cuboid, fingertips only.

Layout (MPI-INF download, as read by the public D+O loaders, e.g. the ``DexterObjectDataset``
readers in bihand-derived code; the official page describes the content, not the file syntax)::

    dexter+object/
      data/<seq>/color/*.png      640×480 colour (Creative Senz3D), sorted name = frame order
      data/<seq>/depth/*.png      320×240 depth
      data/<seq>/annotations/<seq>3D.txt   one line per frame: "x, y, z; x, y, z; ...;" five
                                           fingertips (thumb, index, middle, ring, little), mm
      data/<seq>/annotations/<seq>2D.txt   the same tips as "u, v; ..." in the *depth* image

    <seq> ∈ Grasp1, Grasp2, Occlusion, Rigid, Pinch, Rotate: 3,145 frames in all, used for
    testing only (Baek et al. 2019, Sec. 4; Zimmermann & Brox 2017).

* 3D annotations are in the depth sensor's frame with x and y pointing the other way (left, up);
  a tip that was not annotated holds 32001 (the sensor's invalid value) in its coordinates.
  The loaders map them to the colour camera as X_colour = [R | t] · diag(−1, −1, 1) · X, with the
  colour extrinsics / intrinsics below (mm, pixels). We do the same, then mm → m.
* Only the five fingertips are annotated: ``valid`` is True for those of the 4, 8, 12, 16, 20
  (handlib thumb…pinky tips) that are present; all other keypoints are zeros and invalid, so the
  Eq. 8 box and the crop centre come from the fingertips alone (see transforms.crop_to_hand).
* One subject's **left** hand (as the loaders state and flip); ``mask`` is None.

Not verified against an official format description: the x/y sign flip, the 32001 sentinel and
the colour calibration come from those third-party loaders (they agree with each other).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import DataError, HandDataset, make_sample, project_np, read_image

SEQUENCES = ("Grasp1", "Grasp2", "Occlusion", "Rigid", "Pinch", "Rotate")
TOTAL_FRAMES = 3145
INVALID = 32001.0
TIP_KEYPOINTS = (4, 8, 12, 16, 20)  # handlib indices of thumb, index, middle, ring, pinky tips
COLOR_K = np.array([[587.45209, 0.0, 325.0], [0.0, 600.67456, 249.0], [0.0, 0.0, 1.0]])
COLOR_EXTRINSICS_MM = np.array([[0.9999, 0.0034, 0.0161, 19.0473],
                                [-0.0033, 1.0000, -0.0079, -1.8514],
                                [-0.0162, 0.0079, 0.9998, -4.7501]])  # depth (flipped) → colour
DEPTH_K = np.array([[224.502, 0.0, 160.0], [0.0, 230.494, 120.0], [0.0, 0.0, 1.0]])
FLIP = np.diag([-1.0, -1.0, 1.0])


def annotation_to_color(tips_mm: np.ndarray) -> np.ndarray:
    """(..., 3) D+O annotation points (mm) → colour-camera points (mm)."""
    R, t = COLOR_EXTRINSICS_MM[:, :3], COLOR_EXTRINSICS_MM[:, 3]
    return tips_mm @ (R @ FLIP).T + t


def parse_points(line: str, dims: int, path, index, line_no: int) -> np.ndarray:
    """"a, b, c; a, b, c; ..." (5 groups, optional trailing ';') → (5, dims) float64.

    Errors name ``path``, the sample ``index`` and the 1-based ``line_no``."""
    groups = [g for g in line.strip().split(";") if g.strip()]
    try:
        pts = np.array([[float(v) for v in g.split(",")] for g in groups], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"line {line_no}: not numbers ({err})", path, index) from None
    if pts.shape != (5, dims):
        raise DataError(f"line {line_no}: expected 5 points of {dims} values, got shape {pts.shape}",
                        path, index)
    return pts


class DexterObject(HandDataset):
    """D+O reader: ``DexterObject(root)``, all 3,145 frames (test only), sequence after sequence.

    Args:
        root: the folder holding ``data/`` (or ``data/`` itself).
        sequences: subset of :data:`SEQUENCES` (default all six).
    """

    name = "DexterObject"

    def __init__(self, root, sequences=SEQUENCES, transform=None, on_error: str = "raise"):
        super().__init__(transform, on_error)
        root = Path(root)
        self.root = root
        self.data_dir = root / "data" if (root / "data").is_dir() else root
        self.items: list[tuple[str, Path, int]] = []  # (sequence, colour image, line in 3D.txt)
        self.lines: dict[str, list[str]] = {}
        for seq in sequences:
            if seq not in SEQUENCES:
                raise ValueError(f"unknown D+O sequence {seq!r}; expected some of {SEQUENCES}")
            color_dir = self.data_dir / seq / "color"
            if not color_dir.is_dir():
                raise DataError("missing colour folder of a D+O sequence", color_dir)
            images = sorted(color_dir.glob("*.png"))
            path = self.anno_path(seq)
            if not path.is_file():
                raise DataError("missing D+O 3D annotation file", path)
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            if len(lines) != len(images):
                raise DataError(f"{len(lines)} annotation lines but {len(images)} images in {color_dir}",
                                path)
            self.lines[seq] = lines
            self.items += [(seq, img, k) for k, img in enumerate(images)]
        self._num = len(self.items)

    def anno_path(self, seq: str) -> Path:
        return self.data_dir / seq / "annotations" / f"{seq}3D.txt"

    def image_path(self, i: int) -> Path:
        return self.items[i][1]

    def _load(self, i: int, image: bool = True) -> dict:
        seq, img_path, line = self.items[i]
        tips = parse_points(self.lines[seq][line], 3, self.anno_path(seq), i, line + 1)
        present = np.isfinite(tips).all(1) & ~np.isclose(tips, INVALID).any(1)
        kp3d, kp2d, valid = np.zeros((21, 3)), np.zeros((21, 2)), np.zeros(21, bool)
        if present.any():
            xyz = annotation_to_color(tips[present]) / 1000.0  # mm → m
            idx = np.asarray(TIP_KEYPOINTS)[present]
            kp3d[idx], kp2d[idx], valid[idx] = xyz, project_np(xyz, COLOR_K), True
        img = read_image(img_path, i) if image else None
        return make_sample(image=img, mask=None, kp2d=kp2d, kp3d=kp3d, K=COLOR_K, valid=valid,
                           side="left", index=i, source=img_path)
