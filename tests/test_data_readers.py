"""Dataset readers on look-alike files in each official layout: keypoints, sides, splits, errors."""
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from handlib import safe_pickle
from handlib.data import RHD, STB, DataError, DexterObject, FreiHAND, make_sample, validate_sample
from handlib.data import dexter_object as do
from handlib.data import fixtures as fx
from handlib.data import freihand as fh
from handlib.data import rhd as rhd_mod
from handlib.data import stb as stb_mod

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "mmpose_testdata"  # ../shared


def _same(sample, truth, atol3=1e-6, atol2=1e-3):
    v = truth["valid"]
    assert sample["side"] == truth["side"]
    np.testing.assert_array_equal(sample["valid"], v)
    np.testing.assert_allclose(sample["kp3d"][v], truth["kp3d"][v], atol=atol3)
    np.testing.assert_allclose(sample["kp2d"][v], truth["kp2d"][v], atol=atol2)
    np.testing.assert_allclose(sample["K"], truth["K"], rtol=1e-6)
    assert sample["kp3d"].dtype == np.float32 and sample["kp2d"].dtype == np.float32
    if truth["mask"] is None:
        assert sample["mask"] is None
    else:
        assert sample["mask"].dtype == bool and sample["mask"].shape == sample["image"].shape[:2]


@pytest.fixture(scope="module")
def rhd(tmp_path_factory):
    root = tmp_path_factory.mktemp("rhd") / "RHD_published_v2"
    return root, fx.write_rhd(root)


@pytest.fixture(scope="module")
def stb(tmp_path_factory):
    root = tmp_path_factory.mktemp("stb")
    return root, fx.write_stb(root, frames=2)  # all 12 sequences: both splits


@pytest.fixture(scope="module")
def dexter(tmp_path_factory):
    root = tmp_path_factory.mktemp("do")
    return root, fx.write_dexter_object(root, frames=3)


@pytest.fixture(scope="module")
def frei(tmp_path_factory):
    root = tmp_path_factory.mktemp("fh")
    return root, fx.write_freihand(root, unique=3)


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------- RHD
def test_rhd_known_keypoints_sides_and_masks(rhd):
    root, truth = rhd
    for split, alias in (("training", "train"), ("evaluation", "test")):
        ds = RHD(root, alias)
        assert len(ds) == len(truth[split]) and ds.ids == [3 * k for k in range(len(ds))]
        for i, t in enumerate(truth[split]):
            s = ds[i]
            _same(s, t)
            assert s["image"].shape == (320, 320, 3) and s["source"] == str(t["file"])
            np.testing.assert_array_equal(s["mask"], t["mask"])
        assert {ds[i]["side"] for i in range(len(ds))} == {"left", "right"}


def test_rhd_keeps_the_hand_with_more_mask_pixels(rhd, tmp_path):
    root = _copy(rhd[0], tmp_path)
    ds = RHD(root, "training")
    assert ds[0]["side"] == "left"
    labels = cv2.imread(str(ds.image_path(0, "mask")), cv2.IMREAD_UNCHANGED)
    left, right = rhd_mod.hand_pixels(labels)
    assert left.sum() > right.sum() > 0
    grown = labels.copy()
    grown[:, 300:] = 33  # a big patch of right-hand label makes the right hand dominant
    cv2.imwrite(str(ds.image_path(0, "mask")), grown)
    s = RHD(root, "training")[0]
    anno = safe_pickle.load(root / "training" / "anno_training.pickle")
    from handlib.skeleton import convert
    assert s["side"] == "right"
    np.testing.assert_allclose(s["kp3d"], convert(anno[0]["xyz"][21:], "rhd", "handlib"))
    assert s["mask"].sum() == (grown >= 18).sum()


def test_rhd_pickle_is_python2_style_and_read_safely(rhd):
    data = (rhd[0] / "training" / "anno_training.pickle").read_bytes()
    assert b"_codecs" not in data and b"numpy.core.multiarray" in data  # as the real files
    assert rhd_mod.decode_depth(np.array([[[255, 255, 0]]], np.uint8))[0, 0] == pytest.approx(5.0)
    ds = RHD(rhd[0], "training")
    assert ds.read_depth(0)[0, 0] == pytest.approx(0.6, abs=1e-4)


