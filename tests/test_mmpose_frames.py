"""mmpose's real-frame layouts (RHD, FreiHAND, InterHand2.6M): round trips through look-alike
files written from synthetic hands, orders, units, world→camera, errors, and the real frames in
../shared/realdata when they are there."""
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from handlib.data import DataError, SyntheticHands
from handlib.data import mmpose_frames as mf
from handlib.skeleton import BONES, FINGERS, convert, keypoint_box

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "mmpose_testdata"  # ../shared
WRIST, THUMB_TIP, INDEX_MCP, PINKY_TIP = 0, 4, 5, 20


@pytest.fixture(scope="module")
def samples():
    s = SyntheticHands(seed=0, num=4, image_size=64).__getitems__([0, 1, 2, 3])
    assert {x["side"] for x in s} == {"left", "right"}
    return s


def _raw(path):
    return json.loads(Path(path).read_text())


# ------------------------------------------------------------------------------------------ RHD
def test_rhd_round_trip_orders_units_and_images(samples, tmp_path):
    frames = [dict(s) for s in samples[:3]]
    frames[1]["valid"] = frames[1]["valid"].copy()
    frames[1]["valid"][3] = False  # handlib thumb IP = RHD index 2
    path = mf.write_rhd_fixture(tmp_path / "rhd", frames, ids=[111, 1111, 11111])
    raw = _raw(path)
    a = raw["annotations"][0]
    # the file is in RHD order (wrist, thumb tip first), nested (21, 3), joint_cam in millimetres
    assert np.shape(a["keypoints"]) == (21, 3)
    np.testing.assert_allclose(a["keypoints"][0][:2], samples[0]["kp2d"][WRIST])
    np.testing.assert_allclose(a["keypoints"][1][:2], samples[0]["kp2d"][THUMB_TIP])
    np.testing.assert_allclose(a["keypoints"][17][:2], samples[0]["kp2d"][PINKY_TIP])
    np.testing.assert_allclose(a["joint_cam"][1], samples[0]["kp3d"][THUMB_TIP].astype(float) * 1000,
                               rtol=1e-12)
    assert raw["annotations"][1]["keypoints"][2][2] == 0 and raw["annotations"][1]["keypoints"][3][2] == 1
    assert raw["images"][0]["cam_param"]["focal"][0] == pytest.approx(float(samples[0]["K"][0, 0]))

    got = mf.read_rhd_frames(path)
    assert [f.frame_id for f in got] == ["00111", "01111", "11111"]
    for f, s in zip(got, frames):
        assert f.source == "rhd" and f.side == s["side"]
        assert f.kp2d.shape == (21, 2) and f.kp2d.dtype == np.float64 and f.kp3d.dtype == np.float64
        np.testing.assert_allclose(f.kp2d, s["kp2d"], atol=1e-6)
        np.testing.assert_allclose(f.kp3d, s["kp3d"], atol=1e-6)  # metres again
        np.testing.assert_allclose(f.K, s["K"], atol=1e-6)
        np.testing.assert_array_equal(f.valid, s["valid"])
        np.testing.assert_array_equal(f.image(), s["image"])  # PNG: lossless
        assert mf.reprojection_error(f) < 1e-3  # synthetic kp2d = project(kp3d, K) in float32
        assert mf.box_excess(f) == 0.0
        np.testing.assert_allclose(f.box, keypoint_box(f.kp2d, mf.BOX_SCALE), atol=1e-9)
    assert not got[1].valid[3] and got[1].valid.sum() == 20


