"""Real-dataset readers (RHD, STB, Dexter+Object, FreiHAND) returning one sample format, and crops.

Each reader is a ``torch.utils.data.Dataset`` whose items are the sample dicts described in
:mod:`handlib.data.common` (uncropped, handlib keypoint order, metres, camera space);
``transform=CropTransform(CropConfig(...))`` crops them around the hand (Eq. 8 conventions).
The official layouts, units and splits are documented in each reader's module.
"""
from .common import (
    DataError,
    HandDataset,
    MissingData,
    make_sample,
    project_np,
    read_image,
    read_label,
    validate_sample,
)
from .dexter_object import DexterObject
from .freihand import FreiHAND
from .mmpose_frames import (
                            RealFrame,
                            read_frames,
                            read_freihand_frames,
                            read_interhand_frames,
                            read_rhd_frames,
                            reprojection_error,
)
from .rhd import RHD
from .stb import STB
from .synthetic import SyntheticConfig, SyntheticFolder, SyntheticHands
from .transforms import CropConfig, CropTransform, color_jitter, crop_to_hand

__all__ = ["RHD", "STB", "DexterObject", "FreiHAND", "CropConfig", "CropTransform", "crop_to_hand",
           "color_jitter", "DataError", "MissingData", "HandDataset", "make_sample", "validate_sample",
           "read_image", "read_label", "project_np", "SyntheticHands", "SyntheticFolder", "SyntheticConfig",
           "RealFrame", "read_frames", "read_rhd_frames", "read_freihand_frames", "read_interhand_frames",
           "reprojection_error"]
