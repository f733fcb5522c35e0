"""Tiny fake datasets in each reader's exact on-disk layout, with known keypoints.

Each ``write_*`` writes a few frames of random but plausible hands (see :func:`random_hand`),
projected with the dataset's real intrinsics, into the official folder tree and file formats
(RHD's Python 2 pickle, STB's ``handPara`` .mat files, D+O's text annotations, FreiHAND's JSON),
and returns the ground truth each reader should give back, in reader order::

    {split: [{"kp3d" (21, 3) m, "kp2d" (21, 2) px, "K" (3, 3), "valid" (21,), "side",
              "mask" (H, W) bool or None, "file": image path}, ...]}

The images are smooth colour gradients with dots at the keypoints (so crops can be inspected);
masks are disks around the keypoints of the annotated hand.
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from scipy.spatial.transform import Rotation

from ..fixtures import _as_python2
from ..skeleton import MIDDLE_MCP, convert
from . import dexter_object as do
from . import stb as stb_mod
from .common import project_np

RHD_K = np.array([[299.0, 0.0, 160.0], [0.0, 299.0, 160.0], [0.0, 0.0, 1.0]])  # an RHD frame's K
FREIHAND_K = np.array([[365.67238, 0.0, 112.36154], [0.0, 365.44211, 112.36154], [0.0, 0.0, 1.0]])

# Right-hand template, metres, palm facing the camera, fingers up (−y): (start offset, direction,
# segment lengths) per finger, thumb first; the wrist is the origin.
_FINGERS = (((0.022, -0.018), (0.55, -0.83), (0.035, 0.032, 0.026)),  # thumb CMC → MCP → IP → tip
            ((0.024, -0.085), (0.08, -1.0), (0.042, 0.026, 0.020)),
            ((0.002, -0.090), (0.0, -1.0), (0.046, 0.029, 0.022)),
            ((-0.018, -0.085), (-0.08, -1.0), (0.042, 0.027, 0.021)),
            ((-0.036, -0.075), (-0.18, -1.0), (0.034, 0.021, 0.019)))


def random_hand(rng: np.random.Generator, K: np.ndarray, image_size, side: str = "right",
                centre=None, depth=(0.45, 0.7), max_angle: float = 35.0) -> np.ndarray:
    """(21, 3) camera-space keypoints (metres, handlib order) of a random hand whose middle MCP
    projects to ``centre`` (default: near the image centre) at a random depth."""
    kp = np.zeros((21, 3))
    for f, ((x0, y0), (dx, dy), lengths) in enumerate(_FINGERS):
        d = np.array([dx, dy, 0.0]) / np.hypot(dx, dy)
        p = np.array([x0, y0, 0.0])
        first = 1 + 4 * f  # the thumb's CMC, the other fingers' MCP
        kp[first] = p
        curl = rng.uniform(0.0, 0.6)
        for k, length in enumerate(lengths):
            a = curl * (k + 1) * 0.6
            step = np.array([d[0] * np.cos(a), d[1] * np.cos(a), -np.sin(a)]) * length
            kp[first + k + 1] = kp[first + k] + step
    kp *= rng.uniform(0.9, 1.1)
    if side == "left":
        kp[:, 0] *= -1
    R = Rotation.from_rotvec(np.deg2rad(max_angle) * rng.uniform(-1, 1, 3) / np.sqrt(3)).as_matrix()
    kp = (kp - kp[MIDDLE_MCP]) @ R.T
    w, h = image_size
    if centre is None:
        centre = (w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h)
    z = rng.uniform(*depth)
    target = np.linalg.inv(K) @ np.array([centre[0], centre[1], 1.0]) * z
    return kp + target


def _picture(rng, h: int, w: int, dots=()) -> np.ndarray:
    """(h, w, 3) uint8 RGB gradient with white dots at ``dots`` (pixels)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c = rng.uniform(0.2, 1.0, 3)
    img = np.stack([xx / w * 200 * c[0], yy / h * 200 * c[1], (xx + yy) / (w + h) * 200 * c[2]], -1)
    img = img.astype(np.uint8)
    for u, v in dots:
        cv2.circle(img, (int(round(u)), int(round(v))), 2, (255, 255, 255), -1)
    return img


def _write_rgb(path: Path, img: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), *kw.values()):
        raise OSError(f"could not write {path}")


def _disks(shape, uv, radius: int, value: int = 1, out=None) -> np.ndarray:
    out = np.zeros(shape, np.uint8) if out is None else out
    for u, v in uv:
        cv2.circle(out, (int(round(u)), int(round(v))), radius, int(value), -1)
    return out


