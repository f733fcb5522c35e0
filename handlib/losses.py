"""Training losses of Baek, Kim & Kim (CVPR 2019), Eqs. 2, 3, 6, 7, 8, 9, 12, plus the Laplacian term.

Every loss is a pure function of tensors: losses compute, they never build models. The weights of
Eq. 7 and the choices the paper leaves open live in :class:`LossWeights`; each choice is listed in
the field's comment so that README's paper table can quote it.

Term names used by :func:`total_loss` (and by the trainer's logs)::

    feature       Eq. 2   ‖F(x) − F(x ⊙ m)‖²
    heatmap       Eq. 3   CPM heat-map MSE
    refiner       Eq. 6   2D error of the refined joints, summed over regressor iterations
    projection    (ours)  2D error of the projected mesh joints π(j3D_t), the same form as Eq. 6
    articulation  Eq. 8   squared error of normalised 2.5D skeletons
    silhouette    Eq. 9   rendered soft mask vs. ground-truth mask (× Eq. 12's per-sample weight)
    laplacian     Kanazawa et al. 2018, uniform-Laplacian smoothness w.r.t. a reference mesh
    shape_prior   (ours)  mean β²: the shape space is in units of σ, so this is a Gaussian prior
    mesh          (ours)  root-relative mean per-vertex error against the true mesh, where the data
                          carries the true h (the synthetic renders; off by default: the paper had none)
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch

from .camera import project
from .checks import check_shape
from .skeleton import NUM_KEYPOINTS, normalize_skeleton

__all__ = ["LossWeights", "TERMS", "feature_consistency_loss", "heatmap_loss", "refiner_loss",
           "articulation_loss", "silhouette_loss", "laplacian_matrix", "laplacian_loss",
           "shape_loss_weight", "shape_prior_loss", "mesh_loss", "total_loss", "nonfinite_terms"]


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of Eq. 7 and the loss options the paper does not fix. Ablate with ``dataclasses.replace``."""

    # Eq. 7 weights. The paper writes Eq. 7 as a plain sum of its terms and gives no λ values in
    # the text, so every term defaults to 1 (ours) except the Laplacian regulariser.
    # Eq. 2 (with feature_reduction="mean" it is O(1) at initialisation). Its trivial minimum is a
    # constant F; a backbone trained from scratch drifts toward it while the other terms are still
    # on their plateaus (F shrank 20× in 60 cpu steps at weight 1). 0.1 (ours) keeps it a regulariser.
    feature: float = 0.1
    # Eq. 3: a per-pixel MSE of maps that are ~0 almost everywhere is ~0.03 per stage at the start,
    # 10× smaller than the 2D/3D terms; weight 10 (ours) brings it to their scale
    heatmap: float = 10.0
    refiner: float = 1.0  # Eq. 6: with refiner_normalize the error is in image-size units; weight 1 (ours)
    # The paper does not say what supervises the translation/depth of h on RHD (no mesh labels):
    # Eq. 8 is translation- and scale-free and Eq. 9 switches on only once Eq. 12's 2D test
    # passes. Ours: the reprojection error of the mesh joints, refiner_loss applied to π(j3D_t).
    projection: float = 1.0
    articulation: float = 1.0  # Eq. 8: normalised skeletons are O(1) (box-scale units); weight 1 (ours)
    silhouette: float = 1.0  # Eq. 9: a pixel-mean in [0, 1]; weight 1 (ours)
    # Laplacian: a regulariser, not a data term; 0.1 (ours) keeps it from flattening the fingers
    # while the shape is still being fitted. Paper silent.
    laplacian: float = 0.1
    # The paper lists no prior on β, and neither Eq. 8 (scale-free) nor the Laplacian (OpenHand's
    # shape directions are smooth, so L·ΔM is tiny) holds it: in an 800-step cpu run β drifted to
    # 9–12σ and bones shrank 40 %. 0.01 (ours) makes 10σ cost ~1, the size of the data terms,
    # while leaving the ±3σ range of real hands nearly free.
    shape_prior: float = 0.01
    # Eq. 3: CPM's intermediate supervision; the paper does not say how stages combine. "sum" as in
    # Wei et al. 2016 (every stage receives the full gradient); "mean" keeps the scale stage-independent.
    heatmap_stages: str = "sum"
    # Eq. 2: ‖·‖² sums over the C feature channels, so it grows with the backbone (C = 128 … 2048).
    # "mean" (ours, the default) divides by C so one weight suits every profile; "sum" is the paper's.
    feature_reduction: str = "mean"
    # Eq. 6: divide pixel coordinates by the image side so the loss does not grow with the crop size
    # (paper silent; ours). With False the loss is in pixels².
    refiner_normalize: bool = True
    # Eq. 9: the paper's L2; "iou" (1 − soft IoU) is an option of ours for ablations.
    silhouette_kind: str = "l2"
    # Eq. 12: the paper's threshold value is missing from the text. Ours: a sample's shape losses
    # count only if its mean projected 2D joint error is below 0.05 × image side (≈ 11 px at 224 px,
    # about a finger's width, i.e. the articulation is roughly right before the shape is fitted).
    shape_threshold: float = 0.05
    # Eq. 12 ablation: True makes the per-sample weight 1 for every sample (no hierarchy).
    constant_shape_weight: bool = False
    # Not in the paper (ours): 3D supervision of the whole mesh where the data carries the true h
    # (our synthetic renders do; RHD and STB, the paper's data, carry no mesh). mesh_loss is the
    # root-relative mean per-vertex error in cm, so 1 at weight 1 is a 1 cm mean error. 0 = the
    # paper's Eq. 7, every profile's. Measured in the cpu recipe (README "Training", two seeds at 0.1
    # and 0.03): it turns the hand better (rotation 24° vs 26.6°) and costs articulation and 2D
    # (PA-MPJPE +0.5–1.5 mm); the AUC moved within noise. Not adopted.
    mesh: float = 0.0

    def __post_init__(self):
        if self.heatmap_stages not in ("sum", "mean"):
            raise ValueError(f"heatmap_stages: expected 'sum' or 'mean', got {self.heatmap_stages!r}")
        if self.feature_reduction not in ("sum", "mean"):
            raise ValueError(f"feature_reduction: expected 'sum' or 'mean', got {self.feature_reduction!r}")
        if self.silhouette_kind not in ("l2", "iou"):
            raise ValueError(f"silhouette_kind: expected 'l2' or 'iou', got {self.silhouette_kind!r}")
        if self.shape_threshold <= 0:
            raise ValueError(f"shape_threshold: expected > 0 (a fraction of the image side), "
                             f"got {self.shape_threshold}")

    def shape_threshold_px(self, image_size: int | float) -> float:
        """Eq. 12's threshold in pixels for a square crop of side ``image_size``."""
        return self.shape_threshold * float(image_size)


