"""OpenHand: an open, procedurally generated, MANO-compatible right-hand model.

The official MANO model (Romero et al. 2017) is licensed, so handlib ships its own: a skeleton
laid out like MANO's template from sourced anatomy (``../shared/hand-anatomy.md``, beside the
repository; tags such as [BK10], [B92], [Sancho], [Ibe11] refer to its source list), a surface
made from a signed distance field (SDF) of tapered capsules and a rounded palm slab, skinning weights, a joint
regressor, ten orthogonal shape directions and a pose prior built from named natural poses.

The asset uses MANO's / smplx's names and layouts, so ``smplx.lbs.lbs`` poses it directly::

    verts, joints = lbs(betas, pose, v_template, shapedirs, posedirs, J_regressor, parents, weights)

Frame (MANO right hand, metres): fingers point along -x, the thumb toward +z, the palm faces -y.
Internally the builder works in millimetres in an anatomical frame (d, r, p) = (distal, radial,
palmar) relative to the wrist joint; :data:`LOCAL_TO_WORLD` maps it to MANO's frame.

Mesh pipeline (:func:`build_open_hand`): SDF on a 1.25 mm grid -> ``marching_cubes`` -> quadric
decimation (``fast_simplification``) -> tangential relaxation projected back on the SDF -> the
flat cap at the forearm cut is removed, leaving exactly one boundary loop (the wrist opening).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
from scipy.optimize import minimize
from skimage.measure import marching_cubes

from handlib.npz import write_npz
from handlib.skeleton import MANO_JOINT_NAMES, MANO_PARENTS, NUM_JOINTS, TIP_FINGERS

ASSET_VERSION = 1
ASSET_PATH = pathlib.Path(__file__).resolve().parent / "assets" / "open_hand_v1.npz"

# Columns: where the local distal, radial and palmar unit vectors point in MANO's right-hand frame.
LOCAL_TO_WORLD = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # MANO joint order, 3 joints each
FINGER_JOINTS = {f: (1 + 3 * i, 2 + 3 * i, 3 + 3 * i) for i, f in enumerate(FINGERS)}
SHAPE_NAMES = ("size", "palm_width", "palm_length", "finger_length", "palm_thickness", "thumb_length",
               "index_vs_ring_length", "pinky_length", "fingertip_taper", "knuckle_girth")

# Documented bone-length ranges (mm) between regressed joints / tip points, per MANO finger:
# (wrist->1, 1->2, 2->3, 3->tip). wrist->1: MANO template +-10 % [J-arr]; thumb1->2: MANO 30.8 +-15 %
# [J-arr]; phalanges: [BK10] pooled means +-15 % (joint-centre links vs X-ray bone lengths, adult
# spread [Soto] SD ~10 %); 3->tip: [BK10] distal phalanx + tip pulp +-15 %.
_BK = {"index": (90.6, 39.8, 22.4, 19.6), "middle": (94.7, 44.6, 26.3, 21.4),
       "pinky": (81.8, 32.6, 18.1, 19.7), "ring": (86.1, 41.4, 25.7, 21.3), "thumb": (38.6, 30.8, 31.6, 27.4)}
BONE_LENGTH_RANGES_MM = {f: tuple((m * (0.9 if k == 0 else 0.85), m * (1.1 if k == 0 else 1.15))
                                  for k, m in enumerate(ms)) for f, ms in _BK.items()}
# (shape, symbol) of every asset array; "V" is taken from v_template, "P" from pose_library.
ASSET_SHAPES = {
    "v_template": ("V", 3), "faces": ("F", 3), "shapedirs": ("V", 3, 10), "posedirs": (135, "V*3"),
    "J_regressor": (16, "V"), "weights": ("V", 16), "parents": (16,), "J": (16, 3),
    "tip_vertex_ids": (5,), "hands_components": (45, 45), "hands_mean": (45,), "hands_std": (45,),
    "pose_library": ("P", 45), "meta": (),
}


@dataclasses.dataclass(frozen=True)
class OpenHandParams:
    """Every anatomical and build constant of OpenHand. Lengths in mm, angles in degrees.

    Points are (distal, radial, palmar) relative to the wrist joint.
    """

    # MANO's wrist joint position in metres [J0], so OpenHand sits where MANO's template does.
    wrist_world: tuple = (0.0957, 0.0064, 0.0062)
    # MCP joint centres, MANO template relative to the wrist [J-arr] (middle MCP most dorsal:
    # the transverse arch). Order: index, middle, pinky, ring (MANO's order).
    mcp: tuple = ((87.4, 23.3, 0.0), (94.7, 0.0, -6.6), (70.4, -41.4, 0.0), (82.7, -23.9, -5.4))
    # Finger rest directions in the palm plane, degrees toward radial. MANO's flat template is
    # slightly spread; the fan keeps >= 4 mm between neighbours (ours).
    finger_spread: tuple = (7.0, 0.0, -15.0, -7.0)
    # Proximal, middle, distal (DIP -> tip surface = distal phalanx + tip pulp) lengths [BK10].
    phalanx_len: tuple = ((39.8, 22.4, 19.6), (44.6, 26.3, 21.4), (32.6, 18.1, 19.7),
                          (41.4, 25.7, 21.3))
    # Segment diameters as a fraction of hand breadth [Sancho] (proximal, middle, distal).
    phalanx_dia: tuple = ((0.229, 0.198, 0.175), (0.216, 0.197, 0.179), (0.183, 0.164, 0.149),
                          (0.203, 0.182, 0.167))
    breadth_ref: float = 83.0  # hand breadth used with [Sancho]'s ratios; [CityU] 50th pct 85 (men)
    # thumb1 and thumb2 from MANO's template [J-arr]; thumb1 is MANO's CMC-ish joint.
    thumb1: tuple = (23.4, 25.1, 16.0)
    thumb2: tuple = (42.2, 49.5, 15.8)
    thumb_len: tuple = (31.6, 27.4)  # proximal phalanx, distal + tip pulp [BK10] (21.7 + 5.7)
    # Directions (radial angle in the palm plane, palmar tilt) of the thumb phalanges (ours,
    # continuing MANO's thumb1->thumb2 ray (52 deg radial, [J-arr]) toward distal).
    thumb_dirs: tuple = ((40.0, 10.0), (34.0, 10.0))
    thumb_dia: tuple = (0.229, 0.212)  # proximal, distal [Sancho] (fraction of breadth)
    thumb_mc_radius: float = 11.0  # thumb metacarpal + soft tissue (ours; [Sancho] 0.438 HB incl. thenar)
    thumb_pronation: float = 40.0  # thumb pad normal tilt from palmar toward the fingers at rest (ours)
    # Palm slab: core polygon (d, r) inflated by palm_round; skin = core + palm_round [CityU] breadth.
    palm_core: tuple = ((-25.0, -26.0), (0.0, -27.0), (35.0, -37.0), (70.4, -40.5), (82.7, -23.9),
                        (94.7, 0.0), (87.4, 22.5), (55.0, 20.0), (20.0, 15.0), (0.0, 14.0),
                        (-25.0, 14.0))
    palm_round: float = 10.0  # edge radius of the palm (ours; palm 28-32 mm thick, unsourced)
    palm_half_flat: tuple = ((-25.0, 6.0), (0.0, 5.0), (40.0, 2.0), (95.0, 1.5))  # (d, half) ours
    palm_dome: float = 0.8  # mm per sqrt(mm) inside the outline: convex palm and back (ours)
    arch_depth: float = 6.6  # dorsal offset of the palm mid-plane at the middle ray [J-arr]
    thenar: tuple = ((6.0, 12.0, 4.0, 14.0), (42.2, 49.5, 15.8, 10.0))  # round cone (d,r,p,radius)
    hypothenar: tuple = ((10.0, -22.0, 5.0, 11.0), (60.0, -37.0, 4.0, 9.0))
    blend_palm: float = 8.0  # smooth-union radius between palm parts and fingers (ours)
    blend_finger: float = 1.5  # smooth-union radius between phalanges (keeps knuckle waists)
    waist: float = 0.92  # mid-shaft radius / joint radius: gives visible knuckles (ours)
    cut_d: float = -12.0  # forearm cut, mm proximal of the wrist joint: the wrist opening
    grid_mm: float = 1.25  # SDF sampling step
    target_faces: int = 1100  # decimation target (closed mesh); MANO has 778 V / 1538 F
    max_edge_mm: float = 13.0  # longer edges are split after decimation (evens the triangles)
    relax_iters: int = 10
    weight_tau: float = 2.0  # mm; softness of the nearest-bone skinning assignment
    weight_smooth_iters: int = 6
    regressor_ring: int = 20  # vertices around each joint used by J_regressor
    pose_samples: int = 4000
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# Skeleton
# ----------------------------------------------------------------------------------------------
def _dir(angle_deg: float, tilt_deg: float = 0.0) -> np.ndarray:
    a, t = np.radians(angle_deg), np.radians(tilt_deg)
    return np.array([np.cos(a) * np.cos(t), np.sin(a) * np.cos(t), np.sin(t)])


def rest_skeleton(params: OpenHandParams = OpenHandParams()) -> tuple[np.ndarray, np.ndarray]:
    """Rest joints and fingertip points in the local frame.

    Returns:
        joints: (16, 3) mm, MANO joint order, (distal, radial, palmar) relative to the wrist.
        tips: (5, 3) mm, fingertip surface points in :data:`TIP_FINGERS` order.
    """
    J = np.zeros((NUM_JOINTS, 3))
    tips = {}
    for i, f in enumerate(FINGERS[:4]):
        u = _dir(params.finger_spread[i])
        p = np.array(params.mcp[i])
        for k, j in enumerate(FINGER_JOINTS[f]):
            J[j] = p
            p = p + params.phalanx_len[i][k] * u
        tips[f] = p
    j1, j2, j3 = FINGER_JOINTS["thumb"]
    J[j1], J[j2] = params.thumb1, params.thumb2
    J[j3] = J[j2] + params.thumb_len[0] * _dir(*params.thumb_dirs[0])
    tips["thumb"] = J[j3] + params.thumb_len[1] * _dir(*params.thumb_dirs[1])
    return J, np.stack([tips[f] for f in TIP_FINGERS])


def _bones(J: np.ndarray, tips: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(joint, start, end) segments that each joint drives (LBS: joint j moves the bone distal to it)."""
    children = {p: c for c, p in enumerate(MANO_PARENTS) if p > 0}
    bones = [(0, J[0], J[c]) for c, p in enumerate(MANO_PARENTS) if p == 0]  # metacarpals + thumb base
    bones.append((0, J[0], J[0] + np.array([-40.0, 0.0, 0.0])))  # forearm stub
    for j in range(1, NUM_JOINTS):
        end = J[children[j]] if j in children else tips[TIP_FINGERS.index(_finger_of(j))]
        bones.append((j, J[j], end))
    return bones


