"""handlib: RGB dense 3D hand pose estimation via neural rendering, rebuilt in the open.

A teaching re-implementation of Baek, Kim & Kim, "Pushing the Envelope for RGB-based Dense 3D Hand
Pose Estimation via Neural Rendering", CVPR 2019. One module per box of the paper's Eq. 1; see
README for the map from equations to functions.
"""
from .config import Profile, profile, seed_everything
from .hand_model import HandModel, HandOutput, lbs, pack_h, unpack_h

__version__ = "0.1.0"
__all__ = ["HandModel", "HandOutput", "Profile", "lbs", "pack_h", "profile", "seed_everything", "unpack_h"]
