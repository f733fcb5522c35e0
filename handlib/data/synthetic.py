"""A seeded synthetic RHD-like dataset: OpenHand rendered over photos, in the one sample format.

Zimmermann & Brox's RHD renders posed hands from many viewpoints over random backgrounds; Baek et
al. (2019, Sec. 4) train on it. Here every sample is a fixed function of ``(seed, split, index)``:

* **RNG scheme.** ``SeedSequence([seed, SPLITS[split], index]).spawn(6)`` gives six independent
  streams (pose, shape, view, appearance, background, finish), so a sample can be generated alone,
  in any order and in any process, and changing one knob (say the background mix) leaves the
  other streams', and hence the hands', draws unchanged.
* **Hand.** Side (left = ``HandModel(side="left")``, pose mirrored), pose from the PCA prior
  (``hands_mean + N(0, hands_std²)`` coefficients) or the named pose library plus noise, both
  clipped to ``open_hand.JOINT_LIMITS_DEG`` on the asset's joint axes; β ~ N(0, I) clipped to ±3σ
  (Sec. 3.5's range); a uniformly random global rotation (the full sphere: egocentric and
  third-person views alike); scale 1.
* **Camera.** f = image size × U(focal range), principal point near the centre; the middle MCP at
  a depth in the distance range; the hand then slid sideways so every vertex and keypoint projects
  at least ``margin`` inside the image (if it cannot fit, f shrinks, then the hand moves away).
* **Appearance.** Monk Skin Tone albedo [Monk] with per-sample jitter and low-frequency per-vertex
  noise; a random light direction, colour and ambient level; a photo or procedural background
  (:mod:`handlib.data.backgrounds`); optional distractor occluders; blur and sensor noise.
* **Batching.** Geometry (LBS) runs one sample at a time in float64 (identical maths for every
  sample whatever the batch); the z-buffer render is batched (one call per ambient level) in
  float64 and is per-pixel, so a sample's bytes do not depend on its batch (tests check this).

Labels: ``mask`` is the **visible** hand (silhouette minus occluders), as in RHD. ``valid`` = the
keypoint projects inside the image (always true here: the margin keeps it so). ``visible`` = valid,
not hidden by the hand itself (keypoint depth more than ``visibility_tol`` behind the z-buffer at
its pixel; joints lie ~5–15 mm inside the skin) and not under an occluder. ``pose`` (48,) is the
global rotation as axis-angle followed by the 45 finger-joint offsets from ``hands_mean``
(``flat_hand_mean=False``, FreiHAND's layout); ``h`` (63,) is the paper's [q, θ, β, s, t] for the
model of ``side``; ``cam`` (3,) is FreiHAND's weak-perspective root (u, v, f / Z) of the middle MCP.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

from .. import open_hand
from ..config import profile
from ..hand_model import HandModel
from ..npz import write_npz
from ..raster import render_rgb
from ..rotations import quaternion_to_axis_angle
from ..skeleton import MIDDLE_MCP
from . import backgrounds
from .common import (
    DataError,
    HandDataset,
    MissingData,
    make_sample,
    project_np,
    read_image,
    read_json,
    read_label,
)

SPLITS = {"train": 0, "val": 1, "test": 2}
FORMAT_VERSION = 1
# Monk Skin Tone scale, MST 1..10, sRGB [Monk] (../shared/hand-anatomy.md §6).
MST_HEX = ("f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96", "a07e56", "825c43", "604134", "3a312a", "292420")
MST_RGB = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in MST_HEX], np.float64) / 255.0


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the synthetic generator. ``dataclasses.replace(cfg, ...)`` for variants."""

    image_size: int = 128  # rendered (uncropped) side, px; RHD is 320; crops are cut from this
    focal_range: tuple = (0.9, 2.0)  # f / size; RHD: 263–306 px at 320 (0.82–0.96); longer = bigger hands
    principal_jitter: float = 0.03  # principal point = centre ± this × size (real cameras are off-centre)
    distance_range: tuple = (0.3, 1.0)  # depth Z of the middle MCP, metres: near egocentric to third-person
    margin: float = 0.04  # every vertex/keypoint ≥ margin × size inside the image (RHD crops need the hand)
    left_fraction: float = 0.5  # RHD has both hands; the paper's model handles one side by mirroring
    pose_prior_fraction: float = 0.5  # PCA prior (smooth everyday poses) vs named library (fists, pinches)
    pca_scale: float = 1.0  # × hands_std on the prior's coefficients (1 = the prior as fitted)
    library_noise_deg: tuple = (8.0, 4.0, 2.0)  # flex, spread, twist noise added to a named pose
    shape_std: float = 1.0  # β ~ N(0, shape_std²): the shape space is in units of σ
    shape_clip: float = 3.0  # Sec. 3.5: shapes kept within ±3σ
    skin_jitter: float = 0.06  # per-channel log-normal jitter of the MST tone (tan, redness, lighting)
    skin_noise: float = 0.08  # amplitude of low-frequency per-vertex albedo noise (blotches, creases)
    ambient_levels: tuple = (0.3, 0.45, 0.6)  # discrete: render_rgb takes one ambient per call
    light_tint: float = 0.15  # light colour temperature: gains (1 + t, 1, 1 − t), t ~ U(−tint, tint)
    light_intensity: tuple = (0.75, 1.15)  # overall light gain (under- and over-exposure)
    photo_fraction: float = 0.7  # background: bundled photo crops vs procedural textures
    occluder_prob: float = 0.3  # chance of 1..max_occluders distractors drawn over the hand
    max_occluders: int = 2
    blur_max: float = 0.8  # Gaussian blur sigma ~ U(0, blur_max) px: focus and motion softness
    noise_max: float = 4.0  # sensor noise std ~ U(0, noise_max) grey levels
    visibility_tol: float = 0.02  # m: a keypoint this far behind the z-buffer counts as self-occluded
    batch_size: int = 32  # samples per batched render inside a worker (never changes any byte)


