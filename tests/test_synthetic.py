"""Synthetic dataset: determinism, the sample contract, geometry, sides, occluders, disk, resume."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from handlib import HandModel
from handlib.camera import project
from handlib.data import CropConfig, CropTransform, SyntheticConfig, SyntheticHands, crop_to_hand
from handlib.data import synthetic as syn
from handlib.data.common import validate_sample
from handlib.raster import render_rgb
from handlib.rotations import axis_angle_to_matrix, quaternion_to_matrix

CFG = SyntheticConfig(image_size=64, batch_size=8)
F64 = torch.float64


@pytest.fixture(scope="module")
def samples():
    return syn.generate(7, range(64), CFG)


def _equal(a: dict, b: dict, skip=("source",)):
    assert a.keys() == b.keys()
    for k in a:
        if k in skip:
            continue
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def _model_output(s):
    h = torch.tensor(s["h"], dtype=F64)[None]
    return HandModel(side=s["side"], dtype=F64).from_h(h)


# ---------------------------------------------------------------------------- contract ------
def test_sample_contract(samples):
    s = samples[0]
    validate_sample(s)
    for key, dtype, shape in (("image", np.uint8, (64, 64, 3)), ("mask", bool, (64, 64)),
                              ("kp2d", np.float32, (21, 2)), ("kp3d", np.float32, (21, 3)),
                              ("K", np.float32, (3, 3)), ("valid", bool, (21,)), ("visible", bool, (21,)),
                              ("pose", np.float32, (48,)), ("betas", np.float32, (10,)),
                              ("cam", np.float32, (3,)), ("h", np.float32, (63,))):
        assert s[key].dtype == dtype and s[key].shape == shape, key
    assert s["side"] in ("left", "right") and s["index"] == 0 and isinstance(s["source"], str)
    assert isinstance(s["background"], str) and isinstance(s["pose_source"], str)


def test_profile_sets_only_the_budget(monkeypatch):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    ds = SyntheticHands(seed=1)
    assert len(ds) == 64 and ds.cfg.image_size == 128
    assert SyntheticHands(seed=1, num=5, image_size=48)[4]["image"].shape == (48, 48, 3)
    with pytest.raises(IndexError):
        ds[64]


# ------------------------------------------------------------------------- determinism ------
def test_same_seed_same_bytes_other_seed_or_split_differs(samples):
    again = syn.generate(7, [3, 0], CFG)
    _equal(again[0], samples[3])
    _equal(again[1], samples[0])
    other = syn.generate(8, [3], CFG)[0]
    val = syn.generate(7, [3], CFG, split="val")[0]
    for s in (other, val):
        assert not np.array_equal(s["image"], samples[3]["image"])
        assert not np.allclose(s["kp3d"], samples[3]["kp3d"])


def test_batch_composition_and_order_do_not_change_bytes(samples):
    idx = [13, 2, 40, 7, 5]
    for cfg in (dataclasses.replace(CFG, batch_size=1), dataclasses.replace(CFG, batch_size=64)):
        for s in syn.generate(7, idx, cfg):
            _equal(s, samples[s["index"]])
    ds = SyntheticHands(seed=7, num=64, cfg=CFG)
    for s in ds.__getitems__(idx[::-1]):
        _equal(s, samples[s["index"]])


def test_changing_the_background_mix_keeps_the_hands(samples):
    cfg = dataclasses.replace(CFG, photo_fraction=0.0, occluder_prob=0.0)
    for s in syn.generate(7, range(8), cfg):
        ref = samples[s["index"]]
        for k in ("kp2d", "kp3d", "K", "h", "pose", "betas"):
            assert np.array_equal(s[k], ref[k]), k
        assert not s["background"].startswith("photo")


# ---------------------------------------------------------------------------- geometry ------
def test_keypoints_project_and_match_the_model(samples):
    for s in samples[:16]:
        uv = project(torch.tensor(s["kp3d"], dtype=F64)[None], torch.tensor(s["K"], dtype=F64))[0]
        assert np.abs(uv.numpy() - s["kp2d"]).max() < 1e-3
        out = _model_output(s)
        np.testing.assert_allclose(out.joints[0].numpy(), s["kp3d"], atol=1e-6)
        assert np.array_equal(s["pose"][3:], s["h"][4:49]) and np.array_equal(s["betas"], s["h"][49:59])
        R = quaternion_to_matrix(torch.tensor(s["h"][:4], dtype=F64))
        np.testing.assert_allclose(axis_angle_to_matrix(torch.tensor(s["pose"][:3], dtype=F64)), R, atol=1e-6)
        assert s["h"][59] == 1.0 and np.allclose(s["h"][60:], s["kp3d"][0], atol=1e-6)  # t = wrist
        f, z = s["K"][0, 0], s["kp3d"][9, 2]
        np.testing.assert_allclose(s["cam"], [*s["kp2d"][9], f / z], rtol=1e-5)


def test_mask_is_the_rendered_silhouette_and_the_hand_is_in_view():
    cfg = dataclasses.replace(CFG, occluder_prob=0.0)
    m = cfg.margin * cfg.image_size
    for s in syn.generate(3, range(12), cfg):
        out = _model_output(s)
        r = render_rgb(out.verts, syn.render_faces(), torch.tensor(s["K"], dtype=F64)[None], 64)
        assert np.array_equal(r["mask"][0].numpy(), s["mask"]) and s["occlusion"] == 0
        uv = project(out.verts, torch.tensor(s["K"], dtype=F64))[0].numpy()
        for pts in (uv, s["kp2d"]):
            assert pts.min() >= m - 1e-3 and pts.max() <= 63 - m + 1e-3
        assert s["valid"].all()
        f = s["K"][0, 0] / 64
        assert cfg.focal_range[0] - 1e-6 <= f <= cfg.focal_range[1] + 1e-6


def test_occluders_cut_the_mask_and_hide_keypoints():
    base = syn.generate(5, range(16), dataclasses.replace(CFG, occluder_prob=0.0))
    occl = syn.generate(5, range(16), dataclasses.replace(CFG, occluder_prob=1.0))
    hidden = 0
    for a, b in zip(base, occl):
        assert np.array_equal(a["kp3d"], b["kp3d"]) and np.array_equal(a["h"], b["h"])
        assert not (b["mask"] & ~a["mask"]).any()  # the visible hand lies inside the silhouette
        assert b["occlusion"] == pytest.approx(1 - b["mask"].sum() / a["mask"].sum(), abs=1e-6)
        assert not (b["visible"] & ~a["visible"]).any()
        hidden += int((a["visible"] & ~b["visible"]).sum())
    assert np.mean([b["occlusion"] for b in occl]) > 0.05 and hidden > 0


def _with_view(side, rot, pose_abs=None):
    """One sample (no occluder) with a chosen side, global rotation and absolute right-hand pose."""
    cfg = dataclasses.replace(CFG, image_size=96, occluder_prob=0.0)
    p = syn.draw_params(0, 0, cfg)
    mean = syn._assets()["mean"]
    pose = (np.zeros(45) if pose_abs is None else pose_abs) - mean
    p.update(side=side, rot=syn._f32(rot), pose=syn._f32(pose * (syn.MIRROR_AA if side == "left" else 1)),
             depth=0.4)
    tmpl = syn.hand_models()[side].v_template.numpy()
    it = {"params": p, "geom": syn.hand_geometry(p, cfg), "albedo": syn.vertex_albedo(p, tmpl)}
    syn._render([it], cfg)
    return syn._finish(it, cfg, 0, 0, "train")


def test_visibility_from_the_z_buffer():
    c = np.cos(np.pi / 4)
    palm = _with_view("right", [c, c, 0, 0])  # model palm (−y) turned to face the camera (−z)
    assert palm["visible"].all()
    edge = _with_view("right", [0, 0, 1, 0])  # 180° about y: the thumb side (+z) faces the camera
    assert edge["visible"][5] and not edge["visible"][17]  # index MCP seen, pinky MCP behind the palm


def test_left_hands_mirror_right_hands():
    rng = np.random.default_rng(0)
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    pose = syn.clip_pose(syn._assets()["library"][3])  # a fist
    left, right = _with_view("left", q, pose), _with_view("right", q, pose)

    def chirality(s):  # sign of det[wrist→middle MCP, pinky MCP→index MCP, palm normal]
        kp = s["kp3d"].astype(np.float64)
        n = quaternion_to_matrix(torch.tensor(s["h"][:4], dtype=F64)).numpy() @ [0.0, -1.0, 0.0]
        return np.sign(np.linalg.det(np.stack([kp[9] - kp[0], kp[5] - kp[17], n])))

    assert chirality(right) == -1 and chirality(left) == 1
    # the left hand is the camera-space x-mirror of a right hand with conjugated rotation
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=F64))
    R = quaternion_to_matrix(torch.tensor(left["h"][:4], dtype=F64))
    from handlib.rotations import matrix_to_quaternion
    h = torch.tensor(left["h"], dtype=F64).clone()
    h[:4] = matrix_to_quaternion(M @ R @ M)
    h[4:49] *= torch.tensor(syn.MIRROR_AA)
    h[60:] = M @ h[60:]
    mirrored = HandModel(dtype=F64).from_h(h[None]).joints[0].numpy() * [-1, 1, 1]
    np.testing.assert_allclose(mirrored, left["kp3d"], atol=1e-6)
    for s in (left, right):
        np.testing.assert_allclose(_model_output(s).joints[0].numpy(), s["kp3d"], atol=1e-6)


# ----------------------------------------------------------------------------- variety ------
def test_variety_over_64_samples(samples):
    sides = {s["side"] for s in samples}
    backgrounds = {s["background"] for s in samples}
    sources = {s["pose_source"] for s in samples}
    assert sides == {"left", "right"}
    assert len(backgrounds) >= 6 and any(b.startswith("photo:") for b in backgrounds)
    assert any(b in ("noise", "stripes", "checker", "gradient") for b in backgrounds)
    assert "prior" in sources and len(sources) >= 4
    z = np.array([s["kp3d"][9, 2] for s in samples])
    assert z.min() >= 0.3 - 1e-6 and z.max() <= 1.0 + 1e-6 and np.ptp(z) > 0.4
    betas = np.stack([s["betas"] for s in samples])
    assert np.abs(betas).max() <= 3.0 and betas.std() > 0.5
    # the whole rotation sphere: palm normals point every way
    normals = np.stack([quaternion_to_matrix(torch.tensor(s["h"][:4], dtype=F64)).numpy() @ [0, -1.0, 0]
                        for s in samples])
    assert (normals[:, 2] < -0.5).any() and (normals[:, 2] > 0.5).any()
    vis = np.mean([s["visible"].mean() for s in samples])
    assert 0.4 < vis < 0.95 and any(s["occlusion"] > 0 for s in samples)
    tones = {tuple(np.round(s["image"][s["mask"]].mean(0) / 64)) for s in samples if s["mask"].any()}
    assert len(tones) >= 4


# ---------------------------------------------------------------------------- crop, loader --
def test_crop_keeps_projection_and_freihand_fields(samples):
    rng = np.random.default_rng(0)
    cfg = CropConfig(size=48, rotation=180.0, scale_jitter=0.2, shift_jitter=0.1)
    for s in samples[:8]:
        c = crop_to_hand(s, cfg, rng)
        uv = project(torch.tensor(c["kp3d"], dtype=F64)[None], torch.tensor(c["K"], dtype=F64))[0].numpy()
        assert np.abs(uv - c["kp2d"]).max() < 1e-3
        np.testing.assert_allclose(c["cam"], [*c["kp2d"][9], c["K"][0, 0] / c["kp3d"][9, 2]], rtol=1e-4)
        R = axis_angle_to_matrix(torch.tensor(c["pose"][:3], dtype=F64)).numpy()  # rolled with the camera
        bone = (s["kp3d"][9] - s["kp3d"][0]) @ np.linalg.inv(
            axis_angle_to_matrix(torch.tensor(s["pose"][:3], dtype=F64)).numpy()).T
        np.testing.assert_allclose(bone @ R.T, c["kp3d"][9] - c["kp3d"][0], atol=1e-5)
        # the 63-d h rolls with the camera too: the model placed by h' gives the new kp3d
        np.testing.assert_allclose(_model_output(c).joints[0].numpy(), c["kp3d"], atol=2e-5)


def test_dataloader_uses_batched_getitems(samples):
    ds = SyntheticHands(seed=7, num=64, cfg=CFG, transform=CropTransform(CropConfig(size=32)))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 32, 32, 3)
    want = crop_to_hand(samples[2], CropConfig(size=32))["image"]
    np.testing.assert_array_equal(batch["image"][2].numpy(), want)


# -------------------------------------------------------------------------------- disk ------
def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_disk_round_trip_workers_and_resume(tmp_path, samples):
    a, b = tmp_path / "a", tmp_path / "b"
    quiet = dict(progress=False, log=lambda *_: None)
    stats = syn.write_split(a, 7, 20, "train", CFG, workers=1, **quiet)
    assert stats["generated"] == 20
    syn.write_split(b, 7, 20, "train", CFG, workers=2, **quiet)
    files = _files(a)
    assert files == _files(b)  # worker count changes no byte (PNGs, labels, manifest)
    assert json.loads(files["train.json"])["seed"] == 7
    disk = SyntheticHands.from_disk(a, "train")
    assert len(disk) == 20
    for i in (0, 5, 19):
        _equal(disk[i], samples[i])
    # interrupt after k = 12 samples: drop the rest (and the manifest), break one more label file
    k = 12
    for i in range(k, 20):
        for p in syn._paths(a, "train", i):
            p.unlink()
    (a / "train.npz").unlink()
    syn._paths(a, "train", 3)[2].write_bytes(b"\x93NUMPY trunc")
    kept = {i: [p.stat().st_mtime_ns for p in syn._paths(a, "train", i)] for i in range(k) if i != 3}
    stats = syn.write_split(a, 7, 20, "train", CFG, workers=1, **quiet)
    assert stats["generated"] == 20 - k + 1 and stats["skipped"] == k - 1
    assert all([p.stat().st_mtime_ns for p in syn._paths(a, "train", i)] == t for i, t in kept.items())
    assert _files(a) == files
    assert syn.write_split(a, 7, 20, "train", CFG, **quiet)["generated"] == 0  # idempotent
    with pytest.raises(ValueError, match="another seed or config"):
        syn.write_split(a, 8, 20, "train", CFG, **quiet)
    os.remove(syn._paths(a, "train", 0)[0])
    assert syn.write_split(a, 7, 20, "train", CFG, **quiet)["generated"] == 1