def _finger_of(j: int) -> str:
    return next(f for f, js in FINGER_JOINTS.items() if j in js)


# ----------------------------------------------------------------------------------------------
# Signed distance field (mm; negative inside)
# ----------------------------------------------------------------------------------------------
def _round_cone(p: np.ndarray, a, b, r1: float, r2: float) -> np.ndarray:
    """Exact SDF of a capsule tapering from radius r1 at a to r2 at b (I. Quilez's sdRoundCone)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ba = b - a
    l2 = ba @ ba
    rr = r1 - r2
    a2 = l2 - rr * rr
    pa = p - a
    y = pa @ ba
    z = y - l2
    x2 = np.sum((pa * l2 - y[:, None] * ba) ** 2, axis=1)
    y2, z2 = y * y * l2, z * z * l2
    k = np.sign(rr) * rr * rr * x2
    out = (np.sqrt(np.maximum(x2 * a2 / l2, 0.0)) + y * rr) / l2 - r1
    out = np.where(np.sign(y) * a2 * y2 < k, np.sqrt(x2 + y2) / l2 - r1, out)
    return np.where(np.sign(z) * a2 * z2 > k, np.sqrt(x2 + z2) / l2 - r2, out)


def _cone(p: np.ndarray, a, b, r1: float, r2: float, margin: float = 20.0) -> np.ndarray:
    """:func:`_round_cone`, evaluated only inside its bounding box grown by ``margin``.

    Outside it the true distance exceeds ``margin``, and ``margin`` itself is returned: larger than
    twice every blend radius, so neither the zero level nor any smooth union changes.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    r = max(r1, r2) + margin
    m = np.all((p > np.minimum(a, b) - r) & (p < np.maximum(a, b) + r), axis=1)
    out = np.full(len(p), margin)
    out[m] = _round_cone(p[m], a, b, r1, r2)
    return out


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union) with blend radius k."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k / 4.0