def default_image_size() -> int:
    """Render size for the current ``HANDLIB_PROFILE``: twice its crop size (64 → 128 in ci), so a
    hand spanning a third to two thirds of the image is cropped at about native resolution."""
    return 2 * profile().image_size


# ----------------------------------------------------------------------------------------------
# Per-process model and asset cache
# ----------------------------------------------------------------------------------------------
_CACHE: dict = {}


def _assets() -> dict:
    if "asset" not in _CACHE:
        a = open_hand.load_asset()
        meta = json.loads(str(a["meta"]))
        _CACHE["asset"] = {
            "mean": a["hands_mean"].astype(np.float64), "comps": a["hands_components"].astype(np.float64),
            "std": a["hands_std"].astype(np.float64), "library": a["pose_library"].astype(np.float64),
            "names": list(meta["pose_names"]), "axes": np.asarray(meta["joint_axes"], np.float64),
            "limits": np.radians(open_hand.JOINT_LIMITS_DEG),
        }
    return _CACHE["asset"]


def hand_models() -> dict[str, HandModel]:
    """{"right", "left"}: float64 OpenHand models (``flat_hand_mean=False``), built once per process."""
    if "models" not in _CACHE:
        _CACHE["models"] = {s: HandModel(side=s, dtype=torch.float64) for s in ("right", "left")}
    return _CACHE["models"]


def clip_pose(aa: np.ndarray) -> np.ndarray:
    """(..., 45) absolute right-hand axis-angle → the same with every joint angle (its projection on
    the asset's flex/spread/twist axes) clipped to ``open_hand.JOINT_LIMITS_DEG``."""
    a = _assets()
    ang = np.einsum("...jl,jkl->...jk", aa.reshape(*aa.shape[:-1], 15, 3), a["axes"])
    ang = np.clip(ang, a["limits"][..., 0], a["limits"][..., 1])
    return np.einsum("...jk,jkl->...jl", ang, a["axes"]).reshape(aa.shape)


MIRROR_AA = np.tile([1.0, -1.0, -1.0], 15)  # axis-angle under x → −x: (x, y, z) → (x, −y, −z)