def test_rhd_refuses_code_in_pickle(rhd, tmp_path):
    root = _copy(rhd[0], tmp_path)
    (root / "training" / "anno_training.pickle").write_bytes(b"cos\nsystem\n(Vecho\ntR.")
    with pytest.raises(safe_pickle.UnsafePickleError, match="anno_training.pickle"):
        RHD(root, "training")


def test_rhd_wrong_shaped_annotation_names_file_and_index(rhd, tmp_path):
    root = _copy(rhd[0], tmp_path)
    path = root / "evaluation" / "anno_evaluation.pickle"
    anno = safe_pickle.load(path)
    anno[3]["xyz"] = anno[3]["xyz"][:41]
    path.write_bytes(pickle.dumps(anno, protocol=2))
    ds = RHD(root, "evaluation")
    ds[0]
    msg = r"anno_evaluation\.pickle sample 1: xyz of id 3: expected shape \(42, 3\), got \(41, 3\)"
    with pytest.raises(DataError, match=msg):
        ds[1]


# ---------------------------------------------------------------------------------------- STB
def test_stb_standard_split_arithmetic():
    assert stb_mod.SPLIT_SEQUENCES["test"] == ("B1Counting", "B1Random")
    assert len(stb_mod.SPLIT_SEQUENCES["train"]) == 10
    for split, n in stb_mod.COUNTS.items():  # two Bumblebee views per frame
        assert len(stb_mod.SPLIT_SEQUENCES[split]) * stb_mod.FRAMES_PER_SEQUENCE * 2 == n


def test_stb_bb_stereo_views_mm_to_m(stb):
    root, truth = stb
    test = STB(root, "test")
    assert len(test) == 2 * 2 * 2 and len(STB(root, "train", cameras=("BB_left",))) == 10 * 2
    assert [it[2] for it in test.items[:2]] == ["BB_left", "BB_right"]
    for i in range(len(test)):
        s = test[i]
        _same(s, truth[test.items[i]])
        assert s["image"].shape == (480, 640, 3)
    left, right = test[0], test[1]
    np.testing.assert_allclose(left["kp3d"][:, 0] - right["kp3d"][:, 0], 0.120054, atol=1e-6)


def test_stb_sk_depth_to_color_and_palm(stb):
    root, truth = stb
    sk = STB(root, "test", cameras=("SK",))
    for i in range(len(sk)):
        _same(sk[i], truth[sk.items[i]])
    with pytest.warns(UserWarning, match="palm centre"):
        palm = STB(root, "test", cameras=("SK",), palm_to_wrist=False)
    t = truth[palm.items[0]]
    palm_true = 0.5 * (t["kp3d"][0] + t["kp3d"][stb_mod.RING_MCP])
    np.testing.assert_allclose(palm[0]["kp3d"][0], palm_true, atol=1e-6)
    np.testing.assert_allclose(palm[0]["kp3d"][1:], t["kp3d"][1:], atol=1e-6)
    # the published calibration maps colour → depth; our inverse undoes it
    x = np.array([[10.0, -20.0, 400.0]])
    R = stb_mod.Rotation.from_rotvec(stb_mod.SK_ROT_VEC).as_matrix()
    np.testing.assert_allclose(stb_mod.sk_depth_to_color(x @ R.T + stb_mod.SK_TRANS_MM), x, atol=1e-9)


def test_stb_flat_layout_and_bad_label(tmp_path):
    truth = fx.write_stb(tmp_path, frames=1, sequences=("B1Counting", "B1Random"), nested=False)
    ds = STB(tmp_path, "test")
    _same(ds[3], truth[ds.items[3]])
    import scipy.io
    scipy.io.savemat(str(tmp_path / "labels" / "B1Random_BB.mat"), {"handPara": np.zeros((3, 20, 1))})
    with pytest.raises(DataError, match=r"B1Random_BB\.mat: handPara: expected shape \(3, 21, N\)"):
        STB(tmp_path, "test")


