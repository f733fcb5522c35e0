"""f_E3D: the iterative mesh regressor (Eqs. 4–5) with the 2D pose refiner (Eq. 6).

Baek et al. 2019 (Sec. 3.3) regress the 63-d mesh parameter h = [q, θ, β, s, t] HMR-style
(Kanazawa et al. 2018): starting from h_0, each iteration predicts an update from the image
feature F(x), the current 2D pose and the current h,

    Eq. 4–5:  h_t = h_{t−1} + f_reg([F(x), j2D_{t−1}, h_{t−1}])            t = 1..T (T = 3)

and the 2D pose refiner corrects the 2D evidence using the current 3D estimate,

    Eq. 6:    j2D_t = j2D_{t−1} + f_ref([h_t, F(x), j3D_t, j2D_{t−1}])      j2D_0 = heat-map evidence

where j3D_t are the joints of the mesh of h_t (f_Proj). In the paper's setting both are single
fully-connected layers: (2048 + 42 + 63) → 63 and (63 + 2048 + 63 + 42) = 2216 → 42.
Choices where the paper is silent (all in :class:`RegressorConfig`):

* **The network works on a normalised code of h** (:func:`h_to_code` / :func:`code_to_h`), not on h
  in metres: the translation is the wrist's pixel position in the crop (in units of half the crop
  side, 0 = centre) and its log depth relative to ``z_ref = fx · ref_extent / S`` (the depth at which
  a hand of ``ref_extent`` metres spans the crop), and the scale is log s. Every entry is then O(1)
  whatever the crop's focal length, and additive updates (Eq. 5) are well scaled. h_0 is "zeros
  except the mean pose": in the code that is all zeros except q_w = 1 (identity rotation; a zero
  quaternion is undefined), θ = 0 (the mean pose with ``flat_hand_mean=False``), β = 0, s = 1, and the
  wrist at the crop centre at depth z_ref.
* **The update of the quaternion is additive**, then normalised in :func:`code_to_h` (as HMR adds
  to axis-angle).
* **The rotation's representation and start are options** (``RegressorConfig.rotation`` / ``start``).
  The paper's q is the default. A quaternion has a seam (q and −q are one rotation), and upright crops
  put it in the data: the fingers point up, but the hand turns about them through a full circle (on
  300 synthetic crops the mean rotation matrix has singular values 0.76, 0.06, 0.03), so hands that
  turn past 180° from h_0 sit on it. "6d" (Zhou et al. 2019: two columns of R, Gram–Schmidt) is
  continuous; the code is then 65-d. ``start="upright"`` begins from fingers-up (:data:`R_UPRIGHT`)
  instead of the model's rest frame, which is 90–180° from every upright crop's hand.
* **Scale s is not learnt by default** (``learn_scale=False``): under perspective projection s and
  depth are indistinguishable (s·X + t and 2s·X + 2t project identically), and the articulation
  loss (Eq. 8) is scale-free, so only β fixes the hand's metric size.
* **The refiner is residual** (it predicts a correction to j2D_{t−1}); j2D enters both networks in
  units of half the crop side, j3D root-relative in units of ``j3d_unit``.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as Fn
from torch import nn

from .camera import project
from .checks import check_shape
from .hand_model import H_DIM
from .rotations import (
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)

__all__ = ["RegressorConfig", "IterativeRegressor", "RegressorOutput", "h_to_code", "code_to_h",
           "initial_code", "code_dim", "normalize_uv", "denormalize_uv", "mlp", "ROTATIONS", "STARTS",
           "R_UPRIGHT"]

# slices of h (and of a quaternion code): q, θ, β, s, t
Q, THETA, BETA, SCALE, TRANS = slice(0, 4), slice(4, 49), slice(49, 59), slice(59, 60), slice(60, 63)
# code entries holding the global rotation, per representation (RegressorConfig.rotation)
ROTATIONS = {"quaternion": 4, "6d": 6}
# h_0's global rotation (RegressorConfig.start)
STARTS = ("identity", "upright")
# "upright": the model's +x (wrist ← fingers) along the camera's +y, so the fingers point up in the
# crop, as an upright crop puts them (data.transforms.upright_angle); its z along the optical axis.
R_UPRIGHT = ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
_TAIL = H_DIM - 4  # θ, β, log s, u_n, v_n, log z: the 59 code entries after the rotation


@dataclasses.dataclass(frozen=True)
class RegressorConfig:
    """f_E3D's architecture and parameterisation (Sec. 3.3). Paper values where given."""

    iterations: int = 3  # T of Eq. 5 (paper: 3, as HMR)
    hidden: tuple[int, ...] = ()  # f_reg hidden widths; () = the paper's one FC layer (HMR: 1024, 1024)
    refiner_hidden: tuple[int, ...] = ()  # f_ref hidden widths; () = the paper's 2216 → 42 FC layer
    use_refiner: bool = True  # False: ablation without Eq. 6 (j2D stays the heat-map evidence)
    ref_extent: float = 0.2  # m; z_ref = fx · ref_extent / S: a hand 0.2 m across fills the crop (ours)
    j3d_unit: float = 0.1  # m; root-relative joints are divided by this for the refiner (ours)
    learn_scale: bool = False  # see the module docstring: s and depth are not separable (ours)
    init_gain: float = 0.01  # Xavier gain of each output layer: updates start near 0 (HMR's choice)
    dropout: float = 0.0  # between hidden layers (HMR: 0.5); unused with hidden == ()
    # How the code holds the global rotation (see the module docstring). "quaternion": h's own q
    # (the paper's 4-d q); "6d": two columns of R (Zhou et al. 2019), continuous where q has a seam.
    rotation: str = "quaternion"
    # h_0's rotation: "identity" (the model's rest frame) or "upright" (R_UPRIGHT: fingers up).
    start: str = "identity"

    def __post_init__(self):
        if self.rotation not in ROTATIONS:
            raise ValueError(f"RegressorConfig.rotation: expected one of {tuple(ROTATIONS)}, "
                             f"got {self.rotation!r}")
        if self.start not in STARTS:
            raise ValueError(f"RegressorConfig.start: expected one of {STARTS}, got {self.start!r}")

    @property
    def code_dim(self) -> int:
        """Length of the code: 63 with a quaternion, 65 with the 6-d rotation."""
        return code_dim(self.rotation)


