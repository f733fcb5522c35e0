"""OpenHand: an open, procedurally generated, MANO-compatible right-hand model.

The official MANO model (Romero et al. 2017) is licensed, so handlib ships its own: a skeleton
laid out like MANO's template from sourced anatomy (``../shared/hand-anatomy.md``, beside the
repository; tags such as [BK10], [B92], [Sancho], [Ibe11] refer to its source list), a surface
made from a signed distance field (SDF) of tapered capsules and a rounded palm slab, skinning weights, a joint
regressor, ten orthogonal shape directions and a pose prior built from named natural poses.

The asset uses MANO's / smplx's names and layouts, so ``smplx.lbs.lbs`` poses it directly::

    verts, joints = lbs(betas, pose, v_template, shapedirs, posedirs, J_regressor, parents, weights)

Frame (MANO right hand, metres): fingers point along -x, the thumb toward +z, the palm faces -y.
Internally the builder works in millimetres in an anatomical frame (d, r, p) = (distal, radial,
palmar) relative to the wrist joint; :data:`LOCAL_TO_WORLD` maps it to MANO's frame.

The build is split along its concepts, one module each:

* :mod:`.params`: every anatomical constant (:class:`OpenHandParams`) and the rest skeleton;
* :mod:`.geometry`: the SDF surface, meshed and evened out, and mesh utilities;
* :mod:`.rig`: skinning weights, joint regressor, shape directions;
* :mod:`.poses`: joint axes and limits, named poses and the PCA pose prior;
* :mod:`.fixed_order`: the arithmetic that gives the pose prior the same bits on any CPU;
* this module: :func:`build_open_hand`, :func:`save_asset`, :func:`load_asset`.

Same asset on any machine: the stored arrays are float32; everything upstream is float64. The mesh
and rig agree across BLAS kernels to ~1e-12 relative (far below float32's 6e-8 step), and the pose
prior, where round-off would be amplified, uses only fixed-order arithmetic. The rebuild is checked
bit for bit across OpenBLAS kernels, numpy SIMD levels and thread counts in
``tests/test_open_hand.py``.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from handlib.npz import write_npz
from handlib.skeleton import MANO_JOINT_NAMES, MANO_PARENTS, TIP_FINGERS

from .geometry import _mesh, boundary_loops, hand_sdf, self_intersections
from .params import (
    BONE_LENGTH_RANGES_MM,
    FINGER_JOINTS,
    FINGERS,
    LOCAL_TO_WORLD,
    SHAPE_NAMES,
    OpenHandParams,
    _to_world,
    rest_skeleton,
)
from .poses import JOINT_LIMITS_DEG, forward_kinematics, joint_axes, pose_prior
from .rig import joint_regressor, shape_directions, skinning_weights

__all__ = [
    "ASSET_PATH", "ASSET_SHAPES", "ASSET_VERSION", "BONE_LENGTH_RANGES_MM", "FINGERS", "FINGER_JOINTS",
    "JOINT_LIMITS_DEG", "LOCAL_TO_WORLD", "SHAPE_NAMES", "OpenHandParams", "asset_difference",
    "boundary_loops", "build_open_hand", "forward_kinematics", "hand_sdf", "joint_axes",
    "joint_regressor", "load_asset", "pose_prior", "rest_skeleton", "save_asset", "self_intersections",
    "shape_directions", "skinning_weights",
]

ASSET_VERSION = 1
ASSET_PATH = pathlib.Path(__file__).resolve().parents[1] / "assets" / "open_hand_v1.npz"
# (shape, symbol) of every asset array; "V" is taken from v_template, "P" from pose_library.
ASSET_SHAPES = {
    "v_template": ("V", 3), "faces": ("F", 3), "shapedirs": ("V", 3, 10), "posedirs": (135, "V*3"),
    "J_regressor": (16, "V"), "weights": ("V", 16), "parents": (16,), "J": (16, 3),
    "tip_vertex_ids": (5,), "hands_components": (45, 45), "hands_mean": (45,), "hands_std": (45,),
    "pose_library": ("P", 45), "meta": (),
}


def build_open_hand(params: OpenHandParams = OpenHandParams()) -> dict[str, np.ndarray]:
    """Build every OpenHand array (deterministic).

    Returns:
        dict with the keys of :data:`ASSET_SHAPES` (float32 / int32 / int64 and a JSON ``meta``).
    """
    J, tips = rest_skeleton(params)
    v, f, tip_ids = _mesh(params, J, tips)
    W = skinning_weights(v, f, J, tips, params)
    R = joint_regressor(v, J, tips, params)
    dirs, meanings = shape_directions(v, W, J, tips)
    vw, Jw, tw = _to_world(v, params), _to_world(J, params), _to_world(tips, params)
    f = f[:, ::-1]  # LOCAL_TO_WORLD is a reflection: keep faces counter-clockwise from outside
    axes = joint_axes(J, tips, params)
    names, library, mean, comps, std = pose_prior(Jw, tw, axes, params, (vw, f, W))
    meta = {
        "name": "OpenHand", "version": ASSET_VERSION, "units": "metres",
        "frame": "MANO right hand: fingers -x, thumb +z, palm faces -y",
        "counts": {"V": len(vw), "F": len(f)},
        "joint_names": list(MANO_JOINT_NAMES), "tip_fingers": list(TIP_FINGERS),
        "tip_vertex_convention": "mesh vertex placed exactly at the distal end of each finger's axis "
                                 "on the fingertip surface (DIP + distal length along the bone)",
        "wrist": "open: exactly one boundary loop (the wrist opening) at cut_d mm proximal of the wrist",
        "pose_names": names, "pose_convention": "45-d axis-angle of joints 1..15, world-aligned rest "
        "frames, no flat_hand_mean offset; joint angles are projections on joint_axes (flex, spread, twist)",
        "joint_axes": np.round(axes, 6).tolist(), "joint_limits_deg": JOINT_LIMITS_DEG.tolist(),
        "shape_names": list(SHAPE_NAMES), "shape_meanings": meanings,
        "posedirs": "zero: no pose corrective blend shapes",
        "params": dataclasses.asdict(params),
        "sources": "see docs/open_hand.md and ../shared/hand-anatomy.md ([BK10], [B92], [Sancho], "
                   "[Ibe11], [CityU], [Chat24], [Eaton], [AAOS], [Twente], [J-arr], [J0])",
    }
    out = {
        "v_template": vw.astype(np.float32),
        "faces": f.astype(np.int32),
        "shapedirs": np.einsum("ij,vjk->vik", LOCAL_TO_WORLD, dirs / 1000.0).astype(np.float32),
        "posedirs": np.zeros((135, len(vw) * 3), np.float32),
        "J_regressor": R.astype(np.float32),
        "weights": W.astype(np.float32),
        "parents": np.array(MANO_PARENTS, np.int64),
        "J": Jw.astype(np.float32),
        "tip_vertex_ids": tip_ids.astype(np.int64),
        "hands_components": comps.astype(np.float32),
        "hands_mean": mean.astype(np.float32),
        "hands_std": std.astype(np.float32),
        "pose_library": library.astype(np.float32),
    }
    out["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return out


def asset_difference(a: dict, b: dict) -> dict[str, float]:
    """How far apart two OpenHand assets are, key by key.

    Returns:
        {key: 0.0 where the arrays are bit-identical; else the largest difference in units of
        float32 spacing (ulps) at the larger magnitude for float arrays, ``inf`` for integer arrays,
        ``meta`` or shapes that differ}. One rebuild on another CPU may differ from the shipped
        asset by at most 1 ulp: the float64 values upstream agree to ~1e-12 relative, so only a
        value that lay within that of a float32 rounding boundary can round the other way.
    """
    out = {}
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if x is not None and y is not None and x.shape == y.shape and np.array_equal(x, y):
            out[k] = 0.0
        elif x is None or y is None or x.shape != y.shape or x.dtype != np.float32 or y.dtype != np.float32:
            out[k] = float("inf")
        else:
            ulp = np.spacing(np.maximum(np.abs(x), np.abs(y)))
            out[k] = float((np.abs(x.astype(np.float64) - y.astype(np.float64)) / ulp).max())
    return out


def save_asset(arrays: dict, path) -> None:
    """Write ``arrays`` as an ``.npz`` that is byte-identical for identical input.

    Members come in a fixed order (:data:`ASSET_SHAPES`, then any others sorted) through
    :func:`handlib.npz.write_npz` (fixed dates, no timestamps).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [k for k in ASSET_SHAPES if k in arrays] + sorted(k for k in arrays if k not in ASSET_SHAPES)
    write_npz(path, {k: np.array(arrays[k], order="C") for k in keys}, compresslevel=9)


