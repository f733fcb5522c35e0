"""Test-time refinement of h (Baek, Kim & Kim 2019, Sec. 3.4, Eq. 13).

After the network's estimate h, the mesh is refined by gradient steps on h alone, the network
frozen, minimising

    Eq. 13:  E(h) = λ_j ‖π(j3D(h)) − j2D_ref(h)‖²            (a) projected joints vs. refined 2D pose
                  + λ_F ‖F(x ⊙ R(h)) − F(x)‖²                 (b) feature consistency of the shape
                  + λ_L ‖L (M_β(h) − M̄)‖²                    (c) Laplacian regulariser

* (a) j2D_ref is *re-estimated* by the network's 2D pose refiner as h changes (Eq. 6 applied once
  to the heat-map evidence): j2D_ref = j2D_0 + f_ref([code(h), F(x), j3D(h), j2D_0]), with the
  input normalisation of :class:`~handlib.regressor.IterativeRegressor`. π is the crop camera K.
* (b) there is no ground-truth mask at test time, so the mask is the soft silhouette R(h) of the
  current mesh (``render.py``); x ⊙ R(h) is :func:`~handlib.model.mask_image` with that soft mask
  and F is the frozen backbone's pooled feature. This is Eq. 2 turned round: training made F
  insensitive to the background, so a mesh that covers exactly the hand keeps F(x) unchanged.
* (c) the trainer's Laplacian term (``train.compute_terms``): the uniform Laplacian of the shaped
  rest mesh v_template + B_S(β) relative to v_template, so only β feels it. It is linear in β, so
  it is evaluated as the quadratic form β·G·β / V (:func:`shape_laplacian_gram`, built once).

Choices where the paper is silent (each a :class:`RefineConfig` field):

* **The steps are taken in the network's code of h** (:func:`~handlib.regressor.h_to_code`): the
  wrist's pixel position, log depth, log scale, quaternion, θ, β are all O(1), so one learning rate
  suits every entry. The scale s stays fixed unless the regressor learns it (``update_mask``).
* **The refiner target is detached at every step** by default (``detach_target``): the target is
  recomputed from the current h, but no gradient flows through f_ref. With gradients through it the
  objective can also be lowered by moving the *target* toward the projection rather than the mesh
  toward the evidence, a direction f_ref was never trained for (``detach_target=False`` allows it).
* **Adam, lr 0.01** (ours): per-coordinate steps of ≤ 0.01 code units (≈ 0.6 px of wrist motion at
  128 px, 0.6° of a joint angle) make 50 iterations move h by at most ~0.5: a refinement, not a
  re-fit. The terms are the trainer's: (a) in (fraction of the crop side)² (``refiner_normalize``),
  (b) with ``reduction="mean"`` over the C channels (``LossWeights.feature_reduction``).
* **Per-sample objectives are summed over the batch**, not averaged, so every sample's steps are
  those it would take alone (with SGD as well as Adam): refinement is per image.

Everything under ``refine`` runs with the model in eval mode (BatchNorm per sample) and its
parameters' ``requires_grad`` switched off (no ``.grad`` is written and no weight gradient is
computed: ~30% off the backbone's forward + backward, measured); both are restored on return.
Cost per step: one LBS, one soft silhouette and one backbone pass on x ⊙ R(h), each forward and
backward; F(x) and the 2D evidence are computed once (or taken from ``out``), the Laplacian term
is a 10 × 10 quadratic form, and on the CPU the backbone runs as a channels-last copy
(``benchmarks/bench_refine.py`` times the pieces).
"""
from __future__ import annotations

import copy
import dataclasses
import weakref

import torch

from . import losses as L
from .backbone import fold_batchnorm
from .camera import project
from .checks import check_shape
from .hand_model import H_DIM, HandModel
from .model import DHPE, DHPEOutput, mask_image
from .regressor import BETA
from .render import soft_silhouette

__all__ = ["RefineConfig", "RefineResult", "Eq13Terms", "refined_target", "shape_laplacian_gram",
           "eq13_terms", "refine"]