TERMS = ("feature", "heatmap", "refiner", "projection", "articulation", "silhouette", "laplacian",
         "shape_prior", "mesh")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _valid_mask(valid: torch.Tensor | None, B: int, K: int, like: torch.Tensor) -> torch.Tensor:
    """(B, K) float mask of the keypoints to count (all ones when ``valid`` is None)."""
    if valid is None:
        return torch.ones(B, K, dtype=like.dtype, device=like.device)
    check_shape(valid, "valid", (B, K))
    return valid.to(like.dtype)


def _masked_mean(per_kp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, K) values over the mask; 0 (with gradient graph intact) when nothing is valid.

    ``torch.where`` rather than multiplication so that a NaN at an invalid keypoint cannot leak in.
    """
    total = torch.where(mask > 0, per_kp * mask, torch.zeros_like(per_kp)).sum()
    return total / mask.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------------------------
# Eq. 2: feature consistency
# ----------------------------------------------------------------------------------------------
def feature_consistency_loss(F_x: torch.Tensor, F_xm: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Eq. 2: L_F = mean_b ‖F(x) − F(x ⊙ m)‖² (``reduction="mean"``: divided by C as well).

    The 2D evidence estimator must see the same hand whether or not the background is masked out,
    so its features do not depend on clutter. Used to train F, and at test time inside Eq. 13.

    Args:
        F_x: (B, C) features of the image.
        F_xm: (B, C) features of the image multiplied by the hand mask.
        reduction: "sum" over C (the paper's squared norm) or "mean" over C.
    Returns:
        () scalar: squared L2 norm summed (or averaged) over C, averaged over B.
    """
    check_shape(F_x, "F_x", (None, None))
    check_shape(F_xm, "F_xm", tuple(F_x.shape))
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    d = (F_x - F_xm).pow(2)
    return (d.sum(dim=-1) if reduction == "sum" else d.mean(dim=-1)).mean()