# ------------------------------------------------------------------------------ Dexter+Object
def test_dexter_object_fingertips_only(dexter):
    root, truth = dexter
    ds = DexterObject(root)
    assert len(ds) == len(truth) == 18 and ds.items[3][0] == "Grasp2"
    for i, t in enumerate(truth):
        s = ds[i]
        _same(s, t)
        assert not s["valid"][[0, 1, 2, 3, 5, 9, 13, 17]].any()
        assert (s["kp3d"][~s["valid"]] == 0).all()
    assert ds[1]["valid"].sum() == 4 and not ds[1]["valid"][16]  # ring tip missing (32001)
    assert ds[2]["valid"].sum() == 4 and not ds[2]["valid"][4]  # thumb tip missing
    assert do.TOTAL_FRAMES == 3145


def test_dexter_object_bad_line_names_file_and_index(dexter, tmp_path):
    root = _copy(dexter[0], tmp_path)
    path = root / "data" / "Rotate" / "annotations" / "Rotate3D.txt"
    lines = path.read_text().splitlines()
    lines[1] = "1, 2, 3; 4, 5, 6;"
    path.write_text("\n".join(lines) + "\n")
    ds = DexterObject(root, sequences=("Grasp1", "Rotate"))
    with pytest.raises(DataError, match=r"Rotate3D\.txt sample 4: line 2: expected 5 points"):
        ds[4]
    shutil.rmtree(root / "data" / "Pinch" / "color")
    with pytest.raises(DataError, match=r"Pinch/color: missing colour folder"):
        DexterObject(root)


# ----------------------------------------------------------------------------------- FreiHAND
def test_freihand_versions_share_annotation_modulo_unique(frei):
    root, truth = frei
    ds = FreiHAND(root, "training")
    assert ds.unique == 3 and len(ds) == 12
    for i in range(12):
        s = ds[i]
        t = truth["training"][i % 3]
        _same(s, t)
        assert s["source"].endswith(f"{i:08d}.jpg")
        assert abs(int(s["image"][:8, :8].mean()) - 60 * (i // 3)) <= 3  # the version drawn
        assert (s["mask"] != t["mask"]).mean() < 0.01  # JPEG mask, thresholded
        np.testing.assert_allclose(np.concatenate([s["pose"], s["betas"], s["cam"]]), t["theta"], atol=1e-6)
    sub = FreiHAND(root, "training", versions=("hom", "auto"))
    assert len(sub) == 6 and [sub.image_number(i) for i in range(6)] == [3, 4, 5, 9, 10, 11]
    assert fh.annotation_index(65475) == 355 and fh.version_of(65475) == "sample"


def test_freihand_evaluation_with_segmap(frei):
    root, truth = frei
    ds = FreiHAND(root, "evaluation")
    assert len(ds) == 2
    for i in range(2):
        _same(ds[i], truth["evaluation"][i])
        np.testing.assert_array_equal(ds[i]["mask"], truth["evaluation"][i]["mask"])


@pytest.mark.skipif(not (REAL / "freihand" / "test_freihand.json").is_file(), reason="no real frames")
def test_freihand_modulo_rule_on_real_files():
    """mmpose's test frames: images whose numbers differ by 32,560 carry identical keypoints."""
    d = json.loads((REAL / "freihand" / "test_freihand.json").read_text())
    by_kp = {}
    for a in d["annotations"]:
        by_kp.setdefault(tuple(np.round(a["keypoints"], 4)), set()).add(a["image_id"])
    groups = [g for g in by_kp.values() if len(g) > 1]
    assert groups
    for g in groups:
        assert len({fh.annotation_index(i) for i in g}) == 1
        assert len({fh.version_of(i) for i in g}) == len(g)


def test_freihand_wrong_shape_and_v1_eval(frei, tmp_path):
    root = _copy(frei[0], tmp_path)
    xyz = json.loads((root / "training_xyz.json").read_text())
    xyz[1] = xyz[1][:20]
    (root / "training_xyz.json").write_text(json.dumps(xyz))
    ds = FreiHAND(root)
    with pytest.raises(DataError, match=r"training_xyz\.json sample 4: xyz\[1\]: expected shape \(21, 3\)"):
        ds[4]
    (root / "evaluation_xyz.json").unlink()
    with pytest.raises(FileNotFoundError, match="FreiHAND_pub_v2_eval"):
        FreiHAND(root, "evaluation")


# -------------------------------------------------------------------------------- bad files
def test_missing_and_truncated_images_name_file_and_index(rhd, tmp_path):
    root = _copy(rhd[0], tmp_path)
    ds = RHD(root, "training")
    ds.image_path(1).unlink()
    with pytest.raises(DataError, match=r"00003\.png sample 1: missing image file"):
        ds[1]
    data = ds.image_path(2).read_bytes()
    ds.image_path(2).write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"00006\.png sample 2: unreadable image"):
        ds[2]
    mask = ds.image_path(0, "mask")
    mask.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"mask/00000\.png sample 0: unreadable"):
        ds[0]


