"""Fitting the hand model to a detector's evidence: inverse kinematics, then Levenberg–Marquardt.

The paper's test-time refinement (Eq. 13) starts from the network's estimate and takes 50 Adam
steps. On real photos with a pretrained detector's keypoints that start is far away and Adam's
fixed step does not converge. Here the fit starts where the evidence is and solves to convergence:

1. **Inverse kinematics from the world landmarks** (:func:`initial_fit`). MediaPipe's landmark
   network also returns 21 root-relative 3D points in metres. The global rotation comes from the
   palm (Kabsch on the wrist and the four MCPs), then a few Gauss–Newton steps fit pose and shape
   to the landmarks' root-relative shape (the pose prior keeps the solve well posed), and the
   rotation is turned onto all 21 landmarks. Given a DHPE
   network's joints for the same hand (``network=``), the landmarks are first mixed with them
   (:func:`fuse_landmarks`, ``FitConfig.network_share``): two estimates of the shape, whose errors
   differ.
2. **Translation from the 2D keypoints and the camera** (:func:`solve_translation`): with the
   rotation and articulation fixed, u = f (X + t)ₓ / (X + t)_z + c is linear in t — a 42 × 3
   least-squares problem, exact for a perfect hand.
3. **The full fit** (:func:`fit_hand`): Levenberg–Marquardt over (rotation, 45 pose, 10 shape,
   translation) on a robust (Cauchy, by iteratively reweighted least squares) 2D reprojection term,
   the world landmarks' root-relative shape (up to a rotation: the detector's 3D frame is not the
   camera's; the best rotation is solved inside the residual, by Kabsch for every evaluation, so LM
   sees the exact objective and stops by its tolerance, typically in 5–10 iterations — re-fitting that
   rotation between iterations instead made each iteration chase the last one's, and every fit
   crept on to the iteration cap), with a network's joints their orientation in the camera frame
   (``FitConfig.network_orientation``: the 2D keypoints leave the turn out of the image plane loose),
   the model's PCA pose prior (a Mahalanobis distance), a shape prior and Eq. 13's term (c), the
   Laplacian of the shaped rest mesh (:func:`laplacian_residual`).
4. **Eq. 13's term (b), optional** (``FitConfig.feature`` > 0 and a ``feature`` function, e.g.
   :func:`handlib.predict.feature_term`): a few more LM iterations with the feature consistency
   ‖F(x ⊙ R(mesh)) − F(x)‖² of a DHPE network's frozen backbone on its crop added as one residual,
   √(λ_F E_F), whose gradient is one backward pass (:func:`_feature_block`). A Jacobian of the C
   feature entries would cost C backward (or 61 forward-mode) passes of the backbone; the square root
   of a quadratic is linear along the gradient, so Gauss–Newton on it is exact in that direction.

All residuals are in interpretable units (pixels, millimetres, standard deviations), weighted by
:class:`FitConfig`, whose every default is our choice (the paper has no such fit).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from .camera import project
from .hand_model import HandModel
from .metrics import proper_rotation
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle

__all__ = ["FitConfig", "FitResult", "initial_fit", "solve_translation", "fit_hand", "fuse_landmarks",
           "kabsch", "laplacian_residual"]

PALM = (0, 5, 9, 13, 17)  # wrist and the four finger MCPs (handlib order): a rigid-ish frame


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Weights and budget of :func:`fit_hand` (ours; residuals are squared and summed)."""

    iterations: int = 30  # LM iterations at most (it stops earlier when the cost settles: see tol)
    ik_iterations: int = 8  # Gauss–Newton steps of the world-landmark IK (step 1)
    robust_px: float = 6.0  # Cauchy scale: a 2D residual of e pixels gets weight 1 / (1 + (e / this)²)
    px_scale: float = 0.5  # a 2D residual of this many pixels costs as much as 1 mm of 3D shape
    keypoint_weights: tuple | None = None  # (21,) per-keypoint 2D weights; None: all 1
    world_weight: float = 0.5  # per mm of root-relative shape difference to the world landmarks
    pose_prior: float = 0.3  # per standard deviation of the PCA pose prior (Mahalanobis)
    shape_prior: float = 1.0  # per unit of β (β is in standard deviations)
    # Eq. 13 (c): per mm of the RMS Laplacian of the shaped rest mesh, L (v_template + B_S(β)) relative
    # to L v_template (:func:`laplacian_residual`). OpenHand's roughest shape direction moves the
    # Laplacian by 0.09 mm RMS per unit β, so at 10 that unit costs about what the shape prior's does
    # (ours; Eq. 13's λ_L in the trainer's metre units would be ~1e-6 of the 2D term here).
    laplacian: float = 10.0
    # Eq. 13 (b): λ_F of the feature consistency E_F = mean_C (F(x ⊙ R) − F(x))² (the trainer's Eq. 2
    # "mean" form) when fit_hand gets a ``feature`` function; 0 leaves step 4 out (ours).
    feature: float = 0.0
    feature_iterations: int = 8  # LM iterations of step 4 (each: one backbone forward + backward)
    # Stop when an accepted step lowers the cost by less than this fraction. On the 10 hands MediaPipe
    # finds in ../shared/realdata, 1e-4 and 1e-6 give the same scores to 0.01 px and 0.5 mm and stop
    # after 5–9 and 7–14 iterations (one hand, whose robust weights keep trading places, ran to 44;
    # measured before the orientation term): 1e-5 is between (ours).
    tol: float = 1e-5
    # The convention gap: MediaPipe's wrist keypoint lies distal of the datasets' wrist joint
    # centre, toward the middle MCP: +8.9, +14.0, +16.1, +4.6 mm on the four hands with 3D labels in
    # ../shared/realdata (RHD ×3, InterHand ×1; MediaPipe's 2D minus the projected GT, along the
    # wrist→middle-MCP line). Modelling it (this many mm, in the 2D and world terms) made those
    # hands' PA-MPJPE worse (14.4 → 15.3 mm, 2D unchanged), so it is off by default. The MCPs showed
    # no consistent offset along the palm normal or the bone (signs differ between hands).
    wrist_offset_mm: float = 0.0
    # Two estimates of the hand's 3D shape: the detector's world landmarks and, when fit_hand gets
    # one (``network=``), a DHPE network's joints. The world term's target is their mix
    # (:func:`fuse_landmarks`), this share from the network; 0: the world landmarks alone. Their
    # errors are of a size (PA-MPJPE 15.5 vs 17.8 mm on the 4 shared hands with 3D) and go different
    # ways. Measured there (eval-real, shipped network): share 0 / 0.3 / 0.5 give the fit 2D error
    # 8.96 / 9.01 / 9.07 px (MediaPipe's own: 9.02), PA-MPJPE 13.6 / 12.4 / 12.2 mm, root-relative
    # MPJPE 31.3 / 30.0 / 31.7 mm. 0.3 (ours) is the larger share that keeps the fit on its 2D
    # evidence: chosen on those frames, so unseen frames may score it less well. (Measured before the
    # orientation term and the converged LM; with both, 0.3 gives 8.89 px, 12.0 and 25.0 mm.)
    network_share: float = 0.3
    # The network's joints also say how the hand is turned in the camera frame, which the 2D keypoints
    # pin down poorly out of the image plane (a hand tilted 20° toward the camera moves its keypoints
    # a few pixels). This weight, per degree between the fit's global rotation and the network's
    # (the rotation that turns the world term's target onto the network's joints), makes that a
    # prior: at 1, 1° costs what 0.5 px of one keypoint coordinate costs. 0: the orientation comes
    # from the 2D keypoints alone. 1 (ours) was the best of 0 / 0.5 / 1 / 2 on 67 synthetic test
    # renders, not on the real frames (README, "Converged, and turned by the network").
    network_orientation: float = 1.0
    # Cauchy scale of that prior, degrees (IRLS, as the 2D term): a network this far from the fit's
    # orientation counts half, three times as far a tenth, so a wrong network cannot drag the hand
    # away from its keypoints (ours).
    orientation_robust_deg: float = 30.0

    def __post_init__(self):
        if not 0.0 <= self.network_share <= 1.0:
            raise ValueError(f"FitConfig.network_share: expected a share in [0, 1], got {self.network_share}")
        if self.network_orientation < 0 or not self.orientation_robust_deg > 0:
            raise ValueError("FitConfig: expected network_orientation >= 0 and orientation_robust_deg > 0, "
                             f"got {self.network_orientation} and {self.orientation_robust_deg}")


