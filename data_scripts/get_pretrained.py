"""Fetch MediaPipe's hand landmarker (Apache-2.0) for handlib's pretrained 2D evidence, offline-ready.

    python data_scripts/get_pretrained.py [--out PATH] [--wheel mediapipe-0.10.21-...whl]

Takes ``palm_detection_full.tflite`` and ``hand_landmark_full.tflite`` from the
``mediapipe==0.10.21`` wheel (``pip download --no-deps`` from PyPI, or ``--wheel`` for a local
copy; the wheel is never installed: it needs numpy < 2), checks their SHA-256 sums and zips them as
``hand_detector.tflite`` + ``hand_landmarks_detector.tflite`` into ``hand_landmarker.task`` —
the bundle that ``mediapipe==1.2.2``'s ``vision.HandLandmarker`` loads
(``pip install "handlib[real]"``). Idempotent: a valid file is left alone; the output is
byte-identical on every machine. Default location: ``$HANDLIB_HAND_LANDMARKER`` or
``~/.cache/handlib/hand_landmarker.task`` (``handlib.evidence_pretrained.default_model_path``).
"""
from __future__ import annotations

import argparse
import pathlib

from handlib.evidence_pretrained import default_model_path, fetch_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, default=None, help=f"default: {default_model_path()}")
    ap.add_argument("--wheel", type=pathlib.Path, default=None, help="a local mediapipe-0.10.21 wheel")
    args = ap.parse_args()
    fetch_model(args.out, args.wheel)


if __name__ == "__main__":
    main()
