"""Profiles and budgets: one switch, ``HANDLIB_PROFILE``, sets sizes and never the code path.

``profile()`` maps ``ci | cpu | gpu`` to a :class:`Profile`. ``ci`` keeps every notebook under
about 60 s on 2 CPU cores; ``cpu`` is a real run on a laptop-class CPU; ``gpu`` is the paper's
setting (224 px crops, ResNet-50, 21×32×32 heat maps; Baek et al. 2019, Sec. 4).
Stage configs (``RenderConfig``, ``RegressorConfig``, ...) live beside the stage they configure
and take their sizes from the profile.
"""
from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import torch

PROFILE_ENV = "HANDLIB_PROFILE"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Budgets for one run. Everything that depends on compute reads its size from here."""

    name: str
    image_size: int  # square crop side in pixels fed to the networks (paper: 224)
    heatmap_size: int  # heat-map side (paper: 32 at 224 px input)
    backbone: str  # "resnet50" (paper), "resnet18_half" (ResNet-18 at half width), or "resnet_tiny"
    heatmap_channels: int  # width of the CPM keypoint head (its cost grows with width² × heat-map area)
    heatmap_stages: int  # CPM stages (Wei et al. 2016 use up to 6; ours: 3 on GPU)
    train_steps: int  # optimiser steps of a default training run
    batch_size: int
    num_samples: int  # size of a default synthetic split
    refine_steps: int  # Eq. 13 test-time refinement iterations (paper: 50)
    device: str  # "cpu" or "cuda"
    # torch intra-op threads for notebooks (None: torch's default). ci: 1, because the ci sizes are
    # so small that a second thread mostly waits at every op (notebook 04 ran 10× slower on a busy
    # 2-core machine with 2 threads). Apply with ``torch.set_num_threads`` when not None.
    num_threads: int | None = None
    render_size: int | None = None  # synthetic render side before cropping (None: 2 × image_size)
    # f_E2D's keypoint source and crop (model.ModelConfig.keypoints / crop / crop_margin)
    keypoints: str = "heatmap"
    crop: str = "box"
    crop_margin: float = 1.5
    # hidden widths of f_reg and f_ref (regressor.RegressorConfig; (): the paper's single FC layers)
    regressor_hidden: tuple = ()
    refiner_hidden: tuple = ()

    @property
    def synthetic_size(self) -> int:
        """Side of the synthetic renders the crops are cut from (training and evaluation alike)."""
        return self.render_size or 2 * self.image_size

    def render_size_for(self, crop_size: int) -> int:
        """Side of the synthetic renders to cut crops of ``crop_size`` from, for a network that may
        come from another profile: this profile's :attr:`synthetic_size` when its crops are that
        size (what its training cut from), else 2 × ``crop_size`` (native resolution). The one
        rule of ``eval``, ``ablate`` and ``demo``."""
        return self.synthetic_size if crop_size == self.image_size else 2 * crop_size

    def torch_device(self) -> torch.device:
        return torch.device(self.device)


PROFILES = {
    "ci": Profile("ci", image_size=64, heatmap_size=16, backbone="resnet_tiny",
                  heatmap_channels=32, heatmap_stages=2, train_steps=20,
                  batch_size=8, num_samples=64, refine_steps=10, device="cpu", num_threads=1),
    # cpu: MediaPipe's pretrained landmark network as f_E2D (224 px, upright crops, its landmarks as
    # j2D_0); renders at 256 px, not 448: its landmarks are as good on them (15.5 vs 15.2 px on 128
    # test hands) and a render costs 36 ms instead of 63
    "cpu": Profile("cpu", image_size=224, heatmap_size=28, backbone="mediapipe",
                   heatmap_channels=64, heatmap_stages=2, train_steps=1200,
                   batch_size=32, num_samples=20000, refine_steps=50, device="cpu",
                   render_size=256, keypoints="landmarks", crop="upright", crop_margin=1.8,
                   regressor_hidden=(1024, 1024), refiner_hidden=(512,)),
    "gpu": Profile("gpu", image_size=224, heatmap_size=32, backbone="resnet50",
                   heatmap_channels=128, heatmap_stages=3, train_steps=100000,
                   batch_size=64, num_samples=200000, refine_steps=50, device="cuda"),
}


def profile(name: str | None = None) -> Profile:
    """Return the budget for ``name`` or, if None, for ``$HANDLIB_PROFILE`` (default ``cpu``).

    The ``gpu`` profile falls back to the CPU device (same sizes, same code) when CUDA is absent,
    so that it can still be inspected; it is meant for a machine with a GPU.
    """
    name = (name or os.environ.get(PROFILE_ENV) or "cpu").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r}: expected one of {sorted(PROFILES)}")
    prof = PROFILES[name]
    if prof.device == "cuda" and not torch.cuda.is_available():
        prof = dataclasses.replace(prof, device="cpu")
    return prof


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so that a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
