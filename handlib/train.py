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
from .backbone import PRETRAINED
from .config import Profile, profile, seed_everything
from .data import CropConfig, DataError, MissingData, SyntheticFolder, SyntheticHands, crop_to_hand
from .data.batch import collate
from .heatmaps import gaussian_heatmaps, image_to_heatmap
from .lbs import blend_shapes
from .model import DHPE, DHPEOutput, ModelConfig, mask_image

__all__ = ["TrainConfig", "StepSampler", "DrawDataset", "compute_terms", "train", "save_checkpoint", "Run",
           "setup", "make_loader", "enter_stage", "train_step", "MetricsLog", "final_eval", "param_groups",
           "set_trainable",
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
    # Which backbone weights each stage (evidence, joint) trains: "all", "top" (the last stage: ResNet
    # layer4; MediaPipe's stride-32 blocks and heads), "heads" (MediaPipe's heads) or "none"
    # (``scope_parameters`` of the backbones). The heat-map head and the regressor always train.
    # Paper: everything trains (ours: "top" for MediaPipe on the cpu profile; "all" costs 1.3× the wall time
    # per step of a real run, README "Training").
    finetune: tuple = ("all", "all")
    # Learning rate × this for a *pretrained* backbone's weights, which also get no weight decay
    # (AdamW's decay pulls them toward 0, not toward what they learnt). Ours: 1.0; in 150-step cpu
    # probes (seed 0, 100 val crops) 1.0 reached AUC 0.434 and 0.1 reached 0.398.
    pretrained_lr: float = 1.0

    @classmethod
    def from_profile(cls, prof: Profile | None = None, **overrides) -> TrainConfig:
        prof = prof or profile()
        cfg = cls(steps=prof.train_steps, batch_size=prof.batch_size, num_samples=prof.num_samples,
                  render_size=prof.synthetic_size, eval_samples=min(500, prof.num_samples),
                  warmup=min(100, prof.train_steps // 10),
                  **(PRETRAINED_RECIPE if prof.backbone in PRETRAINED else {}))
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


# A pretrained backbone (MediaPipe's) trains its stride-32 blocks and heads only (1.3× faster per step
# than all of it), and its landmark head, already trained, needs only a short evidence stage (ours).
# Sec. 3.5's augmentation is off in this recipe: it makes samples from the network's own predictions,
# and within the cpu budget those are still poor. Measured (seed 0, 1200 steps, same first 432 steps):
# val AUC 0.614 → 0.651, an unseen seed's 0.582 → 0.634, real-frame PA-MPJPE 16.2 → 14.9 mm without
# it; the 100-step ablation reversed it on all 3 seeds (README "Training", "Ablations"). The ablation's
# variants keep it on (ablate.variant_configs): it is the paper's, and `no_augmentation` measures it.
PRETRAINED_RECIPE = {"finetune": ("top", "top"), "evidence_fraction": 0.1,
                     "augment": AugmentConfig(enabled=False)}


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
    return DrawDataset(base, mcfg.crop_config(scale_jitter=s, shift_jitter=sh, rotation=rot), cfg.seed)


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
    terms = {}
    if ev.heatmaps:  # Eq. 3 (keypoints="landmarks" has no heat maps: Eq. 6's t = 0 term trains them)
        size = ev.heatmaps[-1].shape[-1]
        target = gaussian_heatmaps(image_to_heatmap(kp2d, S / size), (size, size), hm.sigma, valid)
        terms["heatmap"] = L.heatmap_loss(ev.heatmaps, target, valid, weights.heatmap_stages)
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
    if weights.mesh and "h" in batch:  # ours, see LossWeights.mesh: the true mesh, where the data has it
        with torch.no_grad():
            true = hmodel.from_h(batch["h"])
        has = batch["has_h"].to(out.verts.dtype)
        terms["mesh"] = sum(L.mesh_loss(v, j[:, 0], true.verts, true.joints[:, 0], has)
                            for v, j in zip(reg.verts, reg.joints))
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


def export_checkpoint(src, dest, half: bool = False, **meta) -> Path:
    """A weights-only copy of a training checkpoint for distribution (``handlib/assets/dhpe_cpu.pt``).

    Keeps the model's weights, its configs and the step; drops the optimiser, scheduler and RNG
    states (two thirds of the file), so it loads with :func:`load_model` but cannot ``--resume``.
    ``meta`` (provenance: command, seed, commit, scores; plain values) is stored in it and written
    beside it as ``dest`` with suffix ``.json``, together with the file's SHA-256. ``half`` stores the
    floating-point weights as float16 (half the bytes; :func:`load_model` copies them back into the
    float32 model, ``load_state_dict`` converts), which the json records as ``"weights_dtype"``.
    """
    import hashlib
    import json

    state = load_checkpoint(src)
    small = {k: state[k] for k in ("format", "step", "skipped", "model", "model_config", "train_config")}
    if half:
        small["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    meta = {**meta, "weights_dtype": "float16" if half else "float32"}
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


def param_groups(model: DHPE, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: a pretrained backbone's weights at ``lr × pretrained_lr`` without weight
    decay, everything else (new layers, a from-random backbone) at ``lr`` with ``weight_decay``."""
    pretrained = model.cfg.backbone in PRETRAINED
    bb = {id(p) for p in model.evidence.backbone.parameters()} if pretrained else set()
    rest = [p for p in model.parameters() if id(p) not in bb]
    groups = [{"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if pretrained:
        groups.append({"params": list(model.evidence.backbone.parameters()), "lr": cfg.lr * cfg.pretrained_lr,
                       "weight_decay": 0.0})
    return groups


def set_trainable(model: DHPE, scope: str) -> int:
    """Let only the backbone weights of ``scope`` (``TrainConfig.finetune``) train; returns their count.
    Frozen weights get no gradient (``requires_grad=False``), so AdamW leaves them untouched."""
    backbone = model.evidence.backbone
    keep = {id(p) for p in backbone.scope_parameters(scope)}
    for p in backbone.parameters():
        p.requires_grad_(id(p) in keep)
    return sum(p.numel() for p in backbone.parameters() if id(p) in keep)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


FIELDS = ("step", "stage", "lr", "total", *L.TERMS, "shape_on", "augmented", "skipped", "seconds",
          "images_per_s")


@dataclasses.dataclass
class Run:
    """What one training run holds between steps (built by :func:`setup`)."""

    cfg: TrainConfig
    model: DHPE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    buffer: AugmentBuffer  # Sec. 3.5 samples waiting to be mixed in
    device: torch.device
    rank: int
    world: int
    step: int = 0  # optimiser steps done (resumed runs start at the checkpoint's)
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    lap: torch.Tensor | None = None  # the mesh Laplacian of the shape term
    net: nn.Module | None = None  # the model, or its DDP wrapper
    net_stage: str | None = None  # the stage whose trainable weights ``net`` was set up for
    bn_stats: list = dataclasses.field(default_factory=list)  # BatchNorm running statistics (train_step)

    @property
    def ckpt_path(self) -> Path:
        return Path(self.cfg.out) / "checkpoint.pt"

    @property
    def csv_path(self) -> Path:
        return Path(self.cfg.out) / "metrics.csv"


def setup(cfg: TrainConfig, mcfg: ModelConfig | None, resume: bool, log) -> Run:
    """Model, optimiser (:func:`param_groups`), schedule and, with ``resume``, every state of the
    checkpoint in ``cfg.out`` (its model config wins over ``mcfg``)."""
    rank, world = _distributed()
    prof = profile()
    device = prof.torch_device()
    if world > 1 and device.type == "cuda":  # one GPU per rank
        device = torch.device("cuda", rank % torch.cuda.device_count())
    ckpt_path = Path(cfg.out) / "checkpoint.pt"
    state = load_checkpoint(ckpt_path) if resume else None
    if state is not None:
        mcfg = ModelConfig.from_dict(state["model_config"])
    mcfg = mcfg or ModelConfig.from_profile(prof)
    seed_everything(cfg.seed)
    model = DHPE(mcfg).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = Run(cfg, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg)),
              AugmentBuffer(cfg.augment.buffer_size), device, rank, world)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        run.step, run.skipped = int(state["step"]), int(state["skipped"])
        if "augment_buffer" in state:
            run.buffer.load_state_dict(state["augment_buffer"])
            run.buffer.data = None if run.buffer.data is None else _to(run.buffer.data, device)
        log(f"resumed from {ckpt_path} at step {run.step}")
    run.lap = L.laplacian_matrix(model.hand_model.faces, model.hand_model.num_verts).to(device)
    run.bn_stats = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                    for b in (m.running_mean, m.running_var) if b is not None]
    return run


def make_loader(run: Run, stop: int) -> torch.utils.data.DataLoader:
    """The batches of steps ``run.step .. stop − 1``: each a function of (seed, step) (StepSampler)."""
    cfg = run.cfg
    data = build_data(cfg, run.model.cfg)
    sampler = StepSampler(len(data), cfg.batch_size, cfg.seed, run.step, stop, run.rank, run.world)
    return torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=cfg.workers, persistent_workers=False,
                                       pin_memory=run.device.type == "cuda")


def enter_stage(run: Run, stage: str, log) -> None:
    """Set the stage's trainable backbone weights (``TrainConfig.finetune``); under DDP, wrap anew."""
    if stage == run.net_stage:
        return
    scope = run.cfg.finetune[stage == "joint"]
    n = set_trainable(run.model, scope)
    if stage == "evidence" and not any(p.requires_grad for p in run.model.evidence.parameters()):
        raise ValueError(f"TrainConfig.finetune[0]={scope!r} leaves the evidence stage nothing to train "
                         f"(keypoints={run.model.cfg.keypoints!r}: no heat-map head); fine-tune some "
                         f"backbone weights in it, or skip it with evidence_fraction=0")
    run.net = (nn.parallel.DistributedDataParallel(run.model, find_unused_parameters=True)
               if run.world > 1 else run.model)
    run.net_stage = stage
    log(f"stage {stage} from step {run.step + 1}: {n} backbone weights train (finetune={scope!r})")


def train_step(run: Run, batch: dict, stage: str, augment_from: int, log) -> dict:
    """One optimisation step on ``batch`` (Eq. 7 in the stage's terms), Sec. 3.5's mixing included.

    A step whose loss or gradient is not finite changes nothing (no update, BatchNorm statistics
    restored) and is counted in ``run.skipped``. Returns the row to log (without step and timing).
    """
    cfg, model = run.cfg, run.model
    batch = _to(batch, run.device)
    n_mix, n_seeds = cfg.augment.per_step(cfg.batch_size // run.world)
    augmenting = run.step >= augment_from and n_mix > 0
    # Sec. 3.5: samples made from earlier steps' predictions replace the batch's last ones
    popped = run.buffer.pop(n_mix) if augmenting else None
    batch = mix_into(batch, popped)
    n_real = len(batch["image"]) - (0 if popped is None else len(popped["image"]))
    x = batch["image"]
    # Eq. 2 only in the joint stage: before it nothing else trains the layers above the heat-map
    # head's input, and F collapses to the constant that satisfies Eq. 2 trivially
    nf = int(math.ceil(cfg.feature_fraction * len(x))) if cfg.weights.feature and stage == "joint" else 0
    xm = mask_image(x[:nf], batch["mask"][:nf]) if nf else None
    # BatchNorm's running statistics change in the forward pass: keep a copy so that a skipped
    # step leaves no trace (a NaN batch would otherwise poison them)
    saved = [b.detach().clone() for b in run.bn_stats]
    o = run.net(x, batch["K"], render=False, masked=xm, evidence_only=stage == "evidence")
    terms, extra = compute_terms(model, o, batch, cfg.weights, stage, o.masked_features, run.lap)
    total, logs = L.total_loss(terms, cfg.weights)
    run.optimizer.zero_grad(set_to_none=True)
    bad = L.nonfinite_terms(logs)
    if not bad:
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if not torch.isfinite(gnorm):
            bad = ["gradient"]
    if bad:  # never train on a non-finite loss or gradient
        run.skipped += 1
        run.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, old in zip(run.bn_stats, saved):
                b.copy_(old)
        log(f"step {run.step + 1}: non-finite {', '.join(bad)}; skipped ({run.skipped} so far)")
    else:
        run.optimizer.step()
    if augmenting and o.reg is not None:  # seeds: this batch's real samples, as predicted
        rng = np.random.default_rng((cfg.seed, run.step, run.rank, 3_5))
        k = min(n_seeds, n_real)
        run.buffer.push(augment_seeds(model.hand_model, x[:k], batch["K"][:k], o.h[:k].detach(), rng,
                                      cfg.augment))
    run.scheduler.step()
    run.step += 1
    return {"stage": stage, "lr": run.optimizer.param_groups[0]["lr"], "skipped": run.skipped,
            "augmented": len(x) - n_real, "bad": bool(bad), "images": len(x),
            **{k: float(v) for k, v in logs.items()}, **extra}


class MetricsLog:
    """metrics.csv (one row every ``log_every`` steps) and TensorBoard scalars, rank 0 only.
    On resume the rows logged after the checkpoint are dropped: those steps are done again."""

    def __init__(self, run: Run, resume: bool):
        self.path, self.every = run.csv_path, run.cfg.log_every
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume and self.path.is_file():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= run.step]
        with open(self.path, "w", newline="") as fh:
            w = csv.DictWriter(fh, FIELDS)
            w.writeheader()
            w.writerows(rows)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.path.parent / "tb"), purge_step=run.step + 1)
        self.t0 = self.t_last = time.perf_counter()
        self.images = 0

    def add(self, step: int, row: dict, force: bool = False) -> None:
        """Count the step's images; write a row when ``step`` is due (or ``force``)."""
        self.images += row["images"]
        if not (step % self.every == 0 or force):
            return
        now = time.perf_counter()
        row = {**row, "step": step, "seconds": round(now - self.t0, 3),
               "images_per_s": round(self.images / max(now - self.t_last, 1e-9), 2)}
        self.t_last, self.images = now, 0
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, FIELDS, extrasaction="ignore").writerow(row)
        for k, v in row.items():
            if isinstance(v, float) and k != "seconds":
                self.writer.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        self.writer.close()


def _check_ranks_in_sync(run: Run, log) -> None:
    check = torch.stack([p.detach().double().sum() for p in run.model.parameters()]).sum().to(run.device)
    gathered = [torch.zeros_like(check) for _ in range(run.world)]
    dist.all_gather(gathered, check)
    if not all(torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError("DDP ranks ended with different parameters")
    log(f"rank {run.rank}: parameters identical on all {run.world} ranks")


def final_eval(run: Run, log) -> dict:
    """Score the held-out "val" split (``cfg.eval_samples`` crops, no jitter); write eval.json."""
    from .evaluate import evaluate_model, write_report

    cfg, out = run.cfg, Path(run.cfg.out)
    data = build_data(cfg, run.model.cfg, "val", cfg.eval_samples, jitter=False)
    ev = evaluate_model(run.model.eval(), data, batch_size=cfg.batch_size, device=run.device)
    write_report(ev, out / "eval.json")
    log(f"held-out val ({ev['num_samples']} samples): 3D AUC 20–50 mm {ev['auc_20_50']:.3f}, "
        f"mean joint error {ev['mean_mm']:.1f} mm (root + bone scale aligned), "
        f"2D error {ev['mean_px']:.2f} px; wrote {out / 'eval.json'}")
    return ev


def train(cfg: TrainConfig | None = None, mcfg: ModelConfig | None = None, resume: bool = False,
          log=print) -> dict:
    """Train DHPE; write ``cfg.out``/checkpoint.pt, metrics.csv, tb/ and (at the end) eval.json.

    The loop, step by step: :func:`setup` (model, optimiser, resumed state), :func:`make_loader`
    (the data), then per batch :func:`enter_stage` (the stage's trainable weights) and
    :func:`train_step`, logging (:class:`MetricsLog`) and checkpointing; at the end :func:`final_eval`.

    Returns:
        dict with step, skipped, checkpoint and metrics paths, seconds, and the final evaluation.
    """
    cfg = cfg or TrainConfig.from_profile()
    run = setup(cfg, mcfg, resume, log)
    stop = cfg.steps if cfg.stop_after is None else min(cfg.steps, run.step + cfg.stop_after)
    loader = make_loader(run, stop)
    augment_from = cfg.augment_start(len(loader.dataset))
    metrics = MetricsLog(run, resume) if run.rank == 0 else None
    from .progress import bar

    t0 = time.perf_counter()
    run.model.train()
    for batch in bar(loader, "train", total=stop - run.step, enabled=cfg.progress and run.rank == 0):
        enter_stage(run, "evidence" if run.step < cfg.evidence_steps else "joint", log)
        row = train_step(run, batch, run.net_stage, augment_from, log)
        row["images"] *= run.world
        if metrics is not None:
            metrics.add(run.step, row, force=run.step == stop or row["bad"])
            if run.step % cfg.ckpt_every == 0 or run.step == stop:
                save_checkpoint(run.ckpt_path, run.model, run.optimizer, run.scheduler, run.step, cfg,
                                run.skipped, run.buffer)
    result = {"step": run.step, "skipped": run.skipped, "checkpoint": str(run.ckpt_path),
              "metrics": str(run.csv_path), "seconds": round(time.perf_counter() - t0, 1)}
    if run.world > 1:
        _check_ranks_in_sync(run, log)
        result["ranks_in_sync"] = True
    if metrics is not None:
        metrics.close()
        log(f"wrote {run.ckpt_path} (step {run.step}, {run.skipped} skipped steps)")
        log(f"wrote {run.csv_path}")
        if run.step == cfg.steps and cfg.eval_samples:
            result["eval"] = final_eval(run, log)
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result
