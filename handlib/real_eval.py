"""Honest numbers on real photos: pretrained 2D evidence + Eq. 13 vs handlib's own network alone.

``python -m handlib eval-real --root ../shared/realdata/mmpose_testdata --json runs/real/real_eval.json``
reads annotated real frames in the simple formats of mmpose's public test data
(:mod:`handlib.data.mmpose_frames`: RHD frames with 3D joints and cameras, FreiHAND frames with 2D
keypoints, InterHand2.6M frames with cameras and world joints) and scores, per source:

* **pretrained + Eq. 13** (``python -m handlib predict``'s default path): MediaPipe finds the hand
  in the *whole* photo (box, side, 21 keypoints); the network's estimate in that box is refined
  with Eq. 13, term (a) fitting MediaPipe's keypoints. A frame counts as detected when a detection's
  keypoint box overlaps the ground truth's (IoU > 0.3); the scores below are over detected frames.
  The raw MediaPipe keypoints are scored too (``mediapipe_2d``): MediaPipe puts knuckles on the
  skin, the datasets at joint centres.
* **network alone**: handlib's DHPE (the shipped synthetic-only checkpoint by default) on the crop
  of the ground-truth box, with the ground-truth side, no refinement — what the network itself
  knows about real images.

Scores: detection rate; 2D mean error (px) and 2D PCK at 0.2 × the longer side of the ground
truth's tight keypoint box; for frames with 3D joints (RHD, InterHand): root-relative MPJPE and
Procrustes-aligned PA-MPJPE (mm) of the 21 keypoints. The camera's focal length and principal
point are used where the frame has them (then 3D is in the right units; FreiHAND's frames have none
and get ``predict``'s default). With a dozen frames the numbers are anecdotes, not a benchmark.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from .data.mmpose_frames import RealFrame, read_frames
from .metrics import align_procrustes, align_root
from .progress import bar, echo

__all__ = ["RealEvalConfig", "score_frame", "evaluate_real", "summarize", "real_table"]


@dataclasses.dataclass(frozen=True)
class RealEvalConfig:
    refine_steps: int = 50  # Eq. 13 iterations of the pretrained path (paper: 50)
    refine_lr: float = 0.03  # its Adam step in code units: predict.KEYPOINT_FIT_LR
    pck_fraction: float = 0.2  # 2D PCK threshold: this × the longer side of the ground-truth box
    match_iou: float = 0.3  # a detection matches the labelled hand above this box IoU


def _tight_box(kp: np.ndarray) -> tuple:
    lo, hi = kp.min(0), kp.max(0)
    return (float(lo[0]), float(lo[1]), float(max(hi[0] - lo[0], 1.0)), float(max(hi[1] - lo[1], 1.0)))


def _iou(a, b) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)


def _scores_2d(pred: np.ndarray, frame: RealFrame, fraction: float) -> dict:
    v = frame.valid
    err = np.linalg.norm(pred[v] - frame.kp2d[v], axis=1)
    side = max(_tight_box(frame.kp2d[v])[2:])
    return {"err_2d_px": float(err.mean()), "pck_2d": float((err <= fraction * side).mean())}


def _scores_3d(pred: np.ndarray, frame: RealFrame) -> dict:
    if frame.kp3d is None or not frame.valid.all():
        return {}
    p, g = torch.as_tensor(pred)[None], torch.as_tensor(frame.kp3d)[None]
    root = (align_root(p, g) - g).norm(dim=-1).mean()
    pa = (align_procrustes(p, g) - g).norm(dim=-1).mean()
    return {"mpjpe_mm": 1000 * float(root), "pa_mpjpe_mm": 1000 * float(pa)}


def _camera(frame: RealFrame) -> dict:
    if frame.K is None:
        return {}
    return {"focal": float(0.5 * (frame.K[0, 0] + frame.K[1, 1])),
            "principal": (float(frame.K[0, 2]), float(frame.K[1, 2]))}


def score_frame(model, frame: RealFrame, detector=None, cfg: RealEvalConfig = RealEvalConfig()) -> dict:
    """Both paths on one frame. Returns {"source", "frame", "network": {...}, "pretrained": {...} or
    {"detected": False}, "mediapipe_2d": {...}} (pretrained keys only with a detector)."""
    from .predict import clip_box, predict
    from .refine import RefineConfig

    image = frame.image()
    H, W = image.shape[:2]
    gt_box = _tight_box(frame.kp2d[frame.valid])
    cam = _camera(frame)
    side = frame.side or "right"
    row = {"source": frame.source, "frame": frame.frame_id}
    net = predict(model, image, box=clip_box(gt_box, W, H), left=side == "left", refine_steps=0, **cam)
    row["network"] = {**_scores_2d(net.j2d, frame, cfg.pck_fraction), **_scores_3d(net.joints, frame)}
    if detector is None:
        return row
    dets = [d for d in detector.detect(image) if _iou(d.box, gt_box) > cfg.match_iou]
    if not dets:
        row["pretrained"] = {"detected": False}
        return row
    d = max(dets, key=lambda d: _iou(d.box, gt_box))
    t0 = time.perf_counter()
    pred = predict(model, image, box=clip_box(d.box, W, H), left=d.side == "left",
                   refine_steps=cfg.refine_steps, keypoints=d.kp2d, evidence="mediapipe",
                   refine_cfg=RefineConfig(lr=cfg.refine_lr), **cam)
    row["pretrained"] = {"detected": True, "side_correct": d.side == side,
                         "seconds": time.perf_counter() - t0, **_scores_2d(pred.j2d, frame, cfg.pck_fraction),
                         **_scores_3d(pred.joints, frame)}
    row["mediapipe_2d"] = _scores_2d(d.kp2d, frame, cfg.pck_fraction)
    return row


def summarize(rows: list[dict]) -> dict:
    """Per source (and "all"): frame count, detection rate, and the mean of every score per path."""
    out = {}
    for src in sorted({r["source"] for r in rows}) + ["all"]:
        rs = [r for r in rows if src in ("all", r["source"])]
        s = {"frames": len(rs)}
        det = [r["pretrained"]["detected"] for r in rs if "pretrained" in r]
        if det:
            s["detection_rate"] = float(np.mean(det))
            s["side_correct"] = float(np.mean([r["pretrained"]["side_correct"] for r in rs
                                               if r.get("pretrained", {}).get("detected")] or [np.nan]))
        for path in ("network", "pretrained", "mediapipe_2d"):
            vals: dict = {}
            for r in rs:
                for k, v in r.get(path, {}).items():
                    if k not in ("detected", "side_correct", "seconds"):
                        vals.setdefault(k, []).append(v)
            s[path] = {k: float(np.mean(v)) for k, v in vals.items()}
            s[path]["n"] = max((len(v) for v in vals.values()), default=0)
        out[src] = s
    return out


def evaluate_real(model, root, detector=None, cfg: RealEvalConfig = RealEvalConfig(), log=echo,
                  progress: bool = True) -> dict:
    """Score every frame under ``root`` (:func:`~handlib.data.mmpose_frames.read_frames`).

    ``log`` gets one line per frame; ``progress`` adds a bar on a terminal (:mod:`handlib.progress`).
    Raises the :class:`~handlib.data.DataError` of a missing or malformed file under ``root``.
    """
    frames = read_frames(root)
    rows = []
    for f in bar(frames, "frames", enabled=progress, unit="frame"):
        rows.append(score_frame(model, f, detector, cfg))
        log(f"{f.source:>9} {f.frame_id}: network 2D {rows[-1]['network']['err_2d_px']:.1f} px"
            + (f", pretrained+Eq.13 2D {rows[-1]['pretrained']['err_2d_px']:.1f} px"
               if rows[-1].get("pretrained", {}).get("detected") else
               (", not detected" if "pretrained" in rows[-1] else "")))
    return {"root": str(root), "config": dataclasses.asdict(cfg), "frames": rows, "summary": summarize(rows)}


def real_table(result: dict) -> str:
    """A markdown table of :func:`evaluate_real`'s summary."""
    def f(d, k, fmt):
        return format(d[k], fmt) if k in d else "–"
    lines = ["| source | frames | detected | path | 2D error (px) | 2D PCK@0.2 | MPJPE (mm) "
             "| PA-MPJPE (mm) |", "|---|---|---|---|---|---|---|---|"]
    for src, s in result["summary"].items():
        det = f(s, "detection_rate", ".0%")
        for path, name in (("pretrained", "MediaPipe + Eq. 13"),
                           ("mediapipe_2d", "MediaPipe keypoints alone"),
                           ("network", "handlib network alone (GT box)")):
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
