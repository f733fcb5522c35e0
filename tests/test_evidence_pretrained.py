"""Pretrained 2D evidence (MediaPipe hand landmarker): result conversion, the .task bundle, a real run."""
import hashlib
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from handlib.evidence_pretrained import (
    MIN_BOX_SIDE,
    PretrainedConfig,
    build_task,
    default_model_path,
    detections_from_result,
    fetch_model,
    task_is_valid,
)


def _result(hands):
    """A stand-in for MediaPipe's HandLandmarkerResult: hands = [(xy (21, 2) normalised, label, score)]."""
    P = lambda x, y, z=0.0: SimpleNamespace(x=x, y=y, z=z)  # noqa: E731
    return SimpleNamespace(
        hand_landmarks=[[P(*p) for p in xy] for xy, _, _ in hands],
        handedness=[[SimpleNamespace(category_name=label, score=score)] for _, label, score in hands],
        hand_world_landmarks=[[P(*p, 0.01) for p in xy] for xy, _, _ in hands])


def test_result_conversion_pixels_order_sides_and_boxes():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.2, 0.8, (21, 2)), rng.uniform(0.2, 0.8, (21, 2))
    dets = detections_from_result(_result([(a, "Left", 0.7), (b, "Right", 0.9)]), 200, 100)
    assert [d.side for d in dets] == ["right", "left"] and [d.score for d in dets] == [0.9, 0.7]  # best first
    # normalised 0 = the left edge of pixel 0, so a pixel centre u = x · W − ½; order is handlib's
    assert np.allclose(dets[1].kp2d, a * [200, 100] - 0.5) and dets[1].world.shape == (21, 3)
    x, y, w, h = dets[1].box
    assert np.isclose(x, dets[1].kp2d[:, 0].min()) and np.isclose(x + w, dets[1].kp2d[:, 0].max())
    swapped = detections_from_result(_result([(a, "Left", 0.7)]), 200, 100,
                                     PretrainedConfig(swap_handedness=True))
    assert swapped[0].side == "right"
    flat = np.stack([a[:, 0], np.full(21, 0.5)], 1)
    thin = detections_from_result(_result([(flat, "Left", 0.7)]), 200, 100)
    assert thin[0].box[3] == MIN_BOX_SIDE  # a flat row of keypoints still gets a box 8 px tall
    with pytest.raises(ValueError, match="21 landmarks"):
        detections_from_result(_result([(a[:5], "Left", 0.7)]), 200, 100)
    with pytest.raises(ValueError, match="unexpected label"):
        detections_from_result(_result([(a, "Both", 0.7)]), 200, 100)


def _fake_wheel(path, blobs):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in blobs.items():
            z.writestr(name, data)
    return path


def test_task_bundle_is_checked_and_byte_reproducible(tmp_path):
    blobs = {"pkg/a.tflite": b"detector", "pkg/b.tflite": b"landmarks", "pkg/other.py": b"x"}
    files = {"pkg/a.tflite": ("hand_detector.tflite", hashlib.sha256(b"detector").hexdigest()),
             "pkg/b.tflite": ("hand_landmarks_detector.tflite", hashlib.sha256(b"landmarks").hexdigest())}
    wheel = _fake_wheel(tmp_path / "fake.whl", blobs)
    one = build_task(wheel, tmp_path / "one.task", files).read_bytes()
    two = build_task(wheel, tmp_path / "two.task", files).read_bytes()
    assert one == two  # fixed timestamps, stored entries
    with zipfile.ZipFile(tmp_path / "one.task") as z:
        assert sorted(z.namelist()) == ["hand_detector.tflite", "hand_landmarks_detector.tflite"]
        assert z.read("hand_detector.tflite") == b"detector"
    assert task_is_valid(tmp_path / "one.task", files) and not task_is_valid(wheel, files)
    # fetch_model is idempotent: a valid file is left alone (no download attempted)
    logs = []
    assert fetch_model(tmp_path / "one.task", log=logs.append, files=files) == tmp_path / "one.task"
    assert "present and valid" in logs[0]
    fetch_model(tmp_path / "new" / "m.task", wheel=wheel, files=files, log=logs.append)
    assert (tmp_path / "new" / "m.task").read_bytes() == one
    bad = _fake_wheel(tmp_path / "bad.whl", {**blobs, "pkg/b.tflite": b"tampered"})
    with pytest.raises(ValueError, match="pkg/b.tflite has SHA-256"):
        build_task(bad, tmp_path / "x.task", files)
    with pytest.raises(ValueError, match="no member pkg/a.tflite"):
        build_task(_fake_wheel(tmp_path / "empty.whl", {"z": b""}), tmp_path / "y.task", files)
    assert not (tmp_path / "x.task").exists() and not (tmp_path / "y.task").exists()


def test_landmarker_on_a_blank_image_and_a_synthetic_hand():
    """The real model (fetched by `make test` with data_scripts/get_pretrained.py)."""
    pytest.importorskip("mediapipe", reason="pip install mediapipe==1.2.2 (dev)")
    from handlib.data import SyntheticHands
    from handlib.evidence_pretrained import PretrainedEvidence

    assert task_is_valid(default_model_path()), "run python data_scripts/get_pretrained.py"
    sample = SyntheticHands(seed=0, num=9, image_size=256, split="test")[8]  # a left hand it finds
    with PretrainedEvidence() as ev:
        assert ev.detect(np.zeros((120, 160, 3), np.uint8)) == []
        dets = ev.detect(sample["image"])
        with pytest.raises(ValueError, match="uint8"):
            ev.detect(np.zeros((10, 10, 3), np.float32))
    assert len(dets) >= 1 and dets[0].side == sample["side"] == "left"
    err = np.linalg.norm(dets[0].kp2d - sample["kp2d"], axis=1)
    assert err.mean() < 10.0  # px on a 256 px render (measured 2.6)


def test_missing_model_file_says_how_to_get_it(tmp_path):
    pytest.importorskip("mediapipe", reason="pip install mediapipe==1.2.2 (dev)")
    from handlib.evidence_pretrained import PretrainedEvidence

    with pytest.raises(FileNotFoundError, match="get_pretrained.py"):
        PretrainedEvidence(PretrainedConfig(model_path=str(tmp_path / "none.task")))


# MediaPipe's C++ start-up logs stay off stderr, while Python's stderr and fd 2 keep working after.
def test_landmarker_start_up_logs_are_hidden():
    pytest.importorskip("mediapipe", reason="pip install mediapipe==1.2.2 (dev)")
    if not task_is_valid(default_model_path()):
        pytest.skip("run python data_scripts/get_pretrained.py")
    code = (
        "import os, numpy as np\n"
        "from handlib.data import SyntheticHands\n"
        "from handlib.evidence_pretrained import PretrainedEvidence\n"
        "img = SyntheticHands(seed=0, num=9, image_size=256, split='test')[8]['image']\n"
        "with PretrainedEvidence() as ev:\n"
        "    assert ev.detect(img)\n"
        "os.write(2, b'fd 2 restored\\n')\n"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stderr
    assert "fd 2 restored" in err
    for noise in ("XNNPACK", "inference_feedback_manager", "W0000", "Read-only tensor"):
        assert noise not in err, err
