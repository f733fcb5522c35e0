"""OpenHand's pose space: joint axes and limits, named natural poses, and the PCA pose prior.

A pose is MANO's 45-d axis-angle of joints 1..15 in world-aligned rest frames. Joint angles
(flex, spread, twist) in degrees are its projections on :func:`joint_axes`. The prior is built
from the named poses of :func:`_named_poses` (thumb targets solved by least squares) mixed and
jittered into samples, whose covariance gives ``hands_components``, ``hands_mean`` and
``hands_std``. Every step that feeds the stored arrays uses :mod:`.fixed_order` arithmetic, so the
prior has the same bits on any CPU (see that module for why).
"""
from __future__ import annotations

import numpy as np

from handlib.skeleton import MANO_PARENTS, NUM_JOINTS, TIP_FINGERS

from . import fixed_order as fo
from .geometry import self_intersections
from .params import FINGER_JOINTS, FINGERS, LOCAL_TO_WORLD, OpenHandParams, _finger_of

# Limits (flex, spread, twist) in degrees per MANO joint 1..15. Finger MCP flexion 0..90,
# hyperextension ~20 [Eaton][AAOS][Hay13]; abduction +-15 (brief, [AAOS] ~20 total); PIP 0..100
# [Eaton]; DIP 0..80 [Eaton][AAOS]. Thumb: CMC flex/abd after [Sancho] (-25/35, -30/60, mapped onto
# our opposition/spread axes), MCP -10..60 ([Sancho] -10/80, [Eaton] 55), IP -15..80 [Eaton].
_FINGER_LIMITS = (((-20, 90), (-15, 15), (-5, 5)), ((-2, 100), (-5, 5), (-5, 5)),
                  ((-2, 80), (-5, 5), (-5, 5)))
_THUMB_LIMITS = (((-20, 60), (-30, 35), (-10, 40)), ((-10, 60), (-10, 10), (-10, 10)),
                 ((-15, 80), (-5, 5), (-5, 5)))
JOINT_LIMITS_DEG = np.array([lim for f in FINGERS  # (15, 3, 2)
                             for lim in (_THUMB_LIMITS if f == "thumb" else _FINGER_LIMITS)], float)


def joint_axes(J: np.ndarray, tips: np.ndarray, params: OpenHandParams = OpenHandParams()) -> np.ndarray:
    """Rest-frame rotation axes (flex, spread, twist) of joints 1..15 in MANO's world frame.

    A pose's 45-d axis-angle for joint j is ``angles[j] @ axes[j]`` (radians), so the joint angles
    are the projections of MANO's axis-angle onto these orthonormal axes.

    * Fingers: flex = bone x palmar normal (+z for a finger along -x: positive flexes toward the
      palm, as in MANO); spread = rotation away from the middle finger (the middle: toward the
      thumb); twist = the bone direction.
    * Thumb (oblique bone b): its pad normal n is the palmar normal (made perpendicular to b)
      rotated by ``thumb_pronation`` degrees toward the fingers; flex = b x n (bends toward the pad:
      across and in front of the palm), spread = -n (away from the fingers: radial abduction),
      twist = -b (positive pronates, turning the pad toward the fingers).

    Returns:
        (15, 3, 3): axes[j - 1] rows are the flex, spread, twist unit vectors.
    """
    M = LOCAL_TO_WORLD
    n_p, r_hat = M[:, 2], M[:, 1]  # the palmar and radial axes in MANO's frame
    children = {p: c for c, p in enumerate(MANO_PARENTS) if p > 0}
    spread_sign = {"index": 1.0, "middle": 1.0, "ring": -1.0, "pinky": -1.0}
    out = np.zeros((15, 3, 3))
    for j in range(1, NUM_JOINTS):
        f = _finger_of(j)
        end = J[children[j]] if j in children else tips[TIP_FINGERS.index(f)]
        b = _unit(fo.matmul(M, (end - J[j])[:, None])[:, 0])
        if f == "thumb":
            n = _unit(n_p - fo.dot(n_p, b) * b)
            u = _unit(np.cross(n_p, b))
            phi = np.radians(params.thumb_pronation)
            n = np.cos(phi) * n + np.sin(phi) * u
            out[j - 1] = [np.cross(b, n), -n, -b]
        else:
            flex, spread = _unit(np.cross(b, n_p)), _unit(np.cross(b, r_hat))
            out[j - 1] = [flex, spread_sign[f] * spread, b]
    return out


def _angles(fingers: dict, thumb: tuple) -> np.ndarray:
    """(15, 3) degrees from {finger: (mcp_flex, spread, pip, dip)} and ((cmc f, s, t), mcp, ip)."""
    A = np.zeros((15, 3))
    for f, (mcp, spread, pip, dip) in fingers.items():
        j1, j2, j3 = FINGER_JOINTS[f]
        A[j1 - 1, :2], A[j2 - 1, 0], A[j3 - 1, 0] = (mcp, spread), pip, dip
    (c_f, c_s, c_t), mcp, ip = thumb
    j1, j2, j3 = FINGER_JOINTS["thumb"]
    A[j1 - 1], A[j2 - 1, 0], A[j3 - 1, 0] = (c_f, c_s, c_t), mcp, ip
    return A


