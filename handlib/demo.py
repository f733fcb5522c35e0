"""``make demo``: the whole pipeline on a fresh clone, ending in ``runs/demo/report.html``.

:func:`run_demo` does, in the budget of ``$HANDLIB_PROFILE``:

1. the hand model: OpenHand rebuilt from code (checked byte-identical to the shipped asset), posed,
   pictures and meshes (:func:`hand_model_demo`);
2. a small synthetic *test* set written to ``out/data`` (``data.synthetic.write_split``);
3. a network: ``--checkpoint``, else ``$HANDLIB_CHECKPOINT``, else (outside ``ci``) the checkpoint
   of a full ``cpu`` run at ``runs/cpu/checkpoint.pt`` or the shipped ``handlib/assets/dhpe_cpu.pt``,
   else (in ``ci``) a brief training run in ``out/train`` (reused, or resumed, the next time);
4. scores on the test set with and without Eq. 13's test-time refinement (``out/eval.json``);
5. ``out/report.html``: headline numbers, the PCK curves, the ablation table and plot when an
   ablation has been run (``python -m handlib ablate``; ``--ablation`` or ``runs/ablate*/``),
   example crops with the network's and the refined keypoints and silhouettes, interactive meshes,
   and the training curves of a run made here. The headline numbers are printed too.
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
    eval_num: int = 100  # of them scored (with Eq. 13 on every one)
    train_steps: int = 300  # the brief training run when no checkpoint is found
    examples: int = 4  # crops drawn in the report
    meshes: int = 2  # interactive meshes in the report
    refine_steps: int | None = None  # Eq. 13 iterations (None: the profile's refine_steps)
    seed: int = 0  # the test set's seed (of the "test" split, which training never draws)
    checkpoint: str | None = None  # a checkpoint to use instead of searching/training
    ablation: str | None = None  # an ablation.json to include (None: look in runs/ablate*/)
    build: bool = True  # rebuild OpenHand from code and compare with the shipped asset

    @classmethod
    def from_profile(cls, name: str, **overrides) -> DemoConfig:
        sizes = {"ci": dict(data_num=16, eval_num=16, train_steps=20),
                 "cpu": dict(data_num=200, eval_num=100, train_steps=300),
                 "gpu": dict(data_num=500, eval_num=500, train_steps=3000)}[name]
        return dataclasses.replace(cls(**sizes), **overrides)


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
        print(f"built OpenHand in {summary['rebuild_seconds']} s; identical to the shipped asset: "
              f"{summary['rebuild_identical']}")
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


def run_demo(out="runs/demo", cfg: DemoConfig | None = None) -> dict:
    """Steps 1–5 above. Returns the summary (also ``out/summary.json``): checkpoint, scores, paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from . import report, viz
    from .config import profile
    from .data import CropConfig, CropTransform, SyntheticFolder
    from .data.batch import collate, denormalize_image
    from .data.synthetic import SyntheticConfig, write_split
    from .evaluate import evaluate_model, write_report
    from .model import ModelConfig
    from .refine import RefineConfig, refine
    from .train import TrainConfig, load_checkpoint, load_model, train

    prof = profile()
    cfg = cfg or DemoConfig.from_profile(prof.name)
    out = Path(out)
    t_start = time.perf_counter()
    summary = {"profile": prof.name, "hand_model": hand_model_demo(out, cfg.build)}

    # 3. a network
    ckpt, source = find_checkpoint(cfg, out, prof.name)
    trained_here = ckpt is None
    if trained_here:
        ckpt = out / "train" / "checkpoint.pt"
        tcfg = TrainConfig.from_profile(out=str(out / "train"), steps=cfg.train_steps, eval_samples=0,
                                        warmup=min(100, max(1, cfg.train_steps // 10)))
        done = int(load_checkpoint(ckpt)["step"]) if ckpt.is_file() else 0
        if done < tcfg.steps:
            print(f"no checkpoint found: training the {prof.name} profile briefly ({tcfg.steps} steps"
                  + (f", resuming at {done}" if done else "") + f") in {out / 'train'}")
            train(tcfg, ModelConfig.from_profile(prof), resume=done > 0, log=lambda *a: None)
        source = f"a brief {prof.name}-profile run made by the demo ({tcfg.steps} steps)"
    elif not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} ({source}): no such checkpoint")
    model = load_model(ckpt, map_location=prof.device)
    S = model.cfg.image_size
    print(f"network: {ckpt} ({source})")
    summary.update(checkpoint=str(ckpt), checkpoint_source=source)

    # 2. the test set (written now that the crop size is known)
    data_dir = out / "data"
    write_split(data_dir, cfg.seed, cfg.data_num, "test", SyntheticConfig(image_size=2 * S), progress=False,
                log=lambda *a: None)
    test = SyntheticFolder(data_dir, "test", transform=CropTransform(CropConfig(size=S)))
    n = min(cfg.eval_num, len(test))
    subset = torch.utils.data.Subset(test, range(n))

    # 4. scores
    steps = prof.refine_steps if cfg.refine_steps is None else cfg.refine_steps
    rcfg = RefineConfig(iterations=steps)
    ev = evaluate_model(model, subset, batch_size=16, device=prof.device, refine=rcfg if steps else None)
    write_report(ev, out / "eval.json")
    summary["eval"] = {k: v for k, v in ev.items() if not isinstance(v, list)}

    # 5. the report
    blocks = [f"<p class='note'>profile <b>{prof.name}</b> · network: {ckpt} ({source}) · test set: "
              f"{n} synthetic crops of {S} px (seed {cfg.seed}, test split, never seen in training) · "
              f"Eq. 13: {steps} iterations</p>"]
    g = lambda k: ev.get(k, float("nan"))  # noqa: E731
    head = {"3D AUC 20–50 mm": g("auc_20_50"), "  … after Eq. 13": g("auc_20_50_refined"),
            "MPJPE (mm)": g("mpjpe_mm"), "PA-MPJPE (mm)": g("pa_mpjpe_mm"),
            "2D error (px)": g("mean_px"), "mask IoU": g("mask_iou")}
    if steps:
        head.update({"MPJPE after Eq. 13": g("mpjpe_mm_refined"),
                     "s / image (Eq. 13)": g("refine_seconds_per_image")})
    blocks += ["<h2>Headline numbers</h2>", report.numbers_html(head)]
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
    blocks.append(report.figure_html(fig, alt="PCK curves"))

    abl_path = _find_ablation(cfg, prof.name)
    blocks.append("<h2>Ablations (Fig. 5 d–e)</h2>")
    if abl_path is not None and abl_path.is_file():
        from .ablate import KEYS, plot_pck

        abl = json.loads(abl_path.read_text())
        acols = {"description": "variant", **{k: k for k in KEYS}}
        blocks += [f"<p class='note'>{abl_path} — profile {abl['profile']}, {abl['eval_set']}</p>",
                   report.table_html(list(abl["variants"].values()), acols),
                   report.figure_html(plot_pck(abl), alt="ablation PCK")]
        summary["ablation"] = str(abl_path)
    else:
        blocks.append("<p class='note'>No ablation found. Run <code>python -m handlib ablate --out "
                      "runs/ablate</code> (a network per variant) and run the demo again.</p>")

    # examples: crops with ground truth, network and refined keypoints and silhouettes
    k = min(cfg.examples, n)
    batch = collate([test[i] for i in range(k)])
    batch = {key: v.to(prof.device) for key, v in batch.items()}
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
    blocks += ["<h2>Examples</h2><p class='note'>Left hands are shown mirrored, as the network sees them; "
               "the cyan overlay is the rendered silhouette.</p>", report.figure_html(fig, alt="examples")]
    final = r if r is not None else o
    for i in range(min(cfg.meshes, k)):
        f = viz.mesh_figure(final.verts[i].cpu(), model.hand_model.faces, final.joints[i].cpu(),
                            title=f"example {i}: predicted mesh (camera space, metres)")
        blocks.append(report.plotly_html(f, first=i == 0))

    if trained_here and (out / "train" / "metrics.csv").is_file():
        with open(out / "train" / "metrics.csv", newline="") as fh:
            logs = [row for row in csv.DictReader(fh)]
        terms = [t for t in ("total", "heatmap", "refiner", "projection", "articulation") if logs[-1].get(t)]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for t in terms:
            pts = [(int(row["step"]), float(row[t])) for row in logs if row.get(t)]
            ax.plot(*zip(*pts), label=t)
        ax.set(xlabel="step", ylabel="weighted loss", yscale="log", title="training losses (this demo's run)")
        ax.legend(fontsize=8)
        blocks += ["<h2>Training</h2>", report.figure_html(fig, alt="losses")]
    blocks.append("<h2>Limits</h2><p>Everything here is synthetic: OpenHand renders over photo and "
                  "procedural backgrounds, scored on a held-out synthetic split. Brief CPU training is far "
                  "from the paper's converged GPU numbers; the gpu profile is the paper's setting. "
                  "Real-image numbers need the real datasets (see README).</p>")
    html_path = report.write_html(out / "report.html", "handlib demo report", blocks)
    summary.update(report=str(html_path), seconds=round(time.perf_counter() - t_start, 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"test set: {n} synthetic crops ({S} px). 3D AUC 20–50 mm {ev['auc_20_50']:.3f}"
          + (f" → {ev['auc_20_50_refined']:.3f} after Eq. 13" if steps else "")
          + f"; MPJPE {ev['mpjpe_mm']:.1f} mm"
          + (f" → {ev['mpjpe_mm_refined']:.1f}" if steps else "")
          + f"; PA-MPJPE {ev['pa_mpjpe_mm']:.1f} mm; 2D {ev['mean_px']:.1f} px")
    print(f"wrote {html_path} ({summary['seconds']:.0f} s)")
    return summary
