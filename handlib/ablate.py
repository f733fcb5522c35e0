"""Ablations of the paper's Fig. 5 (d–e) over seeds: which parts of DHPE matter, and by more than noise?

``python -m handlib ablate --out runs/ablate --seeds 3`` trains one network per variant and seed
(seeds ``seed, seed+1, …, seed+seeds−1``) in the current ``HANDLIB_PROFILE`` and scores each on the
same held-out synthetic *test* crops (which training never draws), with and without Eq. 13's
test-time refinement:

==========================  ================================================================
variant                     what changes (everything else is the full model)
==========================  ================================================================
``full``                    nothing: all of Eq. 7, Sec. 3.5 augmentation, Eq. 13 at test time
``no_refinement``           the ``full`` network of each seed scored *without* Eq. 13 (no training
                            of its own): its comparison with ``full`` is exactly Eq. 13's effect
``no_augmentation``         ``AugmentConfig(enabled=False)``: no Sec. 3.5 samples
``no_2d_losses``            Eq. 2 (feature consistency) and Eq. 3 (heat maps) weighted 0
``no_refiner``              ``RegressorConfig(use_refiner=False)``: no f_ref (Eq. 6 scores j2D₀)
``constant_shape_weight``   Eq. 12's switch replaced by weight 1 for every sample
``pose_only``               no shape loss: Eq. 9 (silhouette) weighted 0
==========================  ================================================================

Every score is reported as mean ± std over seeds (std with ddof 1; NaN with one seed). The paper's
claim for every ablated variant is that ``full`` is better; each variant is compared with ``full``
*paired*, on the same seed and the same test crops:

* ΔAUC: per seed s, d_s = AUC₂₀₋₅₀(variant, s) − AUC₂₀₋₅₀(full, s), then mean ± std over seeds
  (negative: the variant is worse, as the paper says).
* Δ error per crop: e = the variant's mean joint error on a crop − ``full``'s on the same crop and
  seed (mm, root + bone-scale aligned as ``mean_mm``; positive: the variant errs more), averaged over
  every crop of every seed, with a 95 % percentile bootstrap interval (:data:`BOOTSTRAP` resamples of
  the crops pooled across seeds, numpy seed 0: deterministic). Shown, not used by the verdict.
* spread: the larger of the std over seeds of ``full``'s AUC and of the variant's AUC.
* verdict (:func:`verdict`), the project's rule "a difference smaller than its seed-to-seed spread
  is noise": "within noise" when |mean d| ≤ spread; otherwise "reproduced" when mean d < 0 and
  "reversed" when mean d > 0. One seed measures no spread: "one seed: no spread measured".
  ``full`` itself is the "reference".

Writes ``ablation.json`` (every score per seed, the comparisons, the mean PCK curves),
``ablation.md`` (:func:`ablation_table`) and ``pck.png`` (mean 3D PCK curves over 20–50 mm with
± std bands). Each network trains in ``out/<variant>/seed<k>/`` and is skipped when its checkpoint
has reached the step count (``--steps``), resumed when it stopped short: an interrupted study
continues where it was, and a rerun with more seeds trains only the new ones (the checkpoints of a
study of before seeds, ``out/<variant>/checkpoint.pt``, are not read). Budget: total time
≈ seeds × trained variants × steps × seconds per step, plus scoring (seeds × trained variants ×
``eval_num`` crops, each with Eq. 13).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from .config import profile
from .model import ModelConfig
from .progress import bars_enabled
from .train import TrainConfig, load_checkpoint, load_model, train

__all__ = ["VARIANTS", "AblationConfig", "variant_configs", "run_ablations", "ablation_table", "plot_pck",
           "load_ablation", "verdict", "paired_comparison", "bootstrap_ci"]

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
BOOTSTRAP = 2000  # resamples of the per-crop differences (numpy seed 0)
REPRODUCED, REVERSED, NOISE = "reproduced", "reversed", "within noise"
ONE_SEED, REFERENCE, NO_FULL = "one seed: no spread measured", "reference", "no full run to compare with"
NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """One ablation study. Sizes default to the profile's (``TrainConfig.from_profile``)."""

    variants: tuple = tuple(VARIANTS)
    steps: int | None = None  # training steps per network (None: the profile's train_steps)
    num_samples: int | None = None  # synthetic training samples (None: the profile's)
    eval_num: int = 100  # held-out test crops scored per network
    refine_steps: int | None = None  # Eq. 13 iterations (None: the profile's refine_steps)
    seed: int = 0  # first training seed (the test crops use seed 0 of the "test" split, whatever it is)
    seeds: int = 1  # training seeds per variant: seed, seed + 1, …, seed + seeds − 1
    workers: int = 1

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants: unknown {unknown}; expected some of {list(VARIANTS)}")
        if self.eval_num < 1:
            raise ValueError(f"eval_num: expected ≥ 1, got {self.eval_num}")
        if self.seeds < 1:
            raise ValueError(f"seeds: expected ≥ 1, got {self.seeds}")

    def seed_list(self) -> list[int]:
        """The training seeds, in order."""
        return list(range(self.seed, self.seed + self.seeds))

    def networks(self) -> list[str]:
        """The variants that train a network of their own (``no_refinement`` needs ``full``'s)."""
        return list(dict.fromkeys(SHARED.get(v, v) for v in self.variants))