def code_dim(rotation: str = "quaternion") -> int:
    """Length of the network code of h for a rotation representation (:data:`ROTATIONS`)."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {tuple(ROTATIONS)}, got {rotation!r}")
    return ROTATIONS[rotation] + _TAIL


def normalize_uv(uv: torch.Tensor, image_size: int) -> torch.Tensor:
    """Pixels (pixel centres at integers) → units of half the crop side, 0 at the crop centre."""
    c = (image_size - 1) / 2.0
    return (uv - c) / (image_size / 2.0)


def denormalize_uv(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Inverse of :func:`normalize_uv`."""
    return x * (image_size / 2.0) + (image_size - 1) / 2.0


def _z_ref(K: torch.Tensor, image_size: int, ref_extent: float) -> torch.Tensor:
    return K[:, 0, 0] * ref_extent / image_size  # (B,)


def _code_to_q(rot: torch.Tensor, rotation: str) -> torch.Tensor:
    if rotation == "quaternion":
        return Fn.normalize(rot, dim=-1, eps=1e-8)
    return matrix_to_quaternion(rotation_6d_to_matrix(rot))


def _q_to_code(q: torch.Tensor, rotation: str) -> torch.Tensor:
    return q if rotation == "quaternion" else matrix_to_rotation_6d(quaternion_to_matrix(q))


def code_to_h(code: torch.Tensor, K: torch.Tensor, image_size: int, ref_extent: float = 0.2,
              rotation: str = "quaternion") -> torch.Tensor:
    """Network code → the 63-d h of Sec. 3.2 in camera space (metres), for the crop camera K.

    Args:
        code: (B, D) [rotation (4 or 6), θ (45), β (10), log s (1), u_n, v_n (2), log(z / z_ref) (1)],
            D = :func:`code_dim` of ``rotation``: 63 for "quaternion", 65 for "6d".
        K: (B, 3, 3) crop intrinsics. image_size: crop side S.
    Returns:
        (B, 63) h = [q / ‖q‖, θ, β, s, t], t the wrist in camera space.
    """
    check_shape(code, "code", (None, code_dim(rotation)))
    check_shape(K, "K", (code.shape[0], 3, 3))
    r = ROTATIONS[rotation]
    q = _code_to_q(code[:, :r], rotation)
    tail = code[:, r:]  # θ 0:45, β 45:55, log s 55, uv 56:58, log z 58
    s = tail[:, 55:56].exp()
    uv = denormalize_uv(tail[:, 56:58], image_size)  # (B, 2) wrist pixel
    z = _z_ref(K, image_size, ref_extent)[:, None] * tail[:, 58:59].exp()  # (B, 1)
    xy = (uv - K[:, :2, 2]) * z / torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)
    return torch.cat([q, tail[:, :55], s, xy, z], dim=-1)