def write_rhd(root, counts=None, seed: int = 0) -> dict:
    """RHD_published_v2 look-alike: ``{split}/{color,mask,depth}/%05d.png`` + Python 2 pickles.

    Sample ``k`` has the left hand dominant (larger mask) when ``k`` is even, the right when odd;
    sample ids are 0, 3, 6, ... (RHD ids are not always contiguous in a reader's view).
    """
    rng, root = np.random.default_rng(seed), Path(root)
    counts = counts or {"training": 3, "evaluation": 2}
    truth = {}
    for split, n in counts.items():
        anno, truth[split] = {}, []
        for k in range(n):
            sid = 3 * k
            K = RHD_K.copy()
            K[0, 0] = K[1, 1] = rng.uniform(263.0, 306.0)
            left = random_hand(rng, K, (320, 320), "left", centre=(100, 160))
            right = random_hand(rng, K, (320, 320), "right", centre=(220, 160))
            uv_l, uv_r = project_np(left, K), project_np(right, K)
            vis = rng.random(42) > 0.2
            dominant = "left" if k % 2 == 0 else "right"
            labels = np.zeros((320, 320), np.uint8)
            labels[250:300, 20:300] = 1  # "person"
            big, small = (9, 4) if dominant == "left" else (4, 9)
            _disks(labels.shape, uv_l, big, 2 + k % 16, labels)  # left labels 2..17
            _disks(labels.shape, uv_r, small, 18 + k % 16, labels)  # right labels 18..33
            xyz = np.concatenate([convert(left, "handlib", "rhd"), convert(right, "handlib", "rhd")])
            uv = np.concatenate([convert(uv_l, "handlib", "rhd"), convert(uv_r, "handlib", "rhd")])
            anno[sid] = {"xyz": xyz.astype(np.float32), "K": K.astype(np.float32),
                         "uv_vis": np.concatenate([uv, vis[:, None]], 1).astype(np.float32)}
            d = root / split
            _write_rgb(d / "color" / f"{sid:05d}.png", _picture(rng, 320, 320, np.concatenate([uv_l, uv_r])))
            (d / "mask").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / "mask" / f"{sid:05d}.png"), labels)
            code = np.full((320, 320), int(0.6 / 5.0 * 65535))  # 0.6 m everywhere
            depth = np.stack([code // 256, code % 256, np.zeros_like(code)], -1).astype(np.uint8)
            _write_rgb(d / "depth" / f"{sid:05d}.png", depth)
            hand = left if dominant == "left" else right
            vis_h = vis[:21] if dominant == "left" else vis[21:]
            truth[split].append({
                "kp3d": hand, "kp2d": project_np(hand, K), "K": K, "side": dominant,
                "valid": convert(vis_h[:, None], "rhd", "handlib")[:, 0],
                "mask": (labels >= 2) & (labels <= 17) if dominant == "left" else labels >= 18,
                "file": d / "color" / f"{sid:05d}.png"})
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=2)
        pickler.fast = True  # memo-free, so that it can be rewritten as Python 2 writes it
        pickler.dump(anno)
        (root / split / f"anno_{split}.pickle").write_bytes(_as_python2(buf.getvalue()))
    return truth


def write_stb(root, frames: int = 2, sequences=stb_mod.SEQUENCES, nested: bool = True, seed: int = 0) -> dict:
    """STB look-alike: ``images/<seq>/{BB_left,BB_right,SK_color}_%d.png`` + ``labels/<seq>_{BB,SK}.mat``.

    Truth is keyed by ``(seq, frame, camera)``; the palm written at STB's index 0 is the midpoint
    of the true wrist and ring MCP, so ``palm_to_wrist`` recovers the true wrist exactly.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    truth = {}
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for seq in sequences:
        seq_dir = (root / "images" / seq) if nested else root / seq
        bb, sk = np.zeros((3, 21, frames)), np.zeros((3, 21, frames))
        for f in range(frames):
            for cam in ("BB_left", "SK"):
                K = stb_mod.BB_K if cam == "BB_left" else stb_mod.SK_COLOR_K
                hand = random_hand(rng, K, (640, 480), "left")
                stored = hand.copy()
                stored[0] = 0.5 * (hand[0] + hand[stb_mod.RING_MCP])  # STB's palm centre
                mm = convert(stored, "handlib", "stb") * 1000.0
                if cam == "SK":  # labels live in the depth camera: X_d = R X_c + t
                    R = Rotation.from_rotvec(stb_mod.SK_ROT_VEC).as_matrix()
                    sk[:, :, f] = (mm @ R.T + stb_mod.SK_TRANS_MM).T
                    views = {"SK": hand}
                else:
                    bb[:, :, f] = mm.T
                    right = hand - np.array([stb_mod.BB_BASELINE_MM / 1000, 0, 0])
                    views = {"BB_left": hand, "BB_right": right}
                for name, kp in views.items():
                    Kv = stb_mod.SK_COLOR_K if name == "SK" else stb_mod.BB_K
                    prefix = stb_mod.CAMERAS[name][0]
                    path = seq_dir / f"{prefix}_{f}.png"
                    _write_rgb(path, _picture(rng, 480, 640, project_np(kp, Kv)))
                    truth[seq, f, name] = {"kp3d": kp, "kp2d": project_np(kp, Kv), "K": Kv, "side": "left",
                                           "valid": np.ones(21, bool), "mask": None, "file": path}
        scipy.io.savemat(str(root / "labels" / f"{seq}_BB.mat"), {"handPara": bb})
        scipy.io.savemat(str(root / "labels" / f"{seq}_SK.mat"), {"handPara": sk})
    return truth


def write_dexter_object(root, frames: int = 2, sequences=do.SEQUENCES, seed: int = 0) -> dict:
    """D+O look-alike: ``data/<seq>/{color,depth}/*.png`` + ``annotations/<seq>{3D,2D}.txt``.

    In each sequence, frame 1 has its ring tip missing (32001) and frame 2 (if any) its thumb.
    Truth is a list in reader order.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    truth = []
    R, t = do.COLOR_EXTRINSICS_MM[:, :3], do.COLOR_EXTRINSICS_MM[:, 3]
    for seq in sequences:
        d = root / "data" / seq
        (d / "annotations").mkdir(parents=True, exist_ok=True)
        lines3d, lines2d = [], []
        for f in range(frames):
            hand = random_hand(rng, do.COLOR_K, (640, 480), "left")
            tips_c = hand[list(do.TIP_KEYPOINTS)] * 1000.0  # colour camera, mm
            tips_a = (tips_c - t) @ np.linalg.inv(R @ do.FLIP).T  # invert annotation_to_color
            present = np.ones(5, bool)
            if f in (1, 2):
                present[3 if f == 1 else 0] = False
            tips_a[~present] = do.INVALID
            lines3d.append("; ".join(", ".join(f"{v:.6f}" for v in p) for p in tips_a) + ";")
            uv_d = project_np(tips_a * do.FLIP.diagonal(), do.DEPTH_K)
            lines2d.append("; ".join(f"{u:.2f}, {v:.2f}" for u, v in uv_d) + ";")
            name = f"image_{f:05d}.png"
            uv = project_np(hand, do.COLOR_K)
            _write_rgb(d / "color" / name, _picture(rng, 480, 640, uv[list(do.TIP_KEYPOINTS)]))
            (d / "depth").mkdir(exist_ok=True)
            cv2.imwrite(str(d / "depth" / name), np.full((240, 320), 500, np.uint16))
            valid = np.zeros(21, bool)
            valid[np.asarray(do.TIP_KEYPOINTS)[present]] = True
            kp3d, kp2d = np.where(valid[:, None], hand, 0.0), np.where(valid[:, None], uv, 0.0)
            truth.append({"kp3d": kp3d, "kp2d": kp2d, "K": do.COLOR_K, "side": "left", "valid": valid,
                          "mask": None, "file": d / "color" / name})
        (d / "annotations" / f"{seq}3D.txt").write_text("\n".join(lines3d) + "\n")
        (d / "annotations" / f"{seq}2D.txt").write_text("\n".join(lines2d) + "\n")
    return truth


def write_freihand(root, unique: int = 3, versions: int = 4, evaluation: int = 2, seed: int = 0) -> dict:
    """FreiHAND v2 look-alike with ``unique`` annotations × ``versions`` images for training.

    Version ``v`` of sample ``a`` is image ``v * unique + a``; its dots are drawn in a different
    colour per version so tests can tell the images apart. Truth for training lists every image.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    truth = {}
    for split, n in (("training", unique), ("evaluation", evaluation)):
        Ks, xyzs, manos, verts, truth[split] = [], [], [], [], []
        for a in range(n):
            K = FREIHAND_K.copy()
            K[:2, :2] *= rng.uniform(0.9, 1.1)  # FreiHAND's focal lengths vary per sample
            hand = random_hand(rng, K, (224, 224), "right")
            uv = project_np(hand, K)
            mask = _disks((224, 224), uv, 10)
            theta = rng.normal(size=(1, 61)) * 0.1
            Ks.append(K.tolist()), xyzs.append(hand.tolist()), manos.append(theta.tolist())
            verts.append(np.zeros((778, 3)).tolist())
            if split == "training":
                (root / "training" / "mask").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "training" / "mask" / f"{a:08d}.jpg"),
                            np.repeat(mask[..., None] * 255, 3, -1))
            else:
                (root / "evaluation" / "segmap").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "evaluation" / "segmap" / f"{a:08d}.png"), mask * 7)
            truth[split].append({"kp3d": hand, "kp2d": uv, "K": K, "side": "right",
                                 "valid": np.ones(21, bool), "mask": mask.astype(bool), "theta": theta[0]})
        for v in range(versions if split == "training" else 1):
            for a in range(n):
                img = _picture(rng, 224, 224, truth[split][a]["kp2d"])
                img[:8, :8] = v * 60  # version tag (one JPEG block, survives compression)
                _write_rgb(root / split / "rgb" / f"{v * n + a:08d}.jpg", img)
        for name, data in (("K", Ks), ("xyz", xyzs), ("mano", manos), ("verts", verts)):
            (root / f"{split}_{name}.json").write_text(json.dumps(data))
    return truth