def variant_configs(name: str, base: TrainConfig, mcfg: ModelConfig) -> tuple[TrainConfig, ModelConfig]:
    """The training and model configs of variant ``name`` (``dataclasses.replace`` of the full ones).

    ``full`` is the paper's whole method: Sec. 3.5's augmentation is on in it and in every variant but
    ``no_augmentation``, even where the profile's recipe leaves it off (the ``cpu`` recipe does,
    ``train.PRETRAINED_RECIPE``), so that ``no_augmentation`` measures it. And the paper's Eq. 7 only:
    our ``mesh`` term (``LossWeights.mesh``, 3D supervision of the whole mesh, which the paper's data
    did not have) is off in every variant, whatever the recipe, since it would stand in for the
    silhouette and Eq. 12 whose effects the study measures.
    """
    name = SHARED.get(name, name)
    base = dataclasses.replace(base, augment=dataclasses.replace(base.augment, enabled=True),
                               weights=dataclasses.replace(base.weights, mesh=0.0))
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


def _train_variant(name: str, seed: int, out: Path, cfg: AblationConfig, log, progress: bool):
    """Train (or resume, or reuse) variant ``name`` with ``seed`` in ``out/name/seed<seed>``;
    returns (checkpoint, seconds; NaN when reused)."""
    folder, tag = out / name / f"seed{seed}", f"[{name} seed {seed}]"
    over = {k: v for k, v in (("steps", cfg.steps), ("num_samples", cfg.num_samples)) if v is not None}
    base = TrainConfig.from_profile(out=str(folder), seed=seed, workers=cfg.workers, eval_samples=0,
                                    progress=bars_enabled(progress), **over)
    if cfg.steps is not None:
        base = dataclasses.replace(base, warmup=min(base.warmup, max(1, cfg.steps // 10)))
    tcfg, mcfg = variant_configs(name, base, ModelConfig.from_profile())
    ckpt = folder / "checkpoint.pt"
    if ckpt.is_file():
        done = int(load_checkpoint(ckpt)["step"])
        if done >= tcfg.steps:
            log(f"{tag} reusing {ckpt} (step {done})")
            return ckpt, NAN
        log(f"{tag} resuming at step {done} of {tcfg.steps}")
        t0 = time.perf_counter()
        train(tcfg, resume=True, log=lambda *a: None)
    else:
        log(f"{tag} training {tcfg.steps} steps")
        t0 = time.perf_counter()
        train(tcfg, mcfg, log=lambda *a: None)
    seconds = time.perf_counter() - t0
    log(f"{tag} trained in {seconds:.1f} s")
    return ckpt, seconds


def _score_all(trained: dict, cfg: AblationConfig, steps: int, device, log, progress: bool) -> dict:
    """Score every trained network on the same test crops: (network, seed) → {eval (evaluate_model's
    dict), train_seconds, eval_seconds, shape_on}."""
    from .evaluate import dataset_for_eval, evaluate_model
    from .refine import RefineConfig

    scored = {}
    for (net, seed), (ckpt, secs) in trained.items():
        model = load_model(ckpt, map_location=device)
        data = dataset_for_eval("synthetic", model.cfg.image_size, split="test", num=cfg.eval_num,
                                crop=model.cfg.crop_config())
        log(f"[{net} seed {seed}] scoring {cfg.eval_num} test crops"
            + (f" with and without Eq. 13 ({steps} steps)" if steps else ""))
        t0 = time.perf_counter()
        ev = evaluate_model(model, data, batch_size=16, device=device,
                            refine=RefineConfig(iterations=steps) if steps else None, progress=progress)
        # Eq. 12's mean switched-on share in training: 0 means Eq. 9 never acted, and then
        # "pose_only" and "constant_shape_weight" measure nothing the full model did
        scored[net, seed] = {"eval": ev, "train_seconds": secs, "eval_seconds": time.perf_counter() - t0,
                             "shape_on": _shape_on(ckpt.parent / "metrics.csv")}
    return scored


def _mean_std(values) -> tuple[float, float]:
    """Mean and std (ddof 1; NaN for a single value) of a list of numbers."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else NAN


def _variant_row(name: str, runs: list[dict], steps: int) -> dict:
    """Variant ``name``'s scores over seeds; ``runs``: its network's :func:`_score_all` entry per seed."""
    use_refine = VARIANTS[name][1] and steps > 0
    sfx = "_refined" if use_refine else ""
    row = {"description": VARIANTS[name][0], "network": SHARED.get(name, name), "refined": use_refine}
    per_seed = {k: [r["eval"].get(k + sfx, NAN) for r in runs] for k in KEYS}
    per_seed.update({k + "_net": [r["eval"].get(k, NAN) for r in runs] for k in KEYS})
    per_seed["shape_on"] = [r["shape_on"] for r in runs]
    for k, vals in per_seed.items():
        row[k], row[k + "_std"] = _mean_std(vals)
        row[k + "_per_seed"] = [float(v) for v in vals]
    pck = np.array([r["eval"]["pck" + sfx] for r in runs], dtype=float)
    row["pck"] = pck.mean(0).tolist()
    row["pck_std"] = (pck.std(0, ddof=1) if len(runs) > 1 else np.full(pck.shape[1], NAN)).tolist()
    row["thresholds_mm"] = list(runs[0]["eval"]["thresholds_mm"])
    row["per_crop_mm_per_seed"] = [list(r["eval"]["per_sample_mm" + sfx]) for r in runs]
    trained = [r["train_seconds"] for r in runs if not math.isnan(r["train_seconds"])]
    row["train_seconds"] = float(sum(trained)) if trained else NAN  # NaN: every network reused
    row["train_seconds_per_seed"] = [r["train_seconds"] for r in runs]
    row["eval_seconds"] = float(sum(r["eval_seconds"] for r in runs))
    return row


def bootstrap_ci(values, resamples: int = BOOTSTRAP, seed: int = 0, level: float = 0.95) -> tuple:
    """Percentile bootstrap interval (lo, hi) of the mean of ``values`` (seeded: deterministic;
    (NaN, NaN) for no values)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return NAN, NAN
    means = v[np.random.default_rng(seed).integers(0, v.size, (resamples, v.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def verdict(delta_auc: float, spread: float, seeds: int) -> str:
    """The module's rule: "within noise" when |ΔAUC| ≤ the seed-to-seed spread, else "reproduced"
    (ΔAUC < 0: the variant is worse than ``full``, the paper's claim) or "reversed" (ΔAUC > 0)."""
    if seeds < 2:
        return ONE_SEED
    if not (math.isfinite(delta_auc) and math.isfinite(spread)):
        return "not measured (NaN)"
    if abs(delta_auc) <= spread:
        return NOISE
    return REPRODUCED if delta_auc < 0 else REVERSED


def paired_comparison(row: dict, full: dict, resamples: int = BOOTSTRAP) -> dict:
    """A variant's row against ``full``'s, seed by seed and crop by crop (see the module docstring).

    Returns:
        dict: delta_auc, delta_auc_std, delta_auc_per_seed (AUC 20–50 mm, variant − full); delta_mm,
        delta_mm_ci95 [lo, hi], delta_crops (per-crop mean error, variant − full, pooled over seeds);
        spread_auc (the larger std over seeds of the two AUCs) and verdict.
    """
    d = np.subtract(row["auc_20_50_per_seed"], full["auc_20_50_per_seed"])
    e = np.concatenate([np.subtract(v, f) for v, f in zip(row["per_crop_mm_per_seed"],
                                                         full["per_crop_mm_per_seed"], strict=True)])
    e = e[np.isfinite(e)]  # a crop without a valid keypoint has no error
    d_mean, d_std = _mean_std(d)
    spread = float(np.max([row["auc_20_50_std"], full["auc_20_50_std"]]))  # NaN with one seed
    return {"delta_auc": d_mean, "delta_auc_std": d_std, "delta_auc_per_seed": d.tolist(),
            "delta_mm": float(e.mean()) if e.size else NAN, "delta_mm_ci95": list(bootstrap_ci(e, resamples)),
            "delta_crops": int(e.size), "spread_auc": spread, "verdict": verdict(d_mean, spread, len(d))}


def _summarise(scored: dict, cfg: AblationConfig, steps: int) -> dict:
    """name → row (:func:`_variant_row`) with its paired comparison against ``full``."""
    rows = {name: _variant_row(name, [scored[SHARED.get(name, name), s] for s in cfg.seed_list()], steps)
            for name in cfg.variants}
    for name, row in rows.items():
        if name == "full":
            row["verdict"] = REFERENCE
        elif "full" in rows:
            row.update(paired_comparison(row, rows["full"]))
        else:
            row["verdict"] = NO_FULL
    return rows


def _pm(mean: float, std: float, fmt: str) -> str:
    """``mean ± std`` (just ``mean`` when std is NaN: one seed)."""
    return f"{mean:{fmt}}" + (f" ± {std:{fmt.lstrip('+')}}" if math.isfinite(std) else "")


def _log_line(name: str, r: dict) -> str:
    line = (f"[{name}] AUC 20–50 mm {_pm(r['auc_20_50'], r['auc_20_50_std'], '.3f')} (network alone "
            f"{_pm(r['auc_20_50_net'], r['auc_20_50_net_std'], '.3f')}), mean {r['mean_mm']:.1f} mm, "
            f"PA-MPJPE {r['pa_mpjpe_mm']:.1f} mm")
    if "delta_auc" in r:
        lo, hi = r["delta_mm_ci95"]
        line += (f"; vs full: ΔAUC {_pm(r['delta_auc'], r['delta_auc_std'], '+.3f')}, per crop "
                 f"{r['delta_mm']:+.1f} mm [{lo:+.1f}, {hi:+.1f}]")
    return f"{line}: {r['verdict']}"


def run_ablations(out, cfg: AblationConfig = AblationConfig(), log=print, progress: bool = True) -> dict:
    """Train and score every variant of ``cfg`` for every seed; write ablation.json, ablation.md, pck.png.

    Trains every network first (a crash while scoring loses no training), then scores them all, then
    summarises. ``log`` gets one line as each network starts and ends training and scoring and one
    per variant at the end; ``progress`` draws bars on a terminal (never in notebooks,
    :mod:`handlib.progress`).

    Returns:
        dict with profile, config, seeds, refine_steps, eval_set, bootstrap, seconds and
        ``variants``: name → {description, network, refined (bool); for each of :data:`KEYS` and
        shape_on: ``<key>`` (mean over seeds; refined where the variant uses Eq. 13), ``<key>_std``
        (ddof 1, NaN with one seed), ``<key>_per_seed``, and the same for the network alone as
        ``<key>_net…``; pck and pck_std (31,) (mean curve and its std over seeds), thresholds_mm;
        per_crop_mm_per_seed (seeds × eval_num); train_seconds (NaN when every network was
        reused), train_seconds_per_seed, eval_seconds; verdict; and except for ``full``, the keys of
        :func:`paired_comparison`}.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prof = profile()
    steps = prof.refine_steps if cfg.refine_steps is None else cfg.refine_steps
    seeds, nets = cfg.seed_list(), cfg.networks()
    log(f"{len(seeds)} seed(s) × {len(nets)} trained variant(s) = {len(seeds) * len(nets)} networks "
        f"({', '.join(nets)}; seeds {seeds[0]}–{seeds[-1]}) → {out}")
    t_all = time.perf_counter()
    trained = {(net, s): _train_variant(net, s, out, cfg, log, progress) for s in seeds for net in nets}
    scored = _score_all(trained, cfg, steps, prof.device, log, progress)
    result = {"profile": prof.name, "config": dataclasses.asdict(cfg), "seeds": seeds, "refine_steps": steps,
              "eval_set": f"synthetic test split, seed 0, first {cfg.eval_num} crops",
              "bootstrap": {"resamples": BOOTSTRAP, "seed": 0, "level": 0.95},
              "variants": _summarise(scored, cfg, steps)}
    for name, r in result["variants"].items():
        log(_log_line(name, r))
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
    """Read an ``ablation.json`` written by :func:`run_ablations` (e.g. for the demo's report); one
    written before seeds were added (one seed, no ``_std`` keys) reads too.

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


_TABLE_KEYS = ("auc_20_50", "auc_20_50_std", "delta_auc_std", "pa_mpjpe_mm", "pa_mpjpe_mm_std", "mean_px",
               "shape_on")


def ablation_table(result: dict) -> str:
    """A markdown table of a :func:`run_ablations` result: one row per variant, means ± std over
    seeds, the paired comparison with ``full`` and the verdict (see the module docstring)."""
    n = len(result.get("seeds", [0]))
    head = (f"| variant | AUC 20–50 mm, mean ± std ({n} seed{'s' * (n > 1)}) | ΔAUC vs full (mean ± std "
            "over seeds) | Δ mean error per crop, mm [95% CI] | PA-MPJPE (mm) | 2D error (px) | Eq. 12 on "
            "| verdict |")
    rows = [head, "|" + "---|" * 8]
    for name, r in result["variants"].items():
        r = {k: NAN for k in _TABLE_KEYS} | r  # a result of before seeds has no _std keys
        d_auc = d_mm = "—"
        if "delta_auc" in r:
            lo, hi = r["delta_mm_ci95"]
            d_auc = _pm(r["delta_auc"], r["delta_auc_std"], "+.3f")
            d_mm = f"{r['delta_mm']:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        rows.append(f"| {r['description']} (`{name}`) | {_pm(r['auc_20_50'], r['auc_20_50_std'], '.3f')} | "
                    f"{d_auc} | {d_mm} | {_pm(r['pa_mpjpe_mm'], r['pa_mpjpe_mm_std'], '.1f')} | "
                    f"{r['mean_px']:.1f} | {r['shape_on']:.0%} | {r.get('verdict', '—')} |")
    return "\n".join(rows)


def plot_pck(result: dict, ax=None):
    """Mean 3D PCK curves (20–50 mm, root + bone-scale aligned) of every variant, shaded ± std over
    seeds where there are several; returns the figure."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, r in result["variants"].items():
        t, pck = np.asarray(r["thresholds_mm"], float), np.asarray(r["pck"], float)
        auc = _pm(r["auc_20_50"], r.get("auc_20_50_std", NAN), ".3f")
        (line,) = ax.plot(t, pck, label=f"{r['description']} ({auc})", lw=2.2 if name == "full" else 1.3,
                          ls="-" if r["refined"] or name == "full" else "--")
        std = np.asarray(r.get("pck_std") or [], float)
        if std.shape == pck.shape and np.isfinite(std).all():
            ax.fill_between(t, pck - std, pck + std, color=line.get_color(), alpha=0.15, lw=0)
    n = len(result.get("seeds", [0]))
    ax.set(xlabel="error threshold (mm)", ylabel="3D PCK", xlim=(20, 50), ylim=(0, 1),
           title=f"Ablations ({result['profile']} profile, {n} seed{'s' * (n > 1)}; AUC in brackets)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig or ax.figure
