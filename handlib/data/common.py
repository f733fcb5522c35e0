"""The one sample format every dataset reader returns, its validation, and careful file reading.

A *sample* is a plain dict (before any crop; :func:`handlib.data.crop_to_hand` crops it)::

    image   (H, W, 3) uint8 RGB
    mask    (H, W) bool, foreground of the chosen hand, or None where the dataset has no mask
    kp2d    (21, 2) float32 pixels (u, v), pixel centres at integers (see handlib.camera)
    kp3d    (21, 3) float32 metres, camera space (x right, y down, z forward)
    K       (3, 3) float32 intrinsics with project(kp3d, K) == kp2d
    valid   (21,) bool, which keypoints are annotated (and, for RHD, visible)
    side    "left" or "right"
    index   int, position in the reader;  source: str, the image file it came from
    pose (48,), betas (10,), cam (3,)   float32, only where known (FreiHAND's MANO fit)

Keypoints are always in handlib's (FreiHAND/OpenPose) order; invalid ones hold zeros.
Readers never skip bad data silently: a missing or unreadable file, or an annotation of the wrong
shape, raises :class:`DataError` naming the file and the sample index. ``on_error="skip"`` instead
moves on to the next good sample and records what it skipped in ``reader.skipped``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

SIDES = ("left", "right")
REQUIRED_KEYS = ("image", "mask", "kp2d", "kp3d", "K", "valid", "side", "index", "source")


class DataError(ValueError):
    """An input file (dataset file or folder, image, checkpoint) is missing, unreadable or malformed.

    ``str(err)`` is ``"<path> sample <index>: <reason>"``; ``path``, ``index`` and ``reason`` say
    which and why, so the command line can name its flag instead (``error: --data DIR: reason``).
    """

    def __init__(self, message: str, path=None, index=None):
        where = []
        if path is not None:
            where.append(str(path))
        if index is not None:
            where.append(f"sample {index}")
        super().__init__(f"{' '.join(where)}: {message}" if where else message)
        self.path, self.index, self.reason = path, index, message


class MissingData(DataError, FileNotFoundError):
    """A required file or folder is absent (also a ``FileNotFoundError``)."""


def check_array(value, shape: tuple, name: str, path=None, index=None) -> np.ndarray:
    """``np.asarray(value, float32)`` after checking its shape (None in ``shape`` = any size).

    Raises:
        DataError: naming ``name``, the expected and actual shapes, the file and the index.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{name}: not a numeric array ({err})", path, index) from None
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"{name}: expected shape {want}, got {arr.shape}", path, index)
    return arr.astype(np.float32)


