"""Annotated real hand photos in mmpose's test-data layouts (RHD, FreiHAND, InterHand2.6M).

mmpose (``tests/data``) ships a few real frames of each hand dataset with COCO-style annotations;
``../shared/realdata/mmpose_testdata`` keeps a copy (research-only: read them there, never copy
them into the repository). This module reads them into one small record, :class:`RealFrame`, for
honest checks of models and conventions, and writes look-alike files from synthetic samples so
that the readers are tested without the real data.

Formats (as found in mmpose's files; the fixture writers reproduce them key for key)::

    rhd/test_rhd.json  (COCO)
      images[]:      {file_name, height, width, id, cam_param: {focal: [fx, fy], princpt: [cx, cy]}}
      annotations[]: {id, image_id, category_id, iscrowd, bbox [x, y, w, h], area,
                      keypoints (21, 3) nested [u, v, vis]   <- RHD order (wrist, fingers tip->MCP)
                      joint_cam (21, 3) millimetres, camera frame, RHD order,
                      hand_type "left" | "right"}
    freihand/test_freihand.json  (COCO)
      images[]:      {file_name "%08d.jpg", height, width, id}
      annotations[]: {bbox [x, y, w, h] (ints), keypoints FLAT (63,) = 21 x [u, v, vis],
                      FreiHAND order (= handlib's), category_id, id, image_id,
                      segmentation [[box polygon]], iscrowd, area}
      No 3D, no intrinsics. Image number i shows FreiHAND annotation i % 32560, version i // 32560.
    interhand2.6m/test_interhand2.6m_{camera,data,joint_3d}.json
      camera:   {capture: {campos|camrot|focal|princpt: {camera: value}}}, campos (3,) mm,
                camrot (3, 3), world -> camera: X_cam = camrot @ (X_world - campos)
      data:     images[] {id, file_name, width, height, capture, subject, seq_name, camera,
                frame_idx}; annotations[] {id, image_id, bbox (both hands), joint_valid 42 x [0|1],
                hand_type "right" | "left" | "interacting", hand_type_valid}
      joint_3d: {capture: {frame_idx: {world_coord (42, 3) mm, joint_valid 42 x [bool],
                hand_type, hand_type_valid}}}
      Joints 0-20 are the RIGHT hand, 21-41 the LEFT, each in InterHand order (thumb, index,
      middle, ring, pinky, each from tip to MCP/CMC, then the wrist LAST: ``skeleton.ORDERS["interhand"]``).
      There are no 2D keypoints: kp2d is the projection of the camera-frame joints with K.

Conventions of :class:`RealFrame`: handlib keypoint order, pixels with centres at integers (the
files' own convention: projecting RHD's ``joint_cam`` with its ``cam_param`` lands on its 2D
keypoints within 0.07 px), 3D in metres in the camera frame (x right, y down, z forward).
``valid`` is the file's flag (RHD: visibility > 0; FreiHAND: > 0; InterHand: ``joint_valid`` of
both files and of the hand's wrist, as InterHand2.6M's own loader does). Invalid InterHand joints
hold zeros; RHD keeps the file's coordinates of occluded joints (as :class:`handlib.data.RHD`).
Malformed files raise :class:`DataError` naming the file, the entry and the key.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from ..skeleton import convert, keypoint_box
from .common import DataError, MissingData, read_image, read_json

SOURCES = ("rhd", "freihand", "interhand")
# InterHand2.6M's per-hand order is skeleton.ORDERS["interhand"] (tip → MCP per finger, wrist last).
INTERHAND_HANDS = {"right": slice(0, 21), "left": slice(21, 42)}  # of the 42 joints
INTERHAND_WRIST = 20  # per-hand index of the wrist (the root whose validity gates the hand)
FREIHAND_UNIQUE = 32560  # FreiHAND training: image i shows annotation i % 32560
FREIHAND_VERSIONS = ("gs", "hom", "sample", "auto")
BOX_SCALE = 1.2  # mmpose's boxes = the tight keypoint box scaled 1.2x about its centre (RHD, InterHand)
# The category block of mmpose's COCO hand files (format, not data: the names mmpose uses).
COCO_KEYPOINT_NAMES = ("wrist", "thumb1", "thumb2", "thumb3", "thumb4", "forefinger1", "forefinger2",
                       "forefinger3", "forefinger4", "middle_finger1", "middle_finger2",
                       "middle_finger3", "middle_finger4", "ring_finger1", "ring_finger2",
                       "ring_finger3", "ring_finger4", "pinky_finger1", "pinky_finger2",
                       "pinky_finger3", "pinky_finger4")
COCO_SKELETON = [[1, 2], [2, 3], [3, 4], [4, 5], [1, 6], [6, 7], [7, 8], [8, 9], [1, 10], [10, 11],
                 [11, 12], [12, 13], [1, 14], [14, 15], [15, 16], [16, 17], [1, 18], [18, 19],
                 [19, 20], [20, 21]]


@dataclasses.dataclass
class RealFrame:
    """One annotated hand in a real photo.

    Attributes:
        image_path: the photo (read it with :meth:`image`).
        source: "rhd" | "freihand" | "interhand".
        kp2d: (21, 2) float64 pixels, handlib order.
        valid: (21,) bool.
        kp3d: (21, 3) float64 metres, camera frame, handlib order; None where the file has no 3D.
        K: (3, 3) float64 intrinsics or None.
        side: "left" | "right" | None.
        box: (x, y, w, h) pixels from the file, or None.
        frame_id: a name unique within its source (e.g. "00111", "image69148_right").
        meta: what else the file says (image ids, size (w, h), capture/camera, version, ...).
    """

    image_path: Path
    source: str
    kp2d: np.ndarray
    valid: np.ndarray
    kp3d: np.ndarray | None = None
    K: np.ndarray | None = None
    side: str | None = None
    box: tuple | None = None
    frame_id: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; :class:`DataError` if missing or unreadable."""
        return read_image(self.image_path)


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------
def project(kp3d: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) camera points, (3, 3) K → (N, 2) float64 pixels."""
    uvw = np.asarray(kp3d, np.float64) @ np.asarray(K, np.float64).T
    return uvw[:, :2] / uvw[:, 2:]


def reprojection_error(frame: RealFrame) -> float:
    """Largest distance (px) between ``project(kp3d, K)`` and ``kp2d`` over the valid keypoints.

    Raises:
        ValueError: the frame has no 3D or no intrinsics (FreiHAND's mmpose files), or no valid
            keypoint.
    """
    if frame.kp3d is None or frame.K is None:
        raise ValueError(f"{frame.source} frame {frame.frame_id}: no kp3d/K to reproject")
    if not frame.valid.any():
        raise ValueError(f"{frame.source} frame {frame.frame_id}: no valid keypoint")
    v = frame.valid
    return float(np.linalg.norm(project(frame.kp3d[v], frame.K) - frame.kp2d[v], axis=1).max())


def box_excess(frame: RealFrame) -> float:
    """How far (px) the valid keypoints reach outside ``frame.box`` (0 when all are inside).

    For InterHand, whose files have no 2D keypoints, this is the check of the projection against
    the file: its box is the 1.2x-scaled box of both hands' projected joints.
    """
    if frame.box is None:
        raise ValueError(f"{frame.source} frame {frame.frame_id}: no box")
    x, y, w, h = frame.box
    kp = frame.kp2d[frame.valid]
    lo, hi = np.array([x, y], np.float64), np.array([x + w, y + h], np.float64)
    return float(np.maximum(np.maximum(lo - kp, kp - hi), 0.0).max(initial=0.0))


# ----------------------------------------------------------------------------------------------
# Careful JSON access
# ----------------------------------------------------------------------------------------------
def _load_json(path: Path, kind: type = dict):
    return read_json(path, kind)


def _get(d, key, path, where: str):
    """``d[key]`` or :class:`DataError` ``"<path>: <where>: missing key 'key'"``."""
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected an object, got {type(d).__name__}", path)
    if key not in d:
        raise DataError(f"{where}: missing key {key!r}", path)
    return d[key]


def _array(value, shape: tuple, where: str, path, flat_ok: bool = False) -> np.ndarray:
    """float64 array of ``shape`` (also accepted flat when ``flat_ok``) or :class:`DataError`."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: not a numeric array ({err})", path) from None
    if flat_ok and arr.ndim == 1 and arr.size == int(np.prod(shape)):
        arr = arr.reshape(shape)
    if arr.shape != tuple(shape):
        want = "(" + ", ".join(map(str, shape)) + ")" + (f" or ({int(np.prod(shape))},)" if flat_ok else "")
        raise DataError(f"{where}: expected shape {want}, got {arr.shape}", path)
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: non-finite values", path)
    return arr