def joint_angles(pose, side: str = "right") -> np.ndarray:
    """(..., 45) finger-pose offsets of a ``side`` hand (a sample's ``pose[3:]`` or ``h[4:49]``) →
    (..., 15, 3) absolute joint angles in degrees (flex, spread, twist; MANO joint order 1..15)."""
    a = _assets()
    aa = np.asarray(pose, np.float64) * (MIRROR_AA if side == "left" else 1.0) + a["mean"]
    return np.degrees(np.einsum("...jl,jkl->...jk", aa.reshape(*aa.shape[:-1], 15, 3), a["axes"]))


# ----------------------------------------------------------------------------------------------
# Drawing one sample's parameters
# ----------------------------------------------------------------------------------------------
def _streams(seed: int, split: str, index: int) -> list[np.random.Generator]:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
    ss = np.random.SeedSequence([int(seed), SPLITS[split], int(index)])
    return [np.random.default_rng(s) for s in ss.spawn(6)]


def _f32(x) -> np.ndarray:
    """Round to float32 and back: stored labels are float32, so the geometry uses exactly them."""
    return np.asarray(x, np.float32).astype(np.float64)


def draw_params(seed: int, index: int, cfg: SyntheticConfig, split: str = "train") -> dict:
    """All random choices of one sample (no geometry): a dict of numpy values and generators."""
    r_pose, r_shape, r_view, r_app, r_bg, r_fin = _streams(seed, split, index)
    a = _assets()
    side = "left" if r_pose.random() < cfg.left_fraction else "right"
    if r_pose.random() < cfg.pose_prior_fraction:
        coeffs = r_pose.standard_normal(45) * a["std"] * cfg.pca_scale
        absolute, source = a["mean"] + coeffs @ a["comps"], "prior"
    else:
        k = int(r_pose.integers(len(a["names"])))
        noise = np.radians(r_pose.standard_normal((15, 3)) * np.asarray(cfg.library_noise_deg))
        absolute, source = a["library"][k] + np.einsum("jk,jkl->jl", noise, a["axes"]).ravel(), a["names"][k]
    pose = clip_pose(absolute) - a["mean"]  # offset from hands_mean (flat_hand_mean=False)
    if side == "left":
        pose = pose * MIRROR_AA  # the left model's mean is the mirrored right mean, so offsets mirror too
    betas = np.clip(r_shape.standard_normal(10) * cfg.shape_std, -cfg.shape_clip, cfg.shape_clip)
    q = r_view.standard_normal(4)  # uniform on SO(3): a normalised 4-d Gaussian
    q = q / np.linalg.norm(q) * (1.0 if q[0] >= 0 else -1.0)
    S = cfg.image_size
    focal = S * r_view.uniform(*cfg.focal_range)
    pp = (S - 1) / 2.0 + r_view.uniform(-cfg.principal_jitter, cfg.principal_jitter, 2) * S
    depth = r_view.uniform(*cfg.distance_range)
    place = r_view.random(2)  # where in the feasible range of positions the hand goes (u, v)
    tone = int(r_app.integers(len(MST_RGB)))
    albedo = MST_RGB[tone] * np.exp(r_app.standard_normal(3) * cfg.skin_jitter)
    waves = [(r_app.standard_normal(3), r_app.uniform(0.03, 0.12), r_app.uniform(0, 2 * np.pi),
              r_app.uniform(0, cfg.skin_noise)) for _ in range(4)]
    light = r_app.standard_normal(3)
    light[2] = -abs(light[2]) - 0.3  # from the camera's side (two-sided shading: behind = dark)
    t = r_app.uniform(-cfg.light_tint, cfg.light_tint)
    tint = np.array([1 + t, 1.0, 1 - t]) * r_app.uniform(*cfg.light_intensity)
    ambient = float(cfg.ambient_levels[int(r_app.integers(len(cfg.ambient_levels)))])
    return dict(side=side, pose=_f32(pose), betas=_f32(betas), rot=_f32(q), focal=focal, pp=pp, depth=depth,
                place=place, albedo=albedo, waves=waves, tint=tint, light=light / np.linalg.norm(light),
                ambient=ambient, tone=tone, pose_source=source, r_bg=r_bg, r_fin=r_fin)


