"""OpenHand's constants and skeleton: every anatomical number, the frame, the rest joints.

Internally the builder works in millimetres in an anatomical frame (d, r, p) = (distal, radial,
palmar) relative to the wrist joint; :data:`LOCAL_TO_WORLD` maps it to MANO's right-hand frame
(metres; fingers along -x, thumb toward +z, palm facing -y). Source tags such as [BK10] refer to
``../shared/hand-anatomy.md``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from handlib.skeleton import MANO_PARENTS, NUM_JOINTS, TIP_FINGERS

# Columns: where the local distal, radial and palmar unit vectors point in MANO's right-hand frame.
LOCAL_TO_WORLD = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # MANO joint order, 3 joints each
FINGER_JOINTS = {f: (1 + 3 * i, 2 + 3 * i, 3 + 3 * i) for i, f in enumerate(FINGERS)}
SHAPE_NAMES = ("size", "palm_width", "palm_length", "finger_length", "palm_thickness", "thumb_length",
               "index_vs_ring_length", "pinky_length", "fingertip_taper", "knuckle_girth")

# Documented bone-length ranges (mm) between regressed joints / tip points, per MANO finger:
# (wrist->1, 1->2, 2->3, 3->tip). wrist->1: MANO template +-10 % [J-arr]; thumb1->2: MANO 30.8 +-15 %
# [J-arr]; phalanges: [BK10] pooled means +-15 % (joint-centre links vs X-ray bone lengths, adult
# spread [Soto] SD ~10 %); 3->tip: [BK10] distal phalanx + tip pulp +-15 %.
_BK = {"index": (90.6, 39.8, 22.4, 19.6), "middle": (94.7, 44.6, 26.3, 21.4),
       "pinky": (81.8, 32.6, 18.1, 19.7), "ring": (86.1, 41.4, 25.7, 21.3), "thumb": (38.6, 30.8, 31.6, 27.4)}
BONE_LENGTH_RANGES_MM = {f: tuple((m * (0.9 if k == 0 else 0.85), m * (1.1 if k == 0 else 1.15))
                                  for k, m in enumerate(ms)) for f, ms in _BK.items()}


@dataclasses.dataclass(frozen=True)
class OpenHandParams:
    """Every anatomical and build constant of OpenHand. Lengths in mm, angles in degrees.

    Points are (distal, radial, palmar) relative to the wrist joint.
    """

    # MANO's wrist joint position in metres [J0], so OpenHand sits where MANO's template does.
    wrist_world: tuple = (0.0957, 0.0064, 0.0062)
    # MCP joint centres, MANO template relative to the wrist [J-arr] (middle MCP most dorsal:
    # the transverse arch). Order: index, middle, pinky, ring (MANO's order).
    mcp: tuple = ((87.4, 23.3, 0.0), (94.7, 0.0, -6.6), (70.4, -41.4, 0.0), (82.7, -23.9, -5.4))
    # Finger rest directions in the palm plane, degrees toward radial. MANO's flat template is
    # slightly spread; the fan keeps >= 4 mm between neighbours (ours).
    finger_spread: tuple = (7.0, 0.0, -15.0, -7.0)
    # Proximal, middle, distal (DIP -> tip surface = distal phalanx + tip pulp) lengths [BK10].
    phalanx_len: tuple = ((39.8, 22.4, 19.6), (44.6, 26.3, 21.4), (32.6, 18.1, 19.7),
                          (41.4, 25.7, 21.3))
    # Segment diameters as a fraction of hand breadth [Sancho] (proximal, middle, distal).
    phalanx_dia: tuple = ((0.229, 0.198, 0.175), (0.216, 0.197, 0.179), (0.183, 0.164, 0.149),
                          (0.203, 0.182, 0.167))
    breadth_ref: float = 83.0  # hand breadth used with [Sancho]'s ratios; [CityU] 50th pct 85 (men)
    # thumb1 and thumb2 from MANO's template [J-arr]; thumb1 is MANO's CMC-ish joint.
    thumb1: tuple = (23.4, 25.1, 16.0)
    thumb2: tuple = (42.2, 49.5, 15.8)
    thumb_len: tuple = (31.6, 27.4)  # proximal phalanx, distal + tip pulp [BK10] (21.7 + 5.7)
    # Directions (radial angle in the palm plane, palmar tilt) of the thumb phalanges (ours,
    # continuing MANO's thumb1->thumb2 ray (52 deg radial, [J-arr]) toward distal).
    thumb_dirs: tuple = ((40.0, 10.0), (34.0, 10.0))
    thumb_dia: tuple = (0.229, 0.212)  # proximal, distal [Sancho] (fraction of breadth)
    thumb_mc_radius: float = 11.0  # thumb metacarpal + soft tissue (ours; [Sancho] 0.438 HB incl. thenar)
    thumb_pronation: float = 40.0  # thumb pad normal tilt from palmar toward the fingers at rest (ours)
    # Palm slab: core polygon (d, r) inflated by palm_round; skin = core + palm_round [CityU] breadth.
    palm_core: tuple = ((-25.0, -26.0), (0.0, -27.0), (35.0, -37.0), (70.4, -40.5), (82.7, -23.9),
                        (94.7, 0.0), (87.4, 22.5), (55.0, 20.0), (20.0, 15.0), (0.0, 14.0),
                        (-25.0, 14.0))
    palm_round: float = 10.0  # edge radius of the palm (ours; palm 28-32 mm thick, unsourced)
    palm_half_flat: tuple = ((-25.0, 6.0), (0.0, 5.0), (40.0, 2.0), (95.0, 1.5))  # (d, half) ours
    palm_dome: float = 0.8  # mm per sqrt(mm) inside the outline: convex palm and back (ours)
    arch_depth: float = 6.6  # dorsal offset of the palm mid-plane at the middle ray [J-arr]
    thenar: tuple = ((6.0, 12.0, 4.0, 14.0), (42.2, 49.5, 15.8, 10.0))  # round cone (d,r,p,radius)
    hypothenar: tuple = ((10.0, -22.0, 5.0, 11.0), (60.0, -37.0, 4.0, 9.0))
    blend_palm: float = 8.0  # smooth-union radius between palm parts and fingers (ours)
    blend_finger: float = 1.5  # smooth-union radius between phalanges (keeps knuckle waists)
    waist: float = 0.92  # mid-shaft radius / joint radius: gives visible knuckles (ours)
    cut_d: float = -12.0  # forearm cut, mm proximal of the wrist joint: the wrist opening
    grid_mm: float = 1.25  # SDF sampling step
    target_faces: int = 1100  # decimation target (closed mesh); MANO has 778 V / 1538 F
    max_edge_mm: float = 13.0  # longer edges are split after decimation (evens the triangles)
    relax_iters: int = 10
    weight_tau: float = 2.0  # mm; softness of the nearest-bone skinning assignment
    weight_smooth_iters: int = 6
    regressor_ring: int = 20  # vertices around each joint used by J_regressor
    pose_samples: int = 4000
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# Skeleton
# ----------------------------------------------------------------------------------------------
def _dir(angle_deg: float, tilt_deg: float = 0.0) -> np.ndarray:
    a, t = np.radians(angle_deg), np.radians(tilt_deg)
    return np.array([np.cos(a) * np.cos(t), np.sin(a) * np.cos(t), np.sin(t)])


def rest_skeleton(params: OpenHandParams = OpenHandParams()) -> tuple[np.ndarray, np.ndarray]:
    """Rest joints and fingertip points in the local frame.

    Returns:
        joints: (16, 3) mm, MANO joint order, (distal, radial, palmar) relative to the wrist.
        tips: (5, 3) mm, fingertip surface points in :data:`TIP_FINGERS` order.
    """
    J = np.zeros((NUM_JOINTS, 3))
    tips = {}
    for i, f in enumerate(FINGERS[:4]):
        u = _dir(params.finger_spread[i])
        p = np.array(params.mcp[i])
        for k, j in enumerate(FINGER_JOINTS[f]):
            J[j] = p
            p = p + params.phalanx_len[i][k] * u
        tips[f] = p
    j1, j2, j3 = FINGER_JOINTS["thumb"]
    J[j1], J[j2] = params.thumb1, params.thumb2
    J[j3] = J[j2] + params.thumb_len[0] * _dir(*params.thumb_dirs[0])
    tips["thumb"] = J[j3] + params.thumb_len[1] * _dir(*params.thumb_dirs[1])
    return J, np.stack([tips[f] for f in TIP_FINGERS])


def _bones(J: np.ndarray, tips: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(joint, start, end) segments that each joint drives (LBS: joint j moves the bone distal to it)."""
    children = {p: c for c, p in enumerate(MANO_PARENTS) if p > 0}
    bones = [(0, J[0], J[c]) for c, p in enumerate(MANO_PARENTS) if p == 0]  # metacarpals + thumb base
    bones.append((0, J[0], J[0] + np.array([-40.0, 0.0, 0.0])))  # forearm stub
    for j in range(1, NUM_JOINTS):
        end = J[children[j]] if j in children else tips[TIP_FINGERS.index(_finger_of(j))]
        bones.append((j, J[j], end))
    return bones


def _finger_of(j: int) -> str:
    return next(f for f, js in FINGER_JOINTS.items() if j in js)


def _to_world(x_local_mm: np.ndarray, params: OpenHandParams) -> np.ndarray:
    """(..., 3) local millimetres → MANO's world frame in metres.

    LOCAL_TO_WORLD is a signed permutation, so this product is exact on any BLAS kernel.
    """
    return np.asarray(params.wrist_world) + x_local_mm @ LOCAL_TO_WORLD.T / 1000.0