def _intrinsics(focal, princpt, where: str, path) -> np.ndarray:
    f = _array(focal, (2,), f"{where}.focal", path)
    c = _array(princpt, (2,), f"{where}.princpt", path)
    return np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])


def _side(value, where: str, path, allowed=("left", "right")) -> str:
    if value not in allowed:
        raise DataError(f"{where}: expected one of {list(allowed)}, got {value!r}", path)
    return value


def _image_path(file_name: str, json_path: Path, image_root) -> Path:
    """``image_root / file_name``; without ``image_root``: next to the json, else one level up
    (mmpose's full layouts keep annotations in ``annotations/`` beside the image folders)."""
    if image_root is not None:
        return Path(image_root) / file_name
    near = json_path.parent / file_name
    up = json_path.parent.parent / file_name
    return near if near.is_file() or not up.is_file() else up


def _coco_index(data: dict, path: Path):
    """(images by id, annotations) of a COCO file, each checked for the keys every entry needs."""
    images = _get(data, "images", path, "top level")
    anns = _get(data, "annotations", path, "top level")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise DataError("images and annotations must be lists", path)
    by_id = {}
    for i, im in enumerate(images):
        where = f"images[{i}]"
        by_id[_get(im, "id", path, where)] = (i, im)
        for key in ("file_name", "width", "height"):
            _get(im, key, path, where)
    counts: dict = {}
    for j, ann in enumerate(anns):
        image_id = _get(ann, "image_id", path, f"annotations[{j}]")
        if image_id not in by_id:
            raise DataError(f"annotations[{j}].image_id: no image with id {image_id!r}", path)
        counts[image_id] = counts.get(image_id, 0) + 1
    return by_id, anns, counts