def h_to_code(h: torch.Tensor, K: torch.Tensor, image_size: int, ref_extent: float = 0.2,
              rotation: str = "quaternion") -> torch.Tensor:
    """Inverse of :func:`code_to_h` (for a unit quaternion and positive s and depth)."""
    check_shape(h, "h", (None, H_DIM))
    check_shape(K, "K", (h.shape[0], 3, 3))
    t = h[:, TRANS]
    uv = t[:, :2] / t[:, 2:] * torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1) + K[:, :2, 2]
    logz = (t[:, 2] / _z_ref(K, image_size, ref_extent)).log()[:, None]
    parts = [_q_to_code(h[:, Q], rotation), h[:, THETA], h[:, BETA], h[:, SCALE].log(),
             normalize_uv(uv, image_size), logz]
    return torch.cat(parts, dim=-1)


def initial_code(batch: int, dtype=torch.float32, device=None, rotation: str = "quaternion",
                 start: str = "identity") -> torch.Tensor:
    """h_0 in code space: the rotation of ``start`` (identity: q = (1, 0, 0, 0); upright:
    :data:`R_UPRIGHT`), the mean pose, mean shape, s = 1 and the wrist at the crop centre at depth
    z_ref, i.e. zeros after the rotation entries. (B, :func:`code_dim`)."""
    if start not in STARTS:
        raise ValueError(f"start: expected one of {STARTS}, got {start!r}")
    R = torch.eye(3, dtype=dtype, device=device) if start == "identity" else \
        torch.tensor(R_UPRIGHT, dtype=dtype, device=device)
    rot = _q_to_code(matrix_to_quaternion(R)[None], rotation)
    code = torch.zeros(batch, code_dim(rotation), dtype=dtype, device=device)
    code[:, :rot.shape[-1]] = rot
    return code


