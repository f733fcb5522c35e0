"""Scoring a trained DHPE on a held-out split: 3D PCK/AUC (hand3d protocol), joint errors, 2D error, mask IoU.

:func:`evaluate_model` runs the network over a dataset of crops (no augmentation) and scores:

* 3D, the paper's protocol (Sec. 4, after Zimmermann & Brox 2017): root-relative, rescaled so the
  middle MCP→PIP bone has the ground truth's length (``metrics.align_scale``); PCK over 20–50 mm and
  its AUC, mean and median joint error in mm. Also root-only and Procrustes-aligned mean errors.
* 2D: projected mesh joints and refined j2D against the labels, pixels in the crop.
* Silhouette: IoU of the rendered soft mask (> 0.5) with the ground-truth mask.

Left hands are scored in their mirrored (right-hand) frame, where the network works; errors are
unchanged by the mirror.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data.batch import collate
from .metrics import THRESHOLDS_2D_PX, PoseEvaluator, mask_iou

__all__ = ["evaluate_model", "write_report"]


@torch.no_grad()
def evaluate_model(model, dataset, batch_size: int = 32, device="cpu", workers: int = 0) -> dict:
    """Score ``model`` (a :class:`~handlib.model.DHPE`) on every item of ``dataset``.

    Args:
        dataset: a :class:`~handlib.train.DrawDataset` (items ``(index, draw)``) or any dataset of
            cropped samples indexed by int.
    Returns:
        dict: num_samples; auc_20_50, mean_mm, median_mm, pck, thresholds_mm (scale-aligned 3D);
        mean_mm_root, mean_mm_procrustes; mean_px (projected joints), mean_px_refined, auc_2d;
        mask_iou (mean over samples with a mask).
    """
    model.eval().to(device)
    n = len(dataset)
    draw = hasattr(dataset, "crop")  # DrawDataset takes (index, draw) items
    batches = [[(i, i) if draw else i for i in range(s, min(n, s + batch_size))]
               for s in range(0, n, batch_size)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                         num_workers=workers)
    ev = {m: PoseEvaluator(mode=m) for m in ("scale", "root", "procrustes")}
    ev2d = {k: PoseEvaluator(mode="none", unit=1.0, unit_name="px", thresholds=THRESHOLDS_2D_PX)
            for k in ("proj", "refined")}
    ious = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(batch["image"], batch["K"], render=True)
        for e in ev.values():
            e.update(out.joints, batch["kp3d"], batch["valid"])
        ev2d["proj"].update(out.j2d, batch["kp2d"], batch["valid"])
        ev2d["refined"].update(out.reg.j2d[-1], batch["kp2d"], batch["valid"])
        iou = mask_iou(out.silhouette, batch["mask"])
        ious += iou[batch["has_mask"]].tolist()
    s = ev["scale"].summary()
    p2 = ev2d["proj"].summary()
    return {"num_samples": n, "auc_20_50": float(s["auc"]), "mean_mm": float(s["mean_mm"]),
            "median_mm": float(s["median_mm"]), "pck": [float(v) for v in s["pck"]],
            "thresholds_mm": [float(t) for t in s["thresholds"]],
            "mean_mm_root": float(ev["root"].summary()["mean_mm"]),
            "mean_mm_procrustes": float(ev["procrustes"].summary()["mean_mm"]),
            "mean_px": float(p2["mean_px"]), "auc_2d": float(p2["auc"]),
            "mean_px_refined": float(ev2d["refined"].summary()["mean_px"]),
            "mask_iou": float(np.mean(ious)) if ious else float("nan")}


def write_report(result: dict, path) -> Path:
    """Write an :func:`evaluate_model` result as JSON."""
    path = Path(path)
    path.write_text(json.dumps(result, indent=2))
    return path
