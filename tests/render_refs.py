"""Plain, independent references for the renderer tests (written without handlib's machinery)."""
import numpy as np

from handlib.camera import intrinsics

D64 = __import__("torch").float64


def coverage_loop(verts, faces, K, H, W):
    """Brute-force hard silhouette: is each pixel centre inside any projected face? (H, W) bool."""
    v = verts.numpy()
    k = K.numpy()
    uv = (v @ k.T)[:, :2] / v[:, 2:]
    pu, pv = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    out = np.zeros((H, W), bool)
    for a, b, c in faces.tolist():
        (ax, ay), (bx, by), (cx, cy) = uv[a], uv[b], uv[c]
        e0 = (bx - ax) * (pv - ay) - (by - ay) * (pu - ax)
        e1 = (cx - bx) * (pv - by) - (cy - by) * (pu - bx)
        e2 = (ax - cx) * (pv - cy) - (ay - cy) * (pu - cx)
        out |= ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
    return out


def iou(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max((a | b).sum(), 1)


def cam(size, focal=None, dtype=D64):
    H, W = (size, size) if isinstance(size, int) else size
    return intrinsics(focal or max(H, W), (W - 1) / 2, (H - 1) / 2, dtype=dtype)