def _frame_id(file_name: str, ann: dict, counts: dict) -> str:
    stem = Path(file_name).stem
    return stem if counts[ann["image_id"]] == 1 else f"{stem}_{ann.get('id', '')}"


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------
def _coco_annotations(path: Path, order: str):
    """The annotations of an mmpose COCO file, parsed as both COCO readers need them.

    Yields (where, (image index, image entry), annotation, keypoints (21, 3) [u, v, visibility]
    in handlib order, box tuple, frame id, meta dict with image_id, ann_id, size).
    """
    by_id, anns, counts = _coco_index(_load_json(path), path)
    for j, ann in enumerate(anns):
        where = f"annotations[{j}]"
        i, im = by_id[ann["image_id"]]
        kp = _array(_get(ann, "keypoints", path, where), (21, 3), f"{where}.keypoints", path, flat_ok=True)
        box = _array(_get(ann, "bbox", path, where), (4,), f"{where}.bbox", path)
        meta = {"image_id": ann["image_id"], "ann_id": ann.get("id"), "size": (im["width"], im["height"])}
        yield (where, (i, im), ann, convert(kp, order, "handlib"), tuple(float(b) for b in box),
               _frame_id(im["file_name"], ann, counts), meta)


def read_rhd_frames(json_path, image_root=None) -> list[RealFrame]:
    """mmpose's RHD COCO file (``test_rhd.json`` / ``rhd_test.json``) → one frame per annotation.

    kp2d, valid (visibility > 0), kp3d (``joint_cam`` mm → m), K (``cam_param``), side
    (``hand_type``), box (``bbox``); RHD order converted to handlib's.
    """
    path = Path(json_path)
    frames = []
    for where, (i, im), ann, kp, box, frame_id, meta in _coco_annotations(path, "rhd"):
        cam = _array(_get(ann, "joint_cam", path, where), (21, 3), f"{where}.joint_cam", path, flat_ok=True)
        cp = _get(im, "cam_param", path, f"images[{i}]")
        K = _intrinsics(_get(cp, "focal", path, f"images[{i}].cam_param"),
                        _get(cp, "princpt", path, f"images[{i}].cam_param"), f"images[{i}].cam_param", path)
        side = _side(_get(ann, "hand_type", path, where), f"{where}.hand_type", path)
        frames.append(RealFrame(
            image_path=_image_path(im["file_name"], path, image_root), source="rhd",
            kp2d=kp[:, :2].copy(), valid=kp[:, 2] > 0, kp3d=convert(cam, "rhd", "handlib") / 1000.0,
            K=K, side=side, box=box, frame_id=frame_id, meta=meta))
    return frames


