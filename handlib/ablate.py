"""Ablations of the paper's Fig. 5 (d–e): which parts of DHPE matter, measured the same way.

``python -m handlib ablate --out runs/ablate`` trains one network per variant in the current
``HANDLIB_PROFILE`` and scores each on the same held-out synthetic *test* crops (which training
never draws), with and without Eq. 13's test-time refinement:

==========================  ================================================================
variant                     what changes (everything else is the full model)
==========================  ================================================================
``full``                    nothing: all of Eq. 7, Sec. 3.5 augmentation, Eq. 13 at test time
``no_refinement``           the ``full`` network scored *without* Eq. 13 (no training of its own)
``no_augmentation``         ``AugmentConfig(enabled=False)``: no Sec. 3.5 samples
``no_2d_losses``            Eq. 2 (feature consistency) and Eq. 3 (heat maps) weighted 0
``no_refiner``              ``RegressorConfig(use_refiner=False)``: no f_ref (Eq. 6 scores j2D₀)
``constant_shape_weight``   Eq. 12's switch replaced by weight 1 for every sample
``pose_only``               no shape loss: Eq. 9 (silhouette) weighted 0
==========================  ================================================================

Writes ``ablation.json`` (every score, the PCK curves), ``ablation.md`` (the table) and
``pck.png`` (3D PCK curves over 20–50 mm). Each variant trains in ``out/<variant>/`` and is
skipped when its checkpoint has reached the step count (``--steps``), resumed when it stopped
short: an interrupted ablation continues where it was. The numbers come from one seed; treat
differences smaller than the spread between seeds (not measured here) with caution.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from .config import profile
from .model import ModelConfig
from .progress import bars_enabled
from .train import TrainConfig, load_checkpoint, load_model, train

__all__ = ["VARIANTS", "AblationConfig", "variant_configs", "run_ablations", "ablation_table", "plot_pck",
           "load_ablation"]

# name → (description, uses Eq. 13 at test time)
VARIANTS = {
    "full": ("all losses, augmentation, test-time refinement", True),
    "no_refinement": ("w/o test-time refinement (Eq. 13)", False),
    "no_augmentation": ("w/o self-supervised augmentation (Sec. 3.5)", True),
    "no_2d_losses": ("w/o 2D losses (Eqs. 2, 3)", True),
    "no_refiner": ("w/o 2D pose refiner (Eq. 6)", True),
    "constant_shape_weight": ("constant shape weight instead of Eq. 12", True),
    "pose_only": ("pose only: no shape loss (Eq. 9)", True),
}
SHARED = {"no_refinement": "full"}  # variants scored on another variant's network
KEYS = ("auc_20_50", "auc_0_50", "mean_mm", "mpjpe_mm", "pa_mpjpe_mm", "mean_px", "mask_iou", "mesh_f5",
        "mesh_f15")


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """One ablation study. Sizes default to the profile's (``TrainConfig.from_profile``)."""

    variants: tuple = tuple(VARIANTS)
    steps: int | None = None  # training steps per variant (None: the profile's train_steps)
    num_samples: int | None = None  # synthetic training samples (None: the profile's)
    eval_num: int = 100  # held-out test crops scored per variant
    refine_steps: int | None = None  # Eq. 13 iterations (None: the profile's refine_steps)
    seed: int = 0  # training seed (the test crops use seed 0 of the "test" split)
    workers: int = 1

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants: unknown {unknown}; expected some of {list(VARIANTS)}")
        if self.eval_num < 1:
            raise ValueError(f"eval_num: expected ≥ 1, got {self.eval_num}")


def variant_configs(name: str, base: TrainConfig, mcfg: ModelConfig) -> tuple[TrainConfig, ModelConfig]:
    """The training and model configs of variant ``name`` (``dataclasses.replace`` of the full ones)."""
    name = SHARED.get(name, name)
    w = base.weights
    if name == "full":
        return base, mcfg
    if name == "no_augmentation":
        return dataclasses.replace(base, augment=dataclasses.replace(base.augment, enabled=False)), mcfg
    if name == "no_2d_losses":
        return dataclasses.replace(base, weights=dataclasses.replace(w, heatmap=0.0, feature=0.0)), mcfg
    if name == "no_refiner":
        reg = dataclasses.replace(mcfg.regressor, use_refiner=False)
        return base, dataclasses.replace(mcfg, regressor=reg)
    if name == "constant_shape_weight":
        return dataclasses.replace(base, weights=dataclasses.replace(w, constant_shape_weight=True)), mcfg
    if name == "pose_only":
        return dataclasses.replace(base, weights=dataclasses.replace(w, silhouette=0.0)), mcfg
    raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {name!r}")