def _fit_in_view(rel: np.ndarray, root_z: float, focal: float, pp, depth: float, place, S: int,
                 cfg: SyntheticConfig):
    """Translation putting the rotated hand ``rel`` (N, 3; wrist at 0) in view with the margin,
    its middle MCP (depth ``root_z`` in ``rel``) at depth ``depth``.

    For fixed depth, a point's u = f (x + tx) / (z + tz) + cx is increasing in tx, so each point
    bounds tx to an interval; ``place`` picks a spot in the intersection (per axis). If it is
    empty, f shrinks (down to the focal range's minimum), then the hand moves away (up to the
    distance range's maximum), and only then f leaves its range.
    """
    m = cfg.margin * S
    f_min = cfg.focal_range[0] * S
    for _ in range(200):
        fk = float(np.float32(focal))  # K is stored in float32: place against that exact K
        cx, cy = (float(np.float32(c)) for c in pp)
        tz = depth - root_z
        z = rel[:, 2] + tz
        t, ok = np.zeros(3), True
        for axis, c in ((0, cx), (1, cy)):
            lo = ((m - c) * z / fk - rel[:, axis]).max()
            hi = ((S - 1 - m - c) * z / fk - rel[:, axis]).min()
            ok &= bool(lo <= hi)
            t[axis] = lo + place[axis] * (hi - lo)
        if ok:
            t[2] = tz
            return t, fk, (cx, cy), depth
        if focal > f_min:
            focal = max(f_min, focal * 0.9)
        elif depth < cfg.distance_range[1]:
            depth = min(cfg.distance_range[1], depth * 1.05)
        else:  # only for a tiny image or a huge margin: leave the focal range rather than the view
            focal *= 0.9
    raise RuntimeError("could not fit the hand in view")  # pragma: no cover


def hand_geometry(params: dict, cfg: SyntheticConfig) -> dict:
    """Pose, shape and place one hand (float64, batch of one, so independent of any batch).

    Returns:
        dict with verts (V, 3), joints (21, 3) camera space, K (3, 3), trans (3,) (float32 values).
    """
    model = hand_models()[params["side"]]
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)[None]  # noqa: E731
    with torch.no_grad():
        out = model(pose=T(params["pose"]), betas=T(params["betas"]), rot=T(params["rot"]),
                    scale=T([1.0]), trans=T(np.zeros(3)))
    rel_v, rel_j = out.verts[0].numpy(), out.joints[0].numpy()
    t, f, (cx, cy), _ = _fit_in_view(np.concatenate([rel_v, rel_j]), rel_j[MIDDLE_MCP, 2], params["focal"],
                                     params["pp"], params["depth"], params["place"], cfg.image_size, cfg)
    t = _f32(t)  # wrist position, stored as float32; model(trans=t) == rel + t exactly
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return dict(verts=rel_v + t, joints=rel_j + t, K=K, trans=t)


