"""Scoring a trained DHPE on a held-out split: 3D PCK/AUC (hand3d protocol), joint errors, 2D error,
silhouette accuracy, and the mesh against ground truth where the data carries it.

:func:`evaluate_model` runs the network over a dataset of crops (no augmentation) and scores:

* 3D, the paper's protocol (Sec. 4, after Zimmermann & Brox 2017): root-relative, rescaled so the
  middle MCP→PIP bone has the ground truth's length (``metrics.align_scale``); PCK over 20–50 mm and
  its AUC, mean and median joint error in mm. Also hand3d's 0–50 mm curve and AUC
  (``get_measures(0, 50, 51)``) on the same errors, and root-only and Procrustes-aligned mean errors.
* 2D: projected mesh joints and refined j2D against the labels, pixels in the crop.
* Silhouette: IoU, precision, recall and F (Dice) of the rendered soft mask (> 0.5) against the
  ground-truth mask (``metrics.mask_scores``; the paper's Table 2 segmentation accuracy).
* Mesh, where a sample carries ground-truth hand parameters h (synthetic data does): the ground-truth
  mesh is the model's hand model at that h; the predicted vertices are Procrustes-aligned to it using
  vertex correspondence, then the mean vertex error and the F-scores at 5 and 15 mm (FreiHAND's
  protocol, Zimmermann et al. 2019; ``metrics.mesh_scores``). NaN where no sample has h.
* With ``refine=RefineConfig(...)`` the same scores after Eq. 13's test-time refinement
  (``handlib.refine``), as keys ending in ``_refined``.

``mpjpe_mm`` is the root-aligned mean joint error, ``pa_mpjpe_mm`` the Procrustes-aligned one.
:func:`score_batch` gives the same scores for one batch of predictions, without a network.

Left hands are scored in their mirrored (right-hand) frame, where the network works; errors are
unchanged by the mirror (``data.batch.collate`` mirrors h too, so the ground-truth mesh is mirrored).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .data.batch import collate
from .metrics import THRESHOLDS_2D_PX, THRESHOLDS_3D_MM, PoseEvaluator, mask_scores, mesh_scores
from .progress import bar

__all__ = ["evaluate_model", "score_batch", "ground_truth_verts", "dataset_for_eval", "dataset_splits",
           "write_report", "DATASETS", "THRESHOLDS_0_50_MM", "MESH_FSCORE_MM"]

THRESHOLDS_0_50_MM = tuple(float(t) for t in np.linspace(0.0, 50.0, 51))  # hand3d get_measures(0, 50, 51)
MESH_FSCORE_MM = (5.0, 15.0)  # FreiHAND's F@5mm and F@15mm


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def _per_sample_mm(evaluator: PoseEvaluator) -> list:
    """Each sample's mean error over its valid keypoints (NaN where none is), in the order fed."""
    e, v = torch.cat(evaluator.errors), torch.cat(evaluator.valid)
    return [float(x) for x in (e * v).sum(1) / v.sum(1)]


class _Scores:
    """Accumulates the scores of one set of predictions (network output or refined)."""

    def __init__(self):
        self.ev = {m: PoseEvaluator(mode=m) for m in ("scale", "root", "procrustes")}
        self.ev2d = PoseEvaluator(mode="none", unit=1.0, unit_name="px", thresholds=THRESHOLDS_2D_PX)
        self.mask = {k: [] for k in ("iou", "precision", "recall", "f")}  # one float per masked sample
        self.mesh = {"pa_mm": [], "f5": [], "f15": []}  # one float per sample with h

    def update(self, batch, joints, j2d, verts=None, silhouette=None, gt_verts=None):
        for e in self.ev.values():
            e.update(joints, batch["kp3d"], batch["valid"])
        self.ev2d.update(j2d, batch["kp2d"], batch["valid"])
        if silhouette is not None:
            m, keep = mask_scores(silhouette, batch["mask"]), batch["has_mask"].bool()
            for k in self.mask:
                self.mask[k] += m[k][keep].tolist()
        if verts is not None and gt_verts is not None:
            has = batch.get("has_h")
            has = torch.ones(len(verts), dtype=torch.bool) if has is None else has.bool().cpu()
            if has.any():
                idx = has.nonzero().flatten().to(verts.device)
                ms = mesh_scores(verts[idx], gt_verts[idx], [t / 1000.0 for t in MESH_FSCORE_MM])
                self.mesh["pa_mm"] += ms["pa_mm"].tolist()
                self.mesh["f5"] += ms["f"][:, 0].tolist()
                self.mesh["f15"] += ms["f"][:, 1].tolist()

    def summary(self, suffix: str = "") -> dict:
        s, p2 = self.ev["scale"].summary(), self.ev2d.summary()
        s050 = self.ev["scale"].summary(thresholds=THRESHOLDS_0_50_MM)
        root, pa = self.ev["root"].summary()["mean_mm"], self.ev["procrustes"].summary()["mean_mm"]
        out = {"auc_20_50": float(s["auc"]), "mean_mm": float(s["mean_mm"]),
               "median_mm": float(s["median_mm"]),
               "pck": [float(v) for v in s["pck"]], "mpjpe_mm": float(root), "pa_mpjpe_mm": float(pa),
               "auc_0_50": float(s050["auc"]), "pck_0_50": [float(v) for v in s050["pck"]],
               "mean_mm_root": float(root), "mean_mm_procrustes": float(pa),
               "mean_px": float(p2["mean_px"]), "auc_2d": float(p2["auc"]),
               "mask_iou": _mean(self.mask["iou"]), "mask_precision": _mean(self.mask["precision"]),
               "mask_recall": _mean(self.mask["recall"]), "mask_f": _mean(self.mask["f"]),
               "mesh_pa_mm": _mean(self.mesh["pa_mm"]), "mesh_f5": _mean(self.mesh["f5"]),
               "mesh_f15": _mean(self.mesh["f15"]),
               "per_keypoint_mm": [float(v) for v in s["per_keypoint_mean_mm"]],
               "per_keypoint_px": [float(v) for v in p2["per_keypoint_mean_px"]]}
        return {k + suffix: v for k, v in out.items()}


