"""Pretrained 2D evidence for real photos: MediaPipe's hand landmarker as a stand-in for f_E2D.

The paper embeds a 2D pose network pretrained on real images (Sec. 3.1). handlib's own f_E2D is
trained on synthetic OpenHand renders only, so on photos it needs help: this module wraps Google's
openly licensed (Apache-2.0) MediaPipe hand landmarker — a palm detector plus a 21-landmark
regressor — as a source of **hand boxes, 21 2D keypoints, handedness and confidence**, which
``predict`` then fits the hand model to with Eq. 13 (term (a) against these keypoints).

Getting the model, offline: ``python data_scripts/get_pretrained.py`` takes the two ``.tflite``
files out of the ``mediapipe==0.10.21`` wheel from PyPI (downloaded with ``pip download
--no-deps``, never installed: it needs numpy < 2) and zips them into ``hand_landmarker.task``
(``hand_detector.tflite`` + ``hand_landmarks_detector.tflite``), checking SHA-256 sums. The
runtime is ``mediapipe==1.2.2`` (in the ``dev`` extra: a reference for the tests), which ships no
model. ``predict``, ``eval-real`` and notebook 09 run the same two networks in torch instead
(:class:`handlib.pretrained.HandFinder`, ``--detector torch``, the default): this wrapper is the
``--detector mediapipe`` alternative.

Conventions to know (measured and documented, not corrected):

* **keypoint order**: MediaPipe's 21 landmarks follow the OpenPose/FreiHAND order, which is
  handlib's (``skeleton.ORDERS["freihand"]`` is the identity);
* **knuckles on the skin**: MediaPipe places MCP landmarks on the skin surface of the knuckles,
  FreiHAND and RHD label joint centres, a systematic offset of 10–20 px on the MCPs at 224 px
  (measured here on 9 detected RHD/FreiHAND frames, scaled to 224 px: mean 11.4 px at the MCPs and
  10.7 px at the wrist, against 6.2 px at the PIP/DIP/IP joints and 9.2 px at the tips);
* **handedness**: MediaPipe's documentation describes its label for *mirrored* (selfie) input, and
  older releases needed it swapped for ordinary photos. Measured with mediapipe 1.2.2's
  ``HandLandmarker`` on non-mirrored real frames, the label is right as given: RHD (2 left, 1
  right) 3/3, FreiHAND (right hands only) 19/21 best detections. So it is kept by default;
  :class:`PretrainedConfig` ``swap_handedness=True`` swaps it (e.g. for a mirrored selfie stream);
* ``world`` landmarks are metric but root-relative (centred near the hand's middle), not in the
  camera frame: handlib uses only the 2D landmarks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .skeleton import keypoint_box

__all__ = ["PretrainedConfig", "HandDetection", "PretrainedEvidence", "default_model_path",
           "detections_from_result", "MIN_BOX_SIDE", "MODEL_ENV", "TASK_NAME", "build_task",
           "task_is_valid", "fetch_model", "WHEEL_FILES", "WHEEL_SPEC"]

MODEL_ENV = "HANDLIB_HAND_LANDMARKER"
TASK_NAME = "hand_landmarker.task"
MIN_BOX_SIDE = 8.0  # pixels: a detection's box is never thinner (a hand seen edge-on has a thin box)


def default_model_path() -> Path:
    """``$HANDLIB_HAND_LANDMARKER``, else ``$XDG_CACHE_HOME`` (or ~/.cache)/handlib/hand_landmarker.task."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "handlib" / TASK_NAME


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    """The landmarker's settings (MediaPipe's names and defaults where it has them)."""

    model_path: str | None = None  # None: default_model_path()
    num_hands: int = 2
    min_detection_confidence: float = 0.5  # palm detector
    min_presence_confidence: float = 0.5  # landmark model's "a hand is here"
    swap_handedness: bool = False  # swap MediaPipe's Left/Right label (see the module docstring)
    box_margin: float = 1.0  # box = this × the keypoints' tight box (predict adds Eq. 8's 1.5 itself)
    # ours, the torch runtime only (pretrained.HandFinder): when MediaPipe's single look finds no hand,
    # look again with a lower palm threshold and in windows (pretrained.SecondLook).
    # The mediapipe runtime always looks once.
    second_look: bool = True


