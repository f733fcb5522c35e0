"""The hand model of Sec. 3.2: MANO's linear blend skinning with a 63-d parameter h.

``h = [q (4), θ (45), β (10), s (1), t (3)]``: a unit quaternion q for the global rotation, 45
axis-angle finger-joint rotations θ, 10 shape coefficients β, a scale s and a translation t
(Baek et al. 2019, Sec. 3.2). The mesh is

    M(h) = s · R(q) · (LBS(θ, β) − j_wrist) + t,

so ``t`` is the wrist position in camera space (metres). ``LBS`` is MANO's linear blend skinning
(Romero et al. 2017), implemented in :mod:`handlib.lbs` and re-exported here (``hand_model.lbs``
has smplx's signature).

Two assets provide the arrays: OpenHand (``handlib.open_hand``, the open default) and the
official MANO pickle (``HandModel.from_mano``), loaded without chumpy and without plain
``pickle.load`` (:func:`load_mano_pkl`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import safe_pickle, skeleton
from .lbs import blend_shapes, lbs, rigid_transform, skin, tree_levels, vertices2joints  # noqa: F401
from .rotations import quaternion_to_matrix
from .safe_pickle import UnsafePickleError  # noqa: F401  (re-exported: the loader's refusal error)

H_SLICES = {"rot": slice(0, 4), "pose": slice(4, 49), "betas": slice(49, 59),
            "scale": slice(59, 60), "trans": slice(60, 63)}
H_DIM = 63

# Fingertip vertex conventions for the official MANO topology (thumb, index, middle, ring, pinky).
# manopth (Hasson et al. 2019) uses 745, 317, 444, 556, 673; its left hand uses 445 for the middle
# finger. smplx uses 744, 320, 443, 554, 671. See ../shared/hand-anatomy.md §5.
MANO_TIP_CONVENTIONS = {
    "manopth": {"right": (745, 317, 444, 556, 673), "left": (745, 317, 445, 556, 673)},
    "smplx": {"right": (744, 320, 443, 554, 671), "left": (744, 320, 443, 554, 671)},
}


# ----------------------------------------------------------------------------------------------
# Official MANO pickles, read safely
# ----------------------------------------------------------------------------------------------
MANO_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
             "hands_components", "hands_mean")


def load_mano_pkl(path) -> dict[str, np.ndarray]:
    """Read an official MANO pickle (MANO_RIGHT.pkl / MANO_LEFT.pkl) without chumpy, safely.

    The official files are Python 2 protocol-2 pickles holding numpy arrays, a scipy.sparse
    ``J_regressor`` and chumpy ``Ch`` objects; a copy re-saved under Python 3 with protocol 2
    encodes raw bytes through ``_codecs.encode``, which is admitted too. Any other global (e.g.
    ``os.system``) is refused before it can run.

    Returns:
        dict with ``v_template (V,3)``, ``shapedirs (V,3,10)``, ``posedirs (P, V*3)`` (transposed
        from the file's (V,3,P) as smplx does), ``J_regressor (16,V)`` dense, ``weights (V,16)``,
        ``parents (16,)``, ``faces (F,3)``, ``hands_components (45,45)``, ``hands_mean (45,)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO model not found: {path} (see data_scripts/get_mano.md)")
    raw = safe_pickle.load(path, what="a MANO model")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of arrays, got {type(raw).__name__}")
    missing = [k for k in MANO_KEYS if k not in raw]
    if missing:
        raise KeyError(f"{path}: missing MANO keys {missing}")
    a = {k: safe_pickle.to_array(raw[k], k, str(path)) for k in MANO_KEYS}
    V = a["v_template"].shape[0]
    expect = {"v_template": (V, 3), "weights": (V, None), "f": (None, 3), "J_regressor": (None, V)}
    for k, shp in expect.items():
        if a[k].ndim != len(shp) or any(s is not None and s != d for s, d in zip(shp, a[k].shape)):
            raise ValueError(f"{path}: key {k!r} has shape {a[k].shape}, expected {shp}")
    posedirs = a["posedirs"]
    if posedirs.ndim != 3 or posedirs.shape[:2] != (V, 3):
        raise ValueError(f"{path}: key 'posedirs' has shape {posedirs.shape}, expected (V, 3, P)")
    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # the file stores the root's parent as 2**32 − 1
    return {
        "v_template": a["v_template"].astype(np.float64),
        "shapedirs": a["shapedirs"].astype(np.float64),
        "posedirs": posedirs.reshape(V * 3, -1).T.astype(np.float64),
        "J_regressor": a["J_regressor"].astype(np.float64),
        "weights": a["weights"].astype(np.float64),
        "parents": parents,
        "faces": a["f"].astype(np.int64),
        "hands_components": a["hands_components"].astype(np.float64),
        "hands_mean": a["hands_mean"].reshape(-1).astype(np.float64),
    }


def fix_left_shapedirs(arrays: dict, right: dict | None = None) -> bool:
    """The known MANO_LEFT.pkl bug: its shapedirs' x component was not mirrored.

    With the right model at hand, the classic check applies (left and right x components nearly
    equal ⇒ negate the left one). Without it, a geometric check: shape direction 0 grows the
    hand, so its x displacement must correlate positively with the template's x about its mean;
    a negative correlation means the x component has the wrong sign. Fixes ``arrays`` in place.

    Returns:
        True if the x component was negated.
    """
    sd = arrays["shapedirs"]
    if right is not None and right["shapedirs"].shape == sd.shape:
        broken = np.abs(sd[:, 0, :] - right["shapedirs"][:, 0, :]).sum() < 1.0
    else:
        x = arrays["v_template"][:, 0] - arrays["v_template"][:, 0].mean()
        broken = float(np.dot(x, sd[:, 0, 0])) < 0.0
    if broken:
        sd[:, 0, :] *= -1.0
    return bool(broken)


def mirror_arrays(arrays: dict) -> dict:
    """Mirror a right-hand model to a left hand (x → −x), keeping the joint order.

    The vertex positions, shape directions and pose blend shapes flip their x component, faces
    reverse their winding, and pose-space quantities transform as axis-angle under the
    reflection M = diag(−1, 1, 1): r → det(M)·M r = (x, −y, −z) (MANO's left ``hands_mean`` is the
    right one with y and z negated; ../shared/hand-anatomy.md §5).
    """
    out = dict(arrays)
    flip = np.array([-1.0, 1.0, 1.0])
    out["v_template"] = arrays["v_template"] * flip
    out["shapedirs"] = arrays["shapedirs"] * flip[None, :, None]
    V = arrays["v_template"].shape[0]
    P = arrays["posedirs"].shape[0]
    # pose feature (R − I)_{ik} of each joint transforms as s_i s_k with s = (−1, 1, 1)
    s_feat = np.tile(np.outer(flip, flip).reshape(-1), P // 9)  # (P,)
    pd = arrays["posedirs"].reshape(P, V, 3) * s_feat[:, None, None] * flip
    out["posedirs"] = pd.reshape(P, V * 3)
    out["faces"] = arrays["faces"][:, [0, 2, 1]]
    aa = np.array([1.0, -1.0, -1.0])
    out["hands_mean"] = (arrays["hands_mean"].reshape(-1, 3) * aa).reshape(-1)
    hc = arrays["hands_components"]
    out["hands_components"] = (hc.reshape(hc.shape[0], -1, 3) * aa).reshape(hc.shape)
    for key in ("pose_library",):
        if key in arrays:
            out[key] = (arrays[key].reshape(arrays[key].shape[0], -1, 3) * aa).reshape(arrays[key].shape)
    return out


# ----------------------------------------------------------------------------------------------
# The Module
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HandOutput:
    """What :class:`HandModel` returns.

    Attributes:
        verts: (B, V, 3) mesh vertices, metres.
        joints: (B, 21, 3) keypoints in handlib order (16 regressed joints + 5 tip vertices).
        joints16: (B, 16, 3) MANO's joints in MANO order.
        full_pose: (B, 45) the finger-joint axis-angle actually applied (mean and PCA resolved).
    """

    verts: torch.Tensor
    joints: torch.Tensor
    joints16: torch.Tensor
    full_pose: torch.Tensor


@dataclasses.dataclass(frozen=True)
class HandParams:
    """The 63-d mesh parameter h of Sec. 3.2, unpacked. Shapes (B, 4), (B, 45), (B, 10), (B, 1),
    (B, 3)."""

    rot: torch.Tensor
    pose: torch.Tensor
    betas: torch.Tensor
    scale: torch.Tensor
    trans: torch.Tensor


def unpack_h(h: torch.Tensor) -> HandParams:
    """(B, 63) h → :class:`HandParams` (quaternion, pose, shape, scale, translation)."""
    if h.dim() != 2 or h.shape[-1] != H_DIM:
        raise ValueError(f"h: expected shape (B, {H_DIM}), got {tuple(h.shape)}")
    return HandParams(**{k: h[:, s] for k, s in H_SLICES.items()})


def pack_h(rot, pose, betas, scale, trans) -> torch.Tensor:
    """Inverse of :func:`unpack_h`: (B,4), (B,45), (B,10), (B,1), (B,3) → (B, 63)."""
    return torch.cat([rot, pose, betas, scale, trans], dim=-1)


def identity_h(batch: int = 1, trans=(0.0, 0.0, 0.5), dtype=torch.float32, device=None) -> torch.Tensor:
    """h with identity rotation, zero pose offset and shape, unit scale, wrist at ``trans``."""
    h = torch.zeros(batch, H_DIM, dtype=dtype, device=device)
    h[:, 0] = 1.0
    h[:, 59] = 1.0
    h[:, 60:63] = torch.as_tensor(trans, dtype=dtype, device=device)
    return h


class HandModel(nn.Module):
    """MANO-interface hand model: OpenHand by default, or the official MANO file.

    Args:
        side: "right" (default) or "left" (the mirror of the right OpenHand).
        flat_hand_mean: if False (smplx's default), a zero pose is ``hands_mean`` (a relaxed hand)
            and ``pose`` is an offset from it; if True, a zero pose is the flat template.
        use_pca: if True, ``pose`` holds ``num_pca_comps`` PCA coefficients of the pose prior.
        num_pca_comps: number of PCA components used when ``use_pca`` (manopth/smplx default 6).
        arrays: model arrays (as from :func:`handlib.open_hand.load_asset` or
            :func:`load_mano_pkl`); None loads the shipped OpenHand asset.
        tip_vertex_ids: five fingertip vertices (thumb, index, middle, ring, pinky); default from
            the arrays (OpenHand) or the manopth convention (MANO).
        dtype: float dtype of the buffers.
    """

    def __init__(self, side: str = "right", flat_hand_mean: bool = False, use_pca: bool = False,
                 num_pca_comps: int = 6, arrays: dict | None = None, tip_vertex_ids=None,
                 dtype: torch.dtype = torch.float32, name: str = "OpenHand"):
        super().__init__()
        if side not in ("right", "left"):
            raise ValueError(f"side: expected 'right' or 'left', got {side!r}")
        if arrays is None:
            from .open_hand import load_asset

            arrays = load_asset()
            if side == "left":
                arrays = mirror_arrays(arrays)
        self.side, self.name = side, name
        self.flat_hand_mean, self.use_pca = flat_hand_mean, use_pca
        if tip_vertex_ids is None:
            tip_vertex_ids = arrays.get("tip_vertex_ids")
            if tip_vertex_ids is None:
                raise ValueError("tip_vertex_ids: the arrays carry none; pass the five fingertip "
                                 "vertex ids (thumb, index, middle, ring, pinky)")
        V = arrays["v_template"].shape[0]
        n_comps = arrays["hands_components"].shape[0]
        if use_pca and not 1 <= num_pca_comps <= n_comps:
            raise ValueError(f"num_pca_comps: expected 1..{n_comps}, got {num_pca_comps}")
        self.num_pca_comps = num_pca_comps if use_pca else 45

        def buf(name, value, dt=dtype):
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dt), persistent=False)

        buf("v_template", arrays["v_template"])
        buf("shapedirs", arrays["shapedirs"])
        buf("posedirs", arrays["posedirs"])
        buf("J_regressor", arrays["J_regressor"])
        buf("lbs_weights", arrays["weights"])
        buf("parents", np.asarray(arrays["parents"], dtype=np.int64), torch.long)
        buf("faces", np.asarray(arrays["faces"], dtype=np.int64), torch.long)
        buf("tip_vertex_ids", np.asarray(tip_vertex_ids, dtype=np.int64), torch.long)
        buf("hands_components", arrays["hands_components"])
        buf("hands_mean", arrays["hands_mean"])
        self.posedirs_zero = bool(np.all(np.asarray(arrays["posedirs"]) == 0))
        self.num_betas = self.shapedirs.shape[-1]
        for key, want in (("shapedirs", (V, 3)), ("J_regressor", (16, V)), ("lbs_weights", (V, 16))):
            got = tuple(getattr(self, key).shape[:2])
            if got != want:
                raise ValueError(f"{name}: {key} has shape {got}, expected {want} (V={V})")

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_mano(cls, path=None, side: str | None = None, fingertips: str | tuple = "manopth",
                  fix_shapedirs: bool | None = None, **kwargs) -> HandModel:
        """Load the official MANO model.

        Args:
            path: MANO_RIGHT.pkl / MANO_LEFT.pkl, or a folder holding them; default
                ``$HANDLIB_MANO_DIR``.
            side: "right" or "left"; default inferred from the wrist's x (MANO's right wrist
                sits at x ≈ +0.096 m, the left one at −0.096 m).
            fingertips: "manopth" (745, 317, 444, 556, 673), "smplx" (744, 320, 443, 554, 671),
                or five explicit vertex ids (thumb, index, middle, ring, pinky).
            fix_shapedirs: apply the left-hand shapedirs fix (None: when detected).
            **kwargs: passed to :class:`HandModel` (flat_hand_mean, use_pca, ...).
        """
        path = Path(path or os.environ.get("HANDLIB_MANO_DIR", ""))
        if str(path) in ("", ".") :
            raise FileNotFoundError("HandModel.from_mano: pass a path or set HANDLIB_MANO_DIR "
                                    "(see data_scripts/get_mano.md)")
        if path.is_dir():
            name = f"MANO_{(side or 'right').upper()}.pkl"
            path = path / name
        arrays = load_mano_pkl(path)
        J0 = arrays["J_regressor"][0] @ arrays["v_template"]
        side = side or ("right" if J0[0] > 0 else "left")
        if side == "left" and fix_shapedirs is not False:
            right_path = path.with_name(path.name.replace("LEFT", "RIGHT"))
            right = load_mano_pkl(right_path) if right_path != path and right_path.is_file() else None
            if fix_shapedirs:
                arrays["shapedirs"][:, 0, :] *= -1.0
            else:
                fix_left_shapedirs(arrays, right)
        if isinstance(fingertips, str):
            if fingertips not in MANO_TIP_CONVENTIONS:
                raise ValueError(f"fingertips: expected one of {list(MANO_TIP_CONVENTIONS)} or 5 ids")
            tips = MANO_TIP_CONVENTIONS[fingertips][side]
        else:
            tips = tuple(int(t) for t in fingertips)
            if len(tips) != 5:
                raise ValueError(f"fingertips: expected 5 vertex ids, got {len(tips)}")
        return cls(side=side, arrays=arrays, tip_vertex_ids=tips, name=f"MANO ({path.name})", **kwargs)

    # -- forward -------------------------------------------------------------------------------
    def full_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, 45) axis-angle or (B, ncomps) PCA coefficients → (B, 45) applied axis-angle."""
        if self.use_pca:
            pose = pose @ self.hands_components[: self.num_pca_comps]
        if not self.flat_hand_mean:
            pose = pose + self.hands_mean
        return pose

    def forward(self, pose: torch.Tensor | None = None, betas: torch.Tensor | None = None,
                rot: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                trans: torch.Tensor | None = None) -> HandOutput:
        """Pose, shape and place the hand.

        Args:
            pose: (B, 45) axis-angle of joints 1..15 in MANO order (or (B, ncomps) with use_pca);
                default zeros.
            betas: (B, 10) shape; default zeros.
            rot: (B, 4) global rotation quaternion (w, x, y, z), normalised inside; default identity.
            scale: (B, 1); default 1.
            trans: (B, 3) wrist position; default: where the model's own frame puts it.
        Returns:
            :class:`HandOutput` with verts (B, V, 3), joints (B, 21, 3), joints16, full_pose.
        """
        given = [t for t in (pose, betas, rot, scale, trans) if t is not None]
        B = given[0].shape[0] if given else 1
        dt, dev = self.v_template.dtype, self.v_template.device
        n_pose = self.num_pca_comps
        pose = torch.zeros(B, n_pose, dtype=dt, device=dev) if pose is None else pose
        betas = torch.zeros(B, self.num_betas, dtype=dt, device=dev) if betas is None else betas
        for arg, val, width in (("pose", pose, n_pose), ("betas", betas, self.num_betas),
                                ("rot", rot, 4), ("scale", scale, 1), ("trans", trans, 3)):
            if val is not None and (val.dim() != 2 or val.shape != (B, width)):
                raise ValueError(f"{arg}: expected shape ({B}, {width}), got {tuple(val.shape)}")
        full = self.full_pose(pose)
        full48 = torch.cat([torch.zeros(B, 3, dtype=full.dtype, device=dev), full], dim=1)
        verts, j16 = lbs(betas, full48, self.v_template, self.shapedirs,
                         None if self.posedirs_zero else self.posedirs, self.J_regressor,
                         self.parents, self.lbs_weights)
        tips = verts[:, self.tip_vertex_ids]  # (B, 5, 3)
        kp = torch.cat([j16, tips], dim=1)[:, _MANO21_TO_HANDLIB]  # (B, 21, 3)
        if rot is not None or scale is not None or trans is not None:
            root = j16[:, :1]  # (B, 1, 3) the wrist
            R = quaternion_to_matrix(rot) if rot is not None else None
            s = scale[:, None] if scale is not None else None
            t = trans[:, None] if trans is not None else root

            def place(x):  # s · R (x − wrist) + t
                x = x - root
                if R is not None:
                    x = x @ R.transpose(-1, -2)
                if s is not None:
                    x = x * s
                return x + t

            verts, kp, j16 = place(verts), place(kp), place(j16)
        return HandOutput(verts=verts, joints=kp, joints16=j16, full_pose=full)

    def from_h(self, h: torch.Tensor) -> HandOutput:
        """Forward from the packed 63-d h = [q (4), θ (45), β (10), s (1), t (3)] (Sec. 3.2)."""
        p = unpack_h(h)
        if self.use_pca:
            raise ValueError("from_h: h carries a full 45-d pose; build the model with use_pca=False")
        return self(pose=p.pose, betas=p.betas, rot=p.rot, scale=p.scale, trans=p.trans)

    @property
    def num_verts(self) -> int:
        return self.v_template.shape[0]

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, side={self.side!r}, V={self.num_verts}, F={self.faces.shape[0]}, "
                f"flat_hand_mean={self.flat_hand_mean}, use_pca={self.use_pca}")


# MANO's 16 joints + 5 tips (thumb, index, middle, ring, pinky) → handlib keypoint order.
_MANO21_TO_HANDLIB = torch.as_tensor(skeleton.order_index("mano", "handlib"))