def _polygon_sdf(q: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance from (N, 2) points to a simple polygon (negative inside)."""
    d = np.full(len(q), np.inf)
    inside = np.zeros(len(q), bool)
    for i in range(len(poly)):
        a, b = poly[i], poly[i - 1]
        e, w = b - a, q - a
        t = np.clip(w @ e / (e @ e), 0.0, 1.0)
        d = np.minimum(d, np.sum((w - t[:, None] * e) ** 2, axis=1))
        cond = (q[:, 1] >= a[1]) != (q[:, 1] >= b[1])
        xint = a[0] + (q[:, 1] - a[1]) * e[0] / np.where(e[1] == 0, 1e-12, e[1])
        inside ^= cond & (q[:, 0] < xint)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d)


def _palm_midplane(q: np.ndarray, params: OpenHandParams) -> np.ndarray:
    """Palmar offset of the palm's mid-plane: a transverse arch with the middle ray most dorsal.

    A parabola through the index and little MCPs (offset 0) whose value at the middle ray is
    -arch_depth [J-arr]; it fades to 40 % at the wrist (the carpal arch is shallower; ours).
    """
    ri, rl = params.mcp[0][1], params.mcp[2][1]
    a = params.arch_depth / (-ri * rl)
    ramp = np.clip(0.4 + 0.6 * q[:, 0] / 80.0, 0.4, 1.0)
    return a * (q[:, 1] - ri) * (q[:, 1] - rl) * ramp


def hand_sdf(p: np.ndarray, params: OpenHandParams = OpenHandParams(), stub: float = 0.0) -> np.ndarray:
    """Signed distance (approximately, mm) of local points to the hand surface.

    Args:
        p: (N, 3) local points, mm.
        stub: extra forearm length beyond ``params.cut_d`` (mm), cut away later by the mesher.
    Returns:
        (N,) negative inside.
    """
    J, tips = rest_skeleton(params)
    hb = params.breadth_ref
    # Palm: polygon in (d, r) inflated into a slab with fully rounded edges.
    q2 = _polygon_sdf(p[:, :2], np.array(params.palm_core))
    hd, hv = np.array(params.palm_half_flat).T
    # Half thickness: flat part plus a dome (thicker mid-palm, convex back of the hand; ours).
    half = np.interp(p[:, 0], hd, hv) + params.palm_dome * np.sqrt(np.maximum(-q2, 0.0))
    dz = np.abs(p[:, 2] - _palm_midplane(p, params)) - half
    w = np.stack([q2, dz], 1)
    palm = np.linalg.norm(np.maximum(w, 0), axis=1) + np.minimum(w.max(1), 0) - params.palm_round
    for (*a, ra), (*b, rb) in (params.thenar, params.hypothenar):
        palm = _smin(palm, _cone(p, a, b, ra, rb), params.blend_palm)
    # Fingers: per phalanx a cone joint -> waist -> next joint, the last ending in a round tip.
    fingers = np.full(len(p), np.inf)
    for i, f in enumerate(FINGERS):
        js = FINGER_JOINTS[f]
        if f == "thumb":
            radii = [params.thumb_mc_radius, hb * params.thumb_dia[0] / 2, hb * params.thumb_dia[1] / 2]
        else:
            radii = [hb * x / 2 for x in params.phalanx_dia[i]]
        ends = [J[js[1]], J[js[2]], tips[TIP_FINGERS.index(f)]]
        d = np.full(len(p), np.inf)
        for k in range(3):
            a, b, r = J[js[k]], ends[k], radii[k]
            r_next = radii[k + 1] if k < 2 else r
            if k < 2:
                m = (a + b) / 2
                seg = np.minimum(_cone(p, a, m, r * 1.03, r * params.waist),
                                 _cone(p, m, b, r * params.waist, r_next * 1.0))
            else:  # distal phalanx: waist, pulp, then a rounded tip whose surface is the tip point
                u = (b - a) / np.linalg.norm(b - a)
                rt = 0.8 * r
                pad = a + 0.55 * (b - a)
                seg = np.minimum(_cone(p, a, pad, r * 0.98, r), _cone(p, pad, b - rt * u, r, rt))
            d = _smin(d, seg, params.blend_finger) if np.isfinite(d).any() else seg
        fingers = np.minimum(fingers, d)
    hand = _smin(palm, fingers, params.blend_palm * 0.6)
    return np.maximum(hand, params.cut_d - stub - p[:, 0])  # flat end of the forearm stub


# ----------------------------------------------------------------------------------------------
# Mesh
# ----------------------------------------------------------------------------------------------
def _edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def _neighbours(faces: np.ndarray, n: int):
    """Sparse (n, n) uniform adjacency matrix (row-normalised) of the mesh graph."""
    from scipy.sparse import coo_matrix
    e = _edges(faces)
    e = np.unique(np.sort(np.concatenate([e, e[:, ::-1]]), axis=1), axis=0)
    e = np.concatenate([e, e[:, ::-1]])
    A = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    deg = np.asarray(A.sum(1)).ravel()
    return A.multiply(1.0 / deg[:, None]).tocsr()


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of a triangle mesh, each an array of vertex ids in order."""
    e = _edges(faces)
    key = np.sort(e, axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    b = e[cnt[inv.ravel()] == 1]
    nxt = dict(zip(b[:, 0].tolist(), b[:, 1].tolist()))
    loops = []
    while nxt:
        start = min(nxt)
        loop, v = [start], nxt.pop(start)
        while v != start:
            loop.append(v)
            v = nxt.pop(v)
        loops.append(np.array(loop))
    return loops


def _face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def _sdf_grad(p: np.ndarray, sdf, h: float = 0.05) -> np.ndarray:
    g = np.stack([sdf(p + h * e) - sdf(p - h * e) for e in np.eye(3)], 1) / (2 * h)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)


def _project(p: np.ndarray, sdf, iters: int = 3) -> np.ndarray:
    for _ in range(iters):
        p = p - sdf(p)[:, None] * _sdf_grad(p, sdf)
    return p


def _mesh(params: OpenHandParams, J: np.ndarray, tips: np.ndarray):
    """Local-frame surface mesh: (V, 3) mm vertices, (F, 3) faces, outward, one wrist loop."""
    import fast_simplification

    stub = 10.0

    def sdf(x):
        return hand_sdf(x, params, stub)

    h = params.grid_mm
    # Grid half a step off the cut plane so that no sample lies exactly on the zero level.
    lo = np.array([params.cut_d - stub - 2.5 * h, tips[:, 1].min() - 14.0, -32.0])
    hi = np.array([tips[:, 0].max() + 4 * h, tips[0, 1] + 14.0, 40.0])
    axes = [np.arange(lo[i], hi[i] + h, h) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    vol = np.concatenate([sdf(c) for c in np.array_split(grid, 8)]).reshape([len(a) for a in axes])
    v, f, _, _ = marching_cubes(vol.astype(np.float32), 0.0, spacing=(h, h, h))
    v = v.astype(np.float64) + lo
    if np.sum(np.einsum("ij,ij->i", v[f[:, 0]], _face_normals(v, f))) < 0:
        f = f[:, ::-1]
    v, f = fast_simplification.simplify(v, f.astype(np.int32), target_count=params.target_faces, agg=7.0)
    f = f.astype(np.int64)
    # Cut the (longer) forearm stub at cut_d: the kept boundary becomes the wrist opening, its
    # vertices are put on the cut plane, onto the surface, and evenly spaced along the loop.
    f = f[v[f].mean(1)[:, 0] >= params.cut_d]
    for _ in range(10):  # drop "ears" (faces with three rim vertices): they would flatten
        rim = np.zeros(len(v), bool)
        rim[np.concatenate(boundary_loops(f))] = True
        ear = rim[f].all(1)
        if not ear.any():
            break
        f = f[~ear]
    used = np.unique(f)
    remap = np.full(len(v), -1)
    remap[used] = np.arange(len(used))
    v, f = v[used], remap[f]
    loops = boundary_loops(f)
    if len(loops) != 1:
        raise RuntimeError(f"expected one wrist loop after the cut, got {len(loops)}")
    v = _even_loop(v, loops[0], params.cut_d, sdf)
    # Even out the triangles: split long edges, Delaunay flips, tangential relaxation.
    v, f = _split_long_edges(v, f, params.max_edge_mm, sdf)
    fixed = np.zeros(len(v), bool)
    fixed[loops[0]] = True
    for _ in range(2):
        f = _flip_edges(v, f)
        v = _relax(v, f, fixed, sdf, params.relax_iters)
    # Pin the vertex nearest to each fingertip point onto it (the tip_vertex_ids convention).
    tip_ids = np.array([np.argmin(np.linalg.norm(v - t, axis=1)) for t in tips])
    v[tip_ids] = tips
    fixed[tip_ids] = True
    v = _relax(v, f, fixed, sdf, 3)
    return v, f, tip_ids


def _relax(v: np.ndarray, f: np.ndarray, fixed: np.ndarray, sdf, iters: int) -> np.ndarray:
    """Tangential uniform-Laplacian smoothing, each step re-projected onto the SDF's zero level."""
    L = _neighbours(f, len(v))
    for _ in range(iters):
        n = _vertex_normals(v, f)
        dv = L @ v - v
        dv -= np.sum(dv * n, 1, keepdims=True) * n
        v = np.where(fixed[:, None], v, _project(v + 0.5 * dv, sdf, 2))
    return v


def _split_long_edges(v: np.ndarray, f: np.ndarray, lmax: float, sdf) -> tuple[np.ndarray, np.ndarray]:
    """Split interior edges longer than ``lmax`` at their midpoint (projected onto the surface),
    with Delaunay flips after every pass so that slivers are not fanned out."""
    v, f = list(v), [list(t) for t in f]
    for _ in range(8):
        edge_faces: dict = {}
        for i, t in enumerate(f):
            for k in range(3):
                edge_faces.setdefault(tuple(sorted((t[k], t[k - 2]))), []).append(i)
        long = [(np.linalg.norm(v[a] - v[b]), a, b) for (a, b), fs in edge_faces.items() if len(fs) == 2]
        long = sorted((x for x in long if x[0] > lmax), reverse=True)
        if not long:
            break
        used: set = set()
        mids, new_faces = [], []
        for _, a, b in long:
            fs = edge_faces[(a, b)]
            if used.intersection(fs):
                continue
            used.update(fs)
            m = len(v) + len(mids)
            mids.append((v[a] + v[b]) / 2)
            for i in fs:
                t = f[i]
                k = next(k for k in range(3) if {t[k], t[(k + 1) % 3]} == {a, b})
                x, y, z = t[k], t[(k + 1) % 3], t[(k + 2) % 3]
                f[i] = [x, m, z]
                new_faces.append([m, y, z])
        v += list(_project(np.array(mids), sdf, 4))
        f = [list(t) for t in _flip_edges(np.array(v), np.array(f + new_faces, dtype=np.int64))]
    return np.array(v), np.array(f, dtype=np.int64)


def _flip_edges(v: np.ndarray, f: np.ndarray, passes: int = 6) -> np.ndarray:
    """Delaunay edge flips: flip an interior edge when its two opposite angles sum to more than pi."""
    f = f.copy()

    def angle(p, q, r):  # angle at p in triangle p, q, r
        a, b = v[q] - v[p], v[r] - v[p]
        return np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))

    for _ in range(passes):
        half = {}
        for i, t in enumerate(f):
            for k in range(3):
                half[(t[k], t[(k + 1) % 3])] = (i, t[(k + 2) % 3])
        touched, flips = set(), 0
        for (a, b), (i, c) in sorted(half.items()):
            if a > b or (b, a) not in half:
                continue
            j, d = half[(b, a)]
            if i in touched or j in touched or c == d or (c, d) in half or (d, c) in half:
                continue
            if angle(c, a, b) + angle(d, b, a) <= np.pi + 1e-6:
                continue
            n_old = _face_normals(v, f[[i, j]]).sum(0)
            new = np.array([[a, d, c], [d, b, c]])
            if np.any(_face_normals(v, new) @ n_old <= 0):
                continue
            f[i], f[j] = new
            touched.update((i, j))
            flips += 1
        if flips == 0:
            break
    return f


