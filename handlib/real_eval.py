"""Honest numbers on real photos: the pretrained detector, the fit to it, Eq. 13, and the network.

``python -m handlib eval-real --root ../shared/realdata/mmpose_testdata --json runs/real/real_eval.json``
reads annotated real frames in the simple formats of mmpose's public test data
(:mod:`handlib.data.mmpose_frames`: RHD frames with 3D joints and cameras, FreiHAND frames with 2D
keypoints, InterHand2.6M frames with cameras and world joints; one record per labelled hand) and
scores every labelled hand, per source, along these paths:

* **MediaPipe + fit** (``fit``): MediaPipe finds the hands in the *whole* photo (box, side, 21
  keypoints, 21 world landmarks); ``predict`` runs the network on the detection's crop and
  :func:`handlib.fit.fit_hand` fits the hand model to the keypoints and to the mix of the world
  landmarks with the network's joints (``FitConfig.network_share``; inverse kinematics from that
  mix, then Levenberg–Marquardt on the 2D keypoints, with the network's orientation as a prior,
  ``FitConfig.network_orientation``).
* **MediaPipe + Eq. 13** (``pretrained``): the network's estimate in the detected box, refined with
  Eq. 13 whose term (a) fits MediaPipe's keypoints (the paper's refinement, external keypoints).
* **MediaPipe alone**: its 2D keypoints (``mediapipe_2d``) and its world landmarks
  (``mediapipe_world``, 3D scores only), scored with the same alignment code as the rest.
* **network alone** (``network``): handlib's DHPE (the shipped checkpoint by default) on the crop
  of the ground-truth box (a network trained on upright crops: the ground truth's upright crop),
  with the ground-truth side, no refinement.

Detections are matched to labelled hands one to one, per photo: pairs in order of their box IoU,
each above ``match_iou`` (two-hand InterHand photos: each hand gets its own detection or none). The
MediaPipe rows are over matched hands. Scores: detection rate; 2D mean error (px) and 2D PCK at
0.2 × the longer side of the ground truth's tight keypoint box; for hands with 3D joints (RHD,
InterHand): root-relative MPJPE and Procrustes-aligned PA-MPJPE (mm) of the 21 keypoints, and in the
JSON rot_mpjpe (root-relative after the best rotation about the root: what is left when the global
orientation is forgiven but not the size) and scale_mpjpe (root-relative, rescaled so the middle
MCP→PIP bone has the ground truth's length: the synthetic ``eval``'s protocol, hand3d's, which
forgives the absolute size but not the orientation). The
camera's focal length and principal point are used where the frame has them; FreiHAND's frames have
none and get ``predict``'s default. With a dozen hands the numbers are anecdotes, not a benchmark.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from .data.mmpose_frames import RealFrame, read_frames
from .evidence_pretrained import box_iou_xywh
from .fit import FitConfig
from .metrics import align_procrustes, align_root, align_rotation, align_scale
from .progress import bar, echo
from .skeleton import keypoint_box

__all__ = ["RealEvalConfig", "match_detections", "score_frame", "evaluate_real", "summarize", "real_table",
           "scores_3d"]
PATHS = {"fit": "MediaPipe + fit", "pretrained": "MediaPipe + Eq. 13", "mediapipe_2d": "MediaPipe keypoints",
         "mediapipe_world": "MediaPipe world landmarks", "network": "handlib network alone (GT crop)"}


@dataclasses.dataclass(frozen=True)
class RealEvalConfig:
    refine_steps: int = 50  # Eq. 13 iterations of the pretrained path (paper: 50)
    refine_lr: float = 0.03  # its Adam step in code units: predict.KEYPOINT_FIT_LR
    pck_fraction: float = 0.2  # 2D PCK threshold: this × the longer side of the ground-truth box
    match_iou: float = 0.3  # a detection matches the labelled hand above this box IoU
    fit: FitConfig = FitConfig()  # the fit row's; feature > 0 adds Eq. 13 (b) through the network


def _scores_2d(pred: np.ndarray, frame: RealFrame, fraction: float) -> dict:
    v = frame.valid
    err = np.linalg.norm(pred[v] - frame.kp2d[v], axis=1)
    side = max(keypoint_box(frame.kp2d[v], min_side=1.0)[2:])
    return {"err_2d_px": float(err.mean()), "pck_2d": float((err <= fraction * side).mean())}


def _scores_3d(pred: np.ndarray, frame: RealFrame) -> dict:
    if frame.kp3d is None or not frame.valid.all():
        return {}
    return scores_3d(pred, frame.kp3d)


def scores_3d(pred: np.ndarray, gt: np.ndarray) -> dict:
    """(21, 3) predicted against (21, 3) true joints, metres → the four 3D errors in mm: mpjpe_mm
    (root-relative), pa_mpjpe_mm (Procrustes), rot_mpjpe_mm, scale_mpjpe_mm (below)."""
    p, g = torch.as_tensor(pred)[None], torch.as_tensor(gt)[None]
    err = lambda aligned: 1000 * float((aligned - g).norm(dim=-1).mean())  # noqa: E731  mm
    # JSON only: rot_mpjpe forgives the orientation (not the size), scale_mpjpe the size (not the
    # orientation) as the synthetic eval does
    return {"mpjpe_mm": err(align_root(p, g)), "pa_mpjpe_mm": err(align_procrustes(p, g)),
            "rot_mpjpe_mm": err(align_rotation(p, g)), "scale_mpjpe_mm": err(align_scale(p, g))}


def _camera(frame: RealFrame) -> dict:
    if frame.K is None:
        return {}
    return {"focal": float(0.5 * (frame.K[0, 0] + frame.K[1, 1])),
            "principal": (float(frame.K[0, 2]), float(frame.K[1, 2]))}


def match_detections(frames: list[RealFrame], dets: list, min_iou: float) -> list:
    """One detection (or None) per labelled hand of one photo: greedy by box IoU, one to one."""
    boxes = [keypoint_box(f.kp2d[f.valid], min_side=1.0) for f in frames]
    pairs = sorted(((box_iou_xywh(d.box, b), i, j) for i, b in enumerate(boxes) for j, d in enumerate(dets)),
                   reverse=True)
    out, used = [None] * len(frames), set()
    for iou, i, j in pairs:
        if iou > min_iou and out[i] is None and j not in used:
            out[i] = dets[j]
            used.add(j)
    return out


def score_frame(model, frame: RealFrame, det=None, cfg: RealEvalConfig = RealEvalConfig(),
                detector_ran: bool = False) -> dict:
    """Every path on one labelled hand; ``det`` is the detection matched to it (or None).

    Returns {"source", "frame", "network": {...}} and, when a detector ran, "detected" and (if so)
    "fit", "pretrained", "mediapipe_2d", "mediapipe_world" score dicts.
    """
    from .predict import clip_box, predict
    from .refine import RefineConfig

    image = frame.image()
    H, W = image.shape[:2]
    cam = _camera(frame)
    side = frame.side or "right"
    row = {"source": frame.source, "frame": frame.frame_id}
    # the ground truth's box, or for a network trained on upright crops the ground truth's upright crop
    turn_by = frame.kp2d if np.all(frame.valid) else None
    gt_box = clip_box(keypoint_box(frame.kp2d[frame.valid], min_side=1.0), W, H)
    net = predict(model, image, box=gt_box, left=side == "left",
                  refine_steps=0, crop_keypoints=turn_by, **cam)
    row["network"] = {**_scores_2d(net.j2d, frame, cfg.pck_fraction), **_scores_3d(net.joints, frame)}
    if not detector_ran:
        return row
    row["detected"] = det is not None
    if det is None:
        return row
    row["side_correct"] = det.side == side
    if det.world is not None:  # the fit starts from the world landmarks (MediaPipe always gives them)
        # predict's own path: the network on the detection's crop, then the fit to the detector's
        # keypoints and the mix of its world landmarks with the network's joints
        fitted = predict(model, image, box=clip_box(det.box, W, H), left=det.side == "left", refine_steps=0,
                         keypoints=det.kp2d, world=det.world, evidence="mediapipe", fit_cfg=cfg.fit, **cam)
        row["fit"] = {"seconds": fitted.losses["seconds"], "iterations": fitted.losses["iterations"],
                      **_scores_2d(fitted.j2d, frame, cfg.pck_fraction), **_scores_3d(fitted.joints, frame)}
        row["mediapipe_world"] = _scores_3d(det.world, frame)  # root-relative; PA aligns the rest
    t0 = time.perf_counter()
    pred = predict(model, image, box=clip_box(det.box, W, H), left=det.side == "left",
                   refine_steps=cfg.refine_steps, keypoints=det.kp2d, evidence="mediapipe",
                   refine_cfg=RefineConfig(lr=cfg.refine_lr), **cam)
    row["pretrained"] = {"seconds": time.perf_counter() - t0, **_scores_2d(pred.j2d, frame, cfg.pck_fraction),
                         **_scores_3d(pred.joints, frame)}
    row["mediapipe_2d"] = _scores_2d(det.kp2d, frame, cfg.pck_fraction)
    return row


def summarize(rows: list[dict]) -> dict:
    """Per source (and "all"): hand count, detection rate, and the mean of every score per path."""
    out = {}
    for src in sorted({r["source"] for r in rows}) + ["all"]:
        rs = [r for r in rows if src in ("all", r["source"])]
        s = {"frames": len(rs)}
        det = [r["detected"] for r in rs if "detected" in r]
        if det:
            s["detection_rate"] = float(np.mean(det))
            sides = [r["side_correct"] for r in rs if r.get("detected")]
            s["side_correct"] = float(np.mean(sides)) if sides else float("nan")
        for path in PATHS:
            vals: dict = {}
            for r in rs:
                for k, v in r.get(path, {}).items():
                    vals.setdefault(k, []).append(v)
            s[path] = {k: float(np.mean(v)) for k, v in vals.items()}
            s[path]["n"] = max((len(v) for v in vals.values()), default=0)
        out[src] = s
    return out


def evaluate_real(model, root, detector=None, cfg: RealEvalConfig = RealEvalConfig(), log=echo,
                  progress: bool = True) -> dict:
    """Score every labelled hand under ``root`` (:func:`~handlib.data.mmpose_frames.read_frames`).

    The detector runs once per photo; its detections are matched to the photo's labelled hands by
    :func:`match_detections`. ``log`` gets one line per hand; ``progress`` adds a bar on a terminal
    (:mod:`handlib.progress`). Raises the :class:`~handlib.data.DataError` of a missing or malformed
    file under ``root``.
    """
    photos: dict = {}
    for f in read_frames(root):
        photos.setdefault(str(f.image_path), []).append(f)
    rows = []
    for frames in bar(list(photos.values()), "photos", enabled=progress, unit="photo"):
        dets = detector.detect(frames[0].image()) if detector is not None else []
        for f, det in zip(frames, match_detections(frames, dets, cfg.match_iou)):
            rows.append(score_frame(model, f, det, cfg, detector_ran=detector is not None))
            r = rows[-1]
            found = (f", MediaPipe 2D {r['mediapipe_2d']['err_2d_px']:.1f} px" if r.get("detected") else "") \
                + (f", fit 2D {r['fit']['err_2d_px']:.1f} px" if "fit" in r else "")
            log(f"{f.source:>9} {f.frame_id}: network 2D {r['network']['err_2d_px']:.1f} px"
                + (found or (", not detected" if "detected" in r else "")))
    return {"root": str(root), "config": dataclasses.asdict(cfg), "frames": rows, "summary": summarize(rows)}


def real_table(result: dict) -> str:
    """A markdown table of :func:`evaluate_real`'s summary."""
    def f(d, k, fmt):
        return format(d[k], fmt) if k in d else "–"
    lines = ["| source | hands | detected | path | 2D error (px) | 2D PCK@0.2 | MPJPE (mm) "
             "| PA-MPJPE (mm) |", "|---|---|---|---|---|---|---|---|"]
    for src, s in result["summary"].items():
        det = f(s, "detection_rate", ".0%")
        for path, name in PATHS.items():
            d = s.get(path, {})
            if not d.get("n"):
                continue
            lines.append(f"| {src} | {s['frames']} | {det} | {name} | {f(d, 'err_2d_px', '.1f')} | "
                         f"{f(d, 'pck_2d', '.2f')} | {f(d, 'mpjpe_mm', '.1f')} | "
                         f"{f(d, 'pa_mpjpe_mm', '.1f')} |")
    return "\n".join(lines)


def write_json(result: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float))
    return path
