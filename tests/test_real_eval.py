"""Real-photo scoring (``python -m handlib eval-real``) on fixtures in mmpose's test-data formats."""
import json

import numpy as np
import pytest

from handlib import cli
from handlib.data import SyntheticHands
from handlib.data.mmpose_frames import write_freihand_fixture, write_rhd_fixture
from handlib.evidence_pretrained import HandDetection, keypoint_box
from handlib.real_eval import RealEvalConfig, evaluate_real, real_table
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
                return [HandDetection(kp2d=s["kp2d"].astype(np.float64), box=keypoint_box(s["kp2d"]),
                                      side=s["side"], score=1.0)]
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
    assert s["rhd"]["network"]["n"] == 2 and s["rhd"]["pretrained"]["n"] == 1
    assert "mpjpe_mm" in s["rhd"]["network"] and "mpjpe_mm" not in s["freihand"]["network"]  # 3D only for RHD
    for r in rows.values():
        assert 0.0 <= r["network"]["pck_2d"] <= 1.0 and r["network"]["err_2d_px"] > 0
        if r.get("pretrained", {}).get("detected"):
            # Eq. 13 pulls the mesh towards the (here: perfect) 2D keypoints
            assert r["pretrained"]["err_2d_px"] < r["network"]["err_2d_px"]
            assert r["mediapipe_2d"]["err_2d_px"] < 1e-3 and r["pretrained"]["side_correct"]
    table = real_table(res)
    assert table.count("\n") >= 2 + 3 and "MediaPipe + Eq. 13" in table


def test_cli_network_only_and_errors(setup, tmp_path, capsys):
    root, _ = setup
    out = tmp_path / "r.json"
    assert cli.main(["eval-real", "--root", str(root / "rhd"), "--no-pretrained", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["summary"]["rhd"]["frames"] == 2 and "pretrained" not in res["frames"][0]
    assert "handlib network alone" in capsys.readouterr().out
    assert cli.main(["eval-real", "--root", str(tmp_path / "empty"), "--no-pretrained"]) == 2
    assert "--root" in capsys.readouterr().err