def load_asset(path=None) -> dict[str, np.ndarray]:
    """Load an OpenHand asset and check every key and shape.

    Args:
        path: ``.npz`` file; default :data:`ASSET_PATH`.
    Returns:
        dict of arrays (``meta`` is a 0-d unicode array holding JSON).
    Raises:
        FileNotFoundError, KeyError or ValueError naming the file and the key.
    """
    path = pathlib.Path(ASSET_PATH if path is None else path)
    if not path.exists():
        raise FileNotFoundError(f"OpenHand asset {path} not found; rebuild it with "
                                "`python data_scripts/build_open_hand.py`")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k in ASSET_SHAPES:
        if k not in arrays:
            raise KeyError(f"{path}: missing key {k!r} (expected keys: {list(ASSET_SHAPES)})")
    sizes = {"V": arrays["v_template"].shape[0], "F": arrays["faces"].shape[0],
             "P": arrays["pose_library"].shape[0]}
    sizes["V*3"] = 3 * sizes["V"]
    for k, spec in ASSET_SHAPES.items():
        want = tuple(sizes[s] if isinstance(s, str) else s for s in spec)
        if arrays[k].shape != want:
            raise ValueError(f"{path}: key {k!r} has shape {arrays[k].shape}, expected {want} ({spec})")
    return arrays
