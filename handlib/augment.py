"""Self-supervised data augmentation from predicted meshes (Baek, Kim & Kim 2019, Sec. 3.5).

During training, each predicted *seed* mesh h′ (the network's own estimate for a training crop x)
yields new, perfectly labelled samples: keep the predicted pose θ, draw a new shape and a new
viewpoint, paint the mesh with the colours that x shows where h′ projects, render it over a random
background. The labels of the new image (3D joints, 2D joints, mask, h) are exact *for that image*
whatever the quality of h′ — the image is made from the mesh — so the network sees more shape and
view variety with plausible, self-consistent textures, and no annotation.

Per seed, :func:`augment_seeds` makes ``instances`` (paper: 3) samples:

1. **texture** (:func:`vertex_colors`): each vertex of h′'s mesh that is visible in x (its pixel is
   covered by the z-buffer render of the mesh and no surface lies more than ``visibility_tol``
   in front of it) takes x's colour at its projection (the nearest pixel, the one the visibility
   test read: bilinear weights would mix background in at the silhouette); colours then diffuse
   over the mesh's edges into the hidden vertices (Jacobi iterations, visible ones held fixed);
2. **shape** β ~ U(−shape_range, shape_range) per dimension (Sec. 3.5: "uniformly within ±3σ";
   OpenHand and MANO's β are in units of σ);
3. **view** (:func:`perturb_view`): the camera rotates about the hand's middle MCP by angles
   ~ U(−a, a) about the camera's x, y and z axes (``rotation_deg``), i.e. q′ = q_R ⊗ q and the MCP
   stays where it was; (the paper: "camera rotated about each axis by a sampled angle", no range);
4. **crop** (:func:`crop_camera`): a new crop camera K′ = A·K that frames the new hand as the data
   pipeline does (side = ``margin`` × the larger side of the keypoint box, centred on the MCP);
5. **render** (``raster.render_rgb``, hard z-buffer) with the vertex colours over a random
   background (:func:`handlib.data.backgrounds.random_background`).

Choices where the paper is silent (fields of :class:`AugmentConfig`): the angle ranges, ambient 1
(the sampled colours already carry x's shading, so no second shading is applied), the diffusion
fill of hidden vertices, how many samples of each batch are replaced (``mix_fraction``) and when
augmentation starts (``warmup_epochs`` after the evidence stage). The trainer (``train.py``) takes
seeds from the *real* samples of step k's batch, detached, and mixes the new samples into the
batches of steps k + 1, k + 2, ... through an :class:`AugmentBuffer`, which the checkpoint stores
so that a resumed run continues bit for bit. All randomness comes from a numpy Generator the
caller seeds (the trainer: from (seed, step, rank)).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as Fn

from .camera import project
from .data import backgrounds
from .data.batch import denormalize_image, normalize_image
from .hand_model import HandModel, pack_h, unpack_h
from .raster import render_rgb
from .rotations import axis_angle_to_quaternion
from .skeleton import BOX_MARGIN, MIDDLE_MCP

__all__ = ["AugmentConfig", "vertex_colors", "perturb_view", "crop_camera", "augment_seeds",
           "AugmentBuffer", "mix_into", "BATCH_KEYS"]

# the keys of a training batch (data.batch.collate) that augmented samples carry
BATCH_KEYS = ("image", "mask", "has_mask", "kp2d", "kp3d", "K", "valid", "mirrored", "index", "h", "has_h")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Sec. 3.5's augmentation. ``enabled=False`` is the "w/o data augmentation" ablation."""

    enabled: bool = True
    instances: int = 3  # new samples per seed mesh (paper: 3)
    # β ~ U(−r, r) per dimension, in σ (paper: ±3σ); None keeps the seed's β (a view-only variant)
    shape_range: float | None = 3.0
    rotation_deg: tuple = (30.0, 30.0, 90.0)  # max |angle| about the camera x, y, z axes (ours)
    # start after this many epochs of the joint stage (paper: "after a warm-up"; count not given).
    # An epoch is num_samples / batch_size steps; 0 starts with the joint stage.
    warmup_epochs: float = 0.5
    mix_fraction: float = 0.25  # share of each batch replaced by augmented samples (ours)
    buffer_size: int = 64  # most augmented samples kept waiting (oldest dropped first)
    visibility_tol: float = 0.005  # m: a vertex this far behind the z-buffer is hidden (ours)
    fill_iterations: int = 40  # Jacobi diffusion steps that colour hidden vertices (ours)
    ambient: float = 1.0  # render_rgb ambient: 1 = the sampled colours as they are (no re-shading)
    photo_fraction: float = 0.7  # backgrounds: photo crops vs procedural textures (as the data)
    margin: float = BOX_MARGIN  # crop side = margin × the larger side of the keypoint box (Eq. 8)

    def __post_init__(self):
        if self.instances < 1:
            raise ValueError(f"instances: expected ≥ 1, got {self.instances}")
        if self.shape_range is not None and self.shape_range < 0:
            raise ValueError(f"shape_range: expected ≥ 0, got {self.shape_range}")
        if len(self.rotation_deg) != 3 or any(a < 0 for a in self.rotation_deg):
            raise ValueError(f"rotation_deg: expected three angles ≥ 0, got {self.rotation_deg}")
        if not 0.0 <= self.mix_fraction <= 1.0:
            raise ValueError(f"mix_fraction: expected a value in [0, 1], got {self.mix_fraction}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs: expected ≥ 0, got {self.warmup_epochs}")
        if not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f"ambient: expected a value in [0, 1], got {self.ambient}")

    def per_step(self, batch_size: int) -> tuple[int, int]:
        """(samples mixed into a batch of ``batch_size``, seeds taken from it) so the buffer holds
        steady: seeds × instances ≥ mixed."""
        mixed = int(round(self.mix_fraction * batch_size))
        return mixed, math.ceil(mixed / self.instances) if mixed else 0