def vertex_albedo(params: dict, template: np.ndarray) -> np.ndarray:
    """(V, 3) skin albedo in [0, 1]: MST tone × low-frequency noise over the rest-pose surface."""
    n = np.zeros(len(template))
    for direction, wavelength, phase, amp in params["waves"]:
        k = direction / np.linalg.norm(direction) * (2 * np.pi / wavelength)
        n += amp * np.sin(template @ k + phase)
    col = params["albedo"][None] * (1.0 + n[:, None]) + np.array([0.04, -0.01, -0.02]) * n[:, None] * 3
    return np.clip(col * params["tint"][None], 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------
def _render(items: list[dict], cfg: SyntheticConfig) -> None:
    """Batched z-buffer render of ``items`` in place (adds rgb, silhouette, depth).

    One call per ambient level (``render_rgb`` takes one ambient per call). Left and right hands
    share a call: the rasteriser is two-sided, so the right model's faces serve the mirrored mesh
    too (:func:`render_faces`)."""
    faces = render_faces()
    groups: dict = {}
    for k, it in enumerate(items):
        groups.setdefault(it["params"]["ambient"], []).append(k)
    T = lambda xs: torch.as_tensor(np.stack(xs), dtype=torch.float64)  # noqa: E731
    for ambient, ks in groups.items():
        out = render_rgb(T([items[k]["geom"]["verts"] for k in ks]), faces,
                         T([items[k]["geom"]["K"] for k in ks]), cfg.image_size,
                         vert_colors=T([items[k]["albedo"] for k in ks]),
                         light_dir=T([items[k]["params"]["light"] for k in ks]), ambient=ambient)
        for j, k in enumerate(ks):
            items[k].update(rgb=out["rgb"][j].numpy(), silhouette=out["mask"][j].numpy(),
                            depth=out["depth"][j].numpy())


def render_faces() -> torch.Tensor:
    """(F, 3) faces used to render both sides (the right model's; winding is irrelevant to a
    two-sided z-buffer render)."""
    return hand_models()["right"].faces


def _finish(it: dict, cfg: SyntheticConfig, seed: int, index: int, split: str) -> dict:
    """Composite over a background, add occluders, blur and noise; compute labels."""
    p, g, S = it["params"], it["geom"], cfg.image_size
    img, kind = backgrounds.random_background(p["r_bg"], S, cfg.photo_fraction)
    sil = it["silhouette"]
    img[sil] = np.round(it["rgb"][sil] * 255.0).astype(np.uint8)
    kp3d = g["joints"].astype(np.float32)
    K = g["K"].astype(np.float32)
    kp2d = project_np(kp3d, K).astype(np.float64)
    r = p["r_fin"]
    occ = np.zeros((S, S), bool)
    if r.random() < cfg.occluder_prob:
        box = (*kp2d.min(0), *kp2d.max(0))
        occ = backgrounds.draw_occluders(r, img, box, count=int(r.integers(1, cfg.max_occluders + 1)))
    sigma, noise = r.uniform(0.0, cfg.blur_max), r.uniform(0.0, cfg.noise_max)
    x = img.astype(np.float32)
    if sigma > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x += r.standard_normal((S, S, 3), dtype=np.float32) * np.float32(noise)
    image = np.clip(np.round(x), 0, 255).astype(np.uint8)
    uv = np.round(kp2d).astype(int)
    valid = ((kp2d >= -0.5) & (kp2d <= S - 0.5)).all(1)  # pixel centres at integers
    uc, vc = np.clip(uv[:, 0], 0, S - 1), np.clip(uv[:, 1], 0, S - 1)
    in_front = it["depth"][vc, uc] < kp3d[:, 2] - cfg.visibility_tol  # the hand itself is in front
    visible = valid & ~in_front & ~occ[vc, uc]
    mask = sil & ~occ
    rot, pose45 = p["rot"], p["pose"]
    global_aa = quaternion_to_axis_angle(torch.as_tensor(rot)[None])[0].numpy()
    z = float(kp3d[MIDDLE_MCP, 2])
    sample = make_sample(
        image, mask, kp2d, kp3d, K, valid, p["side"], index, f"synthetic:{split}:{seed}:{index}",
        pose=np.concatenate([global_aa, pose45]), betas=p["betas"],
        cam=np.array([kp2d[MIDDLE_MCP, 0], kp2d[MIDDLE_MCP, 1], K[0, 0] / z]),
        h=np.concatenate([rot, pose45, p["betas"], [1.0], g["trans"]]))
    sample.update(visible=visible, occlusion=np.float32(occ[sil].mean() if sil.any() else 0.0),
                  background=kind, pose_source=p["pose_source"])
    return sample


def generate(seed: int, indices, cfg: SyntheticConfig = SyntheticConfig(),
             split: str = "train") -> list[dict]:
    """Samples ``indices`` of the stream ``(seed, split)``, batched; each sample's bytes depend only
    on ``(seed, split, index, cfg)``, not on which other indices share its batch.

    Returns:
        A list of sample dicts (:mod:`handlib.data.common` format, uncropped) with the extra keys
        ``visible`` (21,) bool, ``pose`` (48,), ``betas`` (10,), ``cam`` (3,), ``h`` (63,),
        ``occlusion`` (fraction of the silhouette hidden), ``background`` and ``pose_source``.
    """
    indices = [int(i) for i in indices]
    out = []
    for start in range(0, len(indices), cfg.batch_size):
        chunk = indices[start:start + cfg.batch_size]
        with _one_thread():
            items = []
            for i in chunk:
                params = draw_params(seed, i, cfg, split)
                tmpl = hand_models()[params["side"]].v_template.numpy()
                items.append({"params": params, "geom": hand_geometry(params, cfg),
                              "albedo": vertex_albedo(params, tmpl)})
            _render(items, cfg)
            out += [_finish(it, cfg, seed, i, split) for it, i in zip(items, chunk)]
    return out


class _one_thread:
    """Run torch single-threaded inside: the tensors here are small, so intra-op threads only add
    synchronisation (7× slower on a busy 2-core machine); DataLoader workers use one thread too."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.n != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.n != 1:
            torch.set_num_threads(self.n)


class SyntheticHands(HandDataset):
    """On-the-fly synthetic hands: ``len() == num``; item ``i`` = :func:`generate` ``(seed, [i])``.

    Args:
        seed: the dataset's seed. num: its length (default ``profile().num_samples``).
        image_size: rendered side (default :func:`default_image_size`); overrides ``cfg.image_size``.
        split: "train" | "val" | "test": independent streams for the same seed.
        cfg: :class:`SyntheticConfig`. transform: applied last (e.g. ``CropTransform``).
    A ``DataLoader`` with ``batch_size`` calls :meth:`__getitems__`, which renders a batch at once.
    """

    name = "SyntheticHands"

    def __init__(self, seed: int = 0, num: int | None = None, image_size: int | None = None,
                 split: str = "train", cfg: SyntheticConfig | None = None, transform=None):
        super().__init__(transform, "raise")
        cfg = cfg or SyntheticConfig(image_size=image_size or default_image_size())
        if image_size is not None:
            cfg = dataclasses.replace(cfg, image_size=int(image_size))
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
        self.seed, self.split, self.cfg = int(seed), split, cfg
        self._num = int(profile().num_samples if num is None else num)

    def _load(self, i: int, image: bool = True) -> dict:
        return generate(self.seed, [i], self.cfg, self.split)[0]

    def __getitems__(self, indices) -> list[dict]:
        n = len(self)
        for i in indices:
            if not -n <= i < n:
                raise IndexError(f"{self.name}: index {i} out of range for {n} samples")
        samples = generate(self.seed, [i % n for i in indices], self.cfg, self.split)
        return [self.transform(s) if self.transform is not None else s for s in samples]

    @staticmethod
    def from_disk(root, split: str = "train", transform=None, on_error: str = "raise") -> SyntheticFolder:
        """The version written by :func:`write_split` / ``data_scripts/make_synthetic.py``."""
        return SyntheticFolder(root, split, transform, on_error)

    def __repr__(self) -> str:
        return f"SyntheticHands(seed={self.seed}, split={self.split!r}, {len(self)} samples, " \
               f"{self.cfg.image_size} px)"


# ----------------------------------------------------------------------------------------------
# On disk: PNGs + per-sample label records + one manifest per split
# ----------------------------------------------------------------------------------------------
LABEL_DTYPE = np.dtype([
    ("index", "<i8"), ("kp2d", "<f4", (21, 2)), ("kp3d", "<f4", (21, 3)), ("K", "<f4", (3, 3)),
    ("valid", "?", (21,)), ("visible", "?", (21,)), ("right", "?"), ("pose", "<f4", (48,)),
    ("betas", "<f4", (10,)), ("cam", "<f4", (3,)), ("h", "<f4", (63,)), ("occlusion", "<f4"),
    ("background", "<U24"), ("pose_source", "<U16")])


def to_record(sample: dict) -> np.ndarray:
    """Sample dict → one (1,) record of :data:`LABEL_DTYPE` (everything but the images)."""
    rec = np.zeros(1, LABEL_DTYPE)
    for key in LABEL_DTYPE.names:
        if key != "right":
            rec[key] = sample[key]
    rec["right"] = sample["side"] == "right"
    return rec


def from_record(rec, image, mask, source) -> dict:
    """Inverse of :func:`to_record` given the decoded image and mask."""
    s = make_sample(image, mask, rec["kp2d"], rec["kp3d"], rec["K"], rec["valid"],
                    "right" if rec["right"] else "left", int(rec["index"]), source,
                    pose=np.array(rec["pose"]), betas=np.array(rec["betas"]), cam=np.array(rec["cam"]),
                    h=np.array(rec["h"]))
    s.update(visible=np.array(rec["visible"], bool), occlusion=np.float32(rec["occlusion"]),
             background=str(rec["background"]), pose_source=str(rec["pose_source"]))
    return s


def _paths(root: Path, split: str, i: int) -> tuple[Path, Path, Path]:
    d = root / split
    return d / "images" / f"{i:08d}.png", d / "masks" / f"{i:08d}.png", d / "labels" / f"{i:08d}.npy"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _write_samples(task) -> int:
    """Worker: generate ``indices`` and write image, mask, then (last, as the commit) the labels."""
    root, split, seed, cfg, indices = task
    for s in generate(seed, indices, cfg, split):
        img_p, mask_p, lab_p = _paths(Path(root), split, s["index"])
        _atomic_write(img_p, _png(cv2.cvtColor(s["image"], cv2.COLOR_RGB2BGR)))
        _atomic_write(mask_p, _png(s["mask"].astype(np.uint8) * 255))
        buf = io.BytesIO()
        np.save(buf, to_record(s), allow_pickle=False)
        _atomic_write(lab_p, buf.getvalue())
    return len(indices)


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core; also what DataLoader workers do


def _done(root: Path, split: str, num: int) -> np.ndarray:
    """(num,) bool: samples whose label record exists (and loads) and whose PNGs are non-empty."""
    d = root / split
    sizes = {}
    for sub in ("images", "masks", "labels"):
        sizes[sub] = {e.name: e.stat().st_size for e in os.scandir(d / sub)} if (d / sub).is_dir() else {}
    done = np.zeros(num, bool)
    for i in range(num):
        name = f"{i:08d}"
        if not (sizes["images"].get(name + ".png") and sizes["masks"].get(name + ".png")
                and sizes["labels"].get(name + ".npy")):
            continue
        try:
            rec = np.load(d / "labels" / f"{name}.npy", allow_pickle=False)
            done[i] = rec.dtype == LABEL_DTYPE and rec.shape == (1,) and int(rec["index"][0]) == i
        except (OSError, ValueError, EOFError):
            pass
    return done


def _save_npz(path: Path, arrays: dict) -> None:
    """Deterministic ``.npz`` (:func:`handlib.npz.write_npz`), written atomically."""
    buf = io.BytesIO()
    write_npz(buf, {k: np.ascontiguousarray(v) for k, v in arrays.items()})
    _atomic_write(path, buf.getvalue())


def build_manifest(root, split: str, num: int) -> Path:
    """Stack the per-sample label records into ``root/<split>.npz`` (one array per field, plus
    ``image``/``mask`` paths relative to ``root``)."""
    root = Path(root)
    recs = np.concatenate([np.load(_paths(root, split, i)[2], allow_pickle=False) for i in range(num)]) \
        if num else np.zeros(0, LABEL_DTYPE)
    arrays = {k: recs[k] for k in LABEL_DTYPE.names}
    arrays["image"] = np.array([f"{split}/images/{i:08d}.png" for i in range(num)])
    arrays["mask"] = np.array([f"{split}/masks/{i:08d}.png" for i in range(num)])
    path = root / f"{split}.npz"
    _save_npz(path, arrays)
    return path


def write_split(root, seed: int, num: int, split: str = "train", cfg: SyntheticConfig = SyntheticConfig(),
                workers: int = 1, progress: bool = True, overwrite: bool = False, log=print) -> dict:
    """Write ``num`` samples of ``(seed, split)`` under ``root``; resumable and idempotent.

    Layout: ``root/<split>.json`` (config, written first), ``root/<split>/{images,masks}/%08d.png``,
    ``root/<split>/labels/%08d.npy`` (one :data:`LABEL_DTYPE` record, written last per sample, so its
    presence marks a complete sample) and ``root/<split>.npz`` (the manifest, rebuilt at the end from
    the records). A rerun skips every complete sample and regenerates only missing or broken ones.

    Returns:
        dict(generated, skipped, total, seconds, per_minute, manifest).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
    root = Path(root)
    meta = {"format": FORMAT_VERSION, "generator": "handlib.data.synthetic", "seed": int(seed),
            "split": split, "num": int(num), "config": dataclasses.asdict(cfg),
            "photos": list(backgrounds.PHOTOS)}
    meta_path = root / f"{split}.json"
    if meta_path.is_file() and not overwrite:
        old = json.loads(meta_path.read_text())
        same = {k: v for k, v in old.items() if k != "num"} == json.loads(json.dumps(
            {k: v for k, v in meta.items() if k != "num"}))
        if not same:
            raise ValueError(f"{meta_path}: written with another seed or config; use another folder or "
                             "overwrite=True (--overwrite)")
    for sub in ("images", "masks", "labels"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    _atomic_write(meta_path, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    t0 = time.perf_counter()
    done = np.zeros(num, bool) if overwrite else _done(root, split, num)
    todo = np.flatnonzero(~done).tolist()
    bs = cfg.batch_size
    tasks = [(str(root), split, int(seed), cfg, todo[k:k + bs]) for k in range(0, len(todo), bs)]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"{split} (seed {seed})", unit="img", disable=not progress or not todo)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            bar.update(_write_samples(task))
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for n in pool.imap_unordered(_write_samples, tasks):
                bar.update(n)
    bar.close()
    seconds = time.perf_counter() - t0
    manifest = build_manifest(root, split, num)
    stats = {"generated": len(todo), "skipped": int(done.sum()), "total": num, "seconds": seconds,
             "per_minute": 60.0 * len(todo) / seconds if todo and seconds > 0 else float("nan"),
             "manifest": str(manifest)}
    if todo:
        log(f"{split}: generated {len(todo):,} samples ({int(done.sum()):,} already present) in "
            f"{seconds:.1f} s = {stats['per_minute']:,.0f} samples/min with {workers} worker(s)")
    else:
        log(f"{split}: all {num:,} samples already present; manifest rebuilt")
    log(f"# {split} has {num:,} samples ({cfg.image_size} px) -> {manifest}")
    return stats


class SyntheticFolder(HandDataset):
    """Reader for a folder written by :func:`write_split`; yields the same samples as
    :class:`SyntheticHands` with the same seed and split (``source`` is the PNG path).

    Args:
        root: the ``--out`` folder. split: "train" | "val" | "test".
    Raises:
        MissingData: ``root`` is not a folder, or has no manifest ``<split>.npz`` or ``<split>.json``.
        DataError: an unreadable manifest, or one without the fields :func:`build_manifest` writes.
    """

    name = "SyntheticFolder"

    def __init__(self, root, split: str = "train", transform=None, on_error: str = "raise"):
        super().__init__(transform, on_error)
        self.root, self.split = Path(root), split
        how = f"write it with `python data_scripts/make_synthetic.py --out {root} --split {split}`"
        if not self.root.is_dir():
            raise MissingData("not a folder; expected one written by data_scripts/make_synthetic.py",
                              self.root)
        path = self.root / f"{split}.npz"
        if not path.is_file():
            raise MissingData(f"no manifest {path.name} of the {split!r} split; {how}", self.root)
        try:
            with np.load(path, allow_pickle=False) as z:
                self.labels = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"unreadable manifest ({type(err).__name__}); {how}", path) from None
        missing = sorted({"index", "image", "mask", *LABEL_DTYPE.names} - set(self.labels))
        if missing:
            raise DataError(f"manifest without {missing}; {how}", path)
        self.meta = read_json(self.root / f"{split}.json", dict, "split description")
        self._num = len(self.labels["index"])

    def _load(self, i: int, image: bool = True) -> dict:
        lab = {k: v[i] for k, v in self.labels.items()}
        img_path = self.root / str(lab["image"])
        img = read_image(img_path, i) if image else None
        mask = read_label(self.root / str(lab["mask"]), i) > 127
        if img is not None and img.shape[:2] != mask.shape:
            raise DataError(f"mask {mask.shape} and image {img.shape[:2]} sizes differ", img_path, i)
        return from_record(lab, img, mask, img_path)