# ------------------------------------------------------------------------------------- FreiHAND
def test_freihand_round_trip_flat_keypoints_and_versions(samples, tmp_path):
    ids = [5, 5 + 32560, 7, 7 + 3 * 32560]
    path = mf.write_freihand_fixture(tmp_path / "fh", samples, ids=ids)
    raw = _raw(path)
    kp = raw["annotations"][0]["keypoints"]
    assert len(kp) == 63 and isinstance(kp[0], float)  # flat, FreiHAND order = handlib's
    np.testing.assert_allclose(kp[0:2], samples[0]["kp2d"][WRIST])
    np.testing.assert_allclose(kp[3 * THUMB_TIP:3 * THUMB_TIP + 2], samples[0]["kp2d"][THUMB_TIP])
    assert all(isinstance(v, int) for v in raw["annotations"][0]["bbox"])
    assert raw["images"][1]["file_name"] == "00032565.jpg"

    got = mf.read_freihand_frames(path)
    assert len(got) == 4
    for f, s in zip(got, samples):
        assert f.source == "freihand" and f.side == "right" and f.kp3d is None and f.K is None
        np.testing.assert_allclose(f.kp2d, s["kp2d"], atol=1e-6)
        assert f.valid.all() and mf.box_excess(f) == 0.0
        img = f.image()
        assert img.shape == s["image"].shape
        assert np.abs(img.astype(int) - s["image"]).mean() < 6  # JPEG
    assert [(f.meta["annotation"], f.meta["version"]) for f in got] == [
        (5, "gs"), (5, "hom"), (7, "gs"), (7, "auto")]
    with pytest.raises(ValueError, match="no kp3d/K"):
        mf.reprojection_error(got[0])


# ------------------------------------------------------------------------------------ InterHand
def test_interhand_round_trip_single_and_interacting(samples, tmp_path):
    right = next(s for s in samples if s["side"] == "right")
    left = next(s for s in samples if s["side"] == "left")
    pair_left = dict(left, kp3d=right["kp3d"] + np.array([0.03, 0.0, 0.01], np.float32))
    folder = mf.write_interhand_fixture(tmp_path / "ih", [right, left, (right, pair_left)], seed=3)
    prefix = "test_interhand2.6m"
    joints, cams = _raw(folder / f"{prefix}_joint_3d.json"), _raw(folder / f"{prefix}_camera.json")
    data = _raw(folder / f"{prefix}_data.json")
    assert [a["hand_type"] for a in data["annotations"]] == ["right", "left", "interacting"]
    # the file: 42 world joints in mm, right hand first, per hand thumb tip first and wrist last
    cam = cams["0"]
    R, t = np.array(cam["camrot"]["400000"]), np.array(cam["campos"]["400000"])
    world = np.array(joints["0"]["1000"]["world_coord"])
    np.testing.assert_allclose(R @ (world[20] - t), right["kp3d"][WRIST] * 1000, atol=1e-6)
    np.testing.assert_allclose(R @ (world[0] - t), right["kp3d"][THUMB_TIP] * 1000, atol=1e-6)
    assert not any(v[0] for v in joints["0"]["1000"]["joint_valid"][21:])
    assert all(v[0] for v in joints["1"]["1001"]["joint_valid"][21:])

    got = mf.read_interhand_frames(folder)
    assert [f.frame_id for f in got] == ["image1000_right", "image1001_left", "image1002_right",
                                         "image1002_left"]
    truth = [right, left, right, pair_left]
    for f, s in zip(got, truth):
        assert f.source == "interhand"
        np.testing.assert_allclose(f.kp3d, s["kp3d"], atol=1e-6)
        assert f.valid.all() and mf.reprojection_error(f) < 1e-9  # kp2d is the projection
        assert mf.box_excess(f) == 0.0
    assert [f.side for f in got] == ["right", "left", "right", "left"]
    for f, s in zip(got[:3], truth[:3]):
        np.testing.assert_allclose(f.kp2d, s["kp2d"], atol=1e-3)
        np.testing.assert_allclose(f.K, s["K"], atol=1e-6)
    # the pair shares the first sample's image, K and box
    np.testing.assert_allclose(got[3].K, right["K"], atol=1e-6)
    np.testing.assert_allclose(got[3].kp2d, mf.project(pair_left["kp3d"], right["K"]), atol=1e-3)
    assert got[2].image_path == got[3].image_path and got[2].box == got[3].box
    assert got[1].image().shape == left["image"].shape