TERM_NAMES = ("joints", "feature", "laplacian")


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Eq. 13's optimisation. Ablate with ``dataclasses.replace``."""

    iterations: int = 50  # gradient steps on h (paper, Sec. 3.4: 50)
    optimizer: str = "adam"  # "adam" or "sgd" (paper silent; Adam is insensitive to the terms' scale)
    # step size in code units (ours, see the module docstring). SGD's steps scale with the gradient:
    # lr ≈ 1 fits a fixed 2D target about as well as Adam's 0.01 (measured; 3 overshoots, 10 diverges)
    lr: float = 0.01
    joints: float = 1.0  # λ of term (a), the 2D joint term in (fraction of the crop)²; paper: 1
    # λ of term (b), ‖F(x ⊙ R(h)) − F(x)‖² averaged over C (the trainer's Eq. 2 form and weight; ours)
    feature: float = 0.1
    laplacian: float = 0.1  # λ of term (c), as the trainer's LossWeights.laplacian (ours)
    # (a)'s target is recomputed by f_ref at each step but treated as a constant for the gradient
    # (ours; False lets gradients flow through f_ref too, see the module docstring)
    detach_target: bool = True
    # σ of R(h) in squared NDC units; None = the model's training renderer (ModelConfig.render).
    # A larger σ widens the band in which the silhouette pulls on the mesh.
    sigma: float | None = None
    # R(h)'s RenderConfig.cull_threshold; None = the model's (1e-5). 1e-3 (measured at 128 px on
    # synthetic crops) changes R by ≤ 7e-3, (b) by 2e-4 relatively and its gradient by 3–5%, and
    # renders ~1.2–1.5× faster: a speed knob, off by default so that (b) is the trainer's Eq. 2.
    cull_threshold: float | None = None
    # CPU only: run F(x ⊙ R) through a frozen channels-last copy of the backbone (same values; its
    # forward + backward is 5–20% faster with oneDNN at 128 px, bench_refine --parts; the copy
    # costs about one step)
    channels_last: bool = True
    # Term (b)'s backbone runs as a copy with BatchNorm folded into its convs (backbone.fold_batchnorm):
    # the same F to float rounding (~1e-6 relative), fewer memory passes. Exact, so on by default.
    fold_bn: bool = True
    # Speed knobs that change the result slightly (off by default; see benchmarks/bench_refine.py and
    # :meth:`fast`): recompute term (b) and its gradient only every k-th step and reuse the last
    # gradient in between (the steps are small, so a stale gradient is close); render R(h) at this
    # fraction of the crop side and upsample it bilinearly (the mask only weights the image pixels).
    feature_every: int = 1
    silhouette_scale: float = 1.0
    feature_reduction: str = "mean"  # (b): "mean" over C (LossWeights default) or "sum" (the paper's ‖·‖²)
    record_every: int = 1  # keep h every this many steps in RefineResult.trajectory (plus the last)

    def __post_init__(self):
        if self.iterations < 0:
            raise ValueError(f"iterations: expected ≥ 0, got {self.iterations}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        for name in TERM_NAMES:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a weight ≥ 0, got {getattr(self, name)}")
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError(f"sigma: expected > 0 or None, got {self.sigma}")
        if self.cull_threshold is not None and not 0.0 < self.cull_threshold < 0.5:
            raise ValueError(f"cull_threshold: expected a value in (0, 0.5) or None, "
                             f"got {self.cull_threshold}")
        if self.feature_reduction not in ("sum", "mean"):
            raise ValueError(f"feature_reduction: expected 'sum' or 'mean', got {self.feature_reduction!r}")
        if self.record_every < 1:
            raise ValueError(f"record_every: expected ≥ 1, got {self.record_every}")
        if self.feature_every < 1:
            raise ValueError(f"feature_every: expected ≥ 1, got {self.feature_every}")
        if not 0.0 < self.silhouette_scale <= 1.0:
            raise ValueError(f"silhouette_scale: expected a value in (0, 1], got {self.silhouette_scale}")

    @classmethod
    def fast(cls, **overrides) -> RefineConfig:
        """The speed preset: term (b) every 2nd step, R(h) at half resolution, cull threshold 1e-3
        (``benchmarks/bench_refine.py`` times it and README reports its effect on the scores)."""
        fast = cls(feature_every=2, silhouette_scale=0.5, cull_threshold=1e-3)
        return dataclasses.replace(fast, **overrides)