def ground_truth_verts(batch: dict, hand_model) -> torch.Tensor | None:
    """The ground-truth mesh of a collated batch: ``hand_model.from_h(batch["h"]).verts``.

    Args:
        batch: from :func:`~handlib.data.batch.collate` (h already mirrored to the right hand).
        hand_model: the right :class:`~handlib.hand_model.HandModel` the network predicts with
            (``model.hand_model``); h is read in its parameterisation.
    Returns:
        (B, V, 3) vertices in metres, camera space, NaN in the rows of samples without h; None when
        the batch carries no h at all.
    """
    if "h" not in batch:
        return None
    h = batch["h"]
    has = batch.get("has_h", torch.ones(len(h), dtype=torch.bool, device=h.device)).bool()
    verts = torch.full((len(h), hand_model.num_verts, 3), float("nan"), dtype=h.dtype, device=h.device)
    if has.any():
        with torch.no_grad():  # only the rows with h: collate fills the others with zeros (no rotation)
            verts[has] = hand_model.from_h(h[has]).verts.to(h.dtype)
    return verts


def score_batch(batch: dict, joints, j2d, verts=None, silhouette=None, gt_verts=None) -> dict:
    """Score one batch of predictions, with the keys of :func:`evaluate_model`'s network scores.

    Args:
        batch: a collated batch (kp3d, kp2d, valid, mask, has_mask; has_h for the mesh scores).
        joints: (B, 21, 3) predicted keypoints, camera space, metres.
        j2d: (B, 21, 2) predicted keypoints, crop pixels.
        verts: optional (B, V, 3) predicted mesh, metres.
        silhouette: optional (B, S, S) soft mask; None leaves the mask keys NaN.
        gt_verts: optional (B, V, 3) ground-truth mesh (:func:`ground_truth_verts`); only the rows
            where ``batch["has_h"]`` (all rows when the batch has no has_h) count. None, or no verts,
            leaves the mesh keys NaN.
    Returns:
        dict: auc_20_50, mean_mm, median_mm, pck, auc_0_50, pck_0_50, mpjpe_mm, pa_mpjpe_mm,
        mean_mm_root, mean_mm_procrustes, mean_px, auc_2d, mask_iou, mask_precision, mask_recall,
        mask_f, mesh_pa_mm, mesh_f5, mesh_f15, per_keypoint_mm, per_keypoint_px.
    """
    scores = _Scores()
    scores.update(batch, joints, j2d, verts, silhouette, gt_verts)
    return scores.summary()


