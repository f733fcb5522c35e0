"""OpenHand's rig: skinning weights, the joint regressor and the ten shape directions.

All three are computed on the local-frame rest mesh (mm) from :mod:`.geometry` and the skeleton of
:mod:`.params`; :func:`handlib.open_hand.build_open_hand` converts them to MANO's frame in metres.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from handlib.skeleton import MANO_JOINT_NAMES, MANO_PARENTS, NUM_JOINTS, TIP_FINGERS

from .geometry import _neighbours
from .params import FINGER_JOINTS, FINGERS, OpenHandParams, _bones, _finger_of


# ----------------------------------------------------------------------------------------------
# Skinning weights and joint regressor
# ----------------------------------------------------------------------------------------------
def _segment_distance(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((x - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(x - a - t[:, None] * ab, axis=1)


def skinning_weights(v: np.ndarray, f: np.ndarray, J: np.ndarray, tips: np.ndarray,
                     params: OpenHandParams = OpenHandParams()) -> np.ndarray:
    """Smooth LBS weights from distances to the bone segments.

    Each joint j owns the segment from j to its child (or fingertip); the wrist owns the four
    metacarpals, the wrist->thumb1 line and the forearm. A soft nearest-bone assignment
    (``exp(-(d_j - d_min) / tau)``) is smoothed by a few uniform Laplacian iterations on the mesh.

    Args:
        v: (V, 3) local vertices, mm. f: (F, 3) faces. J: (16, 3), tips: (5, 3) local, mm.
    Returns:
        (V, 16) non-negative, rows sum to 1.
    """
    D = np.full((len(v), NUM_JOINTS), np.inf)
    for j, a, b in _bones(J, tips):
        D[:, j] = np.minimum(D[:, j], _segment_distance(v, a, b))
    W = np.exp(-(D - D.min(1, keepdims=True)) / params.weight_tau)
    W /= W.sum(1, keepdims=True)
    L = _neighbours(f, len(v))
    for _ in range(params.weight_smooth_iters):
        W = 0.5 * W + 0.5 * (L @ W)
    W[W < 1e-4] = 0.0
    return W / W.sum(1, keepdims=True)


def joint_regressor(v: np.ndarray, J: np.ndarray, tips: np.ndarray,
                    params: OpenHandParams = OpenHandParams()) -> np.ndarray:
    """Sparse, non-negative, sum-to-one regressor with ``R @ v == J`` exactly (float64).

    For each joint: the vertices in a 12 mm slab perpendicular to the bone through the joint,
    the nearest one in each of 12 angular sectors around the bone plus the nearest others up to
    ``regressor_ring``; then the weights closest to uniform (so that the joint follows the whole
    ring under shape changes) subject to ``w >= 0, sum w = 1, v.T @ w = J`` (SLSQP).

    Returns:
        (16, V).
    """
    R = np.zeros((NUM_JOINTS, len(v)))
    for j in range(NUM_JOINTS):
        if j == 0:
            axis = np.array([1.0, 0.0, 0.0])
        else:
            nxt = [c for c, p in enumerate(MANO_PARENTS) if p == j]
            end = J[nxt[0]] if nxt else tips[TIP_FINGERS.index(_finger_of(j))]
            axis = (end - J[j]) / np.linalg.norm(end - J[j])
            if MANO_PARENTS[j] > 0:
                inc = J[j] - J[MANO_PARENTS[j]]
                axis = axis + inc / np.linalg.norm(inc)
                axis /= np.linalg.norm(axis)
        x = v - J[j]
        s = x @ axis
        rad = x - s[:, None] * axis
        dist = np.linalg.norm(x, axis=1)
        cand = np.where(np.abs(s) < 6.0)[0]
        e1 = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        ang = np.arctan2(rad[cand] @ np.cross(axis, e1), rad[cand] @ e1)
        sector = np.floor((ang + np.pi) / (2 * np.pi) * 12).astype(int)
        chosen = []
        for k in range(12):
            inside = cand[sector == k]
            if len(inside):
                chosen.append(inside[np.argmin(dist[inside])])
        rest = [i for i in cand[np.argsort(dist[cand], kind="stable")] if i not in chosen]
        idx = np.array(sorted(chosen + rest[: params.regressor_ring - len(chosen)]))
        A = np.vstack([v[idx].T, np.ones(len(idx))])  # (4, k)
        b = np.append(J[j], 1.0)
        u = np.full(len(idx), 1.0 / len(idx))
        res = minimize(lambda w, u=u: np.sum((w - u) ** 2), u, jac=lambda w, u=u: 2 * (w - u),
                       method="SLSQP", bounds=[(0.0, 1.0)] * len(idx),
                       constraints=[{"type": "eq", "fun": lambda w, A=A, b=b: A @ w - b,
                                     "jac": lambda w, A=A: A}],
                       options={"ftol": 1e-15, "maxiter": 500})
        w = np.where(res.x > 1e-6, res.x, 0.0)
        sup = w > 0  # exact polish on the support: minimum-norm correction of the residual
        w[sup] += np.linalg.lstsq(A[:, sup], b - A @ w, rcond=None)[0]
        if np.any(w < 0) or np.abs(A @ w - b).max() > 1e-9:
            raise RuntimeError(f"joint {MANO_JOINT_NAMES[j]}: regressor ring does not enclose the joint")
        R[j, idx] = w
    return R


# ----------------------------------------------------------------------------------------------
# Shape directions
# ----------------------------------------------------------------------------------------------
def _edit_displacement(v, W, J, tips, palm, axial=None, radial=None) -> np.ndarray:
    """Displacement (V, 3) of a skeleton edit, blended by the skinning weights (linear in the edit).

    Args:
        palm: (3, 3) strain of the palm about the wrist (local frame), moving the finger roots too.
        axial, radial: (16,) length and girth strain of each joint's bone (index 0 unused).
    """
    axial = np.zeros(NUM_JOINTS) if axial is None else axial
    radial = np.zeros(NUM_JOINTS) if radial is None else radial
    children = {p: c for c, p in enumerate(MANO_PARENTS) if p > 0}
    moved = np.zeros_like(J)  # displacement of each joint
    for j in range(1, NUM_JOINTS):  # parents come first in MANO order
        p = MANO_PARENTS[j]
        moved[j] = palm @ (J[j] - J[0]) if p == 0 else moved[p] + axial[p] * (J[j] - J[p])
    out = W[:, :1] * ((v - J[0]) @ palm.T)
    for j in range(1, NUM_JOINTS):
        end = J[children[j]] if j in children else tips[TIP_FINGERS.index(_finger_of(j))]
        u = (end - J[j]) / np.linalg.norm(end - J[j])
        x = v - J[j]
        s = (x @ u)[:, None] * u
        out += W[:, j:j + 1] * (moved[j] + axial[j] * s + radial[j] * (x - s))
    return out


def shape_directions(v, W, J, tips) -> tuple[np.ndarray, list[str]]:
    """Ten orthogonal shape directions in the local frame, mm, each at one standard deviation.

    The raw directions are skeleton edits (:func:`_edit_displacement`) at 1 sigma; they are
    Gram-Schmidt orthogonalised in this order of importance, each keeping the norm of its
    residual, so beta_i = 1 is one SD of the variation not already explained by beta_0..i-1.

    Returns:
        dirs: (V, 3, 10). meanings: 10 strings.
    """
    ones = np.ones(NUM_JOINTS)
    fj = {f: np.isin(np.arange(NUM_JOINTS), FINGER_JOINTS[f]).astype(float) for f in FINGERS}
    digits = 1.0 - fj["thumb"] - np.eye(NUM_JOINTS)[0]
    proximal = np.isin(np.arange(NUM_JOINTS), [1, 4, 7, 10, 14]).astype(float)
    distal = np.zeros(NUM_JOINTS)
    distal[[3, 6, 9, 12, 15]], distal[[2, 5, 8, 11, 14]] = 1.0, 0.5
    e = np.diag
    raw = [  # (palm strain, axial strain, radial strain, 1 SD meaning)
        (0.05 * np.eye(3), 0.05 * ones, 0.05 * ones,
         "overall size +-5 % (hand length SD ~9 mm [Ibe11], breadth SD 5 mm [CityU])"),
        (e([0, 0.04, 0]), None, None, "palm breadth +-4 % beyond size ([CityU] SD 5.9 % minus size)"),
        (e([0.04, 0, 0]), None, None, "palm length +-4 %, the digits carried along"),
        (None, 0.04 * digits, None, "finger (not thumb) length +-4 % ([Chat24] digit SD ~7 %)"),
        (e([0, 0, 0.07]), None, None, "palm thickness +-7 % (no sourced SD; ours)"),
        (None, 0.06 * fj["thumb"], None, "thumb length +-6 % ([Chat24] thumb 49.5 +- 5.5 mm)"),
        (None, 0.03 * (fj["index"] - fj["ring"]), None, "index vs ring length (2D:4D) +-3 %"),
        (None, 0.06 * fj["pinky"], None, "little finger length +-6 % ([Chat24] 53.3 +- 4.3 mm)"),
        (None, None, 0.08 * distal, "fingertip taper: distal phalanges +-8 %, middle +-4 % girth (ours)"),
        (None, None, 0.06 * proximal, "proximal phalanx / knuckle girth +-6 % (ours)"),
    ]
    cols, meanings = [], []
    for palm, ax, rad, meaning in raw:
        d = _edit_displacement(v, W, J, tips, np.zeros((3, 3)) if palm is None else palm, ax, rad)
        cols.append(d.ravel())
        meanings.append(meaning)
    Q = []
    for c in cols:  # modified Gram-Schmidt, keeping residual norms
        for q in Q:
            c = c - (c @ q) / (q @ q) * q
        Q.append(c)
    return np.stack(Q, 1).reshape(len(v), 3, len(Q)), meanings

