"""Small files in the exact on-disk layouts of licensed assets, for tests and notebooks.

The real MANO model and datasets cannot be redistributed, but their loaders must be exercised.
These builders write look-alike files with known contents: same keys, same Python 2 pickle
opcodes, same container classes (chumpy ``Ch``, ``scipy.sparse.csc_matrix``), different numbers.
"""
from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .skeleton import MANO_PARENTS


def random_mano_arrays(seed: int = 0, V: int = 778, F: int = 1538, side: str = "right") -> dict:
    """MANO-shaped arrays with MANO's sizes and tree, random but well-formed contents.

    ``shapedirs[..., 0]`` grows the hand about its centre (as MANO's first shape component does),
    so the left-hand shapedirs check has something to detect. Keys as in the official pickle.
    """
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(V, 3)) * np.array([0.05, 0.02, 0.03]) + np.array([0.0, 0.0, 0.0])
    v[:, 0] -= 0.05 if side == "left" else -0.05  # right wrist region at x > 0
    W = rng.random((V, 16)) ** 6
    W /= W.sum(1, keepdims=True)
    Jr = np.zeros((16, V))
    for j in range(16):  # sparse, non-negative rows summing to one, like MANO's
        idx = rng.choice(V, size=12, replace=False)
        Jr[j, idx] = rng.random(12)
    Jr /= Jr.sum(1, keepdims=True)
    shapedirs = rng.normal(size=(V, 3, 10)) * 0.002
    shapedirs[..., 0] = 0.1 * (v - v.mean(0))
    comps = np.linalg.qr(rng.normal(size=(45, 45)))[0].T
    kintree = np.array([[2**32 - 1] + list(MANO_PARENTS[1:]), list(range(16))], dtype=np.int64)
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": rng.normal(size=(V, 3, 135)) * 0.001,
        "J_regressor": Jr,
        "weights": W,
        "kintree_table": kintree,
        "f": rng.integers(0, V, size=(F, 3)).astype(np.uint32),
        "hands_components": comps,
        "hands_mean": rng.normal(size=45) * 0.2,
        "hands_coeffs": rng.normal(size=(20, 45)),
        "J": Jr @ v,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


class _FakeCh:
    """Pickles like ``chumpy.ch.Ch`` (its ``__getstate__``: ``__dict__`` less ``_parents`` and
    ``_cache``) and, when installed as ``chumpy.ch``, unpickles into an object with ``.r``."""

    def __init__(self, x):
        self.x = np.asarray(x, dtype=np.float64)
        self._dirty_vars = set()
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False

    @property
    def r(self):
        return self.x

    @property
    def shape(self):
        return self.x.shape

    def __getitem__(self, index):  # chumpy slices into a new Ch; an array serves the readers
        return self.x[index]

    def __array__(self, dtype=None, copy=None):
        return self.x if dtype is None else self.x.astype(dtype)