def _shape_on(metrics_csv: Path) -> float:
    """Mean of Eq. 12's per-step switched-on fraction over the joint stage (NaN without a log)."""
    import csv

    if not metrics_csv.is_file():
        return float("nan")
    with open(metrics_csv, newline="") as fh:
        vals = [float(r["shape_on"]) for r in csv.DictReader(fh) if r.get("shape_on") not in (None, "")]
    return sum(vals) / len(vals) if vals else float("nan")


def _train_variant(name: str, out: Path, cfg: AblationConfig, log, progress: bool) -> tuple[Path, float]:
    """Train (or resume, or reuse) variant ``name`` in ``out/name``; returns (checkpoint, seconds)."""
    over = {k: v for k, v in (("steps", cfg.steps), ("num_samples", cfg.num_samples)) if v is not None}
    base = TrainConfig.from_profile(out=str(out / name), seed=cfg.seed, workers=cfg.workers, eval_samples=0,
                                    progress=bars_enabled(progress), **over)
    if cfg.steps is not None:
        base = dataclasses.replace(base, warmup=min(base.warmup, max(1, cfg.steps // 10)))
    tcfg, mcfg = variant_configs(name, base, ModelConfig.from_profile())
    ckpt = out / name / "checkpoint.pt"
    if ckpt.is_file():
        done = int(load_checkpoint(ckpt)["step"])
        if done >= tcfg.steps:
            log(f"[{name}] reusing {ckpt} (step {done})")
            return ckpt, float("nan")
        log(f"[{name}] resuming at step {done} of {tcfg.steps}")
        t0 = time.perf_counter()
        train(tcfg, resume=True, log=lambda *a: None)
    else:
        log(f"[{name}] training {tcfg.steps} steps")
        t0 = time.perf_counter()
        train(tcfg, mcfg, log=lambda *a: None)
    seconds = time.perf_counter() - t0
    log(f"[{name}] trained in {seconds:.1f} s")
    return ckpt, seconds


def run_ablations(out, cfg: AblationConfig = AblationConfig(), log=print, progress: bool = True) -> dict:
    """Train and score every variant of ``cfg``; write ablation.json, ablation.md and pck.png.

    ``log`` gets one line as each variant starts and ends training and scoring; ``progress`` draws
    bars for both on a terminal (never in notebooks, :mod:`handlib.progress`).

    Returns:
        dict with profile, config, eval set, and ``variants``: name → {description, refined (bool),
        the main scores (refined where the variant uses Eq. 13) under :data:`KEYS`, the network-only
        ones as ``<key>_net``, pck (31,), thresholds_mm, train_seconds, eval_seconds}.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prof = profile()
    steps = prof.refine_steps if cfg.refine_steps is None else cfg.refine_steps
    order = list(cfg.variants)
    scored: dict = {}  # trained network name → evaluation (shared by no_refinement and full)
    result = {"profile": prof.name, "config": dataclasses.asdict(cfg), "refine_steps": steps,
              "eval_set": f"synthetic test split, seed 0, first {cfg.eval_num} crops", "variants": {}}
    t_all = time.perf_counter()
    trained = {}  # train every network first, then score them all (a crash while scoring loses no training)
    for name in order:
        net = SHARED.get(name, name)
        if net not in trained:
            trained[net] = _train_variant(net, out, cfg, log, progress)
    from .evaluate import dataset_for_eval, evaluate_model
    from .refine import RefineConfig

    for name in order:
        net = SHARED.get(name, name)
        if net not in scored:
            ckpt, secs = trained[net]
            model = load_model(ckpt, map_location=prof.device)
            data = dataset_for_eval("synthetic", model.cfg.image_size, split="test", num=cfg.eval_num)
            log(f"[{net}] scoring {cfg.eval_num} test crops" + (f" with and without Eq. 13 ({steps} steps)"
                                                                 if steps else ""))
            t0 = time.perf_counter()
            ev = evaluate_model(model, data, batch_size=16, device=prof.device,
                                refine=RefineConfig(iterations=steps) if steps else None, progress=progress)
            scored[net] = {"eval": ev, "train_seconds": secs, "eval_seconds": time.perf_counter() - t0}
        s = scored[net]
        ev, use_refine = s["eval"], VARIANTS[name][1] and steps > 0
        suffix = "_refined" if use_refine else ""
        row = {"description": VARIANTS[name][0], "network": net, "refined": use_refine,
               "train_seconds": s["train_seconds"], "eval_seconds": s["eval_seconds"],
               # Eq. 12's mean switched-on share in training: 0 means Eq. 9 never acted, and then
               # "pose_only" and "constant_shape_weight" measure nothing the full model did
               "shape_on": _shape_on(out / net / "metrics.csv"),
               "pck": ev["pck" + suffix], "thresholds_mm": ev["thresholds_mm"]}
        for k in KEYS:
            row[k] = ev.get(k + suffix, float("nan"))
            row[k + "_net"] = ev.get(k, float("nan"))
        result["variants"][name] = row
        log(f"[{name}] AUC 20–50 mm {row['auc_20_50']:.3f} (network alone {row['auc_20_50_net']:.3f}), "
            f"mean {row['mean_mm']:.1f} mm, PA-MPJPE {row['pa_mpjpe_mm']:.1f} mm; scored in "
            f"{row['eval_seconds']:.1f} s")
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "ablation.json").write_text(json.dumps(result, indent=2))
    (out / "ablation.md").write_text(ablation_table(result) + "\n")
    fig = plot_pck(result)
    fig.savefig(out / "pck.png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    log(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'}, {out / 'pck.png'} "
        f"({result['seconds']:.0f} s)")
    return result


def load_ablation(path) -> dict:
    """Read an ``ablation.json`` written by :func:`run_ablations` (e.g. for the demo's report).

    Raises:
        MissingData: no such file. DataError: not JSON, or without what the report reads (profile,
        eval_set, variants with description, refined, pck, thresholds_mm and auc_20_50 each).
    """
    from .data.common import DataError, read_json

    result = read_json(path, dict, "ablation.json")
    need = ("description", "refined", "pck", "thresholds_mm", "auc_20_50")
    rows = result.get("variants")
    ok = isinstance(rows, dict) and rows and all(isinstance(r, dict) and all(k in r for k in need)
                                                 for r in rows.values())
    if not (ok and "profile" in result and "eval_set" in result):
        raise DataError("not an ablation.json of `python -m handlib ablate` (expected profile, eval_set and "
                        f"variants with {', '.join(need)})", path)
    return result


def ablation_table(result: dict) -> str:
    """A markdown table of a :func:`run_ablations` result (one row per variant)."""
    head = ("| variant | AUC 20–50 mm | AUC, network alone | AUC 0–50 mm | mean error (mm) | PA-MPJPE (mm) "
            "| 2D error (px) | mask IoU | mesh F@5 mm | mesh F@15 mm | Eq. 12 on |")
    rows = [head, "|" + "---|" * 11]
    for name, r in result["variants"].items():
        rows.append(f"| {r['description']} (`{name}`) | {r['auc_20_50']:.3f} | {r['auc_20_50_net']:.3f} | "
                    f"{r['auc_0_50']:.3f} | {r['mean_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} | "
                    f"{r['mean_px']:.1f} | {r['mask_iou']:.2f} | {r['mesh_f5']:.2f} | {r['mesh_f15']:.2f} | "
                    f"{r.get('shape_on', float('nan')):.0%} |")
    return "\n".join(rows)


def plot_pck(result: dict, ax=None):
    """3D PCK curves (20–50 mm, root + bone-scale aligned) of every variant; returns the figure."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, r in result["variants"].items():
        ax.plot(r["thresholds_mm"], r["pck"], label=f"{r['description']} ({r['auc_20_50']:.3f})",
                lw=2.2 if name == "full" else 1.3, ls="-" if r["refined"] or name == "full" else "--")
    ax.set(xlabel="error threshold (mm)", ylabel="3D PCK", xlim=(20, 50), ylim=(0, 1),
           title=f"Ablations ({result['profile']} profile; AUC in brackets)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig or ax.figure