def _interhand_by_hand(folder, R, campos, world_right, world_left=None, focal=(1000.0, 1000.0),
                       princpt=(50.0, 60.0)):
    """A minimal InterHand2.6M file triple written by hand (not by the module's writer)."""
    folder.mkdir(parents=True, exist_ok=True)
    world = np.zeros((42, 3))
    valid = [[True]] * 21 + [[False]] * 21
    world[:21] = world_right
    if world_left is not None:
        world[21:] = world_left
        valid = [[True]] * 42
    (folder / "x_camera.json").write_text(json.dumps({"7": {
        "campos": {"cam1": list(campos)}, "camrot": {"cam1": R}, "focal": {"cam1": list(focal)},
        "princpt": {"cam1": list(princpt)}}}))
    (folder / "x_joint_3d.json").write_text(json.dumps({"7": {"42": {
        "world_coord": world.tolist(), "joint_valid": valid, "hand_type": "right",
        "hand_type_valid": True}}}))
    (folder / "x_data.json").write_text(json.dumps({
        "images": [{"id": 9, "file_name": "image42.jpg", "width": 100, "height": 120, "capture": 7,
                    "subject": 0, "seq_name": "s", "camera": "cam1", "frame_idx": 42}],
        "annotations": [{"id": 9, "image_id": 9, "bbox": [0, 0, 100, 120],
                         "joint_valid": [[int(v[0])] for v in valid], "hand_type": "right",
                         "hand_type_valid": 1}]}))


def test_interhand_world_to_camera_with_a_known_rotation(tmp_path):
    """camrot = 90° about z maps (x, y, z) to (−y, x, z); X_cam = camrot · (X − campos), mm → m."""
    R = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    campos = (100.0, 200.0, 300.0)
    world = np.tile([110.0, 220.0, 1300.0], (21, 1))  # X − campos = (10, 20, 1000) mm
    world[:20, 2] += np.arange(1, 21)  # every other joint a little deeper, distinct
    world[0] = [100.0, 250.0, 800.0]  # InterHand joint 0 = thumb tip: X − campos = (0, 50, 500)
    _interhand_by_hand(tmp_path, R, campos, world)
    (f,) = mf.read_interhand_frames(tmp_path)  # the left hand has no valid joints: one frame
    assert f.side == "right" and f.frame_id == "image42_right"
    np.testing.assert_allclose(f.kp3d[WRIST], [-0.020, 0.010, 1.000], atol=1e-12)  # wrist = joint 20
    np.testing.assert_allclose(f.kp3d[THUMB_TIP], [-0.050, 0.0, 0.500], atol=1e-12)
    np.testing.assert_allclose(f.kp2d[WRIST], [1000 * -0.02 + 50, 1000 * 0.01 + 60], atol=1e-9)
    np.testing.assert_allclose(f.kp2d[THUMB_TIP], [1000 * -0.1 + 50, 60], atol=1e-9)
    np.testing.assert_allclose(f.K, [[1000, 0, 50], [0, 1000, 60], [0, 0, 1]])
    # InterHand joint 3 (thumb1 = CMC) → handlib 1; joint 4 (index tip) → handlib 8
    np.testing.assert_allclose(f.kp3d[1, 2], (1300 + 4 - 300) / 1000)
    np.testing.assert_allclose(f.kp3d[8, 2], (1300 + 5 - 300) / 1000)


def test_interhand_order_maps_both_ways():
    kp = np.arange(21 * 3, dtype=float).reshape(21, 3)
    np.testing.assert_array_equal(convert(convert(kp, "interhand", "handlib"), "handlib", "interhand"), kp)
    ih = convert(kp, "handlib", "interhand")
    assert ih[20, 0] == kp[WRIST, 0] and ih[0, 0] == kp[THUMB_TIP, 0] and ih[7, 0] == kp[INDEX_MCP, 0]


