"""predict.py and `python -m handlib predict`: file contract, camera consistency, --left, errors."""
import dataclasses
import json
import math

import cv2
import numpy as np
import pytest
import torch
import trimesh

from handlib import cli
from handlib.config import profile
from handlib.data import CropConfig, SyntheticHands, crop_to_hand
from handlib.data.batch import normalize_image
from handlib.data.common import DataError, project_np
from handlib.hand_model import HandModel
from handlib.model import DHPE, ModelConfig
from handlib.predict import (
    CHECKPOINT_ENV,
    check_box,
    crop_box,
    default_box,
    default_focal,
    image_intrinsics,
    parse_box,
    predict,
    resolve_checkpoint,
    save_prediction,
)
from handlib.train import TrainConfig, save_checkpoint

# A box symmetric about the image's vertical centre line (x + w/2 = 128/2): the same numbers are the
# hand box of the horizontally flipped image, so its crop is exactly the mirror of the original's.
BOX = "34,24,60,40"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DHPE(ModelConfig.from_profile(profile("ci"))).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    """A random-weight ci checkpoint, a synthetic photo and its mirror image as PNG files."""
    d = tmp_path_factory.mktemp("predict")
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(d / "c.pt", model, opt, sched, 0, TrainConfig(), 0)
    image = SyntheticHands(seed=0, num=1, image_size=128)[0]["image"]
    cv2.imwrite(str(d / "hand.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(d / "flip.png"), cv2.cvtColor(np.ascontiguousarray(image[:, ::-1]), cv2.COLOR_RGB2BGR))
    return {"dir": d, "ckpt": d / "c.pt", "hand": d / "hand.png", "flip": d / "flip.png", "image": image}


def _run(files, image, out, *extra):
    return cli.main(["predict", str(image), "--checkpoint", str(files["ckpt"]), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def right_and_left(files):
    """CLI runs: the photo as a right hand, its mirror image as a left hand (2 refinement steps)."""
    d = files["dir"]
    assert _run(files, files["hand"], d / "right", "--box", BOX, "--refine-steps", "2") == 0
    assert _run(files, files["flip"], d / "left", "--box", BOX, "--refine-steps", "2", "--left") == 0
    return tuple(json.loads((d / side / "joints.json").read_text()) for side in ("right", "left"))


def test_cli_writes_the_file_contract(files, model, right_and_left, capsys):
    out, (doc, _) = files["dir"] / "right", right_and_left
    for name in ("mesh.obj", "mesh.ply", "joints.json", "overlay.png"):
        assert (out / name).stat().st_size > 100, name
    faces = model.hand_model.faces.numpy()
    for name in ("mesh.obj", "mesh.ply"):
        mesh = trimesh.load(out / name, process=False)
        assert mesh.vertices.shape == (model.hand_model.num_verts, 3), name
        assert np.array_equal(mesh.faces, faces), name
    assert cv2.imread(str(out / "overlay.png")).shape[:2] == (512, 512)  # small images are drawn at 512 px
    assert len(doc["joints_3d"]) == len(doc["joints_2d"]) == len(doc["keypoint_names"]) == 21
    assert doc["keypoint_names"][0] == "wrist" and doc["side"] == "right" and len(doc["h"]) == 63
    assert doc["refined"] is True and doc["refine_steps"] == 2 and doc["checkpoint"] == str(files["ckpt"])
    assert doc["box"] == [34, 24, 60, 40] and doc["focal"] == pytest.approx(1.2 * 128)
    assert any("focal" in a for a in doc["assumptions"]) and not any("box" in a for a in doc["assumptions"])
    assert doc["refine_losses"]["after"]["total"] <= doc["refine_losses"]["before"]["total"]
    # the mesh file's vertices are the 3D joints' camera: its wrist joint is within the mesh's extent
    lo, hi, wrist = mesh.vertices.min(0), mesh.vertices.max(0), np.array(doc["joints_3d"][0])
    assert np.all(wrist > lo - 0.02) and np.all(wrist < hi + 0.02)


def test_3d_joints_project_onto_2d_joints_with_the_original_camera(right_and_left):
    for doc in right_and_left:
        j3d, j2d = np.array(doc["joints_3d"]), np.array(doc["joints_2d"])
        assert np.all(j3d[:, 2] > 0)
        K = image_intrinsics(128, 128, 1.2 * 128)  # built independently of the file: f, centre 63.5
        np.testing.assert_allclose(np.array(doc["K"]), K, atol=1e-6)
        np.testing.assert_allclose(project_np(j3d, K), j2d, atol=2e-3)  # file rounding: 1 µm, 1e-3 px
        # the same points seen by the crop camera land on the crop's pixels: A · j2d
        A, Kc = np.array(doc["crop"]["affine"]), np.array(doc["crop"]["K"])
        np.testing.assert_allclose(Kc, A @ K, atol=1e-5)
        np.testing.assert_allclose(project_np(j3d, Kc), j2d @ A[:2, :2].T + A[:2, 2], atol=2e-3)


def test_left_mirrors_the_right_prediction_of_the_flipped_image(files, right_and_left):
    right, left = right_and_left
    assert left["side"] == "left"
    r2, l2 = np.array(right["joints_2d"]), np.array(left["joints_2d"])
    np.testing.assert_allclose(l2[:, 0], 127 - r2[:, 0], atol=2e-3)  # u' = W − 1 − u
    np.testing.assert_allclose(l2[:, 1], r2[:, 1], atol=2e-3)
    r3, l3 = np.array(right["joints_3d"]), np.array(left["joints_3d"])
    np.testing.assert_allclose(l3, r3 * [-1, 1, 1], atol=2e-6)  # X' = −X
    mesh = trimesh.load(files["dir"] / "left" / "mesh.obj", process=False)
    left_model = HandModel("left")
    assert np.array_equal(mesh.faces, left_model.faces.numpy())  # winding reversed with the mirror
    # h is the left hand model's parameter vector in the image's camera
    with torch.no_grad():
        j = left_model.from_h(torch.tensor(left["h"], dtype=torch.float32)[None]).joints[0].numpy()
    np.testing.assert_allclose(j, l3, atol=1e-4)


def test_crop_matches_crop_to_hand_and_the_network(files, model):
    image, box = files["image"], (49.0, 34.0, 30.0, 20.0)  # σ = 64 / 45 ≥ 1: a plain warp, no area average
    K = image_intrinsics(128, 128, 150.0)
    crop = crop_box(image, box, 64, K)
    # crop_to_hand's keypoint box with the user box's pixel-edge corners gives the same crop
    kp2d = np.zeros((21, 2), np.float32)
    kp2d[0], kp2d[1] = (box[0] - 0.5, box[1] - 0.5), (box[0] + box[2] - 0.5, box[1] + box[3] - 0.5)
    sample = {"image": image, "mask": None, "kp2d": kp2d, "kp3d": np.zeros((21, 3), np.float32),
              "K": K.astype(np.float32), "valid": np.arange(21) < 2}
    ref = crop_to_hand(sample, CropConfig(size=64))
    np.testing.assert_allclose(crop.affine, ref["affine"], atol=1e-5)
    np.testing.assert_allclose(crop.K, ref["K"], atol=1e-4)
    assert np.abs(crop.image.astype(int) - ref["image"].astype(int)).max() <= 1
    pred = predict(model, image, box=box, focal=150.0)
    with torch.no_grad():
        out = model(normalize_image(torch.as_tensor(ref["image"])[None]), torch.as_tensor(ref["K"])[None])
    np.testing.assert_allclose(pred.joints, out.joints[0].numpy(), atol=1e-4)
    assert pred.refine_steps == 0 and not pred.refined and pred.silhouette.shape == (64, 64)


def test_large_image_is_area_averaged_with_the_same_geometry(files):
    image = cv2.resize(files["image"], (512, 512), interpolation=cv2.INTER_CUBIC)
    box = (4 * 34.0, 4 * 24.0, 4 * 60.0, 4 * 40.0)  # σ = 64 / 360 < 1
    K = image_intrinsics(512, 512, 600.0)
    crop = crop_box(image, box, 64, K)
    assert crop.affine[0, 0] == pytest.approx(64 / 360)
    small = crop_box(files["image"], [v / 4 for v in box], 64, image_intrinsics(128, 128, 150.0))
    assert np.abs(crop.image.astype(float) - small.image.astype(float)).mean() < 6.0


def test_defaults_and_box_parsing(files, model):
    assert default_box(200, 100) == (50.0, 0.0, 100.0, 100.0)
    assert math.degrees(2 * math.atan(0.5 * 640 / default_focal(640, 480))) == pytest.approx(45.2, abs=0.1)
    assert parse_box("1, 2, 3, 4") == (1.0, 2.0, 3.0, 4.0) and parse_box("1 2 3 4") == (1.0, 2.0, 3.0, 4.0)
    assert check_box((0, 0, 128, 128), 128, 128) == (0.0, 0.0, 128.0, 128.0)
    pred = predict(model, files["hand"])  # a path; central square, assumed focal
    assert pred.box_assumed and pred.focal_assumed and pred.box == (0.0, 0.0, 128.0, 128.0)
    centre = np.linalg.solve(pred.crop.affine, [31.5, 31.5, 1.0])[:2]  # crop centre → image centre
    np.testing.assert_allclose(centre, [63.5, 63.5], atol=1e-9)
    np.testing.assert_allclose(pred.j2d, project_np(pred.joints, pred.K), atol=1e-3)


@pytest.mark.parametrize("box,why", [("1,2,3", "four numbers"), ("a,b,c,d", "four numbers"),
                                     ("0,0,0,10", "positive"), ("0,0,10,-4", "positive"),
                                     ("100,100,50,50", "inside"), ("-1,0,10,10", "inside")])
def test_bad_box_is_an_error_naming_box(files, box, why, capsys):
    assert _run(files, files["hand"], files["dir"] / "bad", f"--box={box}") == 2  # "=": box may start with −
    err = capsys.readouterr().err
    assert err.startswith("error: --box") and why in err and "Traceback" not in err
    with pytest.raises(ValueError, match=why):
        check_box(parse_box(box), 128, 128)


def test_unreadable_images_are_errors_naming_the_file(files, tmp_path, capsys):
    missing, corrupt = tmp_path / "nope.png", tmp_path / "x.png"
    corrupt.write_bytes(b"\x89PNG garbage, not an image" * 10)
    for path, why in ((missing, "missing image file"), (corrupt, "unreadable image")):
        assert _run(files, path, tmp_path / "out") == 2
        err = capsys.readouterr().err
        assert str(path) in err and why in err and "Traceback" not in err
        with pytest.raises(DataError, match=why):
            predict(None, path)
    assert not (tmp_path / "out").exists()


def test_checkpoint_from_the_environment_or_a_clear_error(files, tmp_path, monkeypatch, capsys):
    import handlib.train

    assert resolve_checkpoint() == handlib.train.SHIPPED_CHECKPOINT  # the default when nothing is set
    monkeypatch.setattr(handlib.train, "SHIPPED_CHECKPOINT", tmp_path / "not_shipped.pt")
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    args = ["predict", str(files["hand"]), "--out", str(tmp_path / "o"), "--refine-steps", "0"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and CHECKPOINT_ENV in err and "python -m handlib train" in err
    assert cli.main(args + ["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt: no such file" in err and "python -m handlib train" in err
    not_ckpt = tmp_path / "x.pt"
    torch.save({"hello": 1}, not_ckpt)
    assert cli.main(args + ["--checkpoint", str(not_ckpt)]) == 2
    assert "not a handlib DHPE checkpoint" in capsys.readouterr().err
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path / "gone.pt"))
    with pytest.raises(FileNotFoundError, match=f"\\${CHECKPOINT_ENV}="):
        resolve_checkpoint()
    monkeypatch.setenv(CHECKPOINT_ENV, str(files["ckpt"]))
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "default: the central square" in out and "assumed" in out and str(tmp_path / "o") in out
    doc = json.loads((tmp_path / "o" / "joints.json").read_text())
    assert doc["checkpoint"] == str(files["ckpt"]) and doc["refined"] is False
    assert len(doc["assumptions"]) == 2


def test_shipped_checkpoint_is_small_documented_and_works():
    import hashlib

    from handlib.config import PROFILES
    from handlib.data import SyntheticHands, crop_to_hand
    from handlib.data.batch import collate
    from handlib.train import SHIPPED_CHECKPOINT, load_checkpoint, load_model

    info = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    data = SHIPPED_CHECKPOINT.read_bytes()
    assert len(data) <= 15e6 and hashlib.sha256(data).hexdigest() == info["sha256"]
    for key in ("command", "seed", "commit", "eval"):
        assert key in info, key
    state = load_checkpoint(SHIPPED_CHECKPOINT)  # weights_only=True
    assert "optimizer" not in state and state["meta"]["seed"] == info["seed"]
    model = load_model(SHIPPED_CHECKPOINT)
    S = model.cfg.image_size
    render = PROFILES[info["profile"]].synthetic_size  # the crops it was trained on: renders, crop convention
    ds = SyntheticHands(seed=0, num=8, image_size=render, split="test")
    batch = collate([crop_to_hand(s, model.cfg.crop_config()) for s in ds.__getitems__(list(range(8)))])
    with torch.no_grad():
        out = model(batch["image"], batch["K"], render=False)
    err = (out.reg.j2d[-1] - batch["kp2d"]).norm(dim=-1)[batch["valid"]].mean()
    assert err < 0.2 * S  # measured 0.14 S here (random weights: 0.30 S)


@pytest.mark.parametrize("side", ["right", "left"])
def test_detector_keypoints_and_world_landmarks_give_the_fit(model, side, tmp_path):
    """predict(keypoints=..., world=...) returns handlib.fit's fit in the photo's camera, any side."""
    s = SyntheticHands(seed=2, num=6, image_size=160, split="test")
    sample = next(x for x in (s[i] for i in range(6)) if x["side"] == side)
    K, kp3d = sample["K"].astype(np.float64), sample["kp3d"].astype(np.float64)
    from handlib.fit import FitConfig

    args = dict(focal=float(K[0, 0]), principal=(K[0, 2], K[1, 2]), left=side == "left",
                keypoints=sample["kp2d"], world=kp3d - kp3d[0], evidence="detector")
    # perfect world landmarks here: the fit to them alone (the network's joints would only blur them)
    pred = predict(model, sample["image"], fit_cfg=FitConfig(network_share=0.0), **args)
    mixed = predict(model, sample["image"], **args)  # the default mixes the network's joints in
    assert np.abs(mixed.joints - pred.joints).max() > 1e-4
    assert pred.evidence == "detector+fit" and pred.refine_steps == 0 and pred.losses["iterations"] >= 1
    assert np.linalg.norm(pred.j2d - sample["kp2d"], axis=1).mean() < 2.0  # on its evidence
    np.testing.assert_allclose(pred.j2d, project_np(pred.joints, pred.K), atol=1e-6)
    assert np.linalg.norm(pred.joints - kp3d, axis=1).mean() < 0.03  # 3D within 3 cm (depth from size)
    assert pred.silhouette.shape == pred.crop.image.shape[:2] and pred.silhouette.max() > 0.5
    files = save_prediction(pred, tmp_path, sample["image"])
    assert json.loads(files["joints.json"].read_text())["evidence"] == "detector+fit"


def test_cli_fits_every_detected_hand(files, tmp_path, monkeypatch, capsys):
    """Two hands in one photo (a right hand and its mirror image beside it): one set of files each."""
    from handlib.evidence_pretrained import HandDetection
    from handlib.skeleton import keypoint_box

    s = next(x for x in (SyntheticHands(seed=2, num=6, image_size=128, split="test")[i] for i in range(6))
             if x["side"] == "right")
    W = s["image"].shape[1]
    image = np.concatenate([s["image"], s["image"][:, ::-1]], 1)  # (128, 256, 3): right | left
    kp, world = s["kp2d"].astype(np.float64), (s["kp3d"] - s["kp3d"][0]).astype(np.float64)
    kp_left = np.stack([2 * W - 1 - kp[:, 0], kp[:, 1]], 1)
    dets = [HandDetection(kp2d=kp, box=keypoint_box(kp), side="right", score=0.9, world=world),
            HandDetection(kp2d=kp_left, box=keypoint_box(kp_left), side="left", score=0.8,
                          world=world * [-1.0, 1.0, 1.0])]
    monkeypatch.setattr(cli, "_detect", lambda args, image, box=None: dets)
    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert _run(files, photo, out, "--focal", str(float(s["K"][0, 0]))) == 0
    docs = [json.loads((d / "joints.json").read_text()) for d in (out, out / "hand1")]
    assert [d["side"] for d in docs] == ["right", "left"] and [d["hands"] for d in docs] == [2, 2]
    for d, det in zip(docs, dets):
        assert d["evidence"] == "mediapipe+fit"
        assert np.linalg.norm(np.array(d["joints_2d"]) - det.kp2d, axis=1).mean() < 3.0
    assert (out / "overlay_all.png").is_file() and (out / "hand1" / "mesh.obj").is_file()
    assert "overlay_all.png (2 hands)" in capsys.readouterr().out


def test_upright_network_gets_the_training_crop_and_answers_in_the_image_camera():
    """A network trained on upright crops (ModelConfig.crop="upright"): predict cuts the crop that
    crop_to_hand cut in training (same A, same K), and turns the answer back into the image's camera."""
    from handlib.predict import _to_image

    torch.manual_seed(0)
    mcfg = dataclasses.replace(ModelConfig.from_profile(profile("ci")), crop="upright", crop_margin=1.8)
    net = DHPE(mcfg).eval()
    s = SyntheticHands(seed=3, num=1, image_size=128)[0]
    if s["side"] == "left":  # compare with a right hand: no mirroring in between
        s = SyntheticHands(seed=4, num=1, image_size=128)[0]
    ref = crop_to_hand(s, mcfg.crop_config())
    f = float(s["K"][0, 0])
    pred = predict(net, s["image"], focal=f, principal=(s["K"][0, 2], s["K"][1, 2]), crop_keypoints=s["kp2d"])
    np.testing.assert_allclose(pred.crop.affine, ref["affine"], atol=1e-4)
    np.testing.assert_allclose(pred.crop.K, ref["K"], rtol=1e-5, atol=1e-3)
    assert not np.allclose(pred.crop.rotation, np.eye(3))  # the hand was turned
    x = normalize_image(torch.as_tensor(pred.crop.image)[None])
    with torch.no_grad():
        out = net(x, torch.as_tensor(pred.crop.K, dtype=torch.float32)[None], render=False)
    in_crop = out.joints[0].double().numpy()
    np.testing.assert_allclose(pred.joints @ pred.crop.rotation.T, in_crop, atol=1e-5)  # X_crop = R₃ X
    np.testing.assert_allclose(pred.j2d, project_np(pred.joints, pred.K), atol=1e-3)
    back = _to_image(project_np(in_crop, pred.crop.K), pred.crop.affine)  # crop pixels → image pixels
    np.testing.assert_allclose(pred.j2d, back, atol=1e-2)
    # h turns with the camera: the hand model of the returned h gives the returned joints
    h = torch.as_tensor(pred.h, dtype=torch.float32)[None]
    joints_h = HandModel("right").from_h(h).joints[0].numpy()
    np.testing.assert_allclose(joints_h, pred.joints, atol=1e-5)


@pytest.mark.parametrize("left", [False, True])
def test_feature_term_is_eq2_on_the_networks_view(left):
    """feature_term(verts) = Eq. 2 (mean over C) of the network's own input x and x masked by the
    mesh's silhouette drawn in x's camera — for a left hand, the mirrored crop and mirrored mesh."""
    from handlib.losses import feature_consistency_loss
    from handlib.model import mask_image
    from handlib.predict import _mirror, feature_term, network_view

    torch.manual_seed(0)
    mcfg = dataclasses.replace(ModelConfig.from_profile(profile("ci")), crop="upright", crop_margin=1.8)
    net = DHPE(mcfg).eval()
    s = SyntheticHands(seed=3, num=1, image_size=128)[0]
    K_img = s["K"].astype(np.float64)
    crop, x, K_net = network_view(net, s["image"], (30, 30, 60, 60), K_img, left, s["kp2d"])
    energy = feature_term(net, crop, x, left)
    with torch.no_grad():  # the sample's mesh, in the image camera
        verts = net.hand_model.from_h(torch.as_tensor(s["h"])[None]).verts.double()
    v_crop = (verts @ torch.as_tensor(crop.rotation).T).float()
    if left:  # the network's view: X' = −X with the mirrored K
        v_crop = torch.as_tensor(_mirror(mcfg.image_size, verts=v_crop[0].numpy())["verts"])[None]
    with torch.no_grad():
        sil = net.renderer(v_crop, K_net)
        ref = feature_consistency_loss(net.evidence.features(x), net.evidence.features(mask_image(x, sil)),
                                       "mean")
        got = energy(verts)
    assert sil.max() > 0.5 and float(got) > 0
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-7)
    verts.requires_grad_(True)
    (g,) = torch.autograd.grad(energy(verts), verts)
    assert torch.isfinite(g).all() and g.abs().max() > 0
