"""FreiHAND (Zimmermann et al., ICCV 2019), ``FreiHAND_pub_v2`` (+ ``FreiHAND_pub_v2_eval``).

Layout (FreiHAND toolbox ``lmb-freiburg/freihand``: README, ``utils/fh_utils.py``,
``utils/model.py``; the v2 evaluation archive unpacks into the same folder)::

    FreiHAND_pub_v2/
      training/rgb/%08d.jpg      130,240 = 4 × 32,560, 224×224
      training/mask/%08d.jpg     32,560 (first version only), hand silhouette, JPEG (threshold)
      training_K.json            32,560 × (3, 3)
      training_xyz.json          32,560 × (21, 3) metres, camera space, FreiHAND order (= handlib's)
      training_mano.json         32,560 × (1, 61)
      training_verts.json        32,560 × (778, 3) metres (not read per sample: ~0.5 GB of JSON)
      evaluation/rgb/%08d.jpg    3,960
      evaluation/segmap/%08d.png 3,960 part labels, hand = label > 0 (v2 eval archive)
      evaluation_K.json, evaluation_xyz.json, evaluation_mano.json, evaluation_verts.json (v2)

* 32,560 unique training samples, each in four *sample versions* (toolbox ``sample_version``):
  gs (green screen), hom (homogenised), sample, auto (background hallucination). Image ``i``
  shows annotation ``i % 32560`` in version ``i // 32560``; the mask ``i % 32560`` serves all
  four versions (same hand, same pose, only the background and colours differ).
* MANO (61 values, toolbox ``split_theta``): pose 0:48 (global 3 + 15 joints × 3, axis-angle,
  relative to MANO's mean pose: ``flat_hand_mean=False``), betas 48:58, then **not a
  translation** but a weak-perspective root: uv_root 58:60 (pixels) and scale 60. The root
  keypoint (middle MCP, index 9) sits at ((u, v) − pp, f) / scale. We return ``pose`` (48,),
  ``betas`` (10,) and ``cam`` (3,) = (u_root, v_root, scale).
* Right hands only (``side`` "right"); all 21 keypoints valid; kp2d = project(xyz, K).
The unique count is taken from ``training_xyz.json`` (32,560 for the real data; a fixture may
hold fewer) and the image count must be a multiple of it (``versions`` picks which of the four).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import (
    DataError,
    HandDataset,
    MissingData,
    check_array,
    make_sample,
    project_np,
    read_image,
    read_json,
    read_label,
)

VERSIONS = ("gs", "hom", "sample", "auto")
UNIQUE_TRAINING = 32560
COUNTS = {"training": 4 * UNIQUE_TRAINING, "evaluation": 3960}
SPLITS = {"training": "training", "train": "training", "evaluation": "evaluation", "test": "evaluation",
          "eval": "evaluation"}


def annotation_index(image_number: int, unique: int = UNIQUE_TRAINING) -> int:
    """Training image number → its annotation (and mask) number: ``image_number % unique``."""
    return image_number % unique


def version_of(image_number: int, unique: int = UNIQUE_TRAINING) -> str:
    """Training image number → its sample version ("gs", "hom", "sample" or "auto")."""
    return VERSIONS[image_number // unique]


def split_mano(theta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(61,) or (1, 61) FreiHAND MANO vector → pose (48,), betas (10,), cam (3,) = (u, v, scale)."""
    theta = np.asarray(theta, np.float32).reshape(61)
    return theta[:48], theta[48:58], theta[58:61]


def _load_json(path: Path, what: str):
    return read_json(path, list, f"FreiHAND {what}")