@dataclasses.dataclass(frozen=True)
class HandDetection:
    """One hand found in an image.

    Attributes:
        kp2d: (21, 2) pixels, handlib order (x right, y down, pixel centres at integers).
        box: (x, y, w, h) tight box of the keypoints (× ``box_margin``), pixels.
        side: "left" or "right" for the photo as given (see the module docstring).
        score: handedness confidence in [0, 1] (MediaPipe's). world: (21, 3) root-relative metres.
    """

    kp2d: np.ndarray
    box: tuple
    side: str
    score: float
    world: np.ndarray | None = None


def box_iou_xywh(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes, pixels (0 when they do not overlap)."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)


def detections_from_result(result, width: int, height: int, cfg: PretrainedConfig = PretrainedConfig()
                           ) -> list[HandDetection]:
    """Convert a MediaPipe ``HandLandmarkerResult`` (or anything with its attributes) to detections.

    MediaPipe gives landmarks x, y normalised by the image width and height (0 = the left/top
    *edge*, 1 = the right/bottom edge), so a pixel centre u = x · W − ½.

    Args:
        result: with ``hand_landmarks`` (list of 21 points with .x, .y), ``handedness`` (list of
            lists of categories with .category_name "Left"/"Right" and .score) and optionally
            ``hand_world_landmarks``. width, height: the image's size in pixels.
    Returns:
        detections sorted by decreasing score.
    """
    out = []
    world_all = getattr(result, "hand_world_landmarks", None) or []
    for i, marks in enumerate(result.hand_landmarks):
        if len(marks) != 21:
            raise ValueError(f"result.hand_landmarks[{i}]: expected 21 landmarks, got {len(marks)}")
        kp = np.array([[p.x * width - 0.5, p.y * height - 0.5] for p in marks], np.float64)
        cat = result.handedness[i][0]
        label = cat.category_name.lower()
        if label not in ("left", "right"):
            raise ValueError(f"result.handedness[{i}]: unexpected label {cat.category_name!r}")
        if cfg.swap_handedness:
            label = "left" if label == "right" else "right"
        world = None
        if i < len(world_all):
            world = np.array([[p.x, p.y, p.z] for p in world_all[i]], np.float64)
        out.append(HandDetection(kp2d=kp, box=keypoint_box(kp, cfg.box_margin, MIN_BOX_SIDE), side=label,
                                 score=float(cat.score), world=world))
    return sorted(out, key=lambda d: -d.score)


@contextlib.contextmanager
def _native_stderr_quiet():
    """Hide what C++ code writes to file descriptor 2 inside the block, unless the block raises.

    MediaPipe's graph, TFLite and absl log straight to fd 2 ("INFO: Created TensorFlow Lite XNNPACK
    delegate", "W0000 … inference_feedback_manager.cc", …) while a landmarker is created and runs
    for the first time; neither ``sys.stderr`` redirection nor ``GLOG_minloglevel`` /
    ``TF_CPP_MIN_LOG_LEVEL`` (measured with mediapipe 1.2.2) stops them, and Jupyter shows them as
    red boxes that look like errors. fd 2 points at a temporary file meanwhile and is restored
    after; if the block raises, what was captured is written back to stderr before the exception
    propagates, so a failure keeps its explanation. Python's own ``sys.stderr`` (e.g. Jupyter's)
    is not touched.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (e.g. a detached service): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)  # idempotent after the except branch
            os.close(saved)


class PretrainedEvidence:
    """The landmarker, loaded once: ``with PretrainedEvidence() as ev: ev.detect(image)``.

    Raises ImportError (how to install) without mediapipe and FileNotFoundError (how to fetch the
    model) without the .task file. MediaPipe's C++ start-up logs (printed while the landmarker is
    created and on its first image) are hidden, see :func:`_native_stderr_quiet`.
    """

    def __init__(self, cfg: PretrainedConfig = PretrainedConfig()):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the mediapipe runtime is not installed (pip install mediapipe==1.2.2, or "
                              "use handlib.pretrained.HandFinder: the same networks in torch)") from err
        path = Path(cfg.model_path) if cfg.model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no hand landmarker model; fetch it with "
                                    "`python data_scripts/get_pretrained.py` (or set $"
                                    f"{MODEL_ENV} to a hand_landmarker.task)")
        self.cfg, self.path, self._mp = cfg, path, mp
        opts = vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)), running_mode=vision.RunningMode.IMAGE,
            num_hands=cfg.num_hands, min_hand_detection_confidence=cfg.min_detection_confidence,
            min_hand_presence_confidence=cfg.min_presence_confidence)
        with _native_stderr_quiet():
            self._landmarker = vision.HandLandmarker.create_from_options(opts)
        self._quiet_next = True  # the first image starts the graph's threads, which log too

    def detect(self, image: np.ndarray) -> list[HandDetection]:
        """Hands in an (H, W, 3) uint8 RGB image, best first (empty when none is found)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        with _native_stderr_quiet() if self._quiet_next else contextlib.nullcontext():
            result = self._landmarker.detect(mp_image)
        self._quiet_next = False
        return detections_from_result(result, image.shape[1], image.shape[0], self.cfg)

    def close(self) -> None:
        if getattr(self, "_landmarker", None) is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> PretrainedEvidence:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # MediaPipe's own __del__ fails at interpreter exit; close early instead
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort during garbage collection
            pass


