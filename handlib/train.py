"""Training DHPE (Sec. 3.4): staged schedule, AdamW, logs, checkpoints, bit-exact resume, DDP.

``python -m handlib train --out DIR [--resume] [--steps N]`` (sizes from ``$HANDLIB_PROFILE``) runs
:func:`train`. The schedule follows the paper's order — the 2D evidence estimator first, then
everything jointly:

* **stage "evidence"** (the first ``evidence_fraction`` of the steps): f_E2D's keypoints alone,
  Eq. 3 (heat maps) and Eq. 6's t = 0 term (the soft-argmax of the heat maps). Eq. 2 waits for the
  joint stage: until the regressor reads F(x), nothing but Eq. 2 would train the layers above the
  head's input, and F would collapse to a constant (Eq. 2's trivial minimum; ours);
* **stage "joint"**: all terms of Eq. 7 — Eqs. 2, 3, 6, the mesh-joint reprojection, 8, 9 with
  Eq. 12's per-sample switch, and the Laplacian.

Reproducibility: every random choice is a function of ``(seed, step)`` — the batch indices of step
k (:class:`StepSampler`), the crop jitter of each drawn sample (:class:`DrawDataset`) — and the
checkpoint holds the model, optimiser, scheduler and RNG states, so ``--resume`` after an
interruption continues the same loss curve bit for bit (same machine, same threads).
A step whose loss or gradient is not finite is skipped (no update), counted and logged.
Under ``torchrun --nproc_per_node N`` the same script trains with DistributedDataParallel
(gloo on CPU, nccl on GPU); each rank takes 1/N of every global batch.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import losses as L
from .augment import AugmentBuffer, AugmentConfig, augment_seeds, mix_into
from .config import Profile, profile, seed_everything
from .data import CropConfig, DataError, MissingData, SyntheticFolder, SyntheticHands, crop_to_hand
from .data.batch import collate
from .heatmaps import gaussian_heatmaps, image_to_heatmap
from .lbs import blend_shapes
from .model import DHPE, DHPEOutput, ModelConfig, mask_image

__all__ = ["TrainConfig", "StepSampler", "DrawDataset", "compute_terms", "train", "save_checkpoint",
           "load_checkpoint", "load_model", "export_checkpoint", "CHECKPOINT_FORMAT", "SHIPPED_CHECKPOINT"]

CHECKPOINT_FORMAT = "handlib-dhpe/1"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. :meth:`from_profile` takes steps, batch and data size from a profile."""

    out: str = "runs/train"
    steps: int = 4000  # optimiser steps in all (profile.train_steps)
    batch_size: int = 32  # global batch (split across DDP ranks)
    lr: float = 1e-3  # AdamW; paper: Adam, rate not given for this network (ours: from-scratch BN nets)
    weight_decay: float = 1e-4
    warmup: int = 100  # linear warm-up steps, then cosine decay to lr_final × lr (ours)
    lr_final: float = 0.05
    grad_clip: float = 10.0  # global gradient-norm clip (ours; guards the first joint steps)
    evidence_fraction: float = 0.25  # stage 1 (f_E2D only) share of the steps (paper: "first"; ours)
    feature_fraction: float = 0.5  # share of each batch that also gets the Eq. 2 masked pass (budget)
    seed: int = 0
    data: str | None = None  # a folder written by data_scripts/make_synthetic.py; None: on the fly
    num_samples: int = 20000  # synthetic training samples (on the fly), profile.num_samples
    render_size: int = 256  # synthetic render side before cropping (2 × crop: native resolution)
    crop_jitter: tuple = (0.1, 0.05, 30.0)  # scale, shift (× side), rotation (deg) augmentation (ours)
    workers: int = 1  # DataLoader worker processes
    log_every: int = 10
    progress: bool = True  # tqdm progress bar (False in notebooks and tests)
    ckpt_every: int = 250
    stop_after: int | None = None  # stop (and checkpoint) after this many steps of *this* run
    eval_samples: int = 500  # held-out "val" split scored at the end (0: skip)
    weights: L.LossWeights = L.LossWeights()
    augment: AugmentConfig = AugmentConfig()  # Sec. 3.5 (enabled=False: the ablation without it)

    @classmethod
    def from_profile(cls, prof: Profile | None = None, **overrides) -> TrainConfig:
        prof = prof or profile()
        cfg = cls(steps=prof.train_steps, batch_size=prof.batch_size, num_samples=prof.num_samples,
                  render_size=2 * prof.image_size, eval_samples=min(500, prof.num_samples),
                  warmup=min(100, prof.train_steps // 10))
        return dataclasses.replace(cfg, **overrides)

    @property
    def evidence_steps(self) -> int:
        return int(round(self.evidence_fraction * self.steps))

    def augment_start(self, num_samples: int) -> int:
        """First step of Sec. 3.5's augmentation: the joint stage plus ``augment.warmup_epochs`` epochs
        of ``num_samples`` crops (a step past the end when it is off). That step makes the first
        samples from its predictions; the steps after it mix them in."""
        if not self.augment.enabled:
            return self.steps + 1
        return self.evidence_steps + int(round(self.augment.warmup_epochs * num_samples / self.batch_size))


# ----------------------------------------------------------------------------------------------
# Data: a pure function of (seed, step)
# ----------------------------------------------------------------------------------------------
class StepSampler(torch.utils.data.Sampler):
    """Batch sampler: step k's global batch is a slice of the permutation of epoch ⌊k·B/N⌋ seeded by
    (seed, epoch); each item is ``(index, draw)`` with draw = k·B + position (a unique id seeding
    that draw's augmentation). ``rank``/``world`` take every world-th item of the global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0,
                 world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of ranks {world}")
        self.n, self.B, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def batch(self, step: int) -> list[tuple[int, int]]:
        items = []
        for pos in range(self.B):
            draw = step * self.B + pos
            epoch, k = divmod(draw, self.n)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=gen)
            items.append((int(perm[k]), draw))
        return items[self.rank::self.world]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class DrawDataset(torch.utils.data.Dataset):
    """Wraps a sample reader: item ``(index, draw)`` → the cropped sample, jittered with an RNG seeded
    by (seed, draw), so a draw is the same in any process and after any resume."""

    def __init__(self, base, crop: CropConfig, seed: int):
        self.base, self.crop, self.seed = base, crop, seed

    def __len__(self) -> int:
        return len(self.base)

    def _crop(self, sample: dict, draw: int) -> dict:
        return crop_to_hand(sample, self.crop, np.random.default_rng((self.seed, draw)))

    def __getitem__(self, item):
        index, draw = item
        return self._crop(self.base[index], draw)

    def __getitems__(self, items):
        if hasattr(self.base, "__getitems__"):  # SyntheticHands renders a batch at once
            samples = self.base.__getitems__([i for i, _ in items])
        else:
            samples = [self.base[i] for i, _ in items]
        return [self._crop(s, d) for s, (_, d) in zip(samples, items)]


def build_data(cfg: TrainConfig, mcfg: ModelConfig, split: str = "train", num: int | None = None,
               jitter: bool = True):
    """The reader for ``split``: the folder ``cfg.data`` or on-the-fly :class:`SyntheticHands`."""
    if cfg.data:
        base = SyntheticFolder(cfg.data, split)
        if num is not None:
            base = torch.utils.data.Subset(base, range(min(num, len(base))))
    else:
        base = SyntheticHands(seed=cfg.seed, num=num or cfg.num_samples, image_size=cfg.render_size,
                              split=split)
    s, sh, rot = cfg.crop_jitter if jitter else (0.0, 0.0, 0.0)
    return DrawDataset(base, CropConfig(size=mcfg.image_size, scale_jitter=s, shift_jitter=sh, rotation=rot),
                       cfg.seed)


# ----------------------------------------------------------------------------------------------
# Losses of one step
# ----------------------------------------------------------------------------------------------
def compute_terms(model: DHPE, out: DHPEOutput, batch: dict, weights: L.LossWeights, stage: str,
                  masked_features: torch.Tensor | None, lap: torch.Tensor | None) -> tuple[dict, dict]:
    """The loss terms of Eq. 7 for one batch.

    Args:
        model: the (unwrapped) DHPE. out: its output (``reg`` None in stage "evidence").
        batch: :func:`handlib.data.batch.collate` output on the model's device.
        weights: :class:`~handlib.losses.LossWeights`. stage: "evidence" or "joint".
        masked_features: (b, C) F(x ⊙ m) of the first b samples, or None. lap: sparse Laplacian.
    Returns:
        terms: name → () tensor. extra: name → float diagnostics (Eq. 12's fraction "shape_on").
    """
    S, hm = model.cfg.image_size, model.cfg.heatmap
    valid, kp2d = batch["valid"], batch["kp2d"]
    ev = out.evidence
    size = ev.heatmaps[-1].shape[-1]
    target = gaussian_heatmaps(image_to_heatmap(kp2d, S / size), (size, size), hm.sigma, valid)
    terms = {"heatmap": L.heatmap_loss(ev.heatmaps, target, valid, weights.heatmap_stages)}  # Eq. 3
    if masked_features is not None:  # Eq. 2
        terms["feature"] = L.feature_consistency_loss(ev.features[: len(masked_features)], masked_features,
                                                      weights.feature_reduction)
    extra: dict = {}
    norm = S if weights.refiner_normalize else None
    # Eq. 6 over t = 0..T: t = 0 is the soft-argmax of the heat maps itself (integral regression,
    # Sun et al. 2018; ours). Besides supervising the regressor's input, it gives the CPM head a
    # coordinate gradient from the first step, so it cannot settle on all-zero maps, the trivial
    # minimum of Eq. 3's MSE (the heat-map term alone sat there for 150+ steps in a cpu run).
    if stage == "evidence":
        terms["refiner"] = L.refiner_loss([ev.j2d], kp2d, valid, norm)
        return terms, extra
    reg = out.reg
    terms["refiner"] = L.refiner_loss(reg.j2d, kp2d, valid, norm)  # Eq. 6
    terms["projection"] = L.refiner_loss(reg.j2d_proj, kp2d, valid, norm)  # ours, see LossWeights
    terms["articulation"] = sum(L.articulation_loss(j, batch["kp3d"], batch["K"], valid)  # Eq. 8
                                for j in reg.joints)
    w = L.shape_loss_weight(out.j2d, kp2d, valid, weights.shape_threshold_px(S),
                            weights.constant_shape_weight) * batch["has_mask"].to(kp2d.dtype)  # Eq. 12
    extra["shape_on"] = float(w.mean())
    # Eq. 9. Only samples that Eq. 12 switches on are rendered (the others add exactly 0 to the loss
    # and its gradient); the sum is still divided by the whole batch, as silhouette_loss does.
    on = torch.nonzero(w > 0).squeeze(1)
    if out.silhouette is not None:
        terms["silhouette"] = L.silhouette_loss(out.silhouette, batch["mask"], w, weights.silhouette_kind)
    elif len(on):
        sil = model.renderer(out.verts[on], batch["K"][on])
        part = L.silhouette_loss(sil, batch["mask"][on], w[on], weights.silhouette_kind)
        terms["silhouette"] = part * (len(on) / len(w))
    else:
        terms["silhouette"] = out.verts.sum() * 0.0
    hmodel = model.hand_model
    shaped = hmodel.v_template + blend_shapes(out.h[:, 49:59], hmodel.shapedirs)  # (B, V, 3) rest pose
    terms["laplacian"] = L.laplacian_loss(shaped, hmodel.faces, hmodel.v_template, lap)
    terms["shape_prior"] = L.shape_prior_loss(out.h[:, 49:59])
    return terms, extra


# ----------------------------------------------------------------------------------------------
# Checkpoints (weights_only-safe: tensors and plain Python values only)
# ----------------------------------------------------------------------------------------------
def save_checkpoint(path, model: DHPE, optimizer, scheduler, step: int, cfg: TrainConfig,
                    skipped: int, augment_buffer: AugmentBuffer | None = None) -> None:
    """Write ``path`` atomically: model, optimiser, scheduler and RNG states, step, configs, and the
    Sec. 3.5 samples still waiting to be mixed in (so a resumed run continues bit for bit)."""
    state = {"format": CHECKPOINT_FORMAT, "step": step, "skipped": skipped,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
             "model_config": dataclasses.asdict(model.cfg), "train_config": dataclasses.asdict(cfg)}
    if augment_buffer is not None:
        state["augment_buffer"] = augment_buffer.state_dict()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no code runs); checks its format.

    Raises:
        MissingData (a FileNotFoundError): no such file. DataError (a ValueError): not a readable
        PyTorch file (empty, truncated, corrupt, or holding objects a weights-only load refuses), or
        not a handlib DHPE checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingData("no checkpoint" + (" (a folder)" if path.is_dir() else ""), path)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning is not news here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # never retried without weights_only: that would run its code
        if "Unsupported global" in str(err):
            raise DataError("holds Python objects besides tensors and plain values, which a weights-only "
                            "load refuses (handlib checkpoints hold none)", path) from None
        raise DataError("not a readable PyTorch checkpoint (corrupt)", path) from None
    except Exception as err:  # noqa: BLE001  damaged files fail in many ways (RuntimeError, EOFError, KeyError…)
        raise DataError(f"not a readable PyTorch checkpoint (empty, truncated or corrupt: "
                        f"{type(err).__name__})", path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"not a handlib DHPE checkpoint (format {CHECKPOINT_FORMAT!r} expected)", path)
    return state


SHIPPED_CHECKPOINT = Path(__file__).parent / "assets" / "dhpe_cpu.pt"  # see its .json for provenance


def export_checkpoint(src, dest, **meta) -> Path:
    """A weights-only copy of a training checkpoint for distribution (``handlib/assets/dhpe_cpu.pt``).

    Keeps the model's weights, its configs and the step; drops the optimiser, scheduler and RNG
    states (two thirds of the file), so it loads with :func:`load_model` but cannot ``--resume``.
    ``meta`` (provenance: command, seed, commit, scores; plain values) is stored in it and written
    beside it as ``dest`` with suffix ``.json``, together with the file's SHA-256.
    """
    import hashlib
    import json

    state = load_checkpoint(src)
    small = {k: state[k] for k in ("format", "step", "skipped", "model", "model_config", "train_config")}
    small["meta"] = meta
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    torch.save(small, tmp)
    os.replace(tmp, dest)
    info = {"file": dest.name, "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
            "bytes": dest.stat().st_size, "step": int(state["step"]), **meta}
    dest.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return dest


def load_model(path, map_location="cpu") -> DHPE:
    """A DHPE with the architecture and weights of a checkpoint, in eval mode.

    Raises:
        the errors of :func:`load_checkpoint`, and DataError when its config or weights do not
        describe a DHPE this handlib builds.
    """
    state = load_checkpoint(path, map_location)
    try:
        model = DHPE(ModelConfig.from_dict(state["model_config"]))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"a handlib checkpoint whose model config this version cannot build "
                        f"({type(err).__name__}: {err})", path) from None
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:  # missing "model", or weights of another shape
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
        first = lines[-1] if lines[0].startswith("Error(s) in loading") else lines[0]  # skip torch's header
        raise DataError(f"weights do not fit the model its config describes ({first[:160]})", path) from None
    return model.eval()


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


FIELDS = ("step", "stage", "lr", "total", *L.TERMS, "shape_on", "augmented", "skipped", "seconds",
          "images_per_s")


def train(cfg: TrainConfig | None = None, mcfg: ModelConfig | None = None, resume: bool = False,
          log=print) -> dict:
    """Train DHPE; write ``cfg.out``/checkpoint.pt, metrics.csv, tb/ and (at the end) eval.json.

    Returns:
        dict with step, skipped, checkpoint and metrics paths, seconds, and the final evaluation.
    """
    cfg = cfg or TrainConfig.from_profile()
    rank, world = _distributed()
    prof = profile()
    device = prof.torch_device()
    if world > 1 and device.type == "cuda":  # one GPU per rank
        device = torch.device("cuda", rank % torch.cuda.device_count())
    out = Path(cfg.out)
    ckpt_path, csv_path = out / "checkpoint.pt", out / "metrics.csv"
    state = load_checkpoint(ckpt_path) if resume else None
    if state is not None:
        mcfg = ModelConfig.from_dict(state["model_config"])
    mcfg = mcfg or ModelConfig.from_profile(prof)
    seed_everything(cfg.seed)
    model = DHPE(mcfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    start, skipped = 0, 0
    buffer = AugmentBuffer(cfg.augment.buffer_size)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, skipped = int(state["step"]), int(state["skipped"])
        if "augment_buffer" in state:
            buffer.load_state_dict(state["augment_buffer"])
            buffer.data = None if buffer.data is None else _to(buffer.data, device)
        log(f"resumed from {ckpt_path} at step {start}")
    net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    stop = cfg.steps if cfg.stop_after is None else min(cfg.steps, start + cfg.stop_after)
    data = build_data(cfg, mcfg)
    aug_start = cfg.augment_start(len(data))
    n_mix, n_seeds = cfg.augment.per_step(cfg.batch_size // world)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=StepSampler(len(data), cfg.batch_size, cfg.seed, start, stop, rank, world),
        collate_fn=collate, num_workers=cfg.workers, persistent_workers=False,
        pin_memory=device.type == "cuda")
    lap = L.laplacian_matrix(model.hand_model.faces, model.hand_model.num_verts).to(device)
    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume and csv_path.is_file():  # drop rows logged after the checkpoint (they are redone)
            with open(csv_path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start]
        with open(csv_path, "w", newline="") as fh:
            w = csv.DictWriter(fh, FIELDS)
            w.writeheader()
            w.writerows(rows)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start + 1)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop - start, initial=0, desc="train", disable=rank != 0 or not cfg.progress,
                   mininterval=2.0)
    except ImportError:  # pragma: no cover
        bar = None
    t0, t_log, n_img = time.perf_counter(), time.perf_counter(), 0
    bn_stats = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for b in (m.running_mean, m.running_var) if b is not None]
    net.train()
    step = start
    for batch in loader:
        stage = "evidence" if step < cfg.evidence_steps else "joint"
        batch = _to(batch, device)
        augmenting = step >= aug_start and n_mix > 0
        # Sec. 3.5: samples made from earlier steps' predictions replace the batch's last ones
        popped = buffer.pop(n_mix) if augmenting else None
        batch = mix_into(batch, popped)
        n_real = len(batch["image"]) - (0 if popped is None else len(popped["image"]))
        x = batch["image"]
        # Eq. 2 only in the joint stage: before it nothing else trains the layers above the heat-map
        # head's input, and F collapses to the constant that satisfies Eq. 2 trivially
        nf = int(math.ceil(cfg.feature_fraction * len(x))) if cfg.weights.feature and stage == "joint" else 0
        xm = mask_image(x[:nf], batch["mask"][:nf]) if nf else None
        # BatchNorm's running statistics change in the forward pass: keep a copy so that a skipped
        # step leaves no trace (a NaN batch would otherwise poison them)
        stats = [b.detach().clone() for b in bn_stats]
        o = net(x, batch["K"], render=False, masked=xm, evidence_only=stage == "evidence")
        terms, extra = compute_terms(model, o, batch, cfg.weights, stage, o.masked_features, lap)
        total, logs = L.total_loss(terms, cfg.weights)
        optimizer.zero_grad(set_to_none=True)
        bad = L.nonfinite_terms(logs)
        if not bad:
            total.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if not torch.isfinite(gnorm):
                bad = ["gradient"]
        if bad:  # never train on a non-finite loss or gradient
            skipped += 1
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, saved in zip(bn_stats, stats):
                    b.copy_(saved)
            log(f"step {step + 1}: non-finite {', '.join(bad)}; skipped ({skipped} so far)")
        else:
            optimizer.step()
        if augmenting and o.reg is not None:  # seeds: this batch's real samples, as predicted
            rng = np.random.default_rng((cfg.seed, step, rank, 3_5))
            k = min(n_seeds, n_real)
            buffer.push(augment_seeds(model.hand_model, x[:k], batch["K"][:k], o.h[:k].detach(), rng,
                                      cfg.augment))
        scheduler.step()
        step += 1
        n_img += len(x) * world
        if bar is not None:
            bar.update(1)
        if rank == 0 and (step % cfg.log_every == 0 or step == stop or bad):
            now = time.perf_counter()
            row = {"step": step, "stage": stage, "lr": optimizer.param_groups[0]["lr"], "skipped": skipped,
                   "seconds": round(now - t0, 3), "images_per_s": round(n_img / max(now - t_log, 1e-9), 2),
                   "augmented": len(x) - n_real, **{k: float(v) for k, v in logs.items()}, **extra}
            t_log, n_img = now, 0
            with open(csv_path, "a", newline="") as fh:
                csv.DictWriter(fh, FIELDS, extrasaction="ignore").writerow(row)
            for k, v in row.items():
                if isinstance(v, float) and k not in ("seconds",):
                    writer.add_scalar(f"train/{k}", v, step)
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == stop):
            save_checkpoint(ckpt_path, model, optimizer, scheduler, step, cfg, skipped, buffer)
    if bar is not None:
        bar.close()
    result = {"step": step, "skipped": skipped, "checkpoint": str(ckpt_path), "metrics": str(csv_path),
              "seconds": round(time.perf_counter() - t0, 1)}
    if world > 1:
        check = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().to(device)
        gathered = [torch.zeros_like(check) for _ in range(world)]
        dist.all_gather(gathered, check)
        if not all(torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError("DDP ranks ended with different parameters")
        result["ranks_in_sync"] = True
        log(f"rank {rank}: parameters identical on all {world} ranks")
    if rank == 0:
        writer.close()
        log(f"wrote {ckpt_path} (step {step}, {skipped} skipped steps)")
        log(f"wrote {csv_path}")
        if step == cfg.steps and cfg.eval_samples:
            from .evaluate import evaluate_model, write_report

            ev = evaluate_model(model.eval(), build_data(cfg, mcfg, "val", cfg.eval_samples, jitter=False),
                                batch_size=cfg.batch_size, device=device)
            result["eval"] = ev
            write_report(ev, out / "eval.json")
            log(f"held-out val ({ev['num_samples']} samples): 3D AUC 20–50 mm {ev['auc_20_50']:.3f}, "
                f"mean joint error {ev['mean_mm']:.1f} mm (root + bone scale aligned), "
                f"2D error {ev['mean_px']:.2f} px; wrote {out / 'eval.json'}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result