def read_image(path, index=None) -> np.ndarray:
    """Read a colour image with OpenCV. Returns (H, W, 3) uint8 **RGB**.

    Raises:
        DataError: the file is missing (:class:`MissingData`), a folder, empty, truncated or not an
            image (names file and index).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError("a folder, not an image file", path, index)
    if not path.is_file():
        raise MissingData("missing image file", path, index)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise DataError("unreadable image (truncated or not an image file)", path, index)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_json(path, kind: type = dict, what: str = "annotation file"):
    """Read a JSON file whose top level must be ``kind`` (dict or list).

    Raises:
        MissingData: ``"<path>: <what> not found"`` (a ``FileNotFoundError``).
        DataError: unreadable JSON, or a top level of another type (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingData(f"{what} not found", path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"unreadable JSON ({err})", path) from None
    if not isinstance(data, kind):
        raise DataError(f"expected a JSON {kind.__name__}, got {type(data).__name__}", path)
    return data


def read_label(path, index=None) -> np.ndarray:
    """Read a single-channel label or mask image as stored (uint8/uint16). Returns (H, W).

    JPEG masks are decoded to grey; a PNG with colour channels is refused (a label map must have
    one channel, or its values would be mixed by a colour conversion).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("missing mask/label file", path, index)
    flag = cv2.IMREAD_GRAYSCALE if path.suffix.lower() in (".jpg", ".jpeg") else cv2.IMREAD_UNCHANGED
    img = cv2.imread(str(path), flag)
    if img is None or img.size == 0:
        raise DataError("unreadable mask/label image (truncated or not an image file)", path, index)
    if img.ndim != 2:
        raise DataError(f"expected a single-channel label image, got shape {img.shape}", path, index)
    return img


def project_np(kp3d: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) camera points, (3, 3) K → (N, 2) pixels; numpy twin of :func:`handlib.camera.project`."""
    uvw = kp3d.astype(np.float64) @ np.asarray(K, np.float64).T
    return (uvw[:, :2] / np.maximum(uvw[:, 2:], 1e-9)).astype(np.float32)


def make_sample(image, mask, kp2d, kp3d, K, valid, side, index, source, **extra) -> dict:
    """Assemble a sample dict with the contract's dtypes (float32 arrays, bool masks)."""
    sample = {
        "image": image,
        "mask": None if mask is None else np.asarray(mask, dtype=bool),
        "kp2d": np.asarray(kp2d, np.float32).reshape(21, 2),
        "kp3d": np.asarray(kp3d, np.float32).reshape(21, 3),
        "K": np.asarray(K, np.float32).reshape(3, 3),
        "valid": np.asarray(valid, bool).reshape(21),
        "side": side,
        "index": int(index),
        "source": str(source),
    }
    for key, value in extra.items():
        sample[key] = np.asarray(value, np.float32) if isinstance(value, (list, np.ndarray)) else value
    return sample


def validate_sample(sample: dict, where: str = "sample") -> dict:
    """Check a sample against the contract; raise ``ValueError`` naming ``where`` and the key."""
    missing = [k for k in REQUIRED_KEYS if k not in sample]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    img = sample["image"]
    if img is not None and (not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3
                            or img.shape[2] != 3):
        raise ValueError(f"{where}: image must be (H, W, 3) uint8, got "
                         f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
    for key, shape in (("kp2d", (21, 2)), ("kp3d", (21, 3)), ("K", (3, 3)), ("valid", (21,))):
        arr = sample[key]
        if not isinstance(arr, np.ndarray) or arr.shape != shape:
            raise ValueError(f"{where}: {key} must be an array of shape {shape}, got "
                             f"{getattr(arr, 'shape', type(arr))}")
    if sample["valid"].dtype != bool:
        raise ValueError(f"{where}: valid must be bool")
    if sample["mask"] is not None:
        m = sample["mask"]
        if m.dtype != bool or img is not None and m.shape != img.shape[:2]:
            raise ValueError(f"{where}: mask must be bool of shape {img.shape[:2]}, got {m.dtype} {m.shape}")
    if sample["side"] not in SIDES:
        raise ValueError(f"{where}: side must be 'left' or 'right', got {sample['side']!r}")
    v = sample["valid"]
    if not (np.isfinite(sample["kp2d"][v]).all() and np.isfinite(sample["kp3d"][v]).all()):
        raise ValueError(f"{where}: non-finite valid keypoints")
    return sample


class HandDataset(torch.utils.data.Dataset):
    """Base of the readers: length, indexing, ``transform`` and ``on_error`` handling.

    Subclasses set ``self._num`` and implement ``_load(i, image=True) -> sample``. With
    ``on_error="skip"`` a sample that raises :class:`DataError` is replaced by the next good one
    (wrapping around) and ``(index, message)`` is appended to ``self.skipped`` with a warning.
    ``skipped`` lives in the process that read the sample (each DataLoader worker has its own).
    """

    name = "dataset"

    def __init__(self, transform=None, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.transform, self.on_error = transform, on_error
        self.skipped: list[tuple[int, str]] = []
        self._num = 0

    def __len__(self) -> int:
        return self._num

    def _load(self, i: int, image: bool = True) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, i: int, image: bool = True) -> dict:
        """Sample ``i`` without ``transform``; ``image=False`` skips decoding the colour image
        (``image`` is then None) and any mask the annotation does not need (FreiHAND's), for
        building indices. RHD still reads its mask: the kept hand depends on it."""
        sample = self._load(i, image=image)
        return validate_sample(sample, f"{self.name} sample {i} ({sample.get('source')})")

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} samples")
        i %= n
        for step in range(n):
            j = (i + step) % n
            try:
                sample = self.load(j)
                break
            except DataError as err:
                if self.on_error == "raise":
                    raise
                if all(k != j for k, _ in self.skipped):
                    self.skipped.append((j, str(err)))
                    warnings.warn(f"{self.name}: skipped {err} ({len(self.skipped)} skipped so far)",
                                  stacklevel=2)
        else:
            raise DataError(f"{self.name}: every sample failed to load ({len(self.skipped)} skipped)")
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples)"