# ----------------------------------------------------------------------------------------------
# Fetching the model (data_scripts/get_pretrained.py)
# ----------------------------------------------------------------------------------------------
WHEEL_SPEC = "mediapipe==0.10.21"
# members of that wheel → names inside the .task, with their SHA-256 (checked on every fetch)
WHEEL_FILES = {
    "mediapipe/modules/palm_detection/palm_detection_full.tflite":
        ("hand_detector.tflite", "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
    "mediapipe/modules/hand_landmark/hand_landmark_full.tflite":
        ("hand_landmarks_detector.tflite",
         "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"),
}


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def build_task(wheel, dest, files: dict = WHEEL_FILES) -> Path:
    """Zip the wheel's two models into a ``.task`` (stored, fixed timestamps: byte-reproducible).

    Args:
        wheel: path of the mediapipe wheel (a zip). dest: the .task to write (atomically).
        files: wheel member → (name in the task, expected SHA-256).
    Raises:
        ValueError naming the member when one is missing or its checksum differs.
    """
    import zipfile

    wheel, dest = Path(wheel), Path(dest)
    blobs = {}
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for member, (name, sha) in files.items():
            if member not in names:
                raise ValueError(f"{wheel}: no member {member} (expected {WHEEL_SPEC})")
            data = z.read(member)
            if _digest(data) != sha:
                raise ValueError(f"{wheel}: {member} has SHA-256 {_digest(data)}, expected {sha}")
            blobs[name] = data
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(blobs):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), blobs[name])
    os.replace(tmp, dest)
    return dest


def task_is_valid(path, files: dict = WHEEL_FILES) -> bool:
    """True when ``path`` is a .task holding exactly the expected models."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            got = {n: _digest(z.read(n)) for n in z.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False
    return got == {name: sha for name, sha in files.values()}


def fetch_model(dest=None, wheel=None, log=print, files: dict = WHEEL_FILES) -> Path:
    """Make sure ``dest`` (default :func:`default_model_path`) holds a valid hand_landmarker.task.

    Idempotent: a valid file is left alone. Otherwise the models are taken from ``wheel`` (a local
    ``mediapipe-0.10.21-*.whl``) or from one downloaded with ``pip download --no-deps`` (PyPI; the
    wheel is not installed, and only its two model files are kept).
    """
    import subprocess
    import sys
    import tempfile

    dest = Path(dest) if dest else default_model_path()
    if task_is_valid(dest, files):
        log(f"{dest}: present and valid")
        return dest
    if wheel is not None:
        return build_task(wheel, dest, files)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", WHEEL_SPEC, "-d", tmp]
        log("downloading " + WHEEL_SPEC + " (about 35 MB; only its two .tflite models are kept)")
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
        if run.returncode or not wheels:
            raise RuntimeError(f"pip download {WHEEL_SPEC} failed:\n{run.stdout[-2000:]}"
                               f"{run.stderr[-2000:]}")
        path = build_task(wheels[0], dest, files)
    log(f"wrote {path}")
    return path