@dataclasses.dataclass(frozen=True)
class FitResult:
    """A fitted hand, all in the camera frame (metres) unless stated.

    Attributes:
        verts (V, 3), joints (21, 3); j2d (21, 2) pixels; rotvec (3,), pose (45,) offset from the
        model's mean pose, betas (10,), trans (3,) the wrist; iterations; seconds; costs: weighted
        cost per term at the end; start: the hand after steps 1–2 (verts, joints, j2d, costs);
        history: the costs at the start and after each accepted LM step (robust 2D weights as
        they were then).
    """

    verts: np.ndarray
    joints: np.ndarray
    j2d: np.ndarray
    rotvec: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    iterations: int
    seconds: float
    costs: dict
    start: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# The parameter vector x = [rotvec (3), pose (45), betas (10), trans (3)] and what it poses
# ----------------------------------------------------------------------------------------------
N_PARAMS = 61
_ROT, _POSE, _BETA, _TRANS = slice(0, 3), slice(3, 48), slice(48, 58), slice(58, 61)


def _posed(model: HandModel, x: torch.Tensor, verts: bool = False):
    """(B, 61) parameters → (B, 21, 3) camera-frame joints (and (B, V, 3) vertices)."""
    out = model(pose=x[:, _POSE], betas=x[:, _BETA])
    R = axis_angle_to_matrix(x[:, _ROT])  # (B, 3, 3)
    root = out.joints16[:, :1]

    def place(p):  # R (p − wrist) + t
        return (p - root) @ R.transpose(1, 2) + x[:, None, _TRANS]

    return (place(out.joints), place(out.verts)) if verts else place(out.joints)


