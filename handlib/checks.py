"""Argument checks whose errors name the argument (STYLE rule 5; kornia's KORNIA_CHECK_SHAPE)."""
from __future__ import annotations

import torch


def check_shape(x, name: str, dims: tuple, floating: bool | None = None) -> None:
    """Raise unless ``x`` is a tensor of shape ``dims``; the message names ``name``.

    Args:
        x: the argument to check.
        name: its name, as the caller's signature spells it.
        dims: one entry per dimension: an int (exact size), or a string / None (any size; a string
            names the symbol in the message, e.g. ``("B", "V", 3)``).
        floating: True requires a floating-point dtype, False an integer (int32/int64) dtype.
    Raises:
        TypeError: not a tensor, or the wrong dtype kind. ValueError: the wrong shape.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(dims) or any(isinstance(d, int) and s != d for s, d in zip(x.shape, dims)):
        want = "(" + ", ".join("*" if d is None else str(d) for d in dims) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if floating is False and x.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name}: expected an integer (long) tensor, got {x.dtype}")