def evaluate_model(model, dataset, batch_size: int = 32, device="cpu", workers: int = 0,
                   refine=None, progress: bool = True) -> dict:
    """Score ``model`` (a :class:`~handlib.model.DHPE`) on every item of ``dataset``.

    Args:
        dataset: a :class:`~handlib.train.DrawDataset` (items ``(index, draw)``) or any dataset of
            cropped samples indexed by int.
        refine: a :class:`~handlib.refine.RefineConfig` to also score Eq. 13's refined meshes.
        progress: a bar over the batches on a terminal (never in notebooks: ``handlib.progress``).
    Returns:
        dict: num_samples; auc_20_50, mean_mm, median_mm, pck, thresholds_mm (scale-aligned 3D);
        auc_0_50, pck_0_50, thresholds_0_50_mm (the same errors, hand3d's 0–50 mm grid);
        mpjpe_mm (= mean_mm_root), pa_mpjpe_mm (= mean_mm_procrustes); mean_px (projected joints),
        auc_2d; mean_px_refiner (the 2D pose refiner's output); mask_iou, mask_precision,
        mask_recall, mask_f (means over samples with a mask, NaN without); mesh_pa_mm (mean vertex
        error after Procrustes alignment, mm), mesh_f5, mesh_f15 (mean F-scores at 5 and 15 mm),
        means over samples with ground-truth h, NaN without; per_keypoint_mm (21 mean 3D errors,
        bone-scale aligned, handlib order, NaN for a keypoint never valid) and per_keypoint_px
        (the same in 2D); per_sample_mm (each sample's mean 3D error over its valid keypoints,
        bone-scale aligned as mean_mm, dataset order: for paired comparisons of two networks on the
        same crops); with ``refine`` the same keys + "_refined" (not the thresholds),
        refine_iterations and refine_seconds_per_image.
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
    desc = f"scoring {n} crops" + (f" + Eq. 13 ({refine.iterations} steps)" if refine is not None else "")
    for batch in bar(loader, desc, total=len(batches), enabled=progress, unit="batch"):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            out = model(batch["image"], batch["K"], render=True)
        gt_verts = ground_truth_verts(batch, model.hand_model)
        net.update(batch, out.joints, out.j2d, out.verts, out.silhouette, gt_verts)
        refiner2d.update(out.reg.j2d[-1], batch["kp2d"], batch["valid"])
        if refine is not None:
            from .refine import refine as run_refine

            t0 = time.perf_counter()
            r = run_refine(model, batch["image"], batch["K"], out=out, cfg=refine)
            seconds += time.perf_counter() - t0
            with torch.no_grad():
                sil = model.renderer(r.verts, batch["K"])
            ref.update(batch, r.joints, r.j2d, r.verts, sil, gt_verts)
    result = {"num_samples": n, "thresholds_mm": list(THRESHOLDS_3D_MM),
              "thresholds_0_50_mm": list(THRESHOLDS_0_50_MM), **net.summary(),
              "mean_px_refiner": float(refiner2d.summary()["mean_px"]),
              "per_sample_mm": _per_sample_mm(net.ev["scale"])}
    if refine is not None:
        result.update(ref.summary("_refined"), refine_iterations=refine.iterations,
                      refine_seconds_per_image=seconds / max(n, 1),
                      per_sample_mm_refined=_per_sample_mm(ref.ev["scale"]))
    return result


DATASETS = ("synthetic", "rhd", "stb", "freihand", "dexter_object")


def dataset_splits(name: str) -> tuple:
    """The ``split`` values :func:`dataset_for_eval` accepts for dataset ``name`` (() for Dexter+Object,
    which has one set)."""
    from .data import freihand, rhd, stb, synthetic

    splits = {"synthetic": synthetic.SPLITS, "rhd": rhd.SPLITS, "stb": stb.SPLIT_SEQUENCES,
              "freihand": freihand.SPLITS, "dexter_object": ()}
    if name not in splits:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {name!r}")
    return tuple(splits[name])


def dataset_for_eval(name: str, image_size: int, root=None, split: str | None = None, seed: int = 0,
                     num: int | None = None, crop=None, render_size: int | None = None):
    """Crops (no jitter) of a named dataset: "synthetic" (seeded, no files needed) or a real one
    read from ``root`` in its official layout. ``num`` keeps the first ``num`` samples.

    Args:
        crop: the network's :class:`~handlib.data.CropConfig` (``ModelConfig.crop_config()``);
            default: Eq. 8's box crop of side ``image_size``.
        render_size: side of the synthetic renders; default: ``profile().render_size_for(image_size)``
            (the profile's render size for its own crop size, the size training crops were cut from;
            2 × ``image_size`` for a network of another crop size).
    Returns:
        a Dataset of cropped samples (int indices), for :func:`evaluate_model`.
    """
    from .config import profile
    from .data import RHD, STB, CropConfig, CropTransform, DexterObject, FreiHAND, SyntheticHands

    crop = CropTransform(crop or CropConfig(size=image_size))
    if name == "synthetic":
        render = render_size or profile().render_size_for(image_size)
        ds = SyntheticHands(seed=seed, num=num or 500, image_size=render, split=split or "val",
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
    """Write an :func:`evaluate_model` result as JSON (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