def test_on_error_skip_counts_and_reports(frei, tmp_path):
    root = _copy(frei[0], tmp_path)
    (root / "training" / "rgb" / "00000004.jpg").unlink()
    (root / "training" / "rgb" / "00000005.jpg").write_bytes(b"")
    strict = FreiHAND(root)
    with pytest.raises(DataError, match="00000004.jpg sample 4"):
        strict[4]
    ds = FreiHAND(root, on_error="skip")
    with pytest.warns(UserWarning, match="skipped"):
        s = ds[4]
    assert s["index"] == 6 and [i for i, _ in ds.skipped] == [4, 5]
    assert "00000005.jpg" in ds.skipped[1][1]
    ds[5]  # already recorded: not counted twice
    assert len(ds.skipped) == 2
    with pytest.raises(ValueError, match="on_error"):
        FreiHAND(root, on_error="ignore")


def test_validate_sample_contract():
    s = make_sample(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), np.zeros((21, 2)), np.zeros((21, 3)),
                    np.eye(3), np.ones(21), "right", 0, "x.png")
    validate_sample(s)
    with pytest.raises(ValueError, match="side"):
        validate_sample({**s, "side": "both"})
    with pytest.raises(ValueError, match=r"kp3d must be an array of shape \(21, 3\)"):
        validate_sample({**s, "kp3d": np.zeros((20, 3))})
    with pytest.raises(ValueError, match="mask"):
        validate_sample({**s, "mask": np.zeros((3, 4), bool)})


# ---------------------------------------------------------------------------- prepare scripts
def _script(name):
    import importlib.util
    path = ROOT / "data_scripts" / f"prepare_{name}.py"
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["rhd", "stb", "do", "freihand"])
def test_prepare_scripts_count_and_are_idempotent(name, rhd, stb, dexter, frei, tmp_path, capsys):
    root = {"rhd": rhd, "stb": stb, "do": dexter, "freihand": frei}[name][0]
    out = tmp_path / "index.npz"
    main = _script(name).main

    def run(*extra):
        code = main([str(root), "--out", str(out), *extra])
        return code, capsys.readouterr().out

    code, text = run()
    assert code == 1 and not out.exists() and ("INCOMPLETE" in text or "expected" in text), text
    code, text = run("--allow-partial")
    assert code == 0 and "samples" in text and "wrote" in text, text
    stamp = out.stat().st_mtime_ns
    code, text = run("--allow-partial")
    assert code == 0 and "up to date" in text and out.stat().st_mtime_ns == stamp, text
    with np.load(out) as idx:
        split = {"rhd": "training", "stb": "test", "do": "test", "freihand": "training"}[name]
        kp3d = idx[f"{split}_kp3d"]
        assert kp3d.shape[1:] == (21, 3) and len(idx[f"{split}_source"]) == len(kp3d)
        assert idx[f"{split}_right"].dtype == bool
    code, text = run("--allow-partial", "--force")
    assert code == 0 and "wrote" in text and out.stat().st_mtime_ns != stamp


def test_prepare_script_runs_from_the_command_line(rhd, tmp_path):
    out = tmp_path / "rhd.npz"
    cmd = [sys.executable, str(ROOT / "data_scripts" / "prepare_rhd.py"), str(rhd[0]), "--out", str(out),
           "--allow-partial"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "# training has 3 samples" in r.stdout and out.is_file(), r.stdout + r.stderr