def _all(mcp, pip, dip, spread=(0, 0, 0, 0)) -> dict:
    return {f: (mcp, s, pip, dip) for f, s in zip(("index", "middle", "ring", "pinky"), spread)}


def _named_poses() -> dict:
    """Named natural poses as (15, 3) joint angles in degrees (thumb targets solved later)."""
    fist = _all(80, 95, 62)
    relaxed = {"index": (20, 0, 30, 15), "middle": (25, 0, 35, 20), "ring": (30, 0, 38, 22),
               "pinky": (35, 0, 35, 18)}
    thumb_relaxed = ((10, 0, 10), 15, 15)
    over = ((35, -5, 25), 40, 30)  # thumb folded over the middle phalanges
    return {
        "flat": (_all(0, 0, 0), ((0, 0, 0), 0, 0), None),
        "relaxed": (relaxed, thumb_relaxed, None),
        "spread": (_all(0, 0, 0, (12, 4, 8, 14)), ((-15, 25, 0), 0, 0), None),
        "fist": (fist, ((40, -10, 30), 45, 35), None),
        "power_large": (_all(40, 45, 30), ((45, 0, 25), 15, 10), None),
        "power_small": (_all(65, 80, 53), ((40, -5, 25), 30, 20), None),
        "tip_pinch": ({**_all(55, 70, 46), "index": (45, 0, 40, 25)}, ((30, 0, 20), 15, 15), "index"),
        "tripod": ({**_all(55, 70, 46), "index": (40, 0, 40, 25), "middle": (40, 0, 40, 25)},
                   ((30, 0, 20), 15, 15), "index"),
        "point": ({**fist, "index": (0, 0, 0, 0)}, over, None),
        "ok_sign": ({**_all(10, 10, 5, (4, 2, 6, 10)), "index": (50, 0, 55, 35)}, ((30, 0, 20), 15, 15),
                    "index"),
        "thumbs_up": (fist, ((-10, 10, 0), -5, -5), None),
        "peace": ({**fist, "index": (0, 10, 0, 0), "middle": (0, 5, 0, 0)}, over, None),
        "hook": (_all(0, 90, 60), thumb_relaxed, None),
        "lateral_pinch": ({**_all(70, 80, 50), "index": (55, 0, 65, 40)}, ((10, -15, 10), 20, 10), None),
    }


def forward_kinematics(J: np.ndarray, tips: np.ndarray, aa: np.ndarray) -> tuple[np.ndarray, ...]:
    """Posed joints and fingertip points of the skeleton (no mesh), MANO's LBS convention.

    Args:
        J: (16, 3) rest joints, tips: (5, 3) rest tip points (any unit, world frame).
        aa: (15, 3) axis-angle of joints 1..15 in the (world-aligned) rest frames, radians.
    Returns:
        joints (16, 3), tips (5, 3) posed, and G (16, 3, 3) the global rotations.
    """
    G, out = _chain(J, aa)
    last = [FINGER_JOINTS[f][2] for f in TIP_FINGERS]
    t = out[last] + fo.matmul(G[last], (tips - J[last])[:, :, None])[..., 0]
    return out, t, G