# ------------------------------------------------------------------------------------- errors
def test_rhd_malformed_json_names_file_entry_and_key(samples, tmp_path):
    path = mf.write_rhd_fixture(tmp_path, samples[:2])
    good = _raw(path)
    bad = json.loads(json.dumps(good))
    del bad["annotations"][1]["joint_cam"]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"test_rhd\.json: annotations\[1\]: missing key 'joint_cam'"):
        mf.read_rhd_frames(path)
    bad = json.loads(json.dumps(good))
    bad["annotations"][0]["keypoints"] = bad["annotations"][0]["keypoints"][:20]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"test_rhd\.json: annotations\[0\]\.keypoints: expected shape "
                                        r"\(21, 3\) or \(63,\), got \(20, 3\)"):
        mf.read_rhd_frames(path)
    bad = json.loads(json.dumps(good))
    del bad["images"][0]["cam_param"]["princpt"]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"images\[0\]\.cam_param: missing key 'princpt'"):
        mf.read_rhd_frames(path)
    bad = json.loads(json.dumps(good))
    bad["annotations"][1]["image_id"] = 99
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"annotations\[1\]\.image_id: no image with id 99"):
        mf.read_rhd_frames(path)
    bad = json.loads(json.dumps(good))
    bad["annotations"][0]["hand_type"] = "both"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"annotations\[0\]\.hand_type: expected one of"):
        mf.read_rhd_frames(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"test_rhd\.json: unreadable JSON"):
        mf.read_rhd_frames(path)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        mf.read_rhd_frames(tmp_path / "nothere.json")


