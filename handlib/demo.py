"""``make demo``: the whole pipeline on a fresh clone, ending in ``runs/demo/report.html``.

:func:`run_demo` does, in the budget of ``$HANDLIB_PROFILE``:

1. the hand model: OpenHand rebuilt from code (compared with the shipped asset: the largest
   difference in float32 steps), posed, pictures and meshes (:func:`hand_model_demo`);
2. a small synthetic *test* set written to ``out/data`` (``data.synthetic.write_split``);
3. a network: ``--checkpoint``, else ``$HANDLIB_CHECKPOINT``, else (outside ``ci``) the checkpoint
   of a full ``cpu`` run at ``runs/cpu/checkpoint.pt`` or the shipped ``handlib/assets/dhpe_cpu.pt``,
   else (in ``ci``) a brief training run in ``out/train`` (reused, or resumed, the next time);
4. scores on the first ``eval_num`` test crops with and without Eq. 13's test-time refinement
   (``out/eval.json``): nearly all of the demo's time, so this is where the budget is set
   (:class:`DemoConfig`; the ``cpu`` profile scores 64 crops with ``RefineConfig.fast``);
5. ``out/report.html``: headline numbers, the PCK curves, the ablation table and plot when an
   ablation has been run (``python -m handlib ablate``; ``--ablation`` or ``runs/ablate*/``),
   example crops with the network's and the refined keypoints and silhouettes, interactive meshes,
   and the training curves of a run made here. The headline numbers are printed too.

The budget is printed first and written into the report; each step prints its time
(``[k/5] name: done in N.N s``, :func:`handlib.progress.stage`) and shows bars on a terminal.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

__all__ = ["DemoConfig", "hand_model_demo", "run_demo", "find_checkpoint"]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; :meth:`from_profile` picks them for ``ci``, ``cpu`` or ``gpu``."""

    data_num: int = 200  # synthetic test samples written to out/data
    # of them scored, each with and without Eq. 13: nearly all of the demo's time. 100 crops with
    # RefineConfig() made `make demo` take 806 s on 2 cores; RefineConfig.fast took 12 s for 32
    # crops on an idle machine and 136 s at load 7: the cpu budget is 64 crops + fast
    eval_num: int = 64
    train_steps: int = 300  # the brief training run when no checkpoint is found
    examples: int = 4  # crops drawn in the report
    meshes: int = 2  # interactive meshes in the report
    refine_steps: int | None = None  # Eq. 13 iterations (None: the profile's refine_steps)
    # RefineConfig.fast(): term (b) every 2nd step, R(h) at half resolution — about half the time
    # per crop, slightly different numbers (README, "Test-time refinement"); False: RefineConfig()
    fast_refine: bool = True
    seed: int = 0  # the test set's seed (of the "test" split, which training never draws)
    checkpoint: str | None = None  # a checkpoint to use instead of searching/training
    ablation: str | None = None  # an ablation.json to include (None: look in runs/ablate*/)
    build: bool = True  # rebuild OpenHand from code and compare with the shipped asset

    @classmethod
    def from_profile(cls, name: str, **overrides) -> DemoConfig:
        sizes = {"ci": dict(data_num=16, eval_num=16, train_steps=20, fast_refine=False),
                 "cpu": dict(data_num=200, eval_num=64, train_steps=300, fast_refine=True),
                 "gpu": dict(data_num=500, eval_num=500, train_steps=3000, fast_refine=False)}[name]
        return dataclasses.replace(cls(**sizes), **overrides)

    def budget(self, profile_name: str, refine_steps: int) -> str:
        """One line saying what the demo scores, for its output and its report."""
        preset = "RefineConfig.fast: term (b) every 2nd step, R(h) at half resolution" if self.fast_refine \
            else "RefineConfig defaults"
        eq13 = f"Eq. 13 with {refine_steps} steps ({preset})" if refine_steps else "no Eq. 13"
        return (f"budget ({profile_name} profile): {self.eval_num} of {self.data_num} synthetic test crops "
                f"scored by the network and {eq13}; {self.examples} drawn as examples")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hand_model_demo(out: Path, build: bool = True,
                    pose_names=("flat", "relaxed", "fist", "point", "tip_pinch")) -> dict:
    """Step 1: OpenHand posed; writes hand_*.png/.obj/.ply, hand.html, summary.json under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import torch
    import trimesh

    from . import open_hand, viz
    from .hand_model import HandModel

    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"asset": str(open_hand.ASSET_PATH), "asset_sha256": _sha256(open_hand.ASSET_PATH)}
    if build:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            rebuilt = Path(tmp) / "open_hand.npz"
            open_hand.save_asset(open_hand.build_open_hand(), rebuilt)
            summary["rebuild_seconds"] = round(time.perf_counter() - t0, 2)
            summary["rebuild_identical"] = _sha256(rebuilt) == summary["asset_sha256"]
            diff = open_hand.asset_difference(open_hand.load_asset(rebuilt), open_hand.load_asset())
        worst = max(diff, key=diff.get)
        summary["rebuild_max_ulps"] = diff[worst]
        # One float32 step is the most another CPU may differ by (docs/open_hand.md).
        verdict = "bit-identical" if summary["rebuild_identical"] else \
            f"largest difference {diff[worst]:g} float32 steps in {worst!r} (≤ 1 expected across CPUs)"
        print(f"built OpenHand in {summary['rebuild_seconds']} s; against the shipped asset: {verdict}")
    arrays = open_hand.load_asset()
    names = json.loads(str(arrays["meta"])).get("pose_names", [])
    model = HandModel()
    summary.update(vertices=model.num_verts, faces=int(model.faces.shape[0]))
    poses = {"mean": torch.zeros(45)}
    for name in pose_names:
        if name in names:  # library poses are absolute; the model adds hands_mean, so subtract it
            poses[name] = torch.as_tensor(arrays["pose_library"][names.index(name)]) - model.hands_mean
    with torch.no_grad():
        outs = {k: model(pose=p[None].float()) for k, p in poses.items()}
        flat = HandModel(flat_hand_mean=True)().joints[0]  # zero pose = the flat template
    summary["hand_length_m"] = round(float((flat[12] - flat[0]).norm()), 4)  # wrist → middle tip
    for name, o in outs.items():
        fig = viz.mesh_views(o.verts[0], model.faces, o.joints[0], title=f"OpenHand — {name}")
        fig.savefig(out / f"hand_{name}.png", dpi=110)
        mesh = trimesh.Trimesh(o.verts[0].numpy(), model.faces.numpy(), process=False)
        mesh.export(out / f"hand_{name}.obj")
        mesh.export(out / f"hand_{name}.ply")
    rest = outs["mean"]
    viz.mesh_figure(rest.verts[0], model.faces, rest.joints[0], title="OpenHand (mean pose)") \
        .write_html(out / "hand.html", include_plotlyjs=True)
    np.savetxt(out / "joints_mean_pose.txt", rest.joints[0].numpy(), fmt="%.6f",
               header="21 keypoints, handlib order, metres, model frame")
    summary["files"] = sorted(p.name for p in out.iterdir() if p.is_file())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"hand: {summary['vertices']} vertices, {summary['faces']} faces, "
          f"wrist→middle tip {summary['hand_length_m'] * 100:.1f} cm")
    return summary


def find_checkpoint(cfg: DemoConfig, out: Path, profile_name: str) -> tuple[Path | None, str]:
    """Step 3's search: (path or None, where it came from)."""
    if cfg.checkpoint:
        return Path(cfg.checkpoint), "--checkpoint"
    env = os.environ.get("HANDLIB_CHECKPOINT")
    if env:
        return Path(env), "$HANDLIB_CHECKPOINT"
    full = Path("runs/cpu/checkpoint.pt")
    if profile_name != "ci" and full.is_file():
        return full, "the cpu training run (python -m handlib train --out runs/cpu)"
    from .train import SHIPPED_CHECKPOINT

    if profile_name != "ci" and SHIPPED_CHECKPOINT.is_file():  # ci trains its own tiny network
        return SHIPPED_CHECKPOINT, "the shipped checkpoint (handlib/assets/dhpe_cpu.json)"
    return None, ""


