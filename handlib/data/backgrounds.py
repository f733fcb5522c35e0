"""Backgrounds and occluders for the synthetic dataset: real photos and procedural textures.

RHD (Zimmermann & Brox 2017) composites its rendered people over random photos; we do the same with
the photographs that ship **inside** scikit-image (``skimage/data/*.png|jpg``, read without network;
the ones ``skimage.data`` would download with ``pooch`` are not used) plus procedural textures:
multi-octave value noise, stripes/checkers and gradients. Every function takes a
``numpy.random.Generator`` and draws only from it, so a background is a fixed function of its
generator's state (the synthetic dataset passes a per-sample stream).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

# skimage.data loaders whose files are bundled with scikit-image (checked offline, skimage 0.26).
# Colour photos first, then grey ones (given a random colour tint when used).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "camera", "brick", "grass", "gravel",
          "coins", "moon", "page", "clock")
PROCEDURAL = ("noise", "stripes", "checker", "gradient")


@functools.lru_cache(maxsize=1)
def load_photos() -> dict[str, np.ndarray]:
    """The bundled photos as {name: (H, W, 3) uint8 RGB}, loaded once per process."""
    import skimage.data as d

    loaders = {"motorcycle": lambda: d.stereo_motorcycle()[0], "clock": d.clock}
    out = {}
    for name in PHOTOS:
        img = loaders.get(name, getattr(d, name, None))()
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        out[name] = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    return out


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, 3).astype(np.float32)


def photo(rng: np.random.Generator, size: int, name: str | None = None) -> tuple[np.ndarray, str]:
    """A random crop of a bundled photo: random scale and aspect, flips, colour gains / tint.

    Returns:
        (size, size, 3) uint8 RGB and the photo's name.
    """
    photos = load_photos()
    name = PHOTOS[rng.integers(len(PHOTOS))] if name is None else name
    img = photos[name]
    h, w = img.shape[:2]
    side = rng.uniform(0.25, 1.0) * min(h, w)  # zoom: from a quarter of the photo to all of it
    aspect = np.exp(rng.uniform(-0.2, 0.2))
    ch, cw = min(h, int(side * aspect)), min(w, int(side / aspect))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (size, size), interpolation=cv2.INTER_AREA)
    flip_h, flip_v, grey = rng.random(3)
    if flip_h < 0.5:
        crop = crop[:, ::-1]
    if flip_v < 0.2:
        crop = crop[::-1]
    x = crop.astype(np.float32) / 255.0
    if np.ptp(img[::8, ::8].astype(np.int16), axis=-1).max() == 0:  # a grey photo: duotone tint
        a, b = _colour(rng) * 0.5, 0.5 + _colour(rng) * 0.5
        x = a + x[..., :1] * (b - a)
    else:
        x = x * rng.uniform(0.7, 1.3, 3).astype(np.float32)  # white balance
        if grey < 0.15:
            x = np.repeat(x.mean(-1, keepdims=True), 3, -1)
        elif grey < 0.3:
            x = x[..., rng.permutation(3)]
    x = (x - 0.5) * rng.uniform(0.7, 1.2) + 0.5 + rng.uniform(-0.15, 0.15)  # contrast, brightness
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8), name


def value_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """(size, size) float32 in [0, 1]: a sum of bicubically upsampled random grids (value noise)."""
    base = int(rng.integers(2, 6))
    out = np.zeros((size, size), np.float32)
    for o in range(octaves):
        g = base * 2**o
        grid = rng.random((g, g), dtype=np.float32)
        out += 0.5**o * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _plane(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) coordinate along a random direction, in pixels."""
    a = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a))


def procedural(rng: np.random.Generator, size: int, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A procedural texture: ``noise``, ``stripes``, ``checker`` or ``gradient`` (random if None).

    Returns:
        (size, size, 3) uint8 RGB and the kind.
    """
    kind = PROCEDURAL[rng.integers(len(PROCEDURAL))] if kind is None else kind
    c0, c1 = _colour(rng), _colour(rng)
    if kind == "noise":
        t = value_noise(rng, size)
    elif kind in ("stripes", "checker"):
        period = rng.uniform(size / 24, size / 4)
        t = np.sin(2 * np.pi * _plane(rng, size) / period)
        if kind == "checker":
            t = t * np.sin(2 * np.pi * _plane(rng, size) / period)
        t = 0.5 + 0.5 * np.tanh(t * rng.uniform(1.0, 8.0))  # soft to hard edges
    elif kind == "gradient":
        t = _plane(rng, size)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        t = np.clip(t + 0.15 * (value_noise(rng, size, 2) - 0.5), 0.0, 1.0)
    else:
        raise ValueError(f"kind: expected one of {PROCEDURAL}, got {kind!r}")
    x = c0 + t[..., None].astype(np.float32) * (c1 - c0)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8), kind


def random_background(rng: np.random.Generator, size: int, photo_fraction: float = 0.7
                      ) -> tuple[np.ndarray, str]:
    """A photo crop with probability ``photo_fraction``, else a procedural texture.

    Returns:
        (size, size, 3) uint8 RGB and its kind (``"photo:<name>"`` or the procedural kind).
    """
    if rng.random() < photo_fraction:
        img, name = photo(rng, size)
        return img, f"photo:{name}"
    return procedural(rng, size)


def draw_occluders(rng: np.random.Generator, image: np.ndarray, box, count: int = 1) -> np.ndarray:
    """Draw ``count`` distractors (ellipses or random polygons, solid or textured) over ``image``.

    Each is centred at a random point of ``box`` = (u0, v0, u1, v1) (the hand's 2D box) and sized
    15–50 % of the box's larger side, so it usually covers part of the hand.

    Args:
        image: (H, W, 3) uint8, modified in place.
    Returns:
        (H, W) bool: the pixels covered by an occluder.
    """
    H, W = image.shape[:2]
    u0, v0, u1, v1 = box
    extent = max(u1 - u0, v1 - v0, 8.0)
    covered = np.zeros((H, W), np.uint8)
    for _ in range(count):
        cu, cv_ = rng.uniform(u0, u1), rng.uniform(v0, v1)
        r = rng.uniform(0.15, 0.5) * extent
        shape = np.zeros((H, W), np.uint8)
        if rng.random() < 0.5:
            axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.3, 1.0))))
            cv2.ellipse(shape, (int(cu), int(cv_)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            n = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.4, 1.0, n)
            pts = np.stack([cu + rad * np.cos(ang), cv_ + rad * np.sin(ang)], 1).round().astype(np.int32)
            cv2.fillPoly(shape, [pts], 1)
        m = shape.astype(bool)
        if rng.random() < 0.5:
            fill, _ = procedural(rng, max(H, W))
            image[m] = fill[:H, :W][m]
        else:
            image[m] = np.round(_colour(rng) * 255.0).astype(np.uint8)
        covered |= shape
    return covered.astype(bool)