# ----------------------------------------------------------------------------------------------
# Compact indices for data_scripts/prepare_*.py
# ----------------------------------------------------------------------------------------------
def fingerprint(paths) -> str:
    """Cheap identity of input files: name, size and modification time of each (JSON string)."""
    items = []
    for p in paths:
        p = Path(p)
        st = p.stat()
        items.append([str(p), st.st_size, st.st_mtime_ns])
    return json.dumps(items)


def sha256(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def index_argument_parser(description: str, root_help: str) -> argparse.ArgumentParser:
    """The command line that every ``data_scripts/prepare_*.py`` shares (its args feed
    :func:`build_index`); a script adds its own options to the returned parser."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("root", type=Path, help=root_help)
    ap.add_argument("--out", type=Path, default=None, help="index file (default: inside root)")
    ap.add_argument("--allow-partial", action="store_true", help="index even if counts differ")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return ap


def build_index(readers: dict, out, inputs, expected: dict, allow_partial: bool = False,
                force: bool = False, log=print) -> int:
    """Write ``out`` (.npz) with every split's annotations; the work of ``prepare_*.py``.

    For each split ``s``: ``s_kp2d`` (N, 21, 2), ``s_kp3d`` (N, 21, 3), ``s_K`` (N, 3, 3),
    ``s_valid`` (N, 21), ``s_right`` (N,) bool, ``s_source`` (N,) image paths relative to the
    dataset; plus ``fingerprint`` and ``sha256`` (JSON) of the ``inputs``.
    Idempotent: if ``out`` holds the same fingerprint it says "up to date" and writes nothing.

    Returns:
        0 on success, 1 if a count differs from ``expected`` and not ``allow_partial``.
    """
    out = Path(out)
    fp = fingerprint(inputs) + json.dumps({s: len(r) for s, r in readers.items()})
    if out.is_file() and not force:
        with np.load(out) as old:
            if "fingerprint" in old and str(old["fingerprint"]) == fp:
                log(f"{out} is up to date ({', '.join(f'{s}: {len(r)}' for s, r in readers.items())})")
                return 0
    ok = True
    for split, reader in readers.items():
        want = expected.get(split)
        note = "" if want is None or want == len(reader) else f"  (expected {want:,}: INCOMPLETE?)"
        ok &= not note
        log(f"# {split} has {len(reader):,} samples{note}")
    if not ok and not allow_partial:
        log("counts differ from the official release; nothing written (--allow-partial to index anyway)")
        return 1
    digests = {str(p): sha256(p) for p in inputs}
    arrays = {"fingerprint": np.array(fp), "sha256": np.array(json.dumps(digests))}
    for split, reader in readers.items():
        rows = [reader.load(i, image=False) for i in range(len(reader))]
        root = getattr(reader, "root", Path("."))
        for key in ("kp2d", "kp3d", "K", "valid"):
            arrays[f"{split}_{key}"] = np.stack([r[key] for r in rows]) if rows else np.zeros((0,))
        arrays[f"{split}_right"] = np.array([r["side"] == "right" for r in rows], bool)
        arrays[f"{split}_source"] = np.array([os.path.relpath(r["source"], root) for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    log(f"wrote {out}")
    return 0