# ----------------------------------------------------------------------------------------------
# Eq. 3: heat maps
# ----------------------------------------------------------------------------------------------
def heatmap_loss(pred: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
                 valid: torch.Tensor | None = None, stages: str = "sum") -> torch.Tensor:
    """Eq. 3: mean squared error between predicted and target heat maps, over valid keypoints.

    Args:
        pred: (B, K, H, W), or a list of such tensors, one per CPM stage (intermediate supervision).
        target: (B, K, H, W) target Gaussians.
        valid: optional (B, K) bool; invalid keypoints contribute nothing.
        stages: "sum" (Wei et al. 2016's intermediate supervision) or "mean" over the stage list.
    Returns:
        () scalar: Σ_valid mean_{H,W} (pred − target)² / #valid, combined over stages.
    """
    preds = [pred] if isinstance(pred, torch.Tensor) else list(pred)
    if not preds:
        raise ValueError("pred: expected a tensor or a non-empty list of stage outputs")
    if stages not in ("sum", "mean"):
        raise ValueError(f"stages: expected 'sum' or 'mean', got {stages!r}")
    check_shape(target, "target", (None, None, None, None))
    B, K = target.shape[:2]
    mask = _valid_mask(valid, B, K, target)
    losses = []
    for i, p in enumerate(preds):
        check_shape(p, f"pred[{i}]", tuple(target.shape))
        losses.append(_masked_mean((p - target).pow(2).mean(dim=(-2, -1)), mask))  # (B, K) → ()
    total = torch.stack(losses).sum()
    return total / len(losses) if stages == "mean" else total


# ----------------------------------------------------------------------------------------------
# Eq. 6: refiner
# ----------------------------------------------------------------------------------------------
def refiner_loss(j2d: torch.Tensor | Sequence[torch.Tensor], j2d_gt: torch.Tensor,
                 valid: torch.Tensor | None = None, image_size: float | None = None) -> torch.Tensor:
    """Eq. 6: squared 2D error of the refined joints, summed over the regressor iterations.

    Args:
        j2d: (B, K, 2) refined 2D joints in pixels, or a list over the iterations t = 1..T.
        j2d_gt: (B, K, 2) ground-truth 2D joints, pixels.
        valid: optional (B, K) bool.
        image_size: if given, coordinates are divided by it first (``LossWeights.refiner_normalize``),
            so the loss is in (fraction of the image)² and independent of the crop size.
    Returns:
        () scalar: Σ_t mean_valid ‖j2d_t − j2d_gt‖².
    """
    preds = [j2d] if isinstance(j2d, torch.Tensor) else list(j2d)
    if not preds:
        raise ValueError("j2d: expected a tensor or a non-empty list over iterations")
    check_shape(j2d_gt, "j2d_gt", (None, None, 2))
    B, K = j2d_gt.shape[:2]
    mask = _valid_mask(valid, B, K, j2d_gt)
    scale = 1.0 if image_size is None else 1.0 / float(image_size)
    total = j2d_gt.new_zeros(())
    for i, p in enumerate(preds):
        check_shape(p, f"j2d[{i}]", tuple(j2d_gt.shape))
        total = total + _masked_mean(((p - j2d_gt) * scale).pow(2).sum(dim=-1), mask)
    return total


