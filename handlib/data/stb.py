"""Stereo Hand Pose Tracking Benchmark (STB; Zhang et al., ICIP 2017 / arXiv 1610.07214).

Layout (as the download unpacks; hand3d's ``data/stb/create_db.m`` reads ``<root>/<seq>/``,
other loaders, e.g. bihand's, ``<root>/images/<seq>/``: both are accepted)::

    STB/
      images/B1Counting/  BB_left_%d.png  BB_right_%d.png  SK_color_%d.png  SK_depth_%d.png
      images/B1Random/ ... B6Counting/  B6Random/          (%d = 0 .. 1499, 640×480 PNG)
      labels/B1Counting_BB.mat  B1Counting_SK.mat  ...

* 12 sequences (B1–B6 × Counting / Random) of 1,500 frames, one subject's **left** hand, three
  cameras: a Point Grey Bumblebee2 stereo pair (BB left/right, rectified) and an Intel RealSense
  F200 (SK colour + depth).
* ``labels/<seq>_BB.mat`` / ``<seq>_SK.mat``: ``handPara`` (3, 21, 1500), **millimetres**, STB order
  (palm centre, then pinky, ring, middle, index, thumb, each MCP → tip; ``skeleton.ORDERS["stb"]``).
  ``_BB`` is in the left Bumblebee camera's frame; the right camera sees x − 120.054 mm (baseline).
  ``_SK`` is in the RealSense *depth* camera's frame; the published rotation vector r and
  translation t (mm) map colour to depth coordinates, X_depth = R(r) X_colour + t, so
  X_colour = R(r)ᵀ (X_depth − t) (hand3d, bihand, Ge et al.'s STB readers).
* Intrinsics: BB fx = fy = 822.79041, (cx, cy) = (318.47345, 250.31296) for both views;
  SK colour fx = 607.92271, fy = 607.88192, (cx, cy) = (314.78337, 236.42484).

Standard split (Zimmermann & Brox 2017, followed by Baek et al. 2019): **test = B1Counting +
B1Random, train = B2–B6**, using the Bumblebee *stereo pairs* with both views as separate samples:
test 2 seq × 1,500 frames × 2 views = **6,000**, train 10 × 1,500 × 2 = **30,000**
(hand3d's ``create_db.m`` writes BB left and right of B1 into its 6,000-sample ``stb_eval.bin``).
``cameras=("SK",)`` gives the RealSense colour images instead (15,000 / 3,000).

Palm → wrist: STB's keypoint 0 is the palm centre. By default it is replaced by a wrist
estimate, wrist = palm + (palm − ring MCP) = 2·palm − ring_MCP in 3D (hand3d's
``BinaryDbReaderSTB`` and Ge et al. 2019's ``palm2wrist``; bihand uses the middle MCP and 2.2);
kp2d are the projections of the final kp3d. ``palm_to_wrist=False`` keeps the palm in kp3d[0]
(then *not* a wrist: Eq. 8 and the metrics would compare unlike points; a warning says so).
No masks (``mask`` is None); every keypoint is annotated (``valid`` all True); ``side`` "left".
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.io
from scipy.spatial.transform import Rotation

from ..skeleton import KEYPOINT_NAMES, convert
from .common import DataError, HandDataset, check_array, make_sample, project_np, read_image

SEQUENCES = tuple(f"B{b}{kind}" for b in range(1, 7) for kind in ("Counting", "Random"))
SPLIT_SEQUENCES = {"train": SEQUENCES[2:], "test": SEQUENCES[:2], "all": SEQUENCES}
FRAMES_PER_SEQUENCE = 1500
COUNTS = {"train": 30000, "test": 6000}  # with the default cameras

BB_K = np.array([[822.79041, 0.0, 318.47345], [0.0, 822.79041, 250.31296], [0.0, 0.0, 1.0]])
BB_BASELINE_MM = 120.054
SK_COLOR_K = np.array([[607.92271, 0.0, 314.78337], [0.0, 607.88192, 236.42484], [0.0, 0.0, 1.0]])
SK_ROT_VEC = np.array([0.00531, -0.01196, 0.00301])  # colour → depth rotation (axis-angle)
SK_TRANS_MM = np.array([-24.0381, -0.4563, -1.2326])  # colour → depth translation, mm
CAMERAS = {  # name: (image prefix, label file suffix)
    "BB_left": ("BB_left", "BB"), "BB_right": ("BB_right", "BB"), "SK": ("SK_color", "SK")}
RING_MCP = KEYPOINT_NAMES.index("ring_mcp")


def sk_depth_to_color(xyz_depth_mm: np.ndarray) -> np.ndarray:
    """(..., 3) SK depth-camera points → SK colour-camera points (same unit, mm)."""
    R = Rotation.from_rotvec(SK_ROT_VEC).as_matrix()
    return (xyz_depth_mm - SK_TRANS_MM) @ R  # row-vector form of Rᵀ (X − t)


def palm_to_wrist(kp3d: np.ndarray) -> np.ndarray:
    """(..., 21, 3) handlib-order keypoints whose [0] is STB's palm centre → [0] := 2·palm − ring MCP."""
    out = kp3d.copy()
    out[..., 0, :] = 2.0 * kp3d[..., 0, :] - kp3d[..., RING_MCP, :]
    return out


