"""Your own images: one photo → a 3D hand mesh, 21 keypoints and an overlay (Eq. 1, then Eq. 13).

``python -m handlib predict IMAGE [--box x,y,w,h] [--focal F] [--left] [--refine-steps N]
[--checkpoint PATH] --out DIR`` runs :func:`predict` and :func:`save_prediction`. What a user
supplies, and what we assume when they do not:

* **the image** (any file OpenCV reads; :func:`~handlib.data.common.read_image`);
* **a hand box** ``x, y, w, h`` in pixels: the top-left pixel, width and height of a tight box
  around the hand (what an image viewer or a detector gives). Default: the image's **central
  square** (side = the shorter image side), i.e. we assume the hand fills the middle of the picture.
  The crop follows the training crops (``data.transforms.crop_to_hand``, Eq. 8): a square of side
  ``ModelConfig.crop_margin`` (1.5, Eq. 8's margin) × the box's larger side, centred on the box's
  centre, resized to the network's crop side S. A network trained on **upright** crops
  (``ModelConfig.crop == "upright"``, MediaPipe's convention) gets :func:`crop_upright` instead when
  21 keypoints are at hand (a detector's: ``keypoints`` / ``crop_keypoints``): turned so that wrist →
  middle MCP points up, side ``crop_margin`` × the turned keypoint box;
* **the focal length** f in pixels, if known (square pixels, principal point at the image centre).
  Default (our assumption): f = 1.2 × the larger image side, a field of view of 2·atan(1/2.4) ≈ 45°
  across that side, typical of phone cameras. The network places the hand at a depth proportional
  to f (``regressor.h_to_code``: z_ref = f_crop · 0.2 m / S), so a wrong f scales the 3D result's
  distance from the camera, not the hand's articulation or its 2D projection;
* ``left``: the network models a right hand (Sec. 3.2). A left hand's crop is mirrored before the
  network and the results mirrored back with ``data.batch.to_right_hand``'s convention
  (u' = S − 1 − u, X' = −X, K's cx' = S − 1 − cx; it is its own inverse), and the mesh's faces
  reverse their winding (``hand_model.mirror_arrays``);
* **a checkpoint** (``train.save_checkpoint``): ``--checkpoint`` or ``$HANDLIB_CHECKPOINT``, else
  the shipped ``handlib/assets/dhpe_cpu.pt`` (a ``cpu``-profile run; provenance in its ``.json``);
  make your own with ``python -m handlib train --out runs/cpu`` (writes ``runs/cpu/checkpoint.pt``).

The crop is an affine image warp A = [[σR, t], [0, 1]] (R = I for a box crop), so the crop camera
is K_crop = A · K · R₃ᵀ with R₃ = diag(R, 1) — the crop's roll about the optical axis — and a point X
of the image's camera is R₃X in the crop's: ``project(R₃X, K_crop) = A project(X, K)``. The network
answers in the crop's camera; :func:`predict` rolls the mesh, the joints and h back (X = R₃ᵀX_crop),
so the returned 3D keypoints are in the original image's camera (metres, x right, y down, z
forward) and project with K onto the returned 2D keypoints in original pixels. When the crop
shrinks the image (σ < 1) the image is first area-averaged to scale σ (``cv2.INTER_AREA``), so a
large photo is not aliased; the composite map is still exactly A.

Outputs of :func:`save_prediction`: ``mesh.obj`` and ``mesh.ply`` (camera space, metres),
``joints.json`` (keypoints, h, box, focal, K, checkpoint, refinement) and ``overlay.png``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from .camera import project
from .data.batch import normalize_image, to_right_hand
from .data.common import read_image
from .skeleton import BOX_MARGIN, FINGER_COLORS, FINGERS, KEYPOINT_NAMES, ROOT, keypoint_box

__all__ = ["CHECKPOINT_ENV", "FOCAL_FACTOR", "Crop", "Prediction", "parse_box", "default_box", "check_box",
           "crop_upright", "network_view", "feature_term",
           "default_focal", "clip_box", "image_intrinsics", "crop_box", "resolve_checkpoint", "predict",
           "overlay_figure", "save_prediction"]

CHECKPOINT_ENV = "HANDLIB_CHECKPOINT"
# Eq. 13's Adam step (code units) when fitting *external* 2D keypoints (``keypoints=``): that is a
# re-fit to better evidence, not a small refinement, so the step is 3× RefineConfig's default.
# Measured on 17 real frames (python -m handlib eval-real, 50 steps): lr 0.03 vs 0.01 gave 2D error
# 12.9 vs 15.8 px, 2D PCK@0.2 0.77 vs 0.63, MPJPE 54.8 vs 62.4 mm; 150 steps at 0.01 about the same
# as 50 at 0.03 (ours).
KEYPOINT_FIT_LR = 0.03
# f = 1.2 × the larger image side: 2·atan(1 / 2.4) ≈ 45° field of view across it (ours; phone-like)
FOCAL_FACTOR = 1.2


@dataclasses.dataclass(frozen=True)
class Crop:
    """The network's input cut from an image.

    Attributes:
        image: (S, S, 3) uint8 RGB, as the user's image is oriented (not mirrored).
        K: (3, 3) crop intrinsics A · K_image.  K_image: (3, 3) the original image's intrinsics.
        affine: (3, 3) A, original pixels → crop pixels (pixel centres at integers).
        box: (x, y, w, h) the hand box in original pixels.
        rotation: (3, 3) R₃ = diag(R, 1), the crop's roll about the optical axis (identity for a box
            crop): a point X of the image's camera is R₃ X in the crop's (``data.transforms``).
    """

    image: np.ndarray
    K: np.ndarray
    K_image: np.ndarray
    affine: np.ndarray
    box: tuple
    rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))


@dataclasses.dataclass
class Prediction:
    """What :func:`predict` returns; numpy arrays, all in the **original** image's camera.

    Attributes:
        verts: (V, 3) mesh vertices, metres. faces: (F, 3) with outward winding for ``side``.
        joints: (21, 3) keypoints (handlib order), metres. j2d: (21, 2) their projection with K, pixels.
        j2d_evidence: (21, 2) f_E2D's heat-map keypoints (soft-argmax), original pixels.
        h: (63,) [q, θ, β, s, t] of ``HandModel(side)`` in this camera (``hand_model.from_h``).
        silhouette: (S, S) soft silhouette of the mesh in the crop (as ``crop.image`` is oriented).
        K: (3, 3) the image's intrinsics. crop: :class:`Crop`. side: "right" or "left".
        focal, box: what was used; ``focal_assumed`` / ``box_assumed`` say whether they were defaults.
        refine_steps: Eq. 13 iterations run (0: the network's estimate or the fit). losses: Eq. 13's
            weighted terms before the first and after the last step (``RefineResult.losses``), the
            fit's final costs and iterations (``evidence`` ending in "+fit"), or None.
        keypoints: (21, 2) the external 2D keypoints Eq. 13's term (a) was fitted to (e.g. MediaPipe's,
            ``evidence_pretrained``), image pixels; None when the network's own refiner gave the target.
        evidence: where the 2D target came from: "network" (f_ref's j2D_ref) or a detector's name;
            "<detector>+fit" when the mesh is :mod:`handlib.fit`'s fit to that detector's evidence.
    """

    verts: np.ndarray
    faces: np.ndarray
    joints: np.ndarray
    j2d: np.ndarray
    j2d_evidence: np.ndarray
    h: np.ndarray
    silhouette: np.ndarray
    K: np.ndarray
    crop: Crop
    side: str
    focal: float
    focal_assumed: bool
    box: tuple
    box_assumed: bool
    refine_steps: int = 0
    losses: dict | None = None
    keypoints: np.ndarray | None = None
    evidence: str = "network"

    @property
    def refined(self) -> bool:
        return self.refine_steps > 0


# ----------------------------------------------------------------------------------------------
# The user's inputs: box, focal length, checkpoint
# ----------------------------------------------------------------------------------------------
def parse_box(text: str) -> tuple:
    """``"x,y,w,h"`` (pixels; floats allowed) → (x, y, w, h). Raises ValueError on a malformed box."""
    parts = [p for p in str(text).replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise ValueError(f"expected four numbers x,y,w,h, got {len(parts)}")
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected four numbers x,y,w,h, got {text!r}") from None
    return box


def default_box(width: int, height: int) -> tuple:
    """The image's central square (side = the shorter side): the box used when none is given."""
    s = min(width, height)
    return ((width - s) / 2.0, (height - s) / 2.0, float(s), float(s))


def check_box(box, width: int | None = None, height: int | None = None) -> tuple:
    """Check a hand box against an image of ``width`` × ``height`` pixels.

    The box covers pixels x … x + w − 1 (columns) and y … y + h − 1 (rows), so it must satisfy
    w, h > 0, x, y ≥ 0, x + w ≤ width and y + h ≤ height. Without a size (``None``, e.g. before
    the image is read) only the first two are checked.

    Returns:
        (x, y, w, h) as floats. Raises ValueError naming the problem.
    """
    if len(box) != 4:
        raise ValueError(f"expected four numbers x,y,w,h, got {len(box)}")
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"non-finite value in {box}")
    if w <= 0 or h <= 0:
        raise ValueError(f"width and height must be positive, got w={w:g}, h={h:g}")
    if x < 0 or y < 0:
        raise ValueError(f"box ({x:g}, {y:g}, {w:g}, {h:g}) is not inside the image (need x, y ≥ 0)")
    if width is not None and height is not None and (x + w > width or y + h > height):
        raise ValueError(f"box ({x:g}, {y:g}, {w:g}, {h:g}) is not inside the {width}×{height} image "
                         f"(need x + w ≤ {width}, y + h ≤ {height})")
    return (x, y, w, h)