# ----------------------------------------------------------------------------------------------
# Eq. 8: articulation
# ----------------------------------------------------------------------------------------------
def articulation_loss(kp3d_pred: torch.Tensor, kp3d_gt: torch.Tensor, K: torch.Tensor,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8: squared error between the normalised predicted and ground-truth skeletons.

    Each skeleton is projected with the same intrinsics and normalised by *its own* middle-MCP
    centre, tight-box scale and MCP depth (:func:`handlib.skeleton.normalize_skeleton`, same focal
    for both). So the loss compares articulation only: a hand that is right but sits at the wrong
    distance with proportional size (the monocular scale-depth ambiguity) costs nothing; the
    absolute placement is supervised by the 2D terms (Eqs. 6, 9) instead.

    Args:
        kp3d_pred: (B, K, 3) predicted keypoints, camera space, metres (differentiable).
        kp3d_gt: (B, K, 3) ground truth, camera space, metres.
        K: (B, 3, 3) or (3, 3) intrinsics; fx is the focal used for depth normalisation.
        valid: optional (B, K) bool; invalid keypoints are excluded from the error and from the box.
    Returns:
        () scalar: mean over valid keypoints of ‖n(pred) − n(gt)‖² (sum over x, y, z).
    """
    check_shape(kp3d_pred, "kp3d_pred", (None, NUM_KEYPOINTS, 3))
    check_shape(kp3d_gt, "kp3d_gt", tuple(kp3d_pred.shape))
    B = kp3d_pred.shape[0]
    if K.dim() == 2:
        K = K.expand(B, 3, 3)
    check_shape(K, "K", (B, 3, 3))
    focal = K[:, 0, 0]
    vb = None if valid is None else valid.bool()
    n_pred, _ = normalize_skeleton(project(kp3d_pred, K), kp3d_pred, focal, vb)
    n_gt, _ = normalize_skeleton(project(kp3d_gt, K), kp3d_gt, focal, vb)
    mask = _valid_mask(valid, B, NUM_KEYPOINTS, kp3d_pred)
    return _masked_mean((n_pred - n_gt).pow(2).sum(dim=-1), mask)


# ----------------------------------------------------------------------------------------------
# Eq. 9: silhouette
# ----------------------------------------------------------------------------------------------
def silhouette_loss(rendered: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None,
                    kind: str = "l2", eps: float = 1e-6) -> torch.Tensor:
    """Eq. 9: disagreement between the rendered soft silhouette and the hand mask.

    Args:
        rendered: (B, H, W) soft mask in [0, 1] from the differentiable renderer.
        mask: (B, H, W) ground-truth mask, bool or float.
        weight: optional (B,) per-sample weight, e.g. Eq. 12's :func:`shape_loss_weight`.
        kind: "l2" (the paper: mean over pixels of (rendered − mask)²) or "iou" (1 − soft IoU,
            Σ r·m / Σ (r + m − r·m) per sample).
    Returns:
        () scalar: Σ_b w_b · l_b / B. Dividing by B (not Σ w) keeps a batch's scale fixed when
        Eq. 12 switches samples off, and gives 0 rather than 0/0 when none pass.
    """
    check_shape(rendered, "rendered", (None, None, None))
    check_shape(mask, "mask", tuple(rendered.shape))
    m = mask.to(rendered.dtype)
    if kind == "l2":
        per = (rendered - m).pow(2).mean(dim=(-2, -1))  # (B,)
    elif kind == "iou":
        inter = (rendered * m).sum(dim=(-2, -1))
        union = (rendered + m - rendered * m).sum(dim=(-2, -1))
        per = 1.0 - inter / (union + eps)
    else:
        raise ValueError(f"kind: expected 'l2' or 'iou', got {kind!r}")
    if weight is not None:
        check_shape(weight, "weight", (rendered.shape[0],))
        per = per * weight.to(per.dtype)
    return per.mean()


# ----------------------------------------------------------------------------------------------
# Laplacian smoothness (Kanazawa et al. 2018)
# ----------------------------------------------------------------------------------------------
def laplacian_matrix(faces: torch.Tensor, V: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform graph Laplacian L = I − D⁻¹A of a triangle mesh.

    A is the symmetric 0/1 adjacency of the mesh edges (each edge once, however many faces share
    it), D its degree. Row i of L·v is v_i minus the mean of its neighbours, so every row sums to 0.
    A vertex that no face uses gets an all-zero row (ours: it has no neighbours to be smooth with).

    Args:
        faces: (F, 3) int vertex indices.
        V: number of vertices.
        dtype: of the values (build in float64 for float64 meshes: −1/deg is not exact).
    Returns:
        (V, V) coalesced sparse COO tensor on the CPU (move with ``.to(device)``).
    """
    check_shape(faces, "faces", (None, 3))
    f = faces.long().cpu()
    if f.numel() and (f.min() < 0 or f.max() >= V):
        raise ValueError(f"faces: indices must lie in [0, {V}), got [{int(f.min())}, {int(f.max())}]")
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])  # (3F, 2) directed
    e = torch.cat([e, e.flip(1)])  # both directions
    e = e[e[:, 0] != e[:, 1]]  # degenerate faces add no self-loops
    e = torch.unique(e, dim=0)  # (E, 2): each neighbour once
    deg = torch.bincount(e[:, 0], minlength=V).to(dtype)  # (V,)
    used = torch.nonzero(deg > 0).squeeze(1)
    rows = torch.cat([used, e[:, 0]])
    cols = torch.cat([used, e[:, 1]])
    vals = torch.cat([torch.ones(len(used), dtype=dtype), -1.0 / deg[e[:, 0]]])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (V, V), check_invariants=True).coalesce()