MIN_DEPTH = 1e-3  # metres: projections clamp depth here, so a bad LM step cannot divide by zero


def fuse_landmarks(world: np.ndarray, network: np.ndarray, share: float) -> np.ndarray:
    """One root-relative 3D shape from two estimates of the same hand (the fit's world-term target).

    The network's joints are turned about the wrist onto the detector's world landmarks
    (:func:`kabsch`), then each point is the mix ``(1 − share) · world + share · network``. The
    result keeps the landmarks' frame, so the fit's start (:func:`initial_fit`, the palm's
    orientation from the landmarks) is the landmarks' own: only the shape is mixed. (Starting
    from the network's orientation instead, a wrong network estimate once put the hand behind
    the camera.)

    Args:
        world: (21, 3) the detector's landmarks, metres, any rotation and origin.
        network: (21, 3) the network's joints, metres, any rotation and translation.
        share: the network's weight in [0, 1].
    Returns:
        (21, 3) root-relative (wrist at the origin) in the landmarks' axes, metres.
    """
    w, n = world - world[:1], network - network[:1]
    return (1.0 - share) * w + share * n @ kabsch(n, w).T


def kabsch(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(3, 3) rotation R minimising Σ‖R aᵢ − bᵢ‖² for (N, 3) point sets, about the origin (det R = +1).

    No translation is fitted (unlike ``metrics.similarity_transform``): centre both sets first for
    a fit with one, or leave them root-relative to rotate about the root, as the world term does.
    A numpy face of :func:`handlib.metrics.proper_rotation`.
    """
    return proper_rotation(torch.as_tensor(B.T @ A, dtype=torch.float64)[None])[0][0].numpy()


# ----------------------------------------------------------------------------------------------
# Residuals
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Evidence:
    """What the fit is fitted to, as float64 tensors (None where absent)."""

    kp2d: torch.Tensor | None  # (21, 2) pixels
    K: torch.Tensor | None  # (3, 3)
    world: torch.Tensor | None  # (21, 3) metres, root-relative, in the detector's 3D frame
    w2d: torch.Tensor  # (21,) per-keypoint weights, robust weights folded in
    w2d_base: torch.Tensor  # (21,) the per-keypoint weights before the robust ones
    prior_C: torch.Tensor  # (45, 45) PCA components (rows)
    prior_std: torch.Tensor  # (45,)
    lap: torch.Tensor  # (10, 10) term (c)'s square root: ‖lap β‖ = RMS Laplacian, mm
    R_net: torch.Tensor | None = None  # (3, 3) the network's orientation of ``world`` (_network_rotation)
    w_orient: torch.Tensor = dataclasses.field(default_factory=lambda: torch.ones((), dtype=torch.float64))


def _residuals(model, x: torch.Tensor, ev: _Evidence, cfg: FitConfig,
               terms: tuple = ("2d", "world", "orientation", "prior")) -> dict:
    """Weighted residual blocks, each (B, n), for a batch of parameter vectors (B, 61)."""
    J = detector_keypoints(_posed(model, x), cfg.wrist_offset_mm)
    out = {}
    if "2d" in terms and ev.kp2d is not None:
        e = (project(J, ev.K, MIN_DEPTH) - ev.kp2d) / cfg.px_scale  # (B, 21, 2)
        out["2d"] = (e * ev.w2d.sqrt()[:, None]).flatten(1)
    if "world" in terms and ev.world is not None:
        # the landmarks' 3D frame is not the camera's: compare shapes after the best rotation about
        # the root (per row of the batch, so the Jacobian sees the rotation follow the hand)
        rel = J - J[:, :1]
        R = _target_rotation(rel, ev.world)  # (B, 3, 3): R · landmark ≈ joint
        out["world"] = 1000.0 * cfg.world_weight * (rel - ev.world @ R.mT).flatten(1)
        if "orientation" in terms and ev.R_net is not None:  # the fit's turn of the target vs the network's
            w = cfg.network_orientation * ev.w_orient.sqrt()
            out["orientation"] = w * _turn_deg(R, ev.R_net)
    if "prior" in terms:
        z = (x[:, _POSE] @ ev.prior_C.T) / ev.prior_std  # pose offset in prior standard deviations
        out["pose_prior"] = cfg.pose_prior * z
        out["shape_prior"] = cfg.shape_prior * x[:, _BETA]
        if cfg.laplacian:
            out["laplacian"] = cfg.laplacian * x[:, _BETA] @ ev.lap.T
    return out


def _target_rotation(rel: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) the rotations R about the root with R · world ≈ rel for root-relative joints (B, 21, 3)
    and a root-relative 3D target (21, 3) in its own frame (Kabsch, :func:`metrics.proper_rotation`)."""
    return proper_rotation(rel.mT @ world)[0]


def _turn_deg(R: torch.Tensor, R_ref: torch.Tensor) -> torch.Tensor:
    """(B, 3) the rotation from ``R_ref`` (3, 3) to each of ``R`` (B, 3, 3) as axis-angle vectors, degrees."""
    return torch.rad2deg(matrix_to_axis_angle(R @ R_ref.T))


def laplacian_residual(hand_model: HandModel) -> torch.Tensor:
    """(10, 10) A with ‖A β‖² = the mean over the V vertices of ‖L (B_S(β))‖², in mm² (Eq. 13 (c)).

    :func:`handlib.refine.shape_laplacian_gram` gives G with β·G·β / V that mean in m²; A = √(Λ/V) Qᵀ
    ·1000 from G's eigen-decomposition Q Λ Qᵀ, so A β is a residual vector for least squares.
    """
    from .refine import shape_laplacian_gram

    lam, Q = torch.linalg.eigh(shape_laplacian_gram(hand_model).double())
    return 1000.0 * (lam.clamp_min(0.0) / hand_model.num_verts).sqrt()[:, None] * Q.T


def detector_keypoints(J: torch.Tensor, wrist_offset_mm: float) -> torch.Tensor:
    """(B, 21, 3) joint centres → where the detector puts its keypoints (the wrist moved distally)."""
    if not wrist_offset_mm:
        return J
    d = J[:, 9] - J[:, 0]
    wrist = J[:, 0] + wrist_offset_mm / 1000.0 * d / d.norm(dim=-1, keepdim=True)
    return torch.cat([wrist[:, None], J[:, 1:]], dim=1)


def _stack(blocks: dict) -> torch.Tensor:
    return torch.cat(list(blocks.values()), dim=1)


# ----------------------------------------------------------------------------------------------
# Levenberg–Marquardt
# ----------------------------------------------------------------------------------------------
def _lm(fn, x: np.ndarray, free: np.ndarray, iterations: int, tol: float,
        update=None, extra=None, on_step=None) -> tuple[np.ndarray, int]:
    """min ‖fn(x)‖² (+ ‖extra(x)‖²) over x[free]; ``update(x)`` may re-weight the residuals before
    each iteration.

    ``fn`` maps a batch (B, 61) to residuals (B, n) and is differentiated by forward differences;
    ``extra(x, grad)`` is a block too costly for that: (m,) residuals at one x and, with ``grad``,
    their (m, 61) Jacobian (by autograd). ``on_step(r)`` sees the residuals of each accepted x. The
    small linear algebra runs in torch (single-threaded inside :func:`fit_hand`): numpy's threaded
    BLAS costs more in synchronisation than a 61 × 61 solve does.
    """
    lam, it = 1e-3, 0
    for it in range(1, iterations + 1):
        if update is not None:
            update(x)
        r, Jm = _jacobian(x, fn, free)
        if extra is not None:
            r_e, J_e = extra(x, True)
            r, Jm = torch.cat([r, r_e]), torch.cat([Jm, J_e[:, free]])
        cost, A, g = float(r @ r), Jm.T @ Jm, Jm.T @ r
        while lam < 1e10:
            step = torch.linalg.solve(A + lam * torch.diag(torch.diag(A) + 1e-9), -g)
            x_new = x.copy()
            x_new[free] += step.numpy()
            r_new = fn(torch.as_tensor(x_new[None]))[0]
            if extra is not None:
                r_new = torch.cat([r_new, extra(x_new, False)[0]])
            new_cost = float(r_new @ r_new)
            if new_cost < cost:
                break
            lam *= 4.0
        else:
            return x, it  # no damping lowers the cost: converged
        x, lam = x_new, max(lam / 3.0, 1e-9)
        if on_step is not None:
            on_step(r_new)
        if cost - new_cost < tol * cost:
            break
    return x, it


def _jacobian(x: np.ndarray, fn, free: np.ndarray, h: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual r (n,) and its Jacobian (n, len(free)) by forward differences, one batched forward.

    Forward differences (error O(h) ≈ 1e-7 relative in float64) are ample for Levenberg–Marquardt
    and cost half the batch of central ones.
    """
    n = len(free)
    X = np.repeat(x[None], 1 + n, 0)
    X[1 + np.arange(n), free] += h
    r = fn(torch.as_tensor(X))
    return r[0], ((r[1:] - r[0]) / h).T


# ----------------------------------------------------------------------------------------------
# The three steps
# ----------------------------------------------------------------------------------------------
def initial_fit(model: HandModel, ev: _Evidence, cfg: FitConfig) -> np.ndarray:
    """Step 1: rotation from the palm (Kabsch), then pose and shape from the world landmarks (GN)."""
    x = np.zeros(N_PARAMS)
    with torch.no_grad():
        rest = detector_keypoints(_posed(model, torch.as_tensor(x[None])), cfg.wrist_offset_mm)[0].numpy()
    P, W = rest[list(PALM)], ev.world.numpy()[list(PALM)]
    R = kabsch(P - P.mean(0), W - W.mean(0))
    x[_ROT] = matrix_to_axis_angle(torch.as_tensor(R)).numpy()
    fn = lambda X: _stack(_residuals(model, X, ev, cfg, ("world", "prior")))  # noqa: E731
    x, _ = _lm(fn, x, np.arange(3, 58), cfg.ik_iterations, cfg.tol)  # the world term ignores rotation
    with torch.no_grad():  # so turn the fitted shape onto all 21 landmarks
        J = detector_keypoints(_posed(model, torch.as_tensor(x[None])), cfg.wrist_offset_mm)[0].numpy()
    R_fit = axis_angle_to_matrix(torch.as_tensor(x[None, _ROT]))[0].numpy()
    x[_ROT] = matrix_to_axis_angle(torch.as_tensor(kabsch(J - J[0], ev.world.numpy()) @ R_fit)).numpy()
    return x


def solve_translation(joints_rel: np.ndarray, kp2d: np.ndarray, K: np.ndarray,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Step 2: t minimising the algebraic reprojection error of X + t, in closed form.

    f (X + t)ₓ − (u − cₓ)(X + t)_z = 0 and its y twin are linear in t: 42 equations, 3 unknowns.

    Args:
        joints_rel: (21, 3) root-relative camera-frame joints; kp2d: (21, 2) pixels; K: (3, 3).
    Returns:
        (3,) the wrist's position in the camera frame, metres.
    """
    w = np.ones(len(kp2d)) if weights is None else np.asarray(weights, float)
    rows, rhs = [], []
    for a in (0, 1):
        f, c = K[a, a], K[a, 2]
        d = kp2d[:, a] - c
        A = np.zeros((len(kp2d), 3))
        A[:, a], A[:, 2] = f, -d
        rows.append(A * w[:, None])
        rhs.append((d * joints_rel[:, 2] - f * joints_rel[:, a]) * w)
    return np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]


def fit_hand(kp2d: np.ndarray, K: np.ndarray, world: np.ndarray, side: str = "right",
             cfg: FitConfig = FitConfig(), arrays: dict | None = None, feature=None,
             network: np.ndarray | None = None) -> FitResult:
    """Fit the hand model to 2D keypoints and world landmarks (steps 1–4 of the module docstring).

    Args:
        kp2d: (21, 2) pixels, handlib order. K: (3, 3) intrinsics of the photo.
        world: (21, 3) the detector's root-relative 3D landmarks, metres (any rotation).
        side: "right" or "left" (a left hand is fitted with the mirrored model, not mirrored in).
        arrays: the hand model's arrays for that side (with ``hands_std``, the PCA prior's standard
            deviations); default OpenHand's. The fit runs on its :func:`keypoint_model`.
        feature: optional function (1, V, 3) float64 camera-frame vertices of the full model →
            () E_F, differentiable (:func:`handlib.predict.feature_term`); with ``cfg.feature`` > 0,
            step 4 adds √(λ_F E_F) for ``cfg.feature_iterations`` LM iterations.
        network: optional (21, 3) a DHPE network's joints for the same hand, camera frame, metres:
            with ``cfg.network_share`` > 0 the world term's target is :func:`fuse_landmarks` of both,
            and with ``cfg.network_orientation`` > 0 its orientation is a prior on the fit's.
    Returns:
        :class:`FitResult` in the camera frame.
    """
    t0, threads = time.perf_counter(), torch.get_num_threads()
    if network is not None and cfg.network_share > 0:
        world = fuse_landmarks(np.asarray(world, np.float64), np.asarray(network, np.float64),
                               cfg.network_share)
    torch.set_num_threads(1)  # tiny batched ops: threads only add synchronisation
    try:
        return _fit(kp2d, K, world, side, cfg, arrays, t0, feature, _network_rotation(world, network, cfg))
    finally:
        torch.set_num_threads(threads)


def _network_rotation(world: np.ndarray, network: np.ndarray | None, cfg: FitConfig) -> np.ndarray | None:
    """(3, 3) the rotation turning the world term's target (root-relative) onto the network's joints
    (camera frame): the network's estimate of the hand's orientation; None without one or its term."""
    if network is None or cfg.network_orientation <= 0:
        return None
    w, n = np.asarray(world, np.float64), np.asarray(network, np.float64)
    return kabsch(w - w[0], n - n[0])


def _fit(kp2d, K, world, side, cfg, arrays, t0, feature, R_net) -> FitResult:
    full, model, std = _models(side, arrays)
    ev = _evidence(model, kp2d, K, world, cfg, std, full, R_net)
    x = _start(model, ev, cfg)  # steps 1 and 2
    start = _state(full, model, x, ev, cfg)
    history = [start["costs"]]

    def update(x):  # robust 2D weights at the current x (iteratively reweighted least squares)
        with torch.no_grad():
            J = detector_keypoints(_posed(model, torch.as_tensor(x[None])), cfg.wrist_offset_mm)[0]
        e = (project(J[None], ev.K, MIN_DEPTH)[0] - ev.kp2d).norm(dim=-1)
        ev.w2d = ev.w2d_base / (1.0 + (e / cfg.robust_px) ** 2)  # Cauchy IRLS: gross outliers fade out
        if ev.R_net is not None:  # and a network far from the fit's orientation fades the same way
            turn = _turn_deg(_target_rotation((J - J[:1])[None], ev.world), ev.R_net).norm()
            ev.w_orient = 1.0 / (1.0 + (turn / cfg.orientation_robust_deg) ** 2)

    fn = lambda X: _stack(_residuals(model, X, ev, cfg))  # noqa: E731
    sizes = {k: v.shape[1] for k, v in _residuals(model, torch.as_tensor(x[None]), ev, cfg).items()}

    def on_step(r):  # the accepted step's residuals (step 4's feature block last), split per term
        parts = r.split(list(sizes.values()) + [len(r) - sum(sizes.values())])
        history.append({k: float(v @ v) for k, v in zip([*sizes, "feature"], parts) if len(v)})

    extra = None
    x, iters = _lm(fn, x, np.arange(N_PARAMS), cfg.iterations, cfg.tol, update, on_step=on_step)  # step 3
    if feature is not None and cfg.feature > 0:  # step 4: Eq. 13 (b) joins for a few iterations
        extra = lambda x, grad: _feature_block(full, x, feature, cfg.feature, grad)  # noqa: E731
        x, more = _lm(fn, x, np.arange(N_PARAMS), cfg.feature_iterations, cfg.tol, update, extra, on_step)
        iters += more
    end = _state(full, model, x, ev, cfg, extra)
    return FitResult(verts=end["verts"], joints=end["joints"], j2d=end["j2d"], rotvec=x[_ROT], pose=x[_POSE],
                     betas=x[_BETA], trans=x[_TRANS], iterations=iters, seconds=time.perf_counter() - t0,
                     costs=end["costs"], start=start, history=history)


def _start(model: HandModel, ev: _Evidence, cfg: FitConfig) -> np.ndarray:
    """Steps 1 and 2: :func:`initial_fit` fits the rotation into the detector's 3D frame (MediaPipe
    aligns it with the camera up to a small tilt, which step 3 then fits to the 2D), pose and shape;
    :func:`solve_translation` places it."""
    x = initial_fit(model, ev, cfg)
    with torch.no_grad():
        J = detector_keypoints(_posed(model, torch.as_tensor(x[None])), cfg.wrist_offset_mm)[0]
    x[_TRANS] = solve_translation((J - J[:1]).numpy(), ev.kp2d.numpy(), ev.K.numpy(), ev.w2d.numpy())
    return x


def _costs(model: HandModel, x: np.ndarray, ev: _Evidence, cfg: FitConfig, extra=None) -> dict:
    """Term name → its weighted squared residual sum at x (with step 4's "feature" when ``extra``)."""
    with torch.no_grad():
        blocks = _residuals(model, torch.as_tensor(x[None]), ev, cfg)
    costs = {k: float((v ** 2).sum()) for k, v in blocks.items()}
    if extra is not None:
        costs["feature"] = float(extra(x, False)[0].square().sum())
    return costs


def _state(full: HandModel, model: HandModel, x: np.ndarray, ev: _Evidence, cfg: FitConfig,
           extra=None) -> dict:
    """The hand at x: verts, joints (camera frame), j2d (pixels), costs (:func:`_costs`), as numpy."""
    with torch.no_grad():
        J, V = _posed(full, torch.as_tensor(x[None]), verts=True)
    return {"verts": V[0].numpy(), "joints": J[0].numpy(), "j2d": project(J, ev.K, MIN_DEPTH)[0].numpy(),
            "costs": _costs(model, x, ev, cfg, extra)}


def _feature_block(full: HandModel, x: np.ndarray, feature, weight: float, grad: bool):
    """Step 4's residual √(λ_F E_F(x)) as a (1,) tensor and, with ``grad``, its (1, 61) Jacobian
    (one backward pass through ``feature``); None in its place without."""
    X = torch.as_tensor(x[None]).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        _, V = _posed(full, X, verts=True)
        r = (weight * feature(V).double()).clamp_min(1e-18).sqrt().reshape(1)
        if not grad:
            return r.detach(), None
        (g,) = torch.autograd.grad(r[0], X)
    return r.detach(), g


_MODELS: dict = {}


def _models(side: str, arrays: dict | None = None) -> tuple[HandModel, HandModel, np.ndarray]:
    """The float64 model of ``side``, its 21-keypoint twin (:func:`keypoint_model`) and the prior's
    standard deviations; OpenHand's are made once per process."""
    if arrays is not None:
        return (HandModel(side=side, arrays=arrays, dtype=torch.float64), keypoint_model(arrays, side),
                np.asarray(arrays["hands_std"]))
    if side not in _MODELS:
        from .hand_model import mirror_arrays
        from .open_hand import load_asset

        arrays = load_asset() if side == "right" else mirror_arrays(load_asset())
        _MODELS[side] = _models(side, arrays)
    return _MODELS[side]


def keypoint_model(arrays: dict, side: str = "right") -> HandModel:
    """A :class:`HandModel` whose only vertices are the 16 rest joints and the 5 fingertips.

    Its joints equal the full model's for every pose and shape: LBS regresses the joints from the
    shaped rest mesh (J = J_regressor (v_template + S β), linear in β, so the joints' own template and
    shape directions are J_regressor · v_template and J_regressor · S), and the fingertips are
    skinned vertices like any other. With 21 vertices instead of 778–825 a batched forward for a
    finite-difference Jacobian costs a fraction of the full one.
    """
    tips = np.asarray(arrays["tip_vertex_ids"], np.int64)
    R = np.asarray(arrays["J_regressor"], np.float64)  # (16, V)
    V = R.shape[1]
    pd = np.asarray(arrays["posedirs"], np.float64).reshape(-1, V, 3)[:, tips]  # (P, 5, 3)
    small = dict(arrays)
    small["v_template"] = np.concatenate([R @ arrays["v_template"], arrays["v_template"][tips]])
    S = np.asarray(arrays["shapedirs"], np.float64)
    small["shapedirs"] = np.concatenate([np.einsum("jv,vkl->jkl", R, S), S[tips]])
    # The joints' rows of posedirs never act (joints are regressed before the pose blend shapes).
    small["posedirs"] = np.concatenate([np.zeros((len(pd), 16, 3)), pd], 1).reshape(len(pd), -1)
    small["J_regressor"] = np.concatenate([np.eye(16), np.zeros((16, 5))], 1)
    small["weights"] = np.concatenate([np.eye(16), arrays["weights"][tips]])
    small["faces"] = np.array([[16, 17, 18]])
    return HandModel(side=side, arrays=small, tip_vertex_ids=np.arange(16, 21), dtype=torch.float64)


def _evidence(model, kp2d, K, world, cfg: FitConfig, prior_std, full: HandModel, R_net=None) -> _Evidence:
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    w = t(np.ones(21) if cfg.keypoint_weights is None else cfg.keypoint_weights)
    return _Evidence(kp2d=t(kp2d), K=t(K), world=t(world) - t(world)[:1], w2d=w, w2d_base=w,
                     prior_C=model.hands_components, prior_std=t(prior_std).clamp_min(1e-3),
                     lap=laplacian_residual(full),  # its Gram matrix is cached per model
                     R_net=None if R_net is None else t(R_net))