def clip_box(box, width: int, height: int) -> tuple:
    """(x, y, w, h) intersected with the image (a detector's keypoint box may reach past an edge)."""
    x, y, w, h = (float(v) for v in box)
    x0, y0 = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
    x1, y1 = max(min(x + w, float(width)), x0 + 1.0), max(min(y + h, float(height)), y0 + 1.0)
    return (x0, y0, x1 - x0, y1 - y0)


def default_focal(width: int, height: int) -> float:
    """Our guess when the focal length is unknown: ``FOCAL_FACTOR`` × the larger side (≈ 45° FOV)."""
    return FOCAL_FACTOR * max(width, height)


def image_intrinsics(width: int, height: int, focal: float, principal=None) -> np.ndarray:
    """K (3, 3) float64 with square pixels; principal point default: the image centre
    ((W − 1)/2, (H − 1)/2), pixel centres at integers (``handlib.camera``)."""
    cx, cy = ((width - 1) / 2.0, (height - 1) / 2.0) if principal is None else principal
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def resolve_checkpoint(path=None) -> Path:
    """``path``, else ``$HANDLIB_CHECKPOINT``, else the shipped ``handlib/assets/dhpe_cpu.pt``
    (``train.SHIPPED_CHECKPOINT``); raises FileNotFoundError saying how to get one."""
    from .train import SHIPPED_CHECKPOINT

    how = "to get one, train it: `python -m handlib train --out runs/cpu` writes runs/cpu/checkpoint.pt"
    if path is None:
        env = os.environ.get(CHECKPOINT_ENV)
        if not env:
            if SHIPPED_CHECKPOINT.is_file():
                return SHIPPED_CHECKPOINT
            raise FileNotFoundError(f"no checkpoint given: pass --checkpoint PATH or set ${CHECKPOINT_ENV} "
                                    f"(the shipped {SHIPPED_CHECKPOINT.name} is missing); {how}")
        path, where = Path(env), f"${CHECKPOINT_ENV}={env}"
    else:
        path = Path(path)
        where = f"--checkpoint {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file; {how}")
    return path