@contextmanager
def fake_chumpy():
    """Temporarily install a minimal ``chumpy.ch.Ch`` so that plain pickle (and smplx) can read
    the fixture; handlib's own loader never needs it."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    cls = type("Ch", (_FakeCh,), {"__module__": "chumpy.ch", "__qualname__": "Ch"})
    mod.Ch = cls
    pkg.ch = mod
    sys.modules.update({"chumpy": pkg, "chumpy.ch": mod})
    try:
        yield cls
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _as_python2(data: bytes) -> bytes:
    """Rewrite a memo-free protocol-2 pickle written by Python 3 into what Python 2 writes:
    raw bytes as BINSTRING instead of ``_codecs.encode(str, 'latin1')``, and the module names
    of the numpy/scipy of the day (``numpy.core.multiarray``, ``scipy.sparse.csc``)."""
    ops = list(pickletools.genops(data))
    out, i = bytearray(), 0
    while i < len(ops):
        op, arg, pos = ops[i]
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "GLOBAL" and arg == "_codecs encode":
            text, enc = ops[i + 1][1], ops[i + 2][1]
            assert enc == "latin1" and ops[i + 3][0].name == "TUPLE2" and ops[i + 4][0].name == "REDUCE"
            raw = text.encode("latin1")
            out += b"T" + struct.pack("<i", len(raw)) + raw  # BINSTRING
            i += 5
            continue
        out += data[pos:end]
        i += 1
    out = bytes(out)
    for new, old in ((b"numpy._core.multiarray", b"numpy.core.multiarray"),
                     (b"scipy.sparse._csc", b"scipy.sparse.csc")):
        out = out.replace(b"c" + new + b"\n", b"c" + old + b"\n")
    return out


def write_mano_pkl(path, arrays: dict | None = None, python2: bool = True) -> Path:
    """Write ``arrays`` in the official MANO pickle layout.

    ``shapedirs`` becomes a chumpy ``Ch``, ``J_regressor`` a ``scipy.sparse.csc_matrix``, the
    rest numpy arrays and strings, in one dict, pickled with protocol 2. With ``python2`` the bytes
    are rewritten as Python 2 writes them (the downloadable files); without, they are what a
    Python 3 re-save produces (``_codecs.encode`` for raw bytes).
    """
    arrays = random_mano_arrays() if arrays is None else arrays
    with fake_chumpy() as Ch:
        payload = {k: v for k, v in arrays.items()}
        payload["shapedirs"] = Ch(arrays["shapedirs"])
        payload["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=2)
        pickler.fast = True  # no memo, like many Python 2 dumps of flat dicts; keeps rewriting simple
        pickler.dump(payload)
    data = buf.getvalue()
    if python2:
        data = _as_python2(data)
    path = Path(path)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------
# small meshes for renderer tests, benchmarks and notebooks
# ------------------------------------------------------------------------------------------------
def icosphere(level: int = 2):
    """Unit icosphere: 12 → 42 → 162 vertices (level 0, 1, 2)."""
    t = (1 + 5 ** 0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    v = [np.array(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(level):
        mids, nf = {}, []

        def mid(i, j, mids=mids):
            key = (min(i, j), max(i, j))
            if key not in mids:
                m = v[i] + v[j]
                v.append(m / np.linalg.norm(m))
                mids[key] = len(v) - 1
            return mids[key]
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = nf
    return torch.tensor(np.array(v), dtype=torch.float64), torch.tensor(f)


def ellipsoid(center, radii, angle=0.0, rings=9, segs=16):
    """UV ellipsoid, (rings − 1)·segs + 2 vertices, rotated by ``angle`` about z."""
    th = torch.arange(1, rings, dtype=torch.float64)[:, None] * math.pi / rings
    ph = torch.arange(segs, dtype=torch.float64)[None] * 2 * math.pi / segs
    ring = torch.stack([th.sin() * ph.cos(), -th.cos().expand(-1, segs), th.sin() * ph.sin()], -1)
    f64 = torch.float64
    v = torch.cat([torch.tensor([[0.0, -1, 0]], dtype=f64), ring.reshape(-1, 3),
                   torch.tensor([[0.0, 1, 0]], dtype=f64)]) * torch.tensor(radii, dtype=f64)
    c, s = math.cos(angle), math.sin(angle)
    v = v @ torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=f64).T + torch.tensor(center, dtype=f64)
    f, last = [], len(v) - 1
    for j in range(segs):
        f.append([0, 1 + (j + 1) % segs, 1 + j])
        base = 1 + (rings - 2) * segs
        f.append([last, base + j, base + (j + 1) % segs])
        for i in range(rings - 2):
            a, b = 1 + i * segs + j, 1 + i * segs + (j + 1) % segs
            f += [[a, b, b + segs], [a, b + segs, a + segs]]
    return v, torch.tensor(f)


def blob_hand():
    """A hand-sized closed mesh with overlapping parts: palm + 4 fingers + thumb, 780 V / 1536 F."""
    parts = [ellipsoid((0, 0, 0), (0.045, 0.05, 0.015))]
    parts += [ellipsoid((x, -0.085, 0), (0.009, 0.04, 0.009)) for x in (-0.033, -0.011, 0.011, 0.033)]
    parts.append(ellipsoid((0.06, -0.02, -0.01), (0.011, 0.035, 0.011), angle=0.8))
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + off)
        off += len(v)
    return torch.cat(verts) + torch.tensor([0.0, 0.02, 0.4], dtype=torch.float64), torch.cat(faces)
