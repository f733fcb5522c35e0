"""Real-photo scoring (``python -m handlib eval-real``) on fixtures in mmpose's test-data formats."""
import json

import numpy as np
import pytest

from handlib import cli
from handlib.data import SyntheticHands
from handlib.data.mmpose_frames import write_freihand_fixture, write_rhd_fixture
from handlib.evidence_pretrained import HandDetection
from handlib.real_eval import RealEvalConfig, evaluate_real, real_table
from handlib.skeleton import keypoint_box
from handlib.train import SHIPPED_CHECKPOINT, load_model


class PerfectDetector:
    """Stands in for MediaPipe: returns the labelled hand of the sample the image was written from
    (FreiHAND's fixture is JPEG, so images are matched approximately)."""

    def __init__(self, samples, miss=()):
        self.samples, self.miss = samples, set(miss)

    def detect(self, image):
        for i, s in enumerate(self.samples):
            same = image.shape == s["image"].shape and np.abs(image - s["image"].astype(float)).mean() < 8
            if i not in self.miss and same:
                kp3d = s["kp3d"].astype(np.float64)
                return [HandDetection(kp2d=s["kp2d"].astype(np.float64), box=keypoint_box(s["kp2d"]),
                                      side=s["side"], score=1.0, world=kp3d - kp3d[0])]
        return []


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    pool = SyntheticHands(seed=3, num=12, image_size=256, split="test").__getitems__(list(range(12)))
    rights = [s for s in pool[2:] if s["side"] == "right"][:2]  # FreiHAND has right hands only
    samples = pool[:2] + rights
    write_rhd_fixture(root / "rhd", samples[:2])
    write_freihand_fixture(root / "freihand", samples[2:])
    return root, samples


def test_both_paths_are_scored_per_source(setup):
    root, samples = setup
    model = load_model(SHIPPED_CHECKPOINT)
    res = evaluate_real(model, root, PerfectDetector(samples, miss={1}), RealEvalConfig(refine_steps=30),
                        log=lambda *a: None)
    rows = {r["frame"]: r for r in res["frames"]}
    assert len(rows) == 4 and {r["source"] for r in rows.values()} == {"rhd", "freihand"}
    s = res["summary"]
    assert s["rhd"]["frames"] == 2 and s["rhd"]["detection_rate"] == 0.5
    assert s["all"]["detection_rate"] == 0.75
    assert s["rhd"]["network"]["n"] == 2 and s["rhd"]["pretrained"]["n"] == 1 and s["rhd"]["fit"]["n"] == 1
    assert "mpjpe_mm" in s["rhd"]["network"] and "mpjpe_mm" not in s["freihand"]["network"]  # 3D only for RHD
    for r in rows.values():
        assert 0.0 <= r["network"]["pck_2d"] <= 1.0 and r["network"]["err_2d_px"] > 0
        if r.get("detected"):
            # Eq. 13 pulls the mesh towards the (here: perfect) 2D keypoints; the fit lands on them
            assert r["pretrained"]["err_2d_px"] < r["network"]["err_2d_px"]
            assert r["mediapipe_2d"]["err_2d_px"] < 1e-3 and r["side_correct"]
            assert r["fit"]["err_2d_px"] < 2.0 and r["fit"]["iterations"] >= 1
            if r["source"] == "rhd":  # perfect world landmarks: the fit's 3D shape is the label's
                assert r["mediapipe_world"]["pa_mpjpe_mm"] < 1e-6 and r["fit"]["pa_mpjpe_mm"] < 6.0
    table = real_table(res)
    assert table.count("\n") >= 2 + 5 and "MediaPipe + fit" in table and "MediaPipe world landmarks" in table


def test_3d_scores_forgive_what_they_say():
    """mpjpe forgives nothing but the root; scale_mpjpe the size; rot_mpjpe the orientation."""
    from scipy.spatial.transform import Rotation

    from handlib.data.mmpose_frames import RealFrame
    from handlib.real_eval import _scores_3d

    g = np.random.default_rng(0).normal(size=(21, 3)) * 0.04 + [0.0, 0.0, 0.5]
    frame = RealFrame(image_path="p.jpg", source="rhd", kp2d=np.zeros((21, 2)), valid=np.ones(21, bool),
                      kp3d=g)
    rel = g - g[0]
    R = Rotation.from_rotvec([0.0, 0.3, 0.0]).as_matrix()
    bigger = _scores_3d(1.3 * rel + g[0] + 0.1, frame)  # another size and root, same orientation
    assert bigger["scale_mpjpe_mm"] < 1e-6 and bigger["pa_mpjpe_mm"] < 1e-6 and bigger["mpjpe_mm"] > 5
    assert bigger["rot_mpjpe_mm"] > 5  # a rotation cannot undo a size
    turned = _scores_3d(rel @ R.T + g[0], frame)  # same size, turned about the root
    assert turned["rot_mpjpe_mm"] < 1e-6 and turned["scale_mpjpe_mm"] > 5 and turned["mpjpe_mm"] > 5


def test_detections_are_matched_one_to_one():
    from handlib.data.mmpose_frames import RealFrame
    from handlib.real_eval import match_detections

    def hand(x):
        kp = np.stack([np.linspace(x, x + 40, 21), np.linspace(100, 140, 21)], 1)
        return kp, RealFrame(image_path="p.jpg", source="interhand", kp2d=kp, valid=np.ones(21, bool))

    (ka, a), (kb, b) = hand(0.0), hand(30.0)  # two overlapping hands in one photo
    da = HandDetection(kp2d=ka, box=keypoint_box(ka), side="right", score=0.9)
    db = HandDetection(kp2d=kb, box=keypoint_box(kb), side="left", score=0.8)
    assert match_detections([a, b], [db, da], 0.3) == [da, db]  # each hand its own detection
    assert match_detections([a, b], [da], 0.3) == [da, None]  # one detection serves one hand only
    assert match_detections([a, b], [], 0.3) == [None, None]


def test_cli_network_only_and_errors(setup, tmp_path, capsys):
    root, _ = setup
    out = tmp_path / "r.json"
    assert cli.main(["eval-real", "--root", str(root / "rhd"), "--no-pretrained", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["summary"]["rhd"]["frames"] == 2 and "pretrained" not in res["frames"][0]
    assert "handlib network alone" in capsys.readouterr().out
    assert cli.main(["eval-real", "--root", str(tmp_path / "empty"), "--no-pretrained"]) == 2
    assert "--root" in capsys.readouterr().err


def test_fit_row_with_eq13_term_b(setup, capsys):
    """RealEvalConfig.fit with λ_F > 0: the fit row runs step 4 through the network (more LM
    iterations, the 2D evidence kept); --fit-feature rejects a negative weight, naming itself."""
    from handlib.fit import FitConfig

    root, samples = setup
    model = load_model(SHIPPED_CHECKPOINT)
    cfg = lambda lam: RealEvalConfig(refine_steps=0, fit=FitConfig(feature=lam, feature_iterations=3))  # noqa: E731
    runs = {lam: evaluate_real(model, root / "rhd", PerfectDetector(samples[:2]), cfg(lam),
                               log=lambda *a: None)["frames"] for lam in (0.0, 3000.0)}
    for plain, with_b in zip(runs[0.0], runs[3000.0]):
        assert with_b["fit"]["iterations"] > plain["fit"]["iterations"]
        assert with_b["fit"]["err_2d_px"] < plain["fit"]["err_2d_px"] + 1.0
    assert cli.main(["eval-real", "--root", str(root), "--fit-feature", "-1"]) == 2
    assert "--fit-feature" in capsys.readouterr().err