def read_freihand_frames(json_path, image_root=None) -> list[RealFrame]:
    """mmpose's FreiHAND COCO file → one frame per annotation (2D only: kp3d and K are None).

    Side is "right" (FreiHAND holds right hands only; the file does not say). ``meta`` has the
    FreiHAND ``annotation`` number (image id % 32,560) and the sample ``version``.
    """
    path = Path(json_path)
    frames = []
    for _, (_, im), ann, kp, box, frame_id, meta in _coco_annotations(path, "freihand"):
        image_id = ann["image_id"]
        if isinstance(image_id, int) and 0 <= image_id < len(FREIHAND_VERSIONS) * FREIHAND_UNIQUE:
            meta.update(annotation=image_id % FREIHAND_UNIQUE,
                        version=FREIHAND_VERSIONS[image_id // FREIHAND_UNIQUE])
        frames.append(RealFrame(
            image_path=_image_path(im["file_name"], path, image_root), source="freihand",
            kp2d=kp[:, :2].copy(), valid=kp[:, 2] > 0, side="right", box=box, frame_id=frame_id,
            meta=meta))
    return frames


def _interhand_files(folder: Path) -> dict:
    found = {}
    for kind in ("camera", "data", "joint_3d"):
        hits = sorted(folder.glob(f"*_{kind}.json"))
        if len(hits) != 1:
            raise MissingData(f"expected one *_{kind}.json of InterHand2.6M, found {[h.name for h in hits]}",
                              folder)
        found[kind] = hits[0]
    return found


def read_interhand_frames(folder, image_root=None) -> list[RealFrame]:
    """mmpose's InterHand2.6M files in ``folder`` (``*_camera.json``, ``*_data.json``,
    ``*_joint_3d.json``) → one frame per hand that has valid joints (an "interacting" image gives
    two, left and right, sharing the image, K and box).

    kp3d = camrot · (world − campos) / 1000 (metres, camera frame); kp2d = project(kp3d, K)
    (the files hold no 2D keypoints; :func:`box_excess` checks kp2d against the file's box).
    """
    folder = Path(folder)
    files = _interhand_files(folder)
    cams = _load_json(files["camera"])
    joints = _load_json(files["joint_3d"])
    data = _load_json(files["data"])
    cpath, jpath, dpath = files["camera"], files["joint_3d"], files["data"]
    by_id, anns, _ = _coco_index(data, dpath)
    frames = []
    for j, ann in enumerate(anns):
        where = f"annotations[{j}]"
        i, im = by_id[ann["image_id"]]
        iw = f"images[{i}]"
        cap, cam_id, fidx = (str(_get(im, k, dpath, iw)) for k in ("capture", "camera", "frame_idx"))
        cw = f"capture {cap!r}"
        cap_cams = _get(cams, cap, cpath, "top level")
        pars = {k: _get(_get(cap_cams, k, cpath, cw), cam_id, cpath, f"{cw}.{k}")
                for k in ("campos", "camrot", "focal", "princpt")}
        R = _array(pars["camrot"], (3, 3), f"{cw}.camrot[{cam_id!r}]", cpath)
        campos = _array(pars["campos"], (3,), f"{cw}.campos[{cam_id!r}]", cpath)
        K = _intrinsics(pars["focal"], pars["princpt"], f"{cw} camera {cam_id!r}", cpath)
        jw = f"capture {cap!r} frame {fidx!r}"
        entry = _get(_get(joints, cap, jpath, "top level"), fidx, jpath, f"capture {cap!r}")
        world = _array(_get(entry, "world_coord", jpath, jw), (42, 3), f"{jw}.world_coord", jpath)
        valid3d = _array(_get(entry, "joint_valid", jpath, jw), (42, 1), f"{jw}.joint_valid", jpath,
                         flat_ok=True)[:, 0] > 0
        valid_ann = _array(_get(ann, "joint_valid", dpath, where), (42, 1), f"{where}.joint_valid", dpath,
                           flat_ok=True)[:, 0] > 0
        hand_type = _side(_get(ann, "hand_type", dpath, where), f"{where}.hand_type", dpath,
                          ("left", "right", "interacting"))
        box = _array(_get(ann, "bbox", dpath, where), (4,), f"{where}.bbox", dpath)
        cam_xyz = (world - campos) @ R.T / 1000.0  # (42, 3) metres
        for side, sl in INTERHAND_HANDS.items():
            valid = valid3d[sl] & valid_ann[sl]
            valid &= valid[INTERHAND_WRIST]  # InterHand2.6M: a hand without its root is invalid
            if not valid.any():
                continue
            xyz = np.where(valid[:, None], cam_xyz[sl], 0.0)
            if (xyz[valid, 2] <= 0).any():
                raise DataError(f"{jw}: {side} hand has valid joints behind camera {cam_id!r}", jpath)
            uv = np.zeros((21, 2))
            uv[valid] = project(xyz[valid], K)
            frames.append(RealFrame(
                image_path=(Path(image_root) if image_root is not None else folder) / im["file_name"],
                source="interhand", kp2d=convert(uv, "interhand", "handlib"),
                valid=convert(valid[:, None], "interhand", "handlib")[:, 0],
                kp3d=convert(xyz, "interhand", "handlib"), K=K, side=side, box=tuple(float(b) for b in box),
                frame_id=f"{Path(im['file_name']).stem}_{side}",
                meta={"image_id": ann["image_id"], "capture": cap, "camera": cam_id, "frame_idx": fidx,
                      "hand_type": hand_type, "size": (im["width"], im["height"]),
                      "camrot": R, "campos_mm": campos}))
    return frames


def read_frames(root) -> list[RealFrame]:
    """Every frame of whichever layouts exist in ``root`` or its immediate sub-folders:
    ``*rhd*.json`` (RHD), ``*freihand*.json`` (FreiHAND), a ``*_camera.json`` + ``*_data.json`` +
    ``*_joint_3d.json`` triple (InterHand2.6M). Order: RHD, FreiHAND, InterHand; files sorted.

    Raises:
        MissingData (a FileNotFoundError): ``root`` is not a folder, or none of the three layouts
        is under it. DataError: a malformed annotation file (names the file, entry and key).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingData("not a folder", root)
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    rhd, frei, inter = [], [], []
    for d in folders:
        for js in sorted(d.glob("*.json")):
            name = js.name.lower()
            if "rhd" in name:
                rhd += read_rhd_frames(js)
            elif "freihand" in name:
                frei += read_freihand_frames(js)
        if list(d.glob("*_joint_3d.json")):
            inter += read_interhand_frames(d)
    if not (rhd or frei or inter):
        raise MissingData("no RHD, FreiHAND or InterHand2.6M annotation files (*rhd*.json, *freihand*.json, "
                          "*_joint_3d.json) in it or its sub-folders", root)
    return rhd + frei + inter


# ----------------------------------------------------------------------------------------------
# Fixture writers: the same files from synthetic samples (dicts with image, kp2d, kp3d, K, side)
# ----------------------------------------------------------------------------------------------
def _write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"{path}: could not write image")


def _valid(sample) -> np.ndarray:
    v = sample.get("valid")
    return np.ones(21, bool) if v is None else np.asarray(v, bool).reshape(21)


def _coco_header(description: str) -> dict:
    return {"info": {"description": description, "version": "1.0", "year": "2024",
                     "date_created": "2024/01/01"}, "licenses": "", "images": [], "annotations": [],
            "categories": [{"supercategory": "hand", "id": 1, "name": "hand",
                            "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": COCO_SKELETON}]}


def _write_frames(folder, frames, ids, pattern: str):
    """Make ``folder``, write each frame's image as ``pattern % id``; yields (id, frame, file name,
    height, width) for the caller's annotations."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = list(range(len(frames))) if ids is None else list(ids)
    for sid, s in zip(ids, frames, strict=True):
        name = pattern % sid
        _write_image(folder / name, s["image"])
        yield sid, s, name, *s["image"].shape[:2]


def write_rhd_fixture(folder, frames, ids=None, json_name: str = "test_rhd.json") -> Path:
    """Write ``frames`` (sample dicts in handlib order, metres) as mmpose's RHD test data:
    ``folder/%05d.png`` and ``folder/<json_name>``. Returns the json path.

    ``ids``: image ids (default 0, 1, ...). Keypoints are written nested (21, 3) in RHD order with
    visibility = valid; ``joint_cam`` in millimetres; ``bbox`` = tight keypoint box × 1.2.
    """
    d = _coco_header("RHD")
    for sid, s, name, h, w in _write_frames(folder, frames, ids, "%05d.png"):
        K = np.asarray(s["K"], np.float64)
        kp2d = convert(np.asarray(s["kp2d"], np.float64), "handlib", "rhd")
        vis = convert(_valid(s)[:, None].astype(np.float64), "handlib", "rhd")
        cam = convert(np.asarray(s["kp3d"], np.float64), "handlib", "rhd") * 1000.0
        box = list(keypoint_box(s["kp2d"], BOX_SCALE))
        d["images"].append({"file_name": name, "height": h, "width": w, "id": sid,
                            "cam_param": {"focal": [K[0, 0], K[1, 1]], "princpt": [K[0, 2], K[1, 2]]}})
        d["annotations"].append({"id": sid, "image_id": sid, "category_id": 1, "iscrowd": 0, "bbox": box,
                                 "area": box[2] * box[3], "keypoints": np.hstack([kp2d, vis]).tolist(),
                                 "joint_cam": cam.tolist(), "hand_type": s["side"]})
    path = Path(folder) / json_name
    path.write_text(json.dumps(d))
    return path


def write_freihand_fixture(folder, frames, ids=None, json_name: str = "test_freihand.json") -> Path:
    """Write ``frames`` as mmpose's FreiHAND test data: ``folder/%08d.jpg`` and ``folder/<json_name>``
    (2D only: flat (63,) keypoints, integer ``bbox``, a box ``segmentation``). Returns the json path.

    ``ids``: image numbers (default 0, 1, ...); pass ``a + k * 32560`` for version ``k`` of
    annotation ``a``. Images are JPEG (quality 95), as FreiHAND's.
    """
    d = _coco_header("FreiHand")
    for sid, s, name, h, w in _write_frames(folder, frames, ids, "%08d.jpg"):
        kp2d = np.asarray(s["kp2d"], np.float64)
        kp = np.hstack([convert(kp2d, "handlib", "freihand"), _valid(s)[:, None].astype(np.float64)])
        bx, by, bw, bh = keypoint_box(kp2d, BOX_SCALE)
        x0, y0 = int(np.floor(bx)), int(np.floor(by))
        x1, y1 = int(np.ceil(bx + bw)), int(np.ceil(by + bh))
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        d["images"].append({"file_name": name, "height": h, "width": w, "id": sid})
        d["annotations"].append({
            "bbox": [x0, y0, x1 - x0, y1 - y0], "keypoints": kp.reshape(-1).tolist(), "category_id": 1,
            "id": sid, "image_id": sid,
            "segmentation": [[x0, y0, x0, ym, x0, y1, xm, y1, x1, y1, x1, ym, x1, y0, xm, y0]],
            "iscrowd": 0, "area": (x1 - x0) * (y1 - y0)})
    path = Path(folder) / json_name
    path.write_text(json.dumps(d))
    return path


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random (3, 3) rotation (QR of a Gaussian matrix, det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def write_interhand_fixture(folder, frames, rotations=None, campos=None, seed: int = 0,
                            prefix: str = "test_interhand2.6m") -> Path:
    """Write ``frames`` as mmpose's InterHand2.6M test data in ``folder``: ``image<frame_idx>.jpg``
    and ``<prefix>_{camera,data,joint_3d}.json``. Returns ``folder``.

    Each item of ``frames`` is a sample dict (one hand; ``hand_type`` = its side) or a pair of them
    (right, left) for an "interacting" image: the first gives the image and K, the second only its
    ``kp3d`` (camera frame of the first). Image ``n`` gets capture ``n``, camera ``"4000<n>"``,
    frame_idx ``1000 + n``, and extrinsics ``rotations[n]`` / ``campos[n]`` (mm) (default: random,
    seeded); world = camrotᵀ · kp3d_mm + campos, so the reader's camrot · (world − campos) restores
    kp3d. Joints of an absent hand are zeros with joint_valid 0.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cams, joints = {}, {}
    data = {"images": [], "annotations": []}
    for n, item in enumerate(frames):
        pair = isinstance(item, (list, tuple))
        # a pair's order, not its samples' own sides, says which hand is which
        hands = {"right": item[0], "left": item[1]} if pair else {item["side"]: item}
        first = item[0] if pair else item
        R = np.asarray(rotations[n], np.float64) if rotations is not None else random_rotation(rng)
        t = np.asarray(campos[n], np.float64) if campos is not None else rng.uniform(-800, 800, 3)
        K = np.asarray(first["K"], np.float64)
        cap, cam_id, fidx, image_id = str(n), f"4000{n:02d}", 1000 + n, 500000 + n
        world = np.zeros((42, 3))
        valid = np.zeros(42, bool)
        uv = []
        for side, s in hands.items():
            sl = INTERHAND_HANDS[side]
            xyz_mm = convert(np.asarray(s["kp3d"], np.float64), "handlib", "interhand") * 1000.0
            world[sl] = xyz_mm @ R + t  # Rᵀ·x + t, row-wise
            valid[sl] = convert(_valid(s)[:, None], "handlib", "interhand")[:, 0]
            uv.append(project(np.asarray(s["kp3d"], np.float64), K)[_valid(s)])
        h, w = first["image"].shape[:2]
        name = f"image{fidx}.jpg"
        _write_image(folder / name, first["image"])
        cams[cap] = {"campos": {cam_id: t.tolist()}, "camrot": {cam_id: R.tolist()},
                     "focal": {cam_id: [K[0, 0], K[1, 1]]}, "princpt": {cam_id: [K[0, 2], K[1, 2]]}}
        hand_type = "interacting" if pair else first["side"]
        joints[cap] = {str(fidx): {"world_coord": world.tolist(), "joint_valid": [[bool(v)] for v in valid],
                                   "hand_type": hand_type, "hand_type_valid": True}}
        data["images"].append({"id": image_id, "file_name": name, "width": w, "height": h, "capture": n,
                               "subject": n, "seq_name": f"{n:04d}_synthetic", "camera": cam_id,
                               "frame_idx": fidx})
        bbox = list(keypoint_box(np.vstack(uv), BOX_SCALE))
        data["annotations"].append({"id": image_id, "image_id": image_id, "bbox": bbox,
                                    "joint_valid": [[int(v)] for v in valid], "hand_type": hand_type,
                                    "hand_type_valid": 1})
    for kind, obj in (("camera", cams), ("data", data), ("joint_3d", joints)):
        (folder / f"{prefix}_{kind}.json").write_text(json.dumps(obj))
    return folder