# ----------------------------------------------------------------------------------------------
# 1. Texture from the input image
# ----------------------------------------------------------------------------------------------
def _adjacency(faces: torch.Tensor, V: int, dtype, device) -> torch.Tensor:
    """(V, V) row-normalised vertex adjacency (mesh edges) for the diffusion fill."""
    f = faces.to(device)
    i = torch.cat([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = torch.cat([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    A = torch.zeros(V, V, dtype=dtype, device=device)
    A[i, j] = 1.0
    return A / A.sum(1, keepdim=True).clamp_min(1.0)


def vertex_colors(image: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor,
                  visibility_tol: float = 0.005, fill_iterations: int = 40
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: colour each vertex from the image where it is visible, diffuse into the rest.

    Args:
        image: (B, H, W, 3) float RGB in [0, 1]. verts: (B, V, 3) camera-space mesh, metres.
        faces: (F, 3) long. K: (B, 3, 3) the image's camera.
        visibility_tol: metres; a vertex is visible when its pixel is covered and the z-buffer
            there is no more than this in front of it.
        fill_iterations: diffusion steps over the mesh edges for hidden vertices.
    Returns:
        colors (B, V, 3) in [0, 1]; visible (B, V) bool.
    """
    B, H, W, _ = image.shape
    dt = image.dtype
    with torch.no_grad():
        depth = render_rgb(verts.to(dt), faces, K.to(dt), (H, W))["depth"]  # (B, H, W), +inf off the hand
        uv = project(verts.to(dt), K.to(dt))  # (B, V, 2) pixel centres at integers
        u, v = uv[..., 0].round().long(), uv[..., 1].round().long()
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        zb = depth[torch.arange(B, device=image.device)[:, None], v.clamp(0, H - 1), u.clamp(0, W - 1)]
        visible = inside & torch.isfinite(zb) & (zb >= verts[..., 2].to(dt) - visibility_tol)
        grid = torch.stack([(uv[..., 0] + 0.5) / W * 2 - 1, (uv[..., 1] + 0.5) / H * 2 - 1], -1)
        sampled = Fn.grid_sample(image.permute(0, 3, 1, 2), grid[:, :, None], mode="nearest",
                                 padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)
        # hidden vertices start at the mean visible colour (the image mean if none is visible)
        vis = visible[..., None].to(dt)
        mean = (sampled * vis).sum(1, keepdim=True) / vis.sum(1, keepdim=True).clamp_min(1)
        mean = torch.where(vis.sum(1, keepdim=True) > 0, mean, image.mean((1, 2))[:, None])
        colors = torch.where(visible[..., None], sampled, mean)
        if fill_iterations:
            A = _adjacency(faces, verts.shape[1], dt, image.device)
            for _ in range(fill_iterations):
                colors = torch.where(visible[..., None], sampled, A @ colors)
    return colors.clamp(0, 1), visible


# ----------------------------------------------------------------------------------------------
# 2–4. New shape, new view, new crop camera
# ----------------------------------------------------------------------------------------------
def perturb_view(hand_model: HandModel, h: torch.Tensor, betas: torch.Tensor, angles: torch.Tensor):
    """Steps 2–3: the hand of ``h`` with shape ``betas``, the camera rotated about the middle MCP.

    Rotating the camera by R⁻¹ about the MCP c moves every point X to R (X − c) + c; in h that is
    q′ = q_R ⊗ q and a new wrist t′ such that the new MCP lands on c (β also moves the MCP).

    Args:
        hand_model: the right-hand model. h: (N, 63) seeds. betas: (N, 10) new shapes.
        angles: (N, 3) rotation angles (radians) about the camera's x, y, z axes, applied in the
            order x, then y, then z (R = R_z R_y R_x).
    Returns:
        (h′ (N, 63), output of ``hand_model.from_h(h′)``).
    """
    p = unpack_h(h)
    c = hand_model.from_h(h).joints[:, MIDDLE_MCP]  # (N, 3) the MCP stays put
    zero = torch.zeros_like(angles[:, :1])
    qs = [axis_angle_to_quaternion(torch.cat([a if k == axis else zero for k in range(3)], 1))
          for axis, a in enumerate(angles.split(1, 1))]
    q = p.rot / p.rot.norm(dim=-1, keepdim=True)
    for qa in qs:  # x first, then y, then z: q ← q_a ⊗ q
        q = _qmul(qa.to(q.dtype), q)
    placed = hand_model(pose=p.pose, betas=betas, rot=q, scale=p.scale, trans=torch.zeros_like(p.trans))
    trans = c - placed.joints[:, MIDDLE_MCP]
    h2 = pack_h(q, p.pose, betas, p.scale, trans)
    return h2, hand_model.from_h(h2)


def _qmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a ⊗ b of (N, 4) quaternions (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def crop_camera(K: torch.Tensor, kp2d: torch.Tensor, size: int, margin: float = BOX_MARGIN) -> torch.Tensor:
    """Step 4: K′ = A·K framing a hand as the crops do: centre at the middle MCP, side = margin ×
    the larger side of the keypoint box, scaled to ``size`` pixels (pixel centres at integers).

    Args:
        K: (N, 3, 3) camera the keypoints were projected with. kp2d: (N, 21, 2) their pixels.
    Returns:
        (N, 3, 3) the crop's camera.
    """
    side = (kp2d.amax(1) - kp2d.amin(1)).amax(-1).clamp_min(8.0) * margin  # (N,)
    a = size / side
    centre = kp2d[:, MIDDLE_MCP]
    A = torch.zeros_like(K)
    A[:, 0, 0], A[:, 1, 1], A[:, 2, 2] = a, a, 1.0
    # the crop's pixel (size − 1)/2 is the MCP: u′ = a (u − c_u) + (size − 1)/2
    A[:, :2, 2] = -a[:, None] * centre + (size - 1) / 2
    return A @ K


# ----------------------------------------------------------------------------------------------
# 5. The new samples
# ----------------------------------------------------------------------------------------------
def augment_seeds(hand_model: HandModel, x: torch.Tensor, K: torch.Tensor, h: torch.Tensor,
                  rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> dict:
    """Sec. 3.5: ``cfg.instances`` new labelled samples per seed mesh.

    Args:
        hand_model: the right-hand model the network predicts for.
        x: (N, 3, S, S) the seeds' normalised crops (``data.batch.normalize_image``).
        K: (N, 3, 3) their cameras. h: (N, 63) the predicted meshes (detached).
        rng: numpy Generator: shapes, angles and backgrounds are drawn from it.
    Returns:
        a batch dict with :data:`BATCH_KEYS` for N × instances samples (seed-major): image
        (M, 3, S, S) normalised, mask (M, S, S) bool, kp2d (the projections, also of keypoints
        outside the crop, which have ``valid`` False), kp3d, K, valid, h (M, 63), has_mask,
        has_h all True, mirrored False, index −1.
    """
    N, S = x.shape[0], x.shape[-1]
    dev, dt = x.device, x.dtype
    n = cfg.instances
    with torch.no_grad():
        h = h.detach().to(dt)
        seed_mesh = hand_model.from_h(h)
        colors, _ = vertex_colors(denormalize_image(x), seed_mesh.verts, hand_model.faces, K,
                                  cfg.visibility_tol, cfg.fill_iterations)
        M = N * n
        if cfg.shape_range is None:  # a view-only augmentation
            betas = h[:, 49:59].repeat_interleave(n, 0)
        else:  # Sec. 3.5: β ~ U(−3σ, 3σ)
            betas = torch.as_tensor(rng.uniform(-cfg.shape_range, cfg.shape_range, (M, hand_model.num_betas)),
                                    dtype=dt, device=dev)
        lim = np.radians(np.asarray(cfg.rotation_deg, np.float64))
        angles = torch.as_tensor(rng.uniform(-lim, lim, (M, 3)), dtype=dt, device=dev)
        h_rep, K_rep = h.repeat_interleave(n, 0), K.to(dt).repeat_interleave(n, 0)
        h2, out = perturb_view(hand_model, h_rep, betas, angles)
        K2 = crop_camera(K_rep, project(out.joints, K_rep), S, cfg.margin)
        bg = np.stack([backgrounds.random_background(rng, S, cfg.photo_fraction)[0] for _ in range(M)])
        bg = torch.as_tensor(bg, device=dev).to(dt) / 255.0
        r = render_rgb(out.verts, hand_model.faces, K2, S, vert_colors=colors.repeat_interleave(n, 0),
                       ambient=cfg.ambient, background=bg)
        kp2d = project(out.joints, K2)
        image = torch.round(r["rgb"].clamp(0, 1) * 255).to(torch.uint8)
        valid = ((kp2d >= -0.5) & (kp2d <= S - 0.5)).all(-1)
    ones = torch.ones(M, dtype=torch.bool, device=dev)
    return {"image": normalize_image(image), "mask": r["mask"], "has_mask": ones, "kp2d": kp2d.float(),
            "kp3d": out.joints.float(), "K": K2.float(), "valid": valid, "mirrored": ~ones,
            "index": torch.full((M,), -1, dtype=torch.long, device=dev), "h": h2.float(), "has_h": ones}


# ----------------------------------------------------------------------------------------------
# Mixing into the next batches
# ----------------------------------------------------------------------------------------------
class AugmentBuffer:
    """FIFO of augmented samples waiting to be mixed into the next batches (oldest dropped beyond
    ``capacity``). :meth:`state_dict` / :meth:`load_state_dict` carry it through checkpoints."""

    def __init__(self, capacity: int = 64):
        self.capacity = int(capacity)
        self.data: dict | None = None

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data["image"])

    def push(self, samples: dict) -> None:
        if self.data is None:
            self.data = {k: samples[k] for k in BATCH_KEYS}
        else:
            self.data = {k: torch.cat([self.data[k], samples[k].to(self.data[k].device)]) for k in BATCH_KEYS}
        if len(self) > self.capacity:
            self.data = {k: v[len(self) - self.capacity:] for k, v in self.data.items()}

    def pop(self, n: int) -> dict | None:
        """The ``min(n, len)`` oldest samples (None when empty)."""
        n = min(n, len(self))
        if n <= 0:
            return None
        out = {k: v[:n] for k, v in self.data.items()}
        rest = {k: v[n:] for k, v in self.data.items()}
        self.data = rest if len(rest["image"]) else None
        return out

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "data": {} if self.data is None
                else {k: v.cpu() for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = int(state["capacity"])
        self.data = dict(state["data"]) or None


def mix_into(batch: dict, samples: dict | None) -> dict:
    """Replace the *last* ``len(samples)`` items of ``batch`` by ``samples`` (same keys; ``h`` and
    ``has_h`` only where the batch has them). Returns a new dict; ``batch`` is unchanged."""
    if samples is None:
        return batch
    m, B = len(samples["image"]), len(batch["image"])
    if m > B:
        raise ValueError(f"mix_into: {m} augmented samples do not fit a batch of {B}")
    out = dict(batch)
    for k, v in batch.items():
        if k in samples:
            out[k] = torch.cat([v[: B - m], samples[k].to(device=v.device, dtype=v.dtype)])
    return out