def mlp(d_in: int, hidden: tuple[int, ...], d_out: int, dropout: float, init_gain: float) -> nn.Sequential:
    """FC layers d_in → hidden… → d_out with ReLU (and dropout) between; the last layer starts small."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(d_in, width), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d_in = width
    last = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(last.weight, gain=init_gain)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


@dataclasses.dataclass
class RegressorOutput:
    """Everything f_E3D computed, one entry per iteration t = 1..T (index 0 of ``h``/``code`` is h_0).

    Attributes:
        code: list of T+1 (B, 63) codes. h: list of T+1 (B, 63) camera-space h.
        verts: list of T (B, V, 3) meshes of h_1..h_T. joints: list of T (B, 21, 3) j3D_t.
        j2d_proj: list of T (B, 21, 2) projections of j3D_t (pixels).
        j2d: list of T+1 (B, 21, 2) refined 2D poses (pixels), j2d[0] the heat-map evidence.
    """

    code: list
    h: list
    verts: list
    joints: list
    j2d_proj: list
    j2d: list


class IterativeRegressor(nn.Module):
    """f_E3D: Eqs. 4–6. Holds f_reg and f_ref; the hand model (f_Proj, no weights) is passed in.

    Args:
        feat_dim: C, the size of F(x) (2048 for ResNet-50).
        cfg: :class:`RegressorConfig`.
    """

    def __init__(self, feat_dim: int, cfg: RegressorConfig = RegressorConfig()):
        super().__init__()
        if cfg.iterations < 1:
            raise ValueError(f"iterations: expected ≥ 1, got {cfg.iterations}")
        self.cfg, self.feat_dim = cfg, feat_dim
        D = cfg.code_dim
        self.reg = mlp(feat_dim + 42 + D, cfg.hidden, D, cfg.dropout, cfg.init_gain)  # Eq. 4
        # Eq. 6: [h, F, j3D, j2D] → Δj2D
        self.ref = mlp(D + feat_dim + 63 + 42, cfg.refiner_hidden, 42, cfg.dropout, cfg.init_gain)
        mask = torch.ones(D)
        if not cfg.learn_scale:
            mask[D - 4] = 0.0  # log s: the fourth entry from the end of the code
        self.register_buffer("update_mask", mask, persistent=False)

    def code_to_h(self, code: torch.Tensor, K: torch.Tensor, image_size: int) -> torch.Tensor:
        """:func:`code_to_h` with this regressor's rotation and reference extent."""
        return code_to_h(code, K, image_size, self.cfg.ref_extent, self.cfg.rotation)

    def h_to_code(self, h: torch.Tensor, K: torch.Tensor, image_size: int) -> torch.Tensor:
        """:func:`h_to_code` with this regressor's rotation and reference extent."""
        return h_to_code(h, K, image_size, self.cfg.ref_extent, self.cfg.rotation)

    def initial_code(self, batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """:func:`initial_code` of this regressor's rotation representation and start."""
        return initial_code(batch, dtype, device, self.cfg.rotation, self.cfg.start)

    def forward(self, F: torch.Tensor, j2d: torch.Tensor, K: torch.Tensor, hand_model: nn.Module,
                image_size: int, code0: torch.Tensor | None = None) -> RegressorOutput:
        """Args:
            F: (B, C) image feature F(x). j2d: (B, 21, 2) 2D evidence, crop pixels.
            K: (B, 3, 3) crop intrinsics. hand_model: a right :class:`~handlib.hand_model.HandModel`.
            image_size: crop side S.
            code0: optional (B, D) start (default :meth:`initial_code`); D = ``cfg.code_dim``.
        Returns:
            :class:`RegressorOutput`.
        """
        B = F.shape[0]
        check_shape(F, "F", (B, self.feat_dim))
        check_shape(j2d, "j2d", (B, 21, 2))
        check_shape(K, "K", (B, 3, 3))
        if code0 is not None:
            check_shape(code0, "code0", (B, self.cfg.code_dim))
        cfg = self.cfg
        code = self.initial_code(B, F.dtype, F.device) if code0 is None else code0
        to_h = lambda c: self.code_to_h(c, K, image_size)  # noqa: E731
        out = RegressorOutput(code=[code], h=[to_h(code)], verts=[], joints=[], j2d_proj=[], j2d=[j2d])
        for _ in range(cfg.iterations):
            x2d = normalize_uv(out.j2d[-1], image_size).flatten(1)  # (B, 42)
            code = code + self.reg(torch.cat([F, x2d, code], dim=-1)) * self.update_mask  # Eqs. 4–5
            h = to_h(code)
            mesh = hand_model.from_h(h)
            out.code.append(code)
            out.h.append(h)
            out.verts.append(mesh.verts)
            out.joints.append(mesh.joints)
            out.j2d_proj.append(project(mesh.joints, K))
            out.j2d.append(self.refine_2d(code, F, mesh.joints, out.j2d[-1], image_size))  # Eq. 6
        return out

    def refine_2d(self, code: torch.Tensor, F: torch.Tensor, joints: torch.Tensor, j2d: torch.Tensor,
                  image_size: int) -> torch.Tensor:
        """Eq. 6: j2D + f_ref([code, F, j3D, j2D]) (j2D itself when ``use_refiner`` is off).

        Args:
            code: (B, D) code of h_t. F: (B, C). joints: (B, 21, 3) j3D_t, camera space.
            j2d: (B, 21, 2) the 2D pose to refine, crop pixels. image_size: crop side S.
        Returns:
            (B, 21, 2) refined 2D pose, crop pixels.
        """
        if not self.cfg.use_refiner:
            return j2d
        B = code.shape[0]
        x2d = normalize_uv(j2d, image_size).flatten(1)  # (B, 42)
        j3d = ((joints - joints[:, :1]) / self.cfg.j3d_unit).flatten(1)  # (B, 63), root-relative
        delta = self.ref(torch.cat([code, F, j3d, x2d], dim=-1)).view(B, 21, 2)
        return j2d + delta * (image_size / 2.0)