def laplacian_loss(verts: torch.Tensor, faces: torch.Tensor, ref_verts: torch.Tensor | None = None,
                   L: torch.Tensor | None = None) -> torch.Tensor:
    """Laplacian smoothness: mean_{b,i} ‖(L (v_b − ref))_i‖².

    With ``ref_verts`` the template (rest) mesh, the loss penalises only the *change* of local
    shape relative to the reference, so a detailed template is not flattened; without it, ‖L v‖².
    It is zero for v = ref + t (rigid translation): L's rows sum to 0.

    Args:
        verts: (B, V, 3) mesh vertices.
        faces: (F, 3) int.
        ref_verts: optional (V, 3) or (B, V, 3) reference mesh.
        L: optional precomputed :func:`laplacian_matrix` (recomputed from ``faces`` if None).
    Returns:
        () scalar.
    """
    check_shape(verts, "verts", (None, None, 3))
    B, V = verts.shape[:2]
    d = verts if ref_verts is None else verts - (ref_verts if ref_verts.dim() == 3 else ref_verts[None])
    if L is None:
        L = laplacian_matrix(faces, V, dtype=d.dtype)
    L = L.to(device=d.device, dtype=d.dtype)
    flat = d.permute(1, 0, 2).reshape(V, B * 3)  # (V, B·3)
    Ld = torch.sparse.mm(L, flat).reshape(V, B, 3)
    return Ld.pow(2).sum(dim=-1).mean()


def shape_prior_loss(betas: torch.Tensor) -> torch.Tensor:
    """Gaussian prior on the shape: mean β² (β is in units of the shape space's σ).

    Args:
        betas: (B, L) shape coefficients.
    Returns:
        () scalar, 1 on average for shapes drawn from the prior N(0, I).
    """
    check_shape(betas, "betas", (None, None))
    return betas.pow(2).mean()


def mesh_loss(verts_pred: torch.Tensor, root_pred: torch.Tensor, verts_gt: torch.Tensor,
              root_gt: torch.Tensor, weight: torch.Tensor | None = None, unit: float = 0.01) -> torch.Tensor:
    """(ours) Root-relative mean per-vertex error against the true mesh, in units of ``unit`` metres.

    Both meshes are taken relative to their own root (the wrist joint), so the term supervises what
    Eq. 8 leaves loose — the hand's global rotation, its articulation in depth and its metric size
    (through β) — and not its place in the camera, which the 2D terms fix. The error is the
    Euclidean distance per vertex (not squared: its gradient does not vanish as the error shrinks,
    and it is the PCK's own measure), averaged over the vertices and the weighted samples.

    Args:
        verts_pred: (B, V, 3) predicted mesh, metres. root_pred: (B, 3) its wrist joint.
        verts_gt: (B, V, 3) true mesh. root_gt: (B, 3) its wrist joint.
        weight: optional (B,) per-sample weight (0 for a sample whose data carries no mesh).
        unit: metres per loss unit (1 cm: a 1 cm mean error costs 1).
    Returns:
        () scalar: Σ_b w_b · mean_v ‖v̂ − r̂ − (v − r)‖ / unit / Σ_b w_b (0 when every weight is 0).
    """
    check_shape(verts_pred, "verts_pred", (None, None, 3))
    check_shape(verts_gt, "verts_gt", tuple(verts_pred.shape))
    B = verts_pred.shape[0]
    check_shape(root_pred, "root_pred", (B, 3))
    check_shape(root_gt, "root_gt", (B, 3))
    d = (verts_pred - root_pred[:, None]) - (verts_gt - root_gt[:, None])
    per_sample = torch.linalg.vector_norm(d, dim=-1).mean(dim=1) / unit  # (B,)
    if weight is None:
        return per_sample.mean()
    check_shape(weight, "weight", (B,))
    w = weight.to(per_sample.dtype)
    return (w * per_sample).sum() / w.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------------------------