def _even_loop(v: np.ndarray, loop: np.ndarray, d: float, sdf) -> np.ndarray:
    """Put a boundary loop on the plane distal = d, on the surface, evenly spaced by arc length."""
    v = v.copy()
    p = v[loop].copy()
    for _ in range(4):  # project onto the surface within the plane
        p[:, 0] = d
        g = _sdf_grad(p, sdf)
        g[:, 0] = 0.0
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        p = p - sdf(p)[:, None] * g
    p[:, 0] = d
    seg = np.linalg.norm(np.roll(p, -1, 0) - p, axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    closed = np.concatenate([p, p[:1]])
    target = np.arange(len(p)) * s[-1] / len(p)
    v[loop] = np.stack([np.interp(target, s, closed[:, k]) for k in range(3)], 1)
    return v


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = _face_normals(v, f)
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


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


# ----------------------------------------------------------------------------------------------
# Pose axes, named poses and the pose prior
# ----------------------------------------------------------------------------------------------
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
    n_p = M @ np.array([0.0, 0.0, 1.0])
    r_hat = M @ np.array([0.0, 1.0, 0.0])
    children = {p: c for c, p in enumerate(MANO_PARENTS) if p > 0}
    spread_sign = {"index": 1.0, "middle": 1.0, "ring": -1.0, "pinky": -1.0}
    out = np.zeros((15, 3, 3))
    for j in range(1, NUM_JOINTS):
        f = _finger_of(j)
        end = J[children[j]] if j in children else tips[TIP_FINGERS.index(f)]
        b = M @ (end - J[j])
        b /= np.linalg.norm(b)
        if f == "thumb":
            n = n_p - (n_p @ b) * b
            n /= np.linalg.norm(n)
            u = np.cross(n_p, b)
            u /= np.linalg.norm(u)
            phi = np.radians(params.thumb_pronation)
            n = np.cos(phi) * n + np.sin(phi) * u
            out[j - 1] = [np.cross(b, n), -n, -b]
        else:
            flex = np.cross(b, n_p)
            flex /= np.linalg.norm(flex)
            spread = np.cross(b, r_hat)
            spread /= np.linalg.norm(spread)
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


def _to_world(x_local_mm: np.ndarray, params: OpenHandParams) -> np.ndarray:
    return np.asarray(params.wrist_world) + x_local_mm @ LOCAL_TO_WORLD.T / 1000.0


def forward_kinematics(J: np.ndarray, tips: np.ndarray, aa: np.ndarray) -> tuple[np.ndarray, ...]:
    """Posed joints and fingertip points of the skeleton (no mesh), MANO's LBS convention.

    Args:
        J: (16, 3) rest joints, tips: (5, 3) rest tip points (any unit, world frame).
        aa: (15, 3) axis-angle of joints 1..15 in the (world-aligned) rest frames, radians.
    Returns:
        joints (16, 3), tips (5, 3) posed, and G (16, 3, 3) the global rotations.
    """
    from scipy.spatial.transform import Rotation
    Rl = np.concatenate([np.eye(3)[None], Rotation.from_rotvec(aa).as_matrix()])
    G, out = np.zeros((NUM_JOINTS, 3, 3)), np.zeros_like(J)
    G[0], out[0] = Rl[0], J[0]
    for j in range(1, NUM_JOINTS):
        p = MANO_PARENTS[j]
        G[j] = G[p] @ Rl[j]
        out[j] = out[p] + G[p] @ (J[j] - J[p])
    last = {f: FINGER_JOINTS[f][2] for f in FINGERS}
    t = np.stack([out[last[f]] + G[last[f]] @ (tips[i] - J[last[f]]) for i, f in enumerate(TIP_FINGERS)])
    return out, t, G


def _solve_thumb(A: np.ndarray, finger: str, axes, Jw, tw, gap: float) -> np.ndarray:
    """Thumb angles (deg) bringing the thumb tip ``gap`` metres in front of ``finger``'s pad."""
    from scipy.optimize import least_squares
    tj = [j - 1 for j in FINGER_JOINTS["thumb"]]
    lim = JOINT_LIMITS_DEG[tj]
    x0 = np.array([A[tj[0], 0], A[tj[0], 1], A[tj[0], 2], A[tj[1], 0], A[tj[2], 0]])
    lo = np.array([lim[0, 0, 0], lim[0, 1, 0], lim[0, 2, 0], lim[1, 0, 0], lim[2, 0, 0]]) + 1e-3
    hi = np.array([lim[0, 0, 1], lim[0, 1, 1], lim[0, 2, 1], lim[1, 0, 1], lim[2, 0, 1]]) - 1e-3

    def fun(x):
        B = A.copy()
        B[tj[0]], B[tj[1], 0], B[tj[2], 0] = x[:3], x[3], x[4]
        _, t, G = forward_kinematics(Jw, tw, np.radians(np.einsum("jk,jkl->jl", B, axes)))
        pad = G[FINGER_JOINTS[finger][2]] @ np.array([0.0, -1.0, 0.0])
        target = t[TIP_FINGERS.index(finger)] + gap * pad
        return np.concatenate([(t[0] - target) * 1000.0, 0.02 * (x - x0)])

    x = least_squares(fun, np.clip(x0, lo, hi), bounds=(lo, hi), method="trf", xtol=1e-12, ftol=1e-12).x
    A = A.copy()
    A[tj[0]], A[tj[1], 0], A[tj[2], 0] = x[:3], x[3], x[4]
    return A


def _lbs_np(v: np.ndarray, W: np.ndarray, J: np.ndarray, aa: np.ndarray) -> np.ndarray:
    """Plain linear blend skinning (no shape, no pose blend shapes) of (V, 3) rest vertices."""
    from scipy.spatial.transform import Rotation
    Rl = np.concatenate([np.eye(3)[None], Rotation.from_rotvec(aa).as_matrix()])
    G, t = np.zeros((NUM_JOINTS, 3, 3)), np.zeros((NUM_JOINTS, 3))
    G[0], t[0] = Rl[0], J[0]
    for j in range(1, NUM_JOINTS):
        p = MANO_PARENTS[j]
        G[j], t[j] = G[p] @ Rl[j], t[p] + G[p] @ (J[j] - J[p])
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
    evals, evecs = np.linalg.eigh(np.cov((X - mean).T))
    order = np.argsort(evals)[::-1]
    comps = evecs[:, order].T
    comps *= np.sign(comps[np.arange(45), np.abs(comps).argmax(1)])[:, None]  # deterministic signs
    library = np.radians(np.einsum("pjk,jkl->pjl", lib, axes)).reshape(len(lib), 45)
    return names, library, mean, comps, np.sqrt(np.maximum(evals[order], 0.0))


# ----------------------------------------------------------------------------------------------
# Self-intersection test
# ----------------------------------------------------------------------------------------------
def self_intersections(verts: np.ndarray, faces: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """Pairs of faces that intersect, excluding pairs that share a vertex.

    Candidate pairs come from overlapping bounding boxes; each is tested by intersecting the
    three edges of either triangle with the other (Moller-Trumbore). Coplanar overlaps are not
    reported (they do not occur in a generic mesh).

    Args:
        verts: (V, 3). faces: (F, 3) int.
    Returns:
        (M, 2) int64 face index pairs (i < j).
    """
    v = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    tri = v[faces]  # (F, 3, 3)
    lo, hi = tri.min(1), tri.max(1)
    ov = np.ones((len(faces), len(faces)), bool)
    for k in range(3):
        ov &= (lo[:, None, k] <= hi[None, :, k]) & (lo[None, :, k] <= hi[:, None, k])
    i, j = np.nonzero(np.triu(ov, 1))
    share = (faces[i][:, :, None] == faces[j][:, None, :]).any((1, 2))
    i, j = i[~share], j[~share]

    def seg_hits(P, Q, T):  # segments P->Q (N, 3) against triangles T (N, 3, 3)
        e1, e2, d = T[:, 1] - T[:, 0], T[:, 2] - T[:, 0], Q - P
        h = np.cross(d, e2)
        a = np.einsum("ij,ij->i", e1, h)
        ok = np.abs(a) > 1e-20
        inv = np.where(ok, 1.0 / np.where(ok, a, 1.0), 0.0)
        s = P - T[:, 0]
        u = inv * np.einsum("ij,ij->i", s, h)
        q = np.cross(s, e1)
        w = inv * np.einsum("ij,ij->i", d, q)
        t = inv * np.einsum("ij,ij->i", e2, q)
        return ok & (u > eps) & (w > eps) & (u + w < 1 - eps) & (t > eps) & (t < 1 - eps)

    hit = np.zeros(len(i), bool)
    for A, B in ((tri[i], tri[j]), (tri[j], tri[i])):
        for k in range(3):
            hit |= seg_hits(A[:, k], A[:, (k + 1) % 3], B)
    return np.stack([i[hit], j[hit]], 1).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Build, save, load
# ----------------------------------------------------------------------------------------------
def build_open_hand(params: OpenHandParams = OpenHandParams()) -> dict[str, np.ndarray]:
    """Build every OpenHand array (deterministic).

    Returns:
        dict with the keys of :data:`ASSET_SHAPES` (float32 / int32 / int64 and a JSON ``meta``).
    """
    J, tips = rest_skeleton(params)
    v, f, tip_ids = _mesh(params, J, tips)
    W = skinning_weights(v, f, J, tips, params)
    R = joint_regressor(v, J, tips, params)
    dirs, meanings = shape_directions(v, W, J, tips)
    vw, Jw, tw = _to_world(v, params), _to_world(J, params), _to_world(tips, params)
    f = f[:, ::-1]  # LOCAL_TO_WORLD is a reflection: keep faces counter-clockwise from outside
    axes = joint_axes(J, tips, params)
    names, library, mean, comps, std = pose_prior(Jw, tw, axes, params, (vw, f, W))
    meta = {
        "name": "OpenHand", "version": ASSET_VERSION, "units": "metres",
        "frame": "MANO right hand: fingers -x, thumb +z, palm faces -y",
        "counts": {"V": len(vw), "F": len(f)},
        "joint_names": list(MANO_JOINT_NAMES), "tip_fingers": list(TIP_FINGERS),
        "tip_vertex_convention": "mesh vertex placed exactly at the distal end of each finger's axis "
                                 "on the fingertip surface (DIP + distal length along the bone)",
        "wrist": "open: exactly one boundary loop (the wrist opening) at cut_d mm proximal of the wrist",
        "pose_names": names, "pose_convention": "45-d axis-angle of joints 1..15, world-aligned rest "
        "frames, no flat_hand_mean offset; joint angles are projections on joint_axes (flex, spread, twist)",
        "joint_axes": np.round(axes, 6).tolist(), "joint_limits_deg": JOINT_LIMITS_DEG.tolist(),
        "shape_names": list(SHAPE_NAMES), "shape_meanings": meanings,
        "posedirs": "zero: no pose corrective blend shapes",
        "params": dataclasses.asdict(params),
        "sources": "see docs/open_hand.md and ../shared/hand-anatomy.md ([BK10], [B92], [Sancho], "
                   "[Ibe11], [CityU], [Chat24], [Eaton], [AAOS], [Twente], [J-arr], [J0])",
    }
    out = {
        "v_template": vw.astype(np.float32),
        "faces": f.astype(np.int32),
        "shapedirs": np.einsum("ij,vjk->vik", LOCAL_TO_WORLD, dirs / 1000.0).astype(np.float32),
        "posedirs": np.zeros((135, len(vw) * 3), np.float32),
        "J_regressor": R.astype(np.float32),
        "weights": W.astype(np.float32),
        "parents": np.array(MANO_PARENTS, np.int64),
        "J": Jw.astype(np.float32),
        "tip_vertex_ids": tip_ids.astype(np.int64),
        "hands_components": comps.astype(np.float32),
        "hands_mean": mean.astype(np.float32),
        "hands_std": std.astype(np.float32),
        "pose_library": library.astype(np.float32),
    }
    out["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return out


def save_asset(arrays: dict, path) -> None:
    """Write ``arrays`` as an ``.npz`` that is byte-identical for identical input.

    Members come in a fixed order (:data:`ASSET_SHAPES`, then any others sorted) through
    :func:`handlib.npz.write_npz` (fixed dates, no timestamps).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [k for k in ASSET_SHAPES if k in arrays] + sorted(k for k in arrays if k not in ASSET_SHAPES)
    write_npz(path, {k: np.array(arrays[k], order="C") for k in keys}, compresslevel=9)


def load_asset(path=None) -> dict[str, np.ndarray]:
    """Load an OpenHand asset and check every key and shape.

    Args:
        path: ``.npz`` file; default :data:`ASSET_PATH`.
    Returns:
        dict of arrays (``meta`` is a 0-d unicode array holding JSON).
    Raises:
        FileNotFoundError, KeyError or ValueError naming the file and the key.
    """
    path = pathlib.Path(ASSET_PATH if path is None else path)
    if not path.exists():
        raise FileNotFoundError(f"OpenHand asset {path} not found; rebuild it with "
                                "`python data_scripts/build_open_hand.py`")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k in ASSET_SHAPES:
        if k not in arrays:
            raise KeyError(f"{path}: missing key {k!r} (expected keys: {list(ASSET_SHAPES)})")
    sizes = {"V": arrays["v_template"].shape[0], "F": arrays["faces"].shape[0],
             "P": arrays["pose_library"].shape[0]}
    sizes["V*3"] = 3 * sizes["V"]
    for k, spec in ASSET_SHAPES.items():
        want = tuple(sizes[s] if isinstance(s, str) else s for s in spec)
        if arrays[k].shape != want:
            raise ValueError(f"{path}: key {k!r} has shape {arrays[k].shape}, expected {want} ({spec})")
    return arrays
