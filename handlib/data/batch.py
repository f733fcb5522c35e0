"""From cropped sample dicts to the network's batch: left hands mirrored, tensors stacked, images normalised.

The paper's network (Baek et al. 2019, Sec. 3.2) models a **right** hand; a left hand is handled by
mirroring the image (x → −x) and mirroring back afterwards. :func:`to_right_hand` does that to a
cropped sample, keeping every label consistent:

    image, mask     flipped left ↔ right:            u' = S − 1 − u  (pixel centres at integers)
    K               cx' = S − 1 − cx                 so project(M X, K') = flipped project(X, K)
    kp3d, verts     X' = M X,  M = diag(−1, 1, 1)
    h (63)          q' = (w, x, −y, −z)  (R' = M R M),  θ' = θ ⊙ (1, −1, −1) per joint,  t' = M t
    pose (48)       axis-angle r' = det(M)·M r = (x, −y, −z), for the global rotation and every joint
    cam (3)         u' = S − 1 − u

β is unchanged: the left OpenHand/MANO is the mirror of the right one (``hand_model.mirror_arrays``).
:func:`collate` then stacks a list of samples into tensors (``DataLoader(collate_fn=collate)``).
"""
from __future__ import annotations

import numpy as np
import torch

# Normalisation of RGB in [0, 1]: ImageNet statistics, the convention of ResNet weights (so a user
# who loads pretrained weights gets the inputs they expect; ours are trained from scratch).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
_AA_FLIP = np.array([1.0, -1.0, -1.0])


def to_right_hand(sample: dict) -> dict:
    """Mirror a *cropped* left-hand sample into a right-hand one; right hands are returned as is.

    Args:
        sample: a cropped sample (image (S, S, 3), mask, kp2d (21, 2), kp3d (21, 3), K (3, 3), valid,
            side; optional h (63,), pose (48,), cam (3,), verts (V, 3)).
    Returns:
        a new dict with side "right" and ``mirrored`` True (False for a right hand).
    """
    out = dict(sample)
    if sample["side"] == "right":
        out["mirrored"] = False
        return out
    if sample["side"] != "left":
        raise ValueError(f"sample {sample.get('index')}: side must be 'left' or 'right', "
                         f"got {sample['side']!r}")
    if sample.get("image") is None:
        raise ValueError(f"sample {sample.get('index')}: to_right_hand needs the (cropped) image "
                         "to know its width")
    S = sample["image"].shape[1]
    out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
    if sample.get("mask") is not None:
        out["mask"] = np.ascontiguousarray(sample["mask"][:, ::-1])
    valid = np.asarray(sample["valid"], bool)
    kp2d = np.array(sample["kp2d"], np.float32)
    kp2d[:, 0] = np.where(valid, (S - 1) - kp2d[:, 0], 0.0)
    out["kp2d"] = kp2d
    out["kp3d"] = (np.asarray(sample["kp3d"], np.float32) * np.float32([-1, 1, 1]))
    K = np.array(sample["K"], np.float32)
    K[0, 2] = (S - 1) - K[0, 2]
    K[0, 1] = -K[0, 1]
    out["K"] = K
    if sample.get("verts") is not None:
        out["verts"] = np.asarray(sample["verts"], np.float32) * np.float32([-1, 1, 1])
    if sample.get("h") is not None:
        h = np.array(sample["h"], np.float64)
        h[2:4] *= -1.0  # q = (w, x, y, z) → (w, x, −y, −z)
        h[4:49] = (h[4:49].reshape(15, 3) * _AA_FLIP).ravel()
        h[60] *= -1.0
        out["h"] = h.astype(np.float32)
    if sample.get("pose") is not None and len(sample["pose"]) == 48:
        pose = np.asarray(sample["pose"], np.float64).reshape(16, 3) * _AA_FLIP
        out["pose"] = pose.ravel().astype(np.float32)
    if sample.get("cam") is not None:
        cam = np.array(sample["cam"], np.float32)
        cam[0] = (S - 1) - cam[0]
        out["cam"] = cam
    out["side"], out["mirrored"] = "right", True
    return out


def image_stats(device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) mean and std of :data:`IMAGE_MEAN` / :data:`IMAGE_STD`, for broadcasting."""
    mean = torch.tensor(IMAGE_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=device, dtype=dtype).view(1, 3, 1, 1)
    return mean, std


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """(B, S, S, 3) uint8 → (B, 3, S, S) float32, ``(x/255 − mean)/std`` (ImageNet statistics)."""
    if image.dim() != 4 or image.shape[-1] != 3:
        raise ValueError(f"image: expected shape (B, H, W, 3) uint8, got {tuple(image.shape)}")
    x = image.permute(0, 3, 1, 2).float() / 255.0
    mean, std = image_stats(x.device)
    return (x - mean) / std


def denormalize_image(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_image`: (B, 3, S, S) → (B, S, S, 3) float in [0, 1] for plotting."""
    mean, std = image_stats(x.device)
    return (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1)


def collate(samples: list[dict], mirror_left: bool = True) -> dict:
    """Stack cropped samples into the network's batch (``DataLoader(collate_fn=collate)``).

    Args:
        samples: cropped samples of one size S (see :func:`handlib.data.crop_to_hand`).
        mirror_left: apply :func:`to_right_hand` first (the network models a right hand).
    Returns:
        dict of tensors: image (B, 3, S, S) normalised float32, mask (B, S, S) bool (all False
        and ``has_mask`` False where a sample has none), has_mask (B,), kp2d (B, 21, 2),
        kp3d (B, 21, 3), K (B, 3, 3), valid (B, 21) bool, mirrored (B,) bool, index (B,) long;
        h (B, 63) and has_h (B,) when any sample carries h.
    """
    if not samples:
        raise ValueError("collate: expected at least one sample")
    if mirror_left:
        samples = [to_right_hand(s) for s in samples]
    sizes = {s["image"].shape for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"collate: samples must be cropped to one size, got image shapes {sorted(sizes)}")
    S = samples[0]["image"].shape[0]
    T = lambda key, dt=torch.float32: torch.as_tensor(np.stack([s[key] for s in samples]), dtype=dt)  # noqa: E731
    has_mask = torch.tensor([s.get("mask") is not None for s in samples])
    masks = [s["mask"] if s.get("mask") is not None else np.zeros((S, S), bool) for s in samples]
    batch = {
        "image": normalize_image(torch.as_tensor(np.stack([s["image"] for s in samples]))),
        "mask": torch.as_tensor(np.stack(masks)),
        "has_mask": has_mask,
        "kp2d": T("kp2d"), "kp3d": T("kp3d"), "K": T("K"), "valid": T("valid", torch.bool),
        "mirrored": torch.tensor([bool(s.get("mirrored", False)) for s in samples]),
        "index": torch.tensor([int(s.get("index", -1)) for s in samples]),
    }
    if any(s.get("h") is not None for s in samples):
        batch["has_h"] = torch.tensor([s.get("h") is not None for s in samples])
        batch["h"] = torch.stack([torch.as_tensor(s["h"], dtype=torch.float32) if s.get("h") is not None
                                  else torch.zeros(63) for s in samples])
    return batch