class STB(HandDataset):
    """STB reader: ``STB(root, "train" | "test", cameras=("BB_left", "BB_right"))``.

    Samples are ordered sequence by sequence, frame by frame, and camera by camera within a frame.

    Args:
        root: the STB folder (holding ``labels/`` and the sequence folders, directly or in ``images/``).
        split: "train" (B2–B6), "test" (B1) or "all".
        cameras: any of "BB_left", "BB_right", "SK".
        palm_to_wrist: replace the palm centre by the wrist estimate (module docstring).
    """

    name = "STB"

    def __init__(self, root, split: str = "train", cameras=("BB_left", "BB_right"), transform=None,
                 on_error: str = "raise", palm_to_wrist: bool = True):
        super().__init__(transform, on_error)
        if split not in SPLIT_SEQUENCES:
            raise ValueError(f"STB split must be one of {sorted(SPLIT_SEQUENCES)}, got {split!r}")
        bad = [c for c in cameras if c not in CAMERAS]
        if bad or not cameras:
            raise ValueError(f"STB cameras must be a non-empty subset of {sorted(CAMERAS)}, got {cameras}")
        self.root, self.split, self.cameras = Path(root), split, tuple(cameras)
        self.palm_to_wrist = palm_to_wrist
        if not palm_to_wrist:
            warnings.warn("STB with palm_to_wrist=False: kp3d[0] is the palm centre, not the wrist",
                          stacklevel=2)
        image_root = self.root / "images" if (self.root / "images").is_dir() else self.root
        self.sequences = SPLIT_SEQUENCES[split]
        self.labels: dict[tuple[str, str], np.ndarray] = {}  # (seq, "BB"|"SK") -> (N, 21, 3) mm
        self.items: list[tuple[str, int, str]] = []  # (sequence, frame, camera)
        self.seq_dirs = {s: image_root / s for s in self.sequences}
        for seq in self.sequences:
            n = None
            for suffix in sorted({CAMERAS[c][1] for c in self.cameras}):
                hp = self._read_labels(seq, suffix)
                if n is not None and len(hp) != n:
                    raise DataError(f"{len(hp)} frames but the other label file has {n}",
                                    self.label_path(seq, suffix))
                n = len(hp)
                self.labels[seq, suffix] = hp
            self.items += [(seq, f, c) for f in range(n) for c in self.cameras]
        self._num = len(self.items)

    def label_path(self, seq: str, suffix: str) -> Path:
        return self.root / "labels" / f"{seq}_{suffix}.mat"

    def _read_labels(self, seq: str, suffix: str) -> np.ndarray:
        path = self.label_path(seq, suffix)
        if not path.is_file():
            raise DataError("missing STB label file", path)
        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as err:  # truncated / not a .mat
            raise DataError(f"unreadable .mat file ({type(err).__name__}: {err})", path) from None
        if "handPara" not in mat:
            keys = sorted(k for k in mat if not k.startswith("_"))
            raise DataError(f"no 'handPara' in the file (keys: {keys})", path)
        hp = np.asarray(mat["handPara"], dtype=np.float64)
        if hp.ndim != 3 or hp.shape[:2] != (3, 21):
            raise DataError(f"handPara: expected shape (3, 21, N), got {hp.shape}", path)
        return hp.transpose(2, 1, 0)  # (N, 21, 3) in STB order, mm

    def image_path(self, i: int) -> Path:
        seq, frame, cam = self.items[i]
        return self.seq_dirs[seq] / f"{CAMERAS[cam][0]}_{frame}.png"

    def _load(self, i: int, image: bool = True) -> dict:
        seq, frame, cam = self.items[i]
        suffix = CAMERAS[cam][1]
        xyz_mm = check_array(self.labels[seq, suffix][frame], (21, 3), f"handPara[:, :, {frame}]",
                             self.label_path(seq, suffix), i).astype(np.float64)
        if cam == "BB_right":
            xyz_mm = xyz_mm - np.array([BB_BASELINE_MM, 0.0, 0.0])
        if cam == "SK":
            xyz_mm, K = sk_depth_to_color(xyz_mm), SK_COLOR_K
        else:
            K = BB_K
        kp3d = convert(xyz_mm / 1000.0, "stb", "handlib")  # mm → m, palm stays at [0]
        if self.palm_to_wrist:
            kp3d = palm_to_wrist(kp3d)
        img = read_image(self.image_path(i), i) if image else None
        return make_sample(image=img, mask=None, kp2d=project_np(kp3d, K), kp3d=kp3d, K=K,
                           valid=np.ones(21, bool), side="left", index=i, source=self.image_path(i))
