"""OpenHand's surface: a signed distance field of the hand, meshed, cleaned and evened out.

SDF (mm, negative inside) of tapered capsules and a rounded palm slab on a 1.25 mm grid ->
``marching_cubes`` -> quadric decimation (``fast_simplification``) -> tangential relaxation
projected back on the SDF -> the flat cap at the forearm cut is removed, leaving exactly one
boundary loop (the wrist opening). Also the mesh utilities the rest of the build uses (boundary
loops, normals, a self-intersection test).
"""
from __future__ import annotations

import numpy as np
from skimage.measure import marching_cubes

from handlib.skeleton import TIP_FINGERS

from .params import FINGER_JOINTS, FINGERS, OpenHandParams, rest_skeleton


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