def test_freihand_and_interhand_malformed(samples, tmp_path):
    path = mf.write_freihand_fixture(tmp_path / "fh", samples[:1])
    bad = _raw(path)
    bad["annotations"][0]["keypoints"] = bad["annotations"][0]["keypoints"][:60]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"test_freihand\.json: annotations\[0\]\.keypoints: expected "
                                        r"shape \(21, 3\) or \(63,\), got \(60,\)"):
        mf.read_freihand_frames(path)

    folder = mf.write_interhand_fixture(tmp_path / "ih", samples[:2])
    jpath = folder / "test_interhand2.6m_joint_3d.json"
    good = _raw(jpath)
    bad = json.loads(json.dumps(good))
    bad["1"]["1001"]["world_coord"] = bad["1"]["1001"]["world_coord"][:41]
    jpath.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"joint_3d\.json: capture '1' frame '1001'\.world_coord: "
                                        r"expected shape \(42, 3\), got \(41, 3\)"):
        mf.read_interhand_frames(folder)
    jpath.write_text(json.dumps(good))
    cpath = folder / "test_interhand2.6m_camera.json"
    cams = _raw(cpath)
    del cams["0"]["camrot"]
    cpath.write_text(json.dumps(cams))
    with pytest.raises(DataError, match=r"camera\.json: capture '0': missing key 'camrot'"):
        mf.read_interhand_frames(folder)
    (folder / "test_interhand2.6m_data.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"\*_data\.json"):
        mf.read_interhand_frames(folder)


def test_missing_image_and_reprojection_detects_offsets(samples, tmp_path):
    path = mf.write_rhd_fixture(tmp_path, samples[:1])
    (f,) = mf.read_rhd_frames(path)
    f.kp2d[7] += [1.5, 2.0]  # 2.5 px off
    assert mf.reprojection_error(f) == pytest.approx(2.5, abs=1e-3)
    f.valid[7] = False
    assert mf.reprojection_error(f) < 1e-3
    (tmp_path / "00000.png").unlink()
    with pytest.raises(DataError, match=r"00000\.png: missing image file"):
        f.image()


def test_read_frames_finds_the_layouts(samples, tmp_path):
    mf.write_rhd_fixture(tmp_path / "rhd", samples[:2])
    mf.write_freihand_fixture(tmp_path / "freihand", samples[:3])
    mf.write_interhand_fixture(tmp_path / "interhand2.6m", [samples[0], (samples[0], samples[1])])
    (tmp_path / "onehand10k").mkdir()
    (tmp_path / "onehand10k" / "test_onehand10k.json").write_text("{}")  # ignored: not ours
    frames = mf.read_frames(tmp_path)
    assert [f.source for f in frames] == ["rhd"] * 2 + ["freihand"] * 3 + ["interhand"] * 3
    assert len(mf.read_frames(tmp_path / "rhd")) == 2  # a layout folder itself works too
    shutil.rmtree(tmp_path / "rhd")
    assert Counter(f.source for f in mf.read_frames(tmp_path)) == {"freihand": 3, "interhand": 3}
    with pytest.raises(FileNotFoundError, match="no RHD, FreiHAND or InterHand"):
        mf.read_frames(tmp_path / "onehand10k")


# ----------------------------------------------------------------------------------- real data
def _bones(kp3d):
    p, c = zip(*BONES)
    return np.linalg.norm(kp3d[list(c)] - kp3d[list(p)], axis=1)


def _reversed_fingers(kp3d):
    out = kp3d.copy()
    for idx in FINGERS.values():
        out[list(idx)] = kp3d[list(idx[::-1])]
    return out


@pytest.mark.skipif(not REAL.is_dir(), reason="no ../shared/realdata")
def test_real_mmpose_frames():
    frames = mf.read_frames(REAL)
    by = {s: [f for f in frames if f.source == s] for s in mf.SOURCES}
    assert {s: len(v) for s, v in by.items()} == {"rhd": 3, "freihand": 8, "interhand": 6}
    for f in frames:  # every photo readable, of the size the file says, keypoints inside it
        h, w = f.image().shape[:2]
        assert (w, h) == tuple(f.meta["size"]), f.frame_id
        kp = f.kp2d[f.valid]
        assert (kp >= -0.5).all() and (kp <= [w - 0.5, h - 0.5]).all(), f.frame_id
        assert mf.box_excess(f) == 0.0, f.frame_id

    rhd_err = [mf.reprojection_error(f) for f in by["rhd"]]
    print("RHD reprojection max px:", np.round(rhd_err, 4))
    assert max(rhd_err) <= 0.1
    assert [f.side for f in by["rhd"]] == ["left", "left", "right"]

    # FreiHAND: 2 annotations x 4 sample versions, identical keypoints within an annotation
    groups = {}
    for f in by["freihand"]:
        groups.setdefault(f.meta["annotation"], []).append(f)
    assert sorted(len(g) for g in groups.values()) == [4, 4]
    for g in groups.values():
        assert sorted(f.meta["version"] for f in g) == sorted(mf.FREIHAND_VERSIONS)
        for f in g[1:]:
            np.testing.assert_array_equal(f.kp2d, g[0].kp2d)

    # InterHand: kp2d is the projection, so the check against the file is its box, which mmpose
    # made as 1.2 x the box of both hands' projected joints: it must come back to < 0.01 px.
    ih = by["interhand"]
    assert Counter(f.side for f in ih) == {"right": 3, "left": 3}
    assert max(mf.reprojection_error(f) for f in ih) < 1e-9
    images = {}
    for f in ih:
        images.setdefault(f.image_path, []).append(f)
    assert sorted(len(v) for v in images.values()) == [1, 1, 2, 2]
    worst = max(np.abs(np.subtract(keypoint_box(np.vstack([f.kp2d[f.valid] for f in fs]), mf.BOX_SCALE),
                                   fs[0].box)).max() for fs in images.values())
    print(f"InterHand box from projected joints vs file: {worst:.2e} px")
    assert worst < 0.01
    for f in ih:
        assert 0.5 < f.kp3d[f.valid, 2].min() and f.kp3d[f.valid, 2].max() < 2.0  # ~1 m from the dome cameras

    # orders: every 3D hand has hand-sized bones, and reading the fingers reversed would not
    for f in by["rhd"] + ih:
        b = _bones(f.kp3d)
        assert 0.005 < b.min() and b.max() < 0.11, (f.frame_id, b)
        assert b.sum() < _bones(_reversed_fingers(f.kp3d)).sum(), f.frame_id