# ----------------------------------------------------------------------------------------------
# Crop and prediction
# ----------------------------------------------------------------------------------------------
def crop_box(image: np.ndarray, box, size: int, K: np.ndarray, margin: float = BOX_MARGIN) -> Crop:
    """Cut the network's square crop around a hand box (the convention of ``crop_to_hand``).

    Side = ``margin`` × max(w, h), centre = the box centre (x + (w − 1)/2, y + (h − 1)/2);
    pixels outside the image are black. A = [[σ, 0, tx], [0, σ, ty]], σ = size / side,
    t = (size − 1)/2 − σ·centre, and K_crop = A · K.

    Args:
        image: (H, W, 3) uint8 RGB. box: (x, y, w, h) pixels. size: S. K: (3, 3) image intrinsics.
        margin: crop side / box side (``ModelConfig.crop_margin``; Eq. 8: 1.5).
    Returns:
        :class:`Crop`.
    """
    x, y, w, h = (float(v) for v in box)
    centre = np.array([x + (w - 1) / 2.0, y + (h - 1) / 2.0])
    return _cut(image, centre, margin * max(w, h), 0.0, size, K, (x, y, w, h))


def crop_upright(image: np.ndarray, keypoints, size: int, K: np.ndarray, margin: float) -> Crop:
    """The upright crop of ``crop_to_hand(orient="upright")`` around 21 2D keypoints (image pixels):
    turned so that wrist → middle MCP points up, centred on the keypoints' box in that turned frame,
    side ``margin`` × its larger side. ``box`` of the result is the keypoints' axis-aligned box."""
    from .data.transforms import turned_box, upright_angle

    kp = np.asarray(keypoints, np.float64)
    angle = upright_angle(kp)
    centre, extent = turned_box(kp, angle)
    return _cut(image, centre, margin * max(extent, 1.0), angle, size, K, keypoint_box(kp, min_side=1.0))