def _chain(J: np.ndarray, aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations G (16, 3, 3) and posed joints (16, 3) down MANO's tree (fixed-order maths)."""
    Rl = np.concatenate([np.eye(3)[None], fo.rodrigues(aa)])
    G, out = np.zeros((NUM_JOINTS, 3, 3)), np.zeros_like(J, dtype=np.float64)
    G[0], out[0] = Rl[0], J[0]
    for j in range(1, NUM_JOINTS):
        p = MANO_PARENTS[j]
        G[j] = fo.matmul(G[p], Rl[j])
        out[j] = out[p] + fo.matmul(G[p], (J[j] - J[p])[:, None])[:, 0]
    return G, out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(fo.dot(x, x))


def _solve_thumb(A: np.ndarray, finger: str, axes, Jw, tw, gap: float) -> np.ndarray:
    """Thumb angles (deg) bringing the thumb tip ``gap`` metres in front of ``finger``'s pad."""
    tj = [j - 1 for j in FINGER_JOINTS["thumb"]]
    lim = JOINT_LIMITS_DEG[tj]
    x0 = np.array([A[tj[0], 0], A[tj[0], 1], A[tj[0], 2], A[tj[1], 0], A[tj[2], 0]])
    lo = np.array([lim[0, 0, 0], lim[0, 1, 0], lim[0, 2, 0], lim[1, 0, 0], lim[2, 0, 0]]) + 1e-3
    hi = np.array([lim[0, 0, 1], lim[0, 1, 1], lim[0, 2, 1], lim[1, 0, 1], lim[2, 0, 1]]) - 1e-3

    def fun(x):
        B = A.copy()
        B[tj[0]], B[tj[1], 0], B[tj[2], 0] = x[:3], x[3], x[4]
        _, t, G = forward_kinematics(Jw, tw, np.radians(np.einsum("jk,jkl->jl", B, axes)))
        pad = -G[FINGER_JOINTS[finger][2]][:, 1]  # the pad normal: the bone frame's -y
        target = t[TIP_FINGERS.index(finger)] + gap * pad
        return np.concatenate([(t[0] - target) * 1000.0, 0.02 * (x - x0)])

    x, _ = fo.least_squares(fun, x0, lo, hi)
    A = A.copy()
    A[tj[0]], A[tj[1], 0], A[tj[2], 0] = x[:3], x[3], x[4]
    return A


def _lbs_np(v: np.ndarray, W: np.ndarray, J: np.ndarray, aa: np.ndarray) -> np.ndarray:
    """Plain linear blend skinning (no shape, no pose blend shapes) of (V, 3) rest vertices."""
    G, t = _chain(J, aa)
    # Each joint maps a rest point x to G_j (x - J_j) + t_j.
    per_joint = np.einsum("jab,vjb->vja", G, v[:, None, :] - J[None]) + t[None]  # (V, 16, 3)
    return np.einsum("vj,vja->va", W, per_joint)


def pose_prior(Jw: np.ndarray, tw: np.ndarray, axes: np.ndarray, params: OpenHandParams,
               mesh: tuple | None = None):
    """Named poses and a PCA pose prior in MANO's 45-d axis-angle space.

    Samples mix two random named poses (weights favour relaxed, everyday grasps), add seeded
    Gaussian noise (flex 6 deg, spread 3, twist 2), pull DIP toward 2/3 PIP [Twente], and clip to
    :data:`JOINT_LIMITS_DEG`.

    If ``mesh = (verts (V, 3) world, faces, weights)`` is given, a named pose whose skinned mesh
    self-intersects has its thumb moved back toward the relaxed thumb in 10 % steps until it is
    free (LBS has no contact model; the thumb wrapped over the fingers is where it collides).

    Returns:
        names (P,), library (P, 45), mean (45,), components (45, 45) rows orthonormal, std (45,).
    """
    poses = _named_poses()
    names, lib = [], []
    tj = [j - 1 for j in FINGER_JOINTS["thumb"]]
    relaxed = _angles(*poses["relaxed"][:2])
    for name, (fingers, thumb, target) in poses.items():
        A = _angles(fingers, thumb)
        if target is not None:
            A = _solve_thumb(A, target, axes, Jw, tw, gap=0.012)
        if mesh is not None:
            for s in np.linspace(1.0, 0.0, 11):
                B = A.copy()
                B[tj] = s * A[tj] + (1 - s) * relaxed[tj]
                aa = np.radians(np.einsum("jk,jkl->jl", B, axes))
                if len(self_intersections(_lbs_np(mesh[0], mesh[2], Jw, aa), mesh[1])) == 0:
                    break
            A = B
        names.append(name)
        lib.append(A)
    lib = np.stack(lib)  # (P, 15, 3) degrees
    rng = np.random.default_rng(params.seed)
    pw = np.array([4.0 if n == "relaxed" else 2.0 if n.startswith(("power", "tip", "tripod")) else 1.0
                   for n in names])
    n = params.pose_samples
    i, k = rng.choice(len(lib), n, p=pw / pw.sum()), rng.choice(len(lib), n, p=pw / pw.sum())
    t = rng.uniform(0.0, 1.0, (n, 1, 1))
    S = (1 - t) * lib[i] + t * lib[k] + rng.normal(0.0, 1.0, (n, 15, 3)) * np.array([6.0, 3.0, 2.0])
    for f in ("index", "middle", "ring", "pinky"):
        _, j2, j3 = FINGER_JOINTS[f]
        S[:, j3 - 1, 0] = 0.5 * S[:, j3 - 1, 0] + 0.5 * (2.0 / 3.0) * S[:, j2 - 1, 0]  # [Twente]
    S = np.clip(S, JOINT_LIMITS_DEG[..., 0], JOINT_LIMITS_DEG[..., 1])
    X = np.radians(np.einsum("njk,jkl->njl", S, axes)).reshape(n, 45)
    mean = X.mean(0)
    Xc = X - mean
    evals, evecs = fo.eigh((Xc[:, :, None] * Xc[:, None, :]).sum(0) / (n - 1))  # covariance (45, 45)
    order = np.argsort(evals)[::-1]
    comps = evecs[:, order].T
    comps *= np.sign(comps[np.arange(45), np.abs(comps).argmax(1)])[:, None]  # deterministic signs
    library = np.radians(np.einsum("pjk,jkl->pjl", lib, axes)).reshape(len(lib), 45)
    return names, library, mean, comps, np.sqrt(np.maximum(evals[order], 0.0))