# Eq. 12: hierarchical per-sample shape weight
# ----------------------------------------------------------------------------------------------
def shape_loss_weight(j2d_pred: torch.Tensor, j2d_gt: torch.Tensor, valid: torch.Tensor | None,
                      threshold_px: float, constant: bool = False) -> torch.Tensor:
    """Eq. 12: w_b = 1 if the sample's mean projected 2D joint error is below the threshold, else 0.

    Shape (silhouette) supervision only makes sense once the articulation is roughly right;
    otherwise the mesh would be deformed to cover the mask with the wrong fingers. The weight is a
    step function, so it is computed under ``no_grad`` and returned detached: the gradient would be
    zero almost everywhere anyway, and the weight must not push the joints. A sample with no valid
    joint gets weight 0 (its articulation cannot be checked).

    Args:
        j2d_pred: (B, K, 2) projected predicted joints, pixels.
        j2d_gt: (B, K, 2) ground truth, pixels.
        valid: optional (B, K) bool.
        threshold_px: pixels (``LossWeights.shape_threshold_px(image_size)``); error == threshold → 0.
        constant: the ablation ``LossWeights.constant_shape_weight``: all ones.
    Returns:
        (B,) detached weights in {0, 1}, dtype of ``j2d_pred``.
    """
    check_shape(j2d_pred, "j2d_pred", (None, None, 2))
    check_shape(j2d_gt, "j2d_gt", tuple(j2d_pred.shape))
    B, K = j2d_pred.shape[:2]
    with torch.no_grad():
        if constant:
            return torch.ones(B, dtype=j2d_pred.dtype, device=j2d_pred.device)
        mask = _valid_mask(valid, B, K, j2d_pred)
        dist = torch.linalg.vector_norm(j2d_pred - j2d_gt, dim=-1)  # (B, K)
        dist = torch.where(mask > 0, dist, torch.zeros_like(dist))
        n = mask.sum(dim=1)
        err = dist.sum(dim=1) / n.clamp_min(1.0)
        return ((err < threshold_px) & (n > 0)).to(j2d_pred.dtype)


# ----------------------------------------------------------------------------------------------
# Eq. 7: total
# ----------------------------------------------------------------------------------------------
def total_loss(terms: Mapping[str, torch.Tensor], weights: LossWeights) -> tuple[torch.Tensor, dict]:
    """Eq. 7: weighted sum of the available loss terms.

    Missing terms are skipped (a stage trains only its own terms); an unknown name raises. A term
    whose weight is 0 is logged but not added, so a NaN in a switched-off term cannot poison the
    total. Non-finite terms are *not* dropped: they appear in the log and make the total
    non-finite, so the trainer can see them (:func:`nonfinite_terms`) and skip the step.

    Args:
        terms: name → () scalar tensor, names from :data:`TERMS`.
        weights: :class:`LossWeights`.
    Returns:
        total: () scalar tensor with gradient.
        logs: name → detached weighted value λ·L (plus ``"total"``).
    """
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise KeyError(f"unknown loss term(s) {unknown}; expected names from {list(TERMS)}")
    if not terms:
        raise ValueError("terms: expected at least one loss term")
    total, logs = None, {}
    for name in TERMS:
        if name not in terms:
            continue
        value = terms[name]
        if value.dim() != 0:
            raise ValueError(f"terms[{name!r}]: expected a scalar, got shape {tuple(value.shape)}")
        lam = float(getattr(weights, name))
        weighted = lam * value
        logs[name] = weighted.detach()
        if lam != 0.0:
            total = weighted if total is None else total + weighted
    if total is None:  # every present term has weight 0: a constant zero (nothing to train)
        total = next(iter(terms.values())).new_zeros(())
    logs["total"] = total.detach()
    return total, logs


def nonfinite_terms(logs: Mapping[str, torch.Tensor]) -> list[str]:
    """Names in a :func:`total_loss` log whose value is NaN or ±inf (the trainer skips that step)."""
    return [k for k, v in logs.items() if not math.isfinite(float(v))]
