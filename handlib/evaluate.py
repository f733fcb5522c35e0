"""Scoring a trained DHPE on a held-out split: 3D PCK/AUC (hand3d protocol), joint errors, 2D error, mask IoU.

:func:`evaluate_model` runs the network over a dataset of crops (no augmentation) and scores:

* 3D, the paper's protocol (Sec. 4, after Zimmermann & Brox 2017): root-relative, rescaled so the
  middle MCP→PIP bone has the ground truth's length (``metrics.align_scale``); PCK over 20–50 mm and
  its AUC, mean and median joint error in mm. Also root-only and Procrustes-aligned mean errors.
* 2D: projected mesh joints and refined j2D against the labels, pixels in the crop.
* Silhouette: IoU of the rendered soft mask (> 0.5) with the ground-truth mask.
* With ``refine=RefineConfig(...)`` the same scores after Eq. 13's test-time refinement
  (``handlib.refine``), as keys ending in ``_refined``.

``mpjpe_mm`` is the root-aligned mean joint error, ``pa_mpjpe_mm`` the Procrustes-aligned one.

Left hands are scored in their mirrored (right-hand) frame, where the network works; errors are
unchanged by the mirror.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .data.batch import collate
from .metrics import THRESHOLDS_2D_PX, THRESHOLDS_3D_MM, PoseEvaluator, mask_iou

__all__ = ["evaluate_model", "dataset_for_eval", "write_report", "DATASETS"]


class _Scores:
    """Accumulates the scores of one set of predictions (network output or refined)."""

    def __init__(self):
        self.ev = {m: PoseEvaluator(mode=m) for m in ("scale", "root", "procrustes")}
        self.ev2d = PoseEvaluator(mode="none", unit=1.0, unit_name="px", thresholds=THRESHOLDS_2D_PX)
        self.ious: list = []

    def update(self, joints, j2d, silhouette, batch):
        for e in self.ev.values():
            e.update(joints, batch["kp3d"], batch["valid"])
        self.ev2d.update(j2d, batch["kp2d"], batch["valid"])
        if silhouette is not None:
            self.ious += mask_iou(silhouette, batch["mask"])[batch["has_mask"]].tolist()

    def summary(self, suffix: str = "") -> dict:
        s, p2 = self.ev["scale"].summary(), self.ev2d.summary()
        root, pa = self.ev["root"].summary()["mean_mm"], self.ev["procrustes"].summary()["mean_mm"]
        out = {"auc_20_50": float(s["auc"]), "mean_mm": float(s["mean_mm"]),
               "median_mm": float(s["median_mm"]),
               "pck": [float(v) for v in s["pck"]], "mpjpe_mm": float(root), "pa_mpjpe_mm": float(pa),
               "mean_mm_root": float(root), "mean_mm_procrustes": float(pa),
               "mean_px": float(p2["mean_px"]), "auc_2d": float(p2["auc"]),
               "mask_iou": float(np.mean(self.ious)) if self.ious else float("nan")}
        return {k + suffix: v for k, v in out.items()}


def evaluate_model(model, dataset, batch_size: int = 32, device="cpu", workers: int = 0,
                   refine=None) -> dict:
    """Score ``model`` (a :class:`~handlib.model.DHPE`) on every item of ``dataset``.

    Args:
        dataset: a :class:`~handlib.train.DrawDataset` (items ``(index, draw)``) or any dataset of
            cropped samples indexed by int.
        refine: a :class:`~handlib.refine.RefineConfig` to also score Eq. 13's refined meshes.
    Returns:
        dict: num_samples; auc_20_50, mean_mm, median_mm, pck, thresholds_mm (scale-aligned 3D);
        mpjpe_mm (= mean_mm_root), pa_mpjpe_mm (= mean_mm_procrustes); mean_px (projected joints),
        auc_2d; mean_px_refiner (the 2D pose refiner's output); mask_iou (samples with a mask);
        with ``refine`` the same keys + "_refined" and refine_seconds_per_image.
    """
    model.eval().to(device)
    n = len(dataset)
    draw = hasattr(dataset, "crop")  # DrawDataset takes (index, draw) items
    batches = [[(i, i) if draw else i for i in range(s, min(n, s + batch_size))]
               for s in range(0, n, batch_size)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                         num_workers=workers)
    net, ref = _Scores(), _Scores()
    refiner2d = PoseEvaluator(mode="none", unit=1.0, unit_name="px", thresholds=THRESHOLDS_2D_PX)
    seconds = 0.0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            out = model(batch["image"], batch["K"], render=True)
        net.update(out.joints, out.j2d, out.silhouette, batch)
        refiner2d.update(out.reg.j2d[-1], batch["kp2d"], batch["valid"])
        if refine is not None:
            from .refine import refine as run_refine

            t0 = time.perf_counter()
            r = run_refine(model, batch["image"], batch["K"], out=out, cfg=refine)
            seconds += time.perf_counter() - t0
            with torch.no_grad():
                sil = model.renderer(r.verts, batch["K"])
            ref.update(r.joints, r.j2d, sil, batch)
    result = {"num_samples": n, "thresholds_mm": list(THRESHOLDS_3D_MM), **net.summary(),
              "mean_px_refiner": float(refiner2d.summary()["mean_px"])}
    if refine is not None:
        result.update(ref.summary("_refined"), refine_iterations=refine.iterations,
                      refine_seconds_per_image=seconds / max(n, 1))
    return result


DATASETS = ("synthetic", "rhd", "stb", "freihand", "dexter_object")


def dataset_for_eval(name: str, image_size: int, root=None, split: str | None = None, seed: int = 0,
                     num: int | None = None):
    """Crops (no jitter) of a named dataset: "synthetic" (seeded, no files needed) or a real one
    read from ``root`` in its official layout. ``num`` keeps the first ``num`` samples.

    Returns:
        a Dataset of cropped samples (int indices), for :func:`evaluate_model`.
    """
    from .data import RHD, STB, CropConfig, CropTransform, DexterObject, FreiHAND, SyntheticHands

    crop = CropTransform(CropConfig(size=image_size))
    if name == "synthetic":
        ds = SyntheticHands(seed=seed, num=num or 500, image_size=2 * image_size, split=split or "val",
                            transform=crop)
    elif name not in DATASETS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {name!r}")
    elif root is None:
        raise ValueError(f"dataset {name!r}: pass --root, the folder of the official release")
    elif name == "rhd":
        ds = RHD(root, split or "evaluation", transform=crop)
    elif name == "stb":
        ds = STB(root, split or "test", transform=crop)
    elif name == "freihand":
        ds = FreiHAND(root, split or "training", transform=crop)
    else:
        ds = DexterObject(root, transform=crop)
    if num is not None and num < len(ds):
        ds = torch.utils.data.Subset(ds, range(num))
    return ds


def write_report(result: dict, path) -> Path:
    """Write an :func:`evaluate_model` result as JSON."""
    path = Path(path)
    path.write_text(json.dumps(result, indent=2))
    return path