class FreiHAND(HandDataset):
    """FreiHAND reader: ``FreiHAND(root, "training" | "evaluation", versions=VERSIONS)``.

    Index ``i`` of the training reader covers the chosen ``versions`` in order (all four: the
    official image number ``i``, annotation ``i % unique``). Evaluation has one version.

    Args:
        root: the ``FreiHAND_pub_v2`` folder (holding ``training/`` and ``training_*.json``).
        split: "training" / "evaluation" (aliases "train", "test", "eval").
        versions: subset of :data:`VERSIONS` for training.
        with_mano: also read ``*_mano.json`` (pose, betas, cam) if present.
    """

    name = "FreiHAND"

    def __init__(self, root, split: str = "training", versions=VERSIONS, transform=None,
                 on_error: str = "raise", with_mano: bool = True):
        super().__init__(transform, on_error)
        if split not in SPLITS:
            raise ValueError(f"FreiHAND split must be one of {sorted(SPLITS)}, got {split!r}")
        self.root, self.split = Path(root), SPLITS[split]
        if self.split == "evaluation":
            versions = ("gs",)
        bad = [v for v in versions if v not in VERSIONS]
        if bad or not versions:
            raise ValueError(f"FreiHAND versions must be a non-empty subset of {VERSIONS}, got {versions}")
        self.versions = tuple(versions)
        self.K_path = self.root / f"{self.split}_K.json"
        self.xyz_path = self.root / f"{self.split}_xyz.json"
        self.mano_path = self.root / f"{self.split}_mano.json"
        self.Ks = _load_json(self.K_path, "intrinsics")
        if self.split == "evaluation" and not self.xyz_path.is_file():
            raise MissingData("evaluation keypoints are only in FreiHAND v2 (FreiHAND_pub_v2_eval.zip); "
                              "unpack it into the same folder", self.xyz_path)
        self.xyzs = _load_json(self.xyz_path, "keypoints")
        with_mano = with_mano and self.mano_path.is_file()
        self.manos = _load_json(self.mano_path, "MANO fits") if with_mano else None
        self.unique = len(self.xyzs)
        for other, path in ((self.Ks, self.K_path), (self.manos, self.mano_path)):
            if other is not None and len(other) != self.unique:
                raise DataError(f"{len(other)} entries but {self.xyz_path.name} has {self.unique}", path)
        self._num = self.unique * len(self.versions)

    def image_number(self, i: int) -> int:
        """Official image number (file name) of reader index ``i``."""
        return VERSIONS.index(self.versions[i // self.unique]) * self.unique + i % self.unique

    def image_path(self, i: int) -> Path:
        return self.root / self.split / "rgb" / f"{self.image_number(i):08d}.jpg"

    def mask_path(self, i: int) -> Path:
        a = annotation_index(self.image_number(i), self.unique)
        if self.split == "training":
            return self.root / "training" / "mask" / f"{a:08d}.jpg"
        return self.root / "evaluation" / "segmap" / f"{a:08d}.png"

    def _load(self, i: int, image: bool = True) -> dict:
        a = annotation_index(self.image_number(i), self.unique)
        K = check_array(self.Ks[a], (3, 3), f"K[{a}]", self.K_path, i)
        kp3d = check_array(self.xyzs[a], (21, 3), f"xyz[{a}]", self.xyz_path, i)
        extra = {}
        if self.manos is not None:
            m = self.manos[a]
            shape = (1, 61) if isinstance(m, list) and m and isinstance(m[0], list) else (61,)
            theta = check_array(m, shape, f"mano[{a}]", self.mano_path, i)
            extra = dict(zip(("pose", "betas", "cam"), split_mano(theta)))
        mask = None
        mpath = self.mask_path(i)
        if image and (self.split == "training" or mpath.is_file()):  # training masks: in the release
            mask = read_label(mpath, i) > (127 if mpath.suffix == ".jpg" else 0)
        img = read_image(self.image_path(i), i) if image else None
        if img is not None and mask is not None and mask.shape != img.shape[:2]:
            raise DataError(f"mask {mask.shape} and image {img.shape[:2]} sizes differ", mpath, i)
        return make_sample(image=img, mask=mask, kp2d=project_np(kp3d, K), kp3d=kp3d, K=K,
                           valid=np.ones(21, bool), side="right", index=i, source=self.image_path(i), **extra)