def _cut(image: np.ndarray, centre, side: float, angle: float, size: int, K: np.ndarray, box) -> Crop:
    """Warp the square of ``side`` pixels around ``centre``, turned by ``angle`` degrees, to size × size:
    A = [[σR, t], [0, 1]], K_crop = A · K · R₃ᵀ (a plain intrinsics matrix for square pixels)."""
    from .data.transforms import _rotation2

    R = _rotation2(angle)
    sigma = size / side
    A = np.eye(3)
    A[:2, :2] = sigma * R
    A[:2, 2] = (size - 1) / 2.0 - sigma * R @ centre
    src, M = image, A
    if sigma < 1.0:  # shrinking: area-average to scale σ first (bilinear sampling alone would alias)
        H, W = image.shape[:2]
        ws, hs = max(1, round(W * sigma)), max(1, round(H * sigma))
        src = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
        qx, qy = ws / W, hs / H  # cv2.resize maps pixel centres u → (u + ½)·q − ½
        P = np.array([[qx, 0.0, 0.5 * qx - 0.5], [0.0, qy, 0.5 * qy - 0.5], [0.0, 0.0, 1.0]])
        M = A @ np.linalg.inv(P)  # small image → crop; the composite original → crop is still A
    crop = cv2.warpAffine(src, M[:2], (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    K = np.asarray(K, np.float64)
    R3 = np.eye(3)
    R3[:2, :2] = R
    K_crop = A @ K @ R3.T
    if angle:
        K_crop[0, 1] = K_crop[1, 0] = 0.0  # σR(fI)Rᵀ = σfI: zero up to rounding, made exact
    return Crop(image=crop, K=K_crop, K_image=K, affine=A, box=tuple(float(v) for v in box), rotation=R3)


def _unroll(R3: np.ndarray, joints: np.ndarray, verts: np.ndarray, h: np.ndarray):
    """Crop camera → image camera: X = R₃ᵀ X_crop; h's quaternion and translation turn with it."""
    from .data.transforms import roll_h

    if np.array_equal(R3, np.eye(3)):
        return joints, verts, h
    return joints @ R3, verts @ R3, roll_h(h, R3.T)


def _mirror(size: int, **arrays) -> dict:
    """``to_right_hand`` on crop-space arrays (image, kp2d, kp3d, verts, h, K): u' = S − 1 − u,
    X' = −X, h's q, θ and t mirrored. It is an involution, so it also mirrors results back."""
    s = {"side": "left", "image": np.zeros((1, size, 3), np.uint8), "valid": np.ones(21, bool),
         "kp2d": np.zeros((21, 2), np.float32), "kp3d": np.zeros((21, 3), np.float32),
         "K": np.eye(3, dtype=np.float32)}
    s.update(arrays)
    out = to_right_hand(s)
    return {k: out[k] for k in arrays}


def _to_image(uv: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(N, 2) crop pixels → original pixels: A⁻¹ (A a scale, a roll and a shift)."""
    return (uv - A[:2, 2]) @ np.linalg.inv(A[:2, :2]).T


def _check_keypoints(kp, name: str) -> np.ndarray:
    kp = np.asarray(kp, np.float64)
    if kp.shape != (21, 2) or not np.isfinite(kp).all():
        raise ValueError(f"{name}: expected (21, 2) finite pixel coordinates, got {kp.shape}")
    return kp


def predict(model, image, box=None, focal: float | None = None, left: bool = False, refine_steps: int = 0,
            principal=None, keypoints=None, evidence: str = "network", refine_cfg=None,
            world=None, crop_keypoints=None, fit_cfg=None) -> Prediction:
    """Estimate the hand mesh in one image (Eq. 1; with ``refine_steps`` > 0, then Eq. 13).

    Args:
        model: a :class:`~handlib.model.DHPE` (e.g. ``train.load_model``); run in eval mode.
        image: (H, W, 3) uint8 RGB, or a path (read with ``read_image``; DataError if unreadable).
        box: (x, y, w, h) hand box in pixels; None: the central square (:func:`default_box`).
        focal: focal length in pixels; None: :func:`default_focal` (an assumption, see module doc).
        left: the hand is a left hand (the crop is mirrored for the right-hand network).
        refine_steps: Eq. 13 iterations (``refine.RefineConfig.iterations``; paper: 50; 0: off).
        principal: optional (cx, cy) principal point, pixels; None: the image centre.
        keypoints: optional (21, 2) 2D keypoints in image pixels (handlib order) from another 2D
            estimator (``evidence_pretrained``); Eq. 13's term (a) then fits the mesh to them instead
            of to f_ref's re-estimate (``refine(..., j2d_target=...)``). Only used when
            ``refine_steps`` > 0. ``evidence`` names their source (kept in the output).
        refine_cfg: optional :class:`~handlib.refine.RefineConfig` (its ``iterations`` is replaced
            by ``refine_steps``); default ``RefineConfig()``, with ``lr`` = :data:`KEYPOINT_FIT_LR`
            when ``keypoints`` are given.
        world: optional (21, 3) root-relative 3D landmarks of the same detector (metres). With
            ``keypoints`` and ``refine_steps`` = 0 the mesh is then :func:`handlib.fit.fit_hand`'s
            fit to both (``evidence`` gets "+fit"); the network's estimate is still computed
            (``j2d_evidence``): its joints join the world landmarks in the fit's 3D target
            (``FitConfig.network_share``; :func:`handlib.fit.fuse_landmarks`) and their orientation
            is a prior on the fit's (``FitConfig.network_orientation``).
        crop_keypoints: optional (21, 2) image pixels that place the crop of a network trained on
            upright crops (``ModelConfig.crop == "upright"``, :func:`crop_upright`); default
            ``keypoints``. Without either such a network gets ``box``'s crop, unturned. A box-crop
            network ignores them.
        fit_cfg: optional :class:`~handlib.fit.FitConfig` of that fit; with ``feature`` > 0 Eq. 13's
            term (b) joins it through this network's backbone on its crop (:func:`feature_term`).
    Returns:
        :class:`Prediction` in the original image's camera.
    """
    from .refine import RefineConfig, refine

    if isinstance(image, (str, Path)):
        image = read_image(image)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    if refine_steps < 0:
        raise ValueError(f"refine_steps: expected ≥ 0, got {refine_steps}")
    H, W = image.shape[:2]
    box_assumed, focal_assumed = box is None, focal is None
    box = check_box(default_box(W, H) if box is None else box, W, H)
    focal = float(default_focal(W, H) if focal is None else focal)
    if not (math.isfinite(focal) and focal > 0):
        raise ValueError(f"focal: expected a positive number of pixels, got {focal}")
    S = model.cfg.image_size
    K_image = image_intrinsics(W, H, focal, principal)
    turn_by = crop_keypoints if crop_keypoints is not None else keypoints
    crop, x, K = network_view(model, image, box, K_image, left, turn_by)
    target = None
    if keypoints is not None:
        keypoints = _check_keypoints(keypoints, "keypoints")
        target = keypoints @ crop.affine[:2, :2].T + crop.affine[:2, 2]  # image → crop pixels
        if left:  # the network sees a right hand: mirrored crop pixels
            target = _mirror(S, kp2d=target.astype(np.float32))["kp2d"].astype(np.float64)
    device = x.device
    was_training = model.training
    model.eval()
    try:
        fit_path = world is not None and keypoints is not None and not refine_steps  # the fit renders its own
        with torch.no_grad():
            out = model(x, K, render=refine_steps == 0 and not fit_path)
        losses = None
        if refine_steps:
            if refine_cfg is None:
                refine_cfg = RefineConfig() if target is None else RefineConfig(lr=KEYPOINT_FIT_LR)
            rcfg = dataclasses.replace(refine_cfg, iterations=refine_steps)
            j2d_target = None if target is None else torch.as_tensor(target, dtype=torch.float32,
                                                                       device=device)[None]
            res = refine(model, x, K, out=out, cfg=rcfg, j2d_target=j2d_target)
            h, verts, joints = res.h, res.verts, res.joints
            losses = {"before": res.losses[0], "after": res.losses[-1]}
            with torch.no_grad():
                sil = model.renderer(verts, K)
        else:
            h, verts, joints, sil = out.h, out.verts, out.joints, out.silhouette
    finally:
        model.train(was_training)

    np_ = lambda t: t[0].detach().cpu().double().numpy()  # noqa: E731
    h, verts, joints = np_(h), np_(verts), np_(joints)
    sil = None if sil is None else np_(sil)  # None on the fit path until the fit renders it
    j2d_ev = np_(out.evidence.j2d)
    faces = model.hand_model.faces.cpu().numpy()
    if left:  # back to the left hand: X' = −X, h mirrored (HandModel("left")), faces reversed
        back = _mirror(S, kp3d=joints, verts=verts, h=h, kp2d=j2d_ev)
        joints, verts, h, j2d_ev = (np.asarray(back[k], np.float64) for k in ("kp3d", "verts", "h", "kp2d"))
        sil = None if sil is None else sil[:, ::-1].copy()
        faces = faces[:, [0, 2, 1]]
    K_img = crop.K_image
    joints, verts, h = _unroll(crop.rotation, joints, verts, h)  # the crop's camera → the image's
    if fit_path:
        verts, joints, h, sil, losses = _fit_detection(model, keypoints, world, K_img, crop, left, x, fit_cfg,
                                                       network=joints)
        evidence = evidence + "+fit"
    # the crop is a scale, a shift and a roll of the image: after the roll back (_unroll), the 3D
    # points are the same in both cameras
    j2d = project(torch.as_tensor(joints)[None], torch.as_tensor(K_img))[0].numpy()
    return Prediction(verts=verts, faces=faces, joints=joints, j2d=j2d,
                      j2d_evidence=_to_image(j2d_ev, crop.affine), h=h, silhouette=sil, K=K_img,
                      crop=crop, side="left" if left else "right", focal=focal, focal_assumed=focal_assumed,
                      box=box, box_assumed=box_assumed, refine_steps=int(refine_steps), losses=losses,
                      keypoints=keypoints, evidence=evidence if keypoints is not None else "network")


def network_view(model, image: np.ndarray, box, K_image: np.ndarray, left: bool, turn_by=None):
    """The crop a DHPE network sees, as :func:`predict` cuts it: an upright-trained network
    (``ModelConfig.crop == "upright"``) gets :func:`crop_upright` around ``turn_by`` keypoints when
    given, every other case :func:`crop_box` of ``box``; a left hand is mirrored (the network sees
    right hands). Returns (:class:`Crop` as the image is oriented, x (1, 3, S, S) normalised network
    input, K (1, 3, 3) float32 its intrinsics), on the model's device."""
    S, mcfg = model.cfg.image_size, model.cfg
    if mcfg.crop == "upright" and turn_by is not None:
        crop = crop_upright(image, _check_keypoints(turn_by, "crop_keypoints"), S, K_image, mcfg.crop_margin)
    else:  # the box (an upright-trained network without keypoints gets it unturned)
        crop = crop_box(image, box, S, K_image, mcfg.crop_margin)
    net_image, net_K = crop.image, crop.K
    if left:  # mirror the crop and its camera
        m = _mirror(S, image=crop.image, K=crop.K.astype(np.float32))
        net_image, net_K = m["image"], m["K"].astype(np.float64)
    device = next(model.parameters()).device
    x = normalize_image(torch.as_tensor(np.ascontiguousarray(net_image))[None]).to(device)
    return crop, x, torch.as_tensor(net_K, dtype=torch.float32, device=device)[None]


def feature_term(model, crop: Crop, x: torch.Tensor, left: bool):
    """Eq. 13's term (b) for :func:`handlib.fit.fit_hand`: E_F(verts) = mean_C (F(x ⊙ R) − F(x))²,
    the trainer's Eq. 2 ("mean" reduction) with the network's frozen backbone F, where R is the soft
    silhouette (``model.renderer``) of camera-frame vertices (1, V, 3) in ``crop``'s camera, mirrored
    like ``x`` for a left hand. ``crop``, ``x`` as :func:`network_view` returns them. The model goes
    to eval mode. Its weights get no gradient as the fit uses it: ``torch.autograd.grad`` toward the
    fit's parameters runs only the backward nodes (and outputs) that lead to them."""
    from .losses import feature_consistency_loss
    from .model import mask_image

    model.eval()
    with torch.no_grad():
        F_x = model.evidence.features(x)
    R3 = torch.as_tensor(crop.rotation, dtype=torch.float32, device=x.device)
    K = torch.as_tensor(crop.K, dtype=torch.float32, device=x.device)[None]

    def energy(verts: torch.Tensor) -> torch.Tensor:
        sil = model.renderer(verts.to(x.device, torch.float32) @ R3.T, K)  # (1, S, S), as the image is
        if left:
            sil = sil.flip(-1)  # the network's mirrored view: u' = S − 1 − u
        return feature_consistency_loss(F_x, model.evidence.features(mask_image(x, sil)), "mean")

    return energy


def _fit_detection(model, keypoints, world, K_img: np.ndarray, crop: Crop, left: bool, x, fit_cfg=None,
                   network=None):
    """The hand model fitted to a detector's keypoints and world landmarks (:mod:`handlib.fit`):
    verts, joints, h (of ``HandModel(side)`` in the image's camera), its silhouette in the crop, and
    the fit's final costs with its iteration count. ``x``: the network's input (:func:`network_view`)
    for Eq. 13's term (b) when ``fit_cfg.feature`` > 0; ``network``: its (21, 3) joints in the
    image's camera, mixed into the world term's target (``FitConfig.network_share``) and a prior
    on the fit's orientation (``FitConfig.network_orientation``)."""
    from .fit import FitConfig, fit_hand
    from .rotations import axis_angle_to_quaternion

    fit_cfg = fit_cfg or FitConfig()
    feature = feature_term(model, crop, x, left) if fit_cfg.feature > 0 else None
    res = fit_hand(np.asarray(keypoints, np.float64), K_img, np.asarray(world, np.float64),
                   "left" if left else "right", fit_cfg, feature=feature, network=network)
    q = axis_angle_to_quaternion(torch.as_tensor(res.rotvec)[None])[0].numpy()
    h = np.concatenate([q, res.pose, res.betas, [1.0], res.trans])
    device = next(model.parameters()).device
    with torch.no_grad():
        verts = torch.as_tensor(res.verts @ crop.rotation.T, dtype=torch.float32, device=device)  # crop cam
        sil = model.renderer(verts[None], torch.as_tensor(crop.K, dtype=torch.float32, device=device)[None])
    losses = {"fit": res.costs, "iterations": res.iterations, "seconds": round(res.seconds, 3)}
    return res.verts, res.joints, h, sil[0].cpu().double().numpy(), losses


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------
def overlay_figure(image: np.ndarray, pred, title: str | None = None, side_px=(512, 1000)):
    """The image with, for each prediction (one :class:`Prediction` or a list: every hand of a
    photo), the projected skeleton, the mesh's silhouette outline (cyan), the hand box (dashed) and
    the network's crop (dotted). Returns a matplotlib Figure (not shown) whose larger side, saved at
    its dpi of 100, is the image's clipped to ``side_px`` pixels."""
    from matplotlib.figure import Figure

    H, W = image.shape[:2]
    scale = min(max(max(H, W), side_px[0]), side_px[1]) / max(H, W)
    fig = Figure(figsize=(W * scale / 100, H * scale / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image)
    lw = 1.5 * max(H, W) * scale / 512
    for one in pred if isinstance(pred, (list, tuple)) else [pred]:
        _draw_prediction(ax, one, lw)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.text(0.01, 0.99, title, transform=ax.transAxes, va="top", ha="left", color="white",
                fontsize=8, bbox=dict(facecolor="black", alpha=0.5, lw=0))
    return fig


def _draw_prediction(ax, pred: Prediction, lw: float) -> None:
    """One hand of :func:`overlay_figure`: silhouette outline, box, crop square, skeleton."""
    from matplotlib.patches import Polygon, Rectangle

    A, S = pred.crop.affine, pred.silhouette.shape[0]
    grid = _to_image(np.stack(np.meshgrid(np.arange(S), np.arange(S)), -1).reshape(-1, 2).astype(float), A)
    ax.contour(grid[:, 0].reshape(S, S), grid[:, 1].reshape(S, S), pred.silhouette, levels=[0.5],
               colors="cyan", linewidths=lw)
    x, y, w, h = pred.box
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ls="--", ec="yellow", lw=lw))
    corners = _to_image(np.array([[-0.5, -0.5], [S - 0.5, -0.5], [S - 0.5, S - 0.5], [-0.5, S - 0.5]]), A)
    ax.add_patch(Polygon(corners, closed=True, fill=False, ls=":", ec="white", lw=lw))  # the crop, turned
    kp = pred.j2d
    for name, idx in FINGERS.items():
        chain = [ROOT, *idx]
        ax.plot(kp[chain, 0], kp[chain, 1], "-", color=FINGER_COLORS[name], lw=lw)
    ax.scatter(kp[:, 0], kp[:, 1], s=4 * lw ** 2, c="white", edgecolors="black", linewidths=0.5, zorder=3)


def _rows(a: np.ndarray, decimals: int) -> list:
    return [[round(float(v), decimals) for v in row] for row in np.asarray(a)]


def save_prediction(pred: Prediction, out, image: np.ndarray, **meta) -> dict:
    """Write ``mesh.obj``, ``mesh.ply``, ``joints.json`` and ``overlay.png`` under ``out``.

    ``joints.json``: ``joints_3d`` (21 × [X, Y, Z], metres, camera of the image), ``joints_2d``
    (21 × [u, v], image pixels, = project(joints_3d, K)), ``joints_2d_evidence`` (f_E2D's
    keypoints), ``keypoint_names``, ``h``, ``side``, ``box``, ``focal``, ``K``, ``crop`` (size, K,
    affine), ``refined``, ``refine_steps``, ``refine_losses``, the ``assumptions`` made, and ``meta``
    (e.g. checkpoint and image paths). Metres to 1 µm, pixels to 0.001 px.

    Returns:
        dict name → Path of the four files.
    """
    import trimesh

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("mesh.obj", "mesh.ply", "joints.json", "overlay.png")}
    mesh = trimesh.Trimesh(pred.verts, pred.faces, process=False)
    mesh.export(files["mesh.obj"])
    mesh.export(files["mesh.ply"])
    H, W = image.shape[:2]
    assumptions = []
    if pred.box_assumed:
        assumptions.append("box: none given; the image's central square (the hand fills the middle)")
    if pred.focal_assumed:
        assumptions.append(f"focal: none given; {FOCAL_FACTOR} × the larger image side (≈45° field of "
                           "view); the hand's distance from the camera scales with it")
    doc = {
        "keypoint_names": list(KEYPOINT_NAMES),
        "joints_3d": _rows(pred.joints, 6),
        "joints_2d": _rows(pred.j2d, 3),
        "joints_2d_evidence": _rows(pred.j2d_evidence, 3),
        "units": {"joints_3d": "metres, camera space of the image (x right, y down, z forward)",
                  "joints_2d": "pixels of the image, pixel centres at integers"},
        "side": pred.side,
        "h": [round(float(v), 6) for v in pred.h],
        "image_size": [W, H],
        "box": list(pred.box),
        "focal": pred.focal,
        "K": _rows(pred.K, 6),
        "crop": {"size": int(pred.crop.image.shape[0]), "K": _rows(pred.crop.K, 6),
                 "affine": _rows(pred.crop.affine, 8), "rotation": _rows(pred.crop.rotation, 8)},
        "refined": pred.refined,
        "refine_steps": pred.refine_steps,
        "refine_losses": pred.losses,
        "evidence": pred.evidence,
        "keypoints_2d_external": None if pred.keypoints is None else _rows(pred.keypoints, 3),
        "assumptions": assumptions,
        "vertices": int(pred.verts.shape[0]),
        "faces": int(pred.faces.shape[0]),
    }
    doc.update({k: str(v) if isinstance(v, Path) else v for k, v in meta.items()})
    files["joints.json"].write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    how = (f"fitted to {pred.evidence.split('+')[0]} ({pred.losses['iterations']} LM iterations)"
           if pred.evidence.endswith("+fit") else f"refined, {pred.refine_steps} steps" if pred.refined
           else "network")
    title = f"{pred.side} hand · {how}"
    overlay_figure(image, pred, title=title).savefig(files["overlay.png"])
    return files