@dataclasses.dataclass
class Eq13Terms:
    """Eq. 13 evaluated at one h. terms: name → () batch-mean *unweighted* value of (a), (b), (c)
    (only those with a non-zero weight); h (B, 63); verts (B, V, 3); joints (B, 21, 3);
    j2d (B, 21, 2) π(j3D(h)); target (B, 21, 2) j2D_ref(h); silhouette (B, S, S) R(h) or None."""

    terms: dict
    h: torch.Tensor
    verts: torch.Tensor
    joints: torch.Tensor
    j2d: torch.Tensor
    target: torch.Tensor
    silhouette: torch.Tensor | None


@dataclasses.dataclass
class RefineResult:
    """What :func:`refine` returns. All tensors detached.

    Attributes:
        h: (B, 63) refined h. code: (B, D) its network code (D = 63, or 65 with the 6-d rotation).
        verts: (B, V, 3), joints: (B, 21, 3) camera space; j2d: (B, 21, 2) projected joints, pixels.
        target: (B, 21, 2) the 2D target at the refined h (j2D_ref, or the fixed ``j2d_target``).
        silhouette: (B, S, S) R(h) of the refined mesh, or None when λ_F = 0.
        losses: iterations + 1 dicts, entry i the objective *before* step i+1 (entry 0 the network's
            estimate, the last the refined h): weighted batch means λ·L of "joints", "feature",
            "laplacian" and their sum "total" (floats; a term with weight 0 is 0.0).
        trajectory: (B, 63) h after each step in ``steps`` (0, r, 2r, …, and the last).
        steps: the step numbers of ``trajectory``.
    """

    h: torch.Tensor
    code: torch.Tensor
    verts: torch.Tensor
    joints: torch.Tensor
    j2d: torch.Tensor
    target: torch.Tensor
    silhouette: torch.Tensor | None
    losses: list
    trajectory: list
    steps: list


def refined_target(model: DHPE, code: torch.Tensor, F: torch.Tensor, joints: torch.Tensor,
                   j2d_evidence: torch.Tensor) -> torch.Tensor:
    """Eq. 6 applied to the evidence at the current h: j2D_0 + f_ref([code, F, j3D, j2D_0]).

    Uses the model's own ``regressor.ref`` with :class:`IterativeRegressor`'s normalisation (j2D in
    half-crop units, j3D root-relative in ``j3d_unit``, Δj2D back to pixels).

    Args:
        model: :class:`DHPE`. code: (B, D) network code of h. F: (B, C) F(x).
        joints: (B, 21, 3) j3D(h), camera space. j2d_evidence: (B, 21, 2) heat-map j2D_0, pixels.
    Returns:
        (B, 21, 2) j2D_ref in crop pixels (the evidence itself when the model has no refiner).
    """
    return model.regressor.refine_2d(code, F, joints, j2d_evidence, model.cfg.image_size)


_GRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shape_laplacian_gram(hand_model: HandModel) -> torch.Tensor:
    """G (10, 10) with  β·G·β / V = the trainer's Laplacian term of the shaped rest mesh.

    ``train.compute_terms`` penalises L (v_template + B_S(β) − v_template) = (L · shapedirs) β, which
    is linear in β, so its mean squared norm over the V vertices is a quadratic form:
    ``laplacian_loss(shaped, faces, v_template) = mean_b β_b·G·β_b / V`` with
    G = Σ_{i,c} (L S)_{ic}ᵀ (L S)_{ic}. Built once per hand model (the sparse L needs a
    ``torch.unique`` over the edges, ~50 ms on a CPU) and cached while its buffers are unchanged.

    Args:
        hand_model: a :class:`~handlib.hand_model.HandModel` (faces (F, 3), shapedirs (V, 3, 10)).
    Returns:
        (10, 10) symmetric positive semi-definite, dtype and device of ``shapedirs``.
    """
    sd, faces = hand_model.shapedirs, hand_model.faces
    key = (sd.data_ptr(), sd._version, faces.data_ptr(), faces._version, sd.dtype, sd.device)
    hit = _GRAMS.get(hand_model)
    if hit is not None and hit[0] == key:
        return hit[1]
    V, nb = sd.shape[0], sd.shape[-1]
    lap = L.laplacian_matrix(faces, V, dtype=torch.float64)
    LS = torch.sparse.mm(lap, sd.detach().double().cpu().reshape(V, 3 * nb)).reshape(V * 3, nb)  # (V·3, 10)
    G = (LS.t() @ LS).to(dtype=sd.dtype, device=sd.device)
    _GRAMS[hand_model] = (key, G)
    return G


def eq13_terms(model: DHPE, code: torch.Tensor, x: torch.Tensor, K: torch.Tensor, F: torch.Tensor,
               j2d_evidence: torch.Tensor, cfg: RefineConfig = RefineConfig(),
               j2d_target: torch.Tensor | None = None, backbone: torch.nn.Module | None = None,
               j2d_valid: torch.Tensor | None = None, with_feature: bool = True) -> Eq13Terms:
    """The three terms of Eq. 13 at one h (differentiable w.r.t. ``code``).

    Args:
        model: :class:`DHPE`, frozen, in eval mode. code: (B, D) network code of h.
        x: (B, 3, S, S) normalised crop. K: (B, 3, 3) crop intrinsics. F: (B, C) F(x).
        j2d_evidence: (B, 21, 2) heat-map evidence j2D_0, pixels.
        cfg: :class:`RefineConfig` (weights select the terms; ``detach_target``, ``sigma``).
        j2d_target: optional (B, 21, 2) fixed 2D target replacing j2D_ref (e.g. ground truth).
        backbone: optional module standing in for ``model.evidence.backbone`` in (b) (``refine``
            passes a channels-last copy on the CPU); its input is made channels-last.
        j2d_valid: optional (B, 21) bool: keypoints of ``j2d_target`` that count in term (a)
            (crops set unlabelled keypoints to (0, 0), which must not pull the joints).
        with_feature: False leaves term (b) out (``feature_every`` steps that reuse its gradient).
    Returns:
        :class:`Eq13Terms`.
    """
    S, hm = model.cfg.image_size, model.hand_model
    h = model.regressor.code_to_h(code, K, S)
    mesh = hm.from_h(h)
    j2d = project(mesh.joints, K)
    if j2d_target is not None:
        target = j2d_target
    elif cfg.detach_target:
        with torch.no_grad():
            target = refined_target(model, code, F, mesh.joints, j2d_evidence)
    else:
        target = refined_target(model, code, F, mesh.joints, j2d_evidence)
    terms, sil = {}, None
    if cfg.joints:  # (a), the trainer's Eq. 6 form in (fraction of the crop)²
        terms["joints"] = L.refiner_loss(j2d, target, j2d_valid if j2d_target is not None else None, S)
    if cfg.feature and with_feature:  # (b): Eq. 2 with the rendered mask R(h)
        sil = _silhouette(model, mesh.verts, K, cfg)
        xm = mask_image(x, sil)
        if backbone is None:
            F_xm = model.evidence.features(xm)
        else:
            F_xm = backbone(xm.contiguous(memory_format=torch.channels_last)).pooled
        terms["feature"] = L.feature_consistency_loss(F, F_xm, cfg.feature_reduction)
    if cfg.laplacian:  # (c): train.compute_terms' laplacian_loss(v_template + B_S(β), v_template)
        beta = h[:, BETA]
        G = shape_laplacian_gram(hm).to(beta.dtype)
        terms["laplacian"] = ((beta @ G) * beta).sum(-1).mean() / hm.num_verts
    return Eq13Terms(terms, h, mesh.verts, mesh.joints, j2d, target, sil)