def _find_ablation(cfg: DemoConfig, profile_name: str) -> Path | None:
    if cfg.ablation:
        return Path(cfg.ablation)
    if profile_name == "ci":  # CI never depends on what lies in runs/
        return None
    found = sorted(Path("runs").glob("ablate*/ablation.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _network(cfg: DemoConfig, out: Path, prof, progress: bool):
    """Step 3: (checkpoint, where it came from, model, trained here?); trains briefly if none is found."""
    from .model import ModelConfig
    from .progress import bars_enabled
    from .train import TrainConfig, load_checkpoint, load_model, train

    ckpt, source = find_checkpoint(cfg, out, prof.name)
    trained_here = ckpt is None
    if trained_here:
        ckpt = out / "train" / "checkpoint.pt"
        tcfg = TrainConfig.from_profile(out=str(out / "train"), steps=cfg.train_steps, eval_samples=0,
                                        warmup=min(100, max(1, cfg.train_steps // 10)),
                                        progress=bars_enabled(progress))
        done = int(load_checkpoint(ckpt)["step"]) if ckpt.is_file() else 0
        if done < tcfg.steps:
            print(f"no checkpoint found: training the {prof.name} profile briefly ({tcfg.steps} steps"
                  + (f", resuming at {done}" if done else "") + f") in {out / 'train'}")
            train(tcfg, ModelConfig.from_profile(prof), resume=done > 0, log=lambda *a: None)
        source = f"a brief {prof.name}-profile run made by the demo ({tcfg.steps} steps)"
    elif not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} ({source}): no such checkpoint")
    model = load_model(ckpt, map_location=prof.device)
    print(f"network: {ckpt} ({source})")
    return ckpt, source, model, trained_here


def _score_blocks(ev: dict, steps: int) -> list[str]:
    """Report: headline numbers, the score table and the PCK curves."""
    import matplotlib.pyplot as plt

    from . import report

    g = lambda k: ev.get(k, float("nan"))  # noqa: E731
    head = {"3D AUC 20–50 mm": g("auc_20_50"), "  … after Eq. 13": g("auc_20_50_refined"),
            "MPJPE (mm)": g("mpjpe_mm"), "PA-MPJPE (mm)": g("pa_mpjpe_mm"),
            "2D error (px)": g("mean_px"), "mask IoU": g("mask_iou")}
    if steps:
        head.update({"MPJPE after Eq. 13": g("mpjpe_mm_refined"),
                     "s / image (Eq. 13)": g("refine_seconds_per_image")})
    blocks = ["<h2>Headline numbers</h2>", report.numbers_html(head)]
    cols = {"what": "", "auc_20_50": "AUC 20–50 mm", "auc_0_50": "AUC 0–50 mm",
            "mean_mm": "mean (mm, scale-aligned)", "mpjpe_mm": "MPJPE (mm)", "pa_mpjpe_mm": "PA-MPJPE (mm)",
            "mean_px": "2D (px)", "mask_iou": "mask IoU", "mesh_f5": "mesh F@5 mm",
            "mesh_f15": "mesh F@15 mm"}
    rows = [{"what": "network", **{k: g(k) for k in cols if k != "what"}}]
    if steps:
        rows.append({"what": "+ Eq. 13 refinement", **{k: g(k + "_refined") for k in cols if k != "what"}})
    blocks += ["<h2>Scores</h2>", report.table_html(rows, cols)]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(ev["thresholds_mm"], ev["pck"], label=f"network (AUC {ev['auc_20_50']:.3f})")
    if steps:
        ax.plot(ev["thresholds_mm"], ev["pck_refined"], label=f"+ Eq. 13 (AUC {ev['auc_20_50_refined']:.3f})")
    ax.set(xlabel="threshold (mm)", ylabel="3D PCK", ylim=(0, 1), title="3D PCK, root + bone-scale aligned")
    ax.grid(alpha=0.3)
    ax.legend()
    return blocks + [report.figure_html(fig, alt="PCK curves")]


def _ablation_blocks(cfg: DemoConfig, profile_name: str, summary: dict) -> list[str]:
    """Report: the ablation table and plot, when an ablation.json is given or found."""
    from . import report

    abl_path = _find_ablation(cfg, profile_name)
    blocks = ["<h2>Ablations (Fig. 5 d–e)</h2>"]
    if abl_path is None or not abl_path.is_file():
        return blocks + ["<p class='note'>No ablation found. Run <code>python -m handlib ablate --out "
                         "runs/ablate</code> (a network per variant) and run the demo again.</p>"]
    from .ablate import KEYS, load_ablation, plot_pck

    abl = load_ablation(abl_path)
    acols = {"description": "variant", "auc_20_50": "auc_20_50", "auc_20_50_std": "± std over seeds",
             "delta_auc": "ΔAUC vs full (paired)", "verdict": "verdict",
             **{k: k for k in KEYS if k != "auc_20_50"}}  # ablate --seeds N; older files leave blanks
    summary["ablation"] = str(abl_path)
    return blocks + [f"<p class='note'>{abl_path} — profile {abl['profile']}, {abl['eval_set']}</p>",
                     report.table_html(list(abl["variants"].values()), acols),
                     report.figure_html(plot_pck(abl), alt="ablation PCK")]


def _example_blocks(model, test, k: int, meshes: int, rcfg, device) -> list[str]:
    """Report: crops with ground truth, network and refined keypoints and silhouettes; meshes."""
    import matplotlib.pyplot as plt
    import torch

    from . import report, viz
    from .data.batch import collate, denormalize_image
    from .refine import refine

    steps = rcfg.iterations
    batch = collate([test[i] for i in range(k)])
    batch = {key: v.to(device) for key, v in batch.items()}
    with torch.no_grad():
        o = model(batch["image"], batch["K"], render=True)
    r = refine(model, batch["image"], batch["K"], out=o, cfg=rcfg) if steps else None
    imgs = denormalize_image(batch["image"]).cpu()
    fig, axes = plt.subplots(k, 3, figsize=(7.5, 2.6 * k), squeeze=False)
    for i in range(k):
        viz.overlay_2d(imgs[i], batch["kp2d"][i].cpu(), ax=axes[i, 0],
                       title="ground truth" if i == 0 else None)
        viz.overlay_2d(imgs[i], o.j2d[i].cpu(), o.silhouette[i].cpu(), ax=axes[i, 1],
                       title="network" if i == 0 else None)
        if r is not None:
            with torch.no_grad():
                sil = model.renderer(r.verts[i:i + 1], batch["K"][i:i + 1])[0]
            viz.overlay_2d(imgs[i], r.j2d[i].cpu(), sil.cpu(), ax=axes[i, 2],
                           title=f"+ Eq. 13 ({steps} steps)" if i == 0 else None)
        else:
            axes[i, 2].set_axis_off()
    fig.tight_layout()
    blocks = ["<h2>Examples</h2><p class='note'>Left hands are shown mirrored, as the network sees them; "
              "the cyan overlay is the rendered silhouette.</p>", report.figure_html(fig, alt="examples")]
    final = r if r is not None else o
    for i in range(min(meshes, k)):
        f = viz.mesh_figure(final.verts[i].cpu(), model.hand_model.faces, final.joints[i].cpu(),
                            title=f"example {i}: predicted mesh (camera space, metres)")
        blocks.append(report.plotly_html(f, first=i == 0))
    return blocks


def _training_blocks(run: Path) -> list[str]:
    """Report: the loss curves of the demo's own brief training run (``run``/metrics.csv)."""
    import matplotlib.pyplot as plt

    from . import report

    if not (run / "metrics.csv").is_file():
        return []
    with open(run / "metrics.csv", newline="") as fh:
        logs = [row for row in csv.DictReader(fh)]
    terms = [t for t in ("total", "heatmap", "refiner", "projection", "articulation") if logs[-1].get(t)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for t in terms:
        pts = [(int(row["step"]), float(row[t])) for row in logs if row.get(t)]
        ax.plot(*zip(*pts), label=t)
    ax.set(xlabel="step", ylabel="weighted loss", yscale="log", title="training losses (this demo's run)")
    ax.legend(fontsize=8)
    return ["<h2>Training</h2>", report.figure_html(fig, alt="losses")]


LIMITS = ("<h2>Limits</h2><p>Everything here is synthetic: OpenHand renders over photo and procedural "
          "backgrounds, scored on a held-out synthetic split. Brief CPU training is far from the paper's "
          "converged GPU numbers; the gpu profile is the paper's setting. Real-image numbers need the real "
          "datasets (see README).</p>")


def run_demo(out="runs/demo", cfg: DemoConfig | None = None, progress: bool = True) -> dict:
    """Steps 1–5 above, each timed (``[k/5] name: done in N.N s``; ``progress``: bars on a terminal).
    Returns the summary (also ``out/summary.json``): budget, checkpoint, scores, stage times, paths."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from . import report
    from .config import profile
    from .data import CropTransform, SyntheticFolder
    from .data.synthetic import SyntheticConfig, write_split
    from .evaluate import evaluate_model, write_report
    from .progress import stage
    from .refine import RefineConfig

    prof = profile()
    cfg = cfg or DemoConfig.from_profile(prof.name)
    out = Path(out)
    steps = prof.refine_steps if cfg.refine_steps is None else cfg.refine_steps
    rcfg = (RefineConfig.fast if cfg.fast_refine else RefineConfig)(iterations=steps)
    budget = cfg.budget(prof.name, steps)
    print(budget)
    t_start = time.perf_counter()
    summary, stages = {"profile": prof.name, "budget": budget}, {}
    with stage("[1/5] hand model") as t:
        summary["hand_model"] = hand_model_demo(out, cfg.build)
    stages["hand_model"] = t["seconds"]
    with stage("[2/5] network") as t:
        ckpt, source, model, trained_here = _network(cfg, out, prof, progress)
    stages["network"] = t["seconds"]
    S = model.cfg.image_size
    summary.update(checkpoint=str(ckpt), checkpoint_source=source)
    with stage(f"[3/5] test set ({cfg.data_num} synthetic samples)") as t:  # now that the crop size is known
        render = SyntheticConfig(image_size=prof.render_size_for(S))  # the renders training cropped
        write_split(out / "data", cfg.seed, cfg.data_num, "test", render, progress=False, log=lambda *a: None)
        test = SyntheticFolder(out / "data", "test", transform=CropTransform(model.cfg.crop_config()))
    stages["test_set"] = t["seconds"]
    n = min(cfg.eval_num, len(test))
    with stage(f"[4/5] scores ({n} crops, network" + (f" and Eq. 13, {steps} steps)" if steps else ")")) as t:
        ev = evaluate_model(model, torch.utils.data.Subset(test, range(n)), batch_size=16, device=prof.device,
                            refine=rcfg if steps else None, progress=progress)
        write_report(ev, out / "eval.json")
    stages["scores"] = t["seconds"]
    summary["eval"] = {k: v for k, v in ev.items() if not isinstance(v, list)}
    with stage("[5/5] report") as t:
        blocks = [f"<p class='note'>profile <b>{prof.name}</b> · network: {ckpt} ({source}) · test set: "
                  f"{n} synthetic crops of {S} px (seed {cfg.seed}, test split, never seen in training) · "
                  f"{budget}</p>"]
        blocks += _score_blocks(ev, steps) + _ablation_blocks(cfg, prof.name, summary)
        blocks += _example_blocks(model, test, min(cfg.examples, n), cfg.meshes, rcfg, prof.device)
        blocks += (_training_blocks(out / "train") if trained_here else []) + [LIMITS]
        html_path = report.write_html(out / "report.html", "handlib demo report", blocks)
    stages["report"] = t["seconds"]
    summary.update(report=str(html_path), seconds=round(time.perf_counter() - t_start, 1),
                   stage_seconds={k: round(v, 1) for k, v in stages.items()})
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"test set: {n} synthetic crops ({S} px). 3D AUC 20–50 mm {ev['auc_20_50']:.3f}"
          + (f" → {ev['auc_20_50_refined']:.3f} after Eq. 13" if steps else "")
          + f"; MPJPE {ev['mpjpe_mm']:.1f} mm"
          + (f" → {ev['mpjpe_mm_refined']:.1f}" if steps else "")
          + f"; PA-MPJPE {ev['pa_mpjpe_mm']:.1f} mm; 2D {ev['mean_px']:.1f} px")
    print(f"wrote {html_path} ({summary['seconds']:.0f} s)")
    return summary