def _silhouette(model: DHPE, verts: torch.Tensor, K: torch.Tensor, cfg: RefineConfig) -> torch.Tensor:
    """R(h) for term (b): (B, S, S), at ``cfg.silhouette_scale`` × S then upsampled bilinearly."""
    S = model.cfg.image_size
    if cfg.sigma is None and cfg.cull_threshold is None and cfg.silhouette_scale == 1.0:
        return model.renderer(verts, K)
    rc = model.renderer.config
    rc = dataclasses.replace(rc, sigma=rc.sigma if cfg.sigma is None else cfg.sigma,
                             cull_threshold=cfg.cull_threshold or rc.cull_threshold)
    if cfg.silhouette_scale == 1.0:
        return soft_silhouette(verts, model.renderer.faces, K, **dataclasses.asdict(rc))
    s = max(8, int(round(cfg.silhouette_scale * S)))
    r = s / S  # pixel centres at integers: u' = (u + ½) r − ½
    Ks = K.clone()
    Ks[..., :2, :] = Ks[..., :2, :] * r
    Ks[..., :2, 2] = Ks[..., :2, 2] + 0.5 * r - 0.5
    rc = dataclasses.replace(rc, image_size=(s, s))
    sil = soft_silhouette(verts, model.renderer.faces, Ks, **dataclasses.asdict(rc))
    up = torch.nn.functional.interpolate(sil[:, None], size=(S, S), mode="bilinear", align_corners=False)
    return up[:, 0]


def _weighted(terms: dict, cfg: RefineConfig, like: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Σ λ·L (a () tensor) and the float log {name: λ·L, "total": Σ} (a term left out logs 0.0)."""
    zero = like.new_zeros(())
    parts = [getattr(cfg, name) * terms[name] if name in terms else zero for name in TERM_NAMES]
    total = sum(parts, zero)
    values = torch.stack(parts + [total]).detach().tolist()  # one device sync per step
    return total, dict(zip(TERM_NAMES + ("total",), values))


def refine(model: DHPE, x: torch.Tensor, K: torch.Tensor, out: DHPEOutput | None = None,
           cfg: RefineConfig = RefineConfig(), j2d_target: torch.Tensor | None = None,
           j2d_valid: torch.Tensor | None = None) -> RefineResult:
    """Eq. 13: refine the network's h by ``cfg.iterations`` gradient steps on h alone.

    Args:
        model: :class:`DHPE`; switched to eval mode and frozen inside, restored on return.
        x: (B, 3, S, S) normalised crops of right hands. K: (B, 3, 3) crop intrinsics.
        out: optional :class:`DHPEOutput` of ``model(x, K)`` in eval mode (computed if None); the
            start is ``out.h``, the evidence ``out.evidence`` (features F(x) and j2D_0).
        cfg: :class:`RefineConfig`.
        j2d_target: optional (B, 21, 2) fixed target of term (a) in pixels, replacing the refiner's
            j2D_ref (an oracle ablation with ground-truth 2D, or a test with a known optimum).
        j2d_valid: optional (B, 21) bool, which keypoints of ``j2d_target`` count.
    Returns:
        :class:`RefineResult`.
    """
    S = model.cfg.image_size
    check_shape(x, "x", ("B", 3, S, S), floating=True)
    B = x.shape[0]
    check_shape(K, "K", (B, 3, 3), floating=True)
    if j2d_target is not None:
        check_shape(j2d_target, "j2d_target", (B, 21, 2), floating=True)
        j2d_target = j2d_target.detach()
    if j2d_valid is not None:
        check_shape(j2d_valid, "j2d_valid", (B, 21))
    if out is not None and (out.h is None or out.evidence is None):
        raise ValueError("out: expected a full DHPEOutput with h (not evidence_only)")
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():  # refine() may be called under no_grad (evaluation loops)
            return _refine(model, x, K, out, cfg, j2d_target, j2d_valid)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def _refine(model, x, K, out, cfg, j2d_target, j2d_valid=None) -> RefineResult:
    S, B = model.cfg.image_size, x.shape[0]
    if out is None:
        with torch.no_grad():
            out = model(x, K, render=False)
    check_shape(out.h, "out.h", (B, H_DIM))
    F = out.evidence.features.detach()  # F(x) is computed once: x does not change
    check_shape(F, "out.evidence.features", (B, model.evidence.feat_dim))
    j2d_ev = out.evidence.j2d.detach()
    check_shape(j2d_ev, "out.evidence.j2d", (B, 21, 2))
    code = model.regressor.h_to_code(out.h.detach(), K, S).clone().requires_grad_(True)
    update_mask = model.regressor.update_mask.to(code.dtype)  # s fixed unless the regressor learns it
    opt = (torch.optim.Adam([code], lr=cfg.lr) if cfg.optimizer == "adam"
           else torch.optim.SGD([code], lr=cfg.lr))
    backbone = None
    if cfg.feature and (cfg.fold_bn or (cfg.channels_last and x.device.type == "cpu")):
        # parameters are frozen already, so the copy's are too; model.evidence is left untouched
        net = model.evidence.backbone
        backbone = fold_batchnorm(net) if cfg.fold_bn else copy.deepcopy(net)
        if cfg.channels_last and x.device.type == "cpu":
            backbone = backbone.to(memory_format=torch.channels_last)
    args = (x, K, F, j2d_ev, cfg, j2d_target, backbone, j2d_valid)
    losses, trajectory, steps = [], [], []
    stale, stale_log = None, 0.0  # term (b)'s last gradient and value, when feature_every > 1
    for step in range(cfg.iterations):
        fresh = cfg.feature_every == 1 or step % cfg.feature_every == 0
        ev = eq13_terms(model, code, *args, with_feature=fresh)
        total, log = _weighted(ev.terms, cfg, code)
        if cfg.feature_every > 1:
            if fresh and "feature" in ev.terms:  # keep (b)'s own gradient for the next steps
                stale = torch.autograd.grad(cfg.feature * ev.terms["feature"] * B, code,
                                            retain_graph=True)[0]
                stale_log = log["feature"]
            elif stale is not None:  # reuse it; log its last value
                log["total"] += stale_log - log["feature"]
                log["feature"] = stale_log
        losses.append(log)
        if step % cfg.record_every == 0:
            trajectory.append(ev.h.detach().clone())
            steps.append(step)
        opt.zero_grad(set_to_none=True)
        if ev.terms or stale is not None:
            # Σ over samples (= B · batch mean): each sample's gradient is what it would get alone
            rest = total - cfg.feature * ev.terms["feature"] if fresh and stale is not None else total
            if stale is None:
                rest.mul(B).backward()
            else:  # (b)'s gradient is ``stale`` (fresh or reused): back-propagate the other terms
                other = [n for n in ev.terms if n != "feature"]
                code.grad = stale.clone() if not other else torch.autograd.grad(rest * B, code)[0] + stale
            code.grad.mul_(update_mask)
            opt.step()
    with torch.no_grad():  # the refined h, its mesh and its objective
        ev = eq13_terms(model, code, *args)
        _, log = _weighted(ev.terms, cfg, code)
    losses.append(log)
    trajectory.append(ev.h.detach().clone())
    steps.append(cfg.iterations)
    d = lambda t: None if t is None else t.detach()  # noqa: E731
    return RefineResult(h=d(ev.h), code=code.detach().clone(), verts=d(ev.verts), joints=d(ev.joints),
                        j2d=d(ev.j2d), target=d(ev.target), silhouette=d(ev.silhouette), losses=losses,
                        trajectory=trajectory, steps=steps)
