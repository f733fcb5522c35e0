"""Real-photo fit speed: MediaPipe's hand networks + ``predict``'s fit path, seconds per hand.

Target (issue #15): ≤ 0.3 s for the fit and ≤ 0.5 s end to end (detection + fit) per hand on
2 CPU cores. Runs on the annotated frames in ``../shared/realdata/mmpose_testdata`` (research-only,
read in place) with their true focal lengths; each photo is detected and every detected hand goes
through ``predict(keypoints=, world=)`` ``--runs`` times: the shipped network on the detection's
crop (its joints join the fit's 3D target and steer its orientation, ``FitConfig.network_share``
and ``network_orientation``), :func:`handlib.fit.fit_hand`,
the silhouette. Medians are reported: the fit alone, and detection + the whole ``predict`` call. The
first detection and prediction (model loading) are not timed.
Detection runs as ``predict`` runs it: ``--detector torch`` (handlib.pretrained, the default) or
``--detector mediapipe`` (the mediapipe package's runtime, for comparison).

    python benchmarks/bench_fit.py [--root ../shared/realdata/mmpose_testdata] [--runs 3] [--detector torch]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata"
                    / "mmpose_testdata")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--detector", choices=("torch", "mediapipe"), default="torch")
    args = ap.parse_args(argv)

    from handlib.data.mmpose_frames import read_frames
    from handlib.predict import clip_box, predict
    from handlib.pretrained import open_detector
    from handlib.train import SHIPPED_CHECKPOINT, load_model

    frames = [f for f in read_frames(args.root) if f.K is not None]
    photos = {str(f.image_path): f for f in frames}  # one entry per photo (InterHand: two hands)
    detector = open_detector(args.detector)
    model = load_model(SHIPPED_CHECKPOINT)

    def fitted(image, K, d):
        H, W = image.shape[:2]
        return predict(model, image, box=clip_box(d.box, W, H), left=d.side == "left", keypoints=d.kp2d,
                       world=d.world, focal=float(K[0, 0]), principal=(float(K[0, 2]), float(K[1, 2])))

    warm = next(iter(photos.values()))
    for d in detector.detect(warm.image())[:1]:
        fitted(warm.image(), warm.K, d)
    det_s, fit_s, pred_s, iters = [], [], [], []
    for f in photos.values():
        image = f.image()
        times, dets = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            dets = detector.detect(image)
            times.append(time.perf_counter() - t0)
        for d in dets:
            runs, whole = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                pred = fitted(image, f.K, d)
                whole.append(time.perf_counter() - t0)
                runs.append(pred.losses["seconds"])
            fit_s.append(statistics.median(runs))
            pred_s.append(statistics.median(whole))
            det_s.append(statistics.median(times) / len(dets))
            iters.append(pred.losses["iterations"])
            print(f"{f.source:9s} {f.frame_id:18s} {d.side:5s} detect {det_s[-1]:.3f} s  "
                  f"fit {fit_s[-1]:.3f} s ({iters[-1]} LM iterations), predict {pred_s[-1]:.3f} s")
    if not fit_s:
        raise SystemExit(f"no hand detected in {len(photos)} photos under {args.root}")
    total = np.array(det_s) + np.array(pred_s)
    print(f"{len(fit_s)} hands in {len(photos)} photos: fit median {statistics.median(fit_s):.3f} s "
          f"(max {max(fit_s):.3f}), detection + predict (network, fit, silhouette) median "
          f"{float(np.median(total)):.3f} s "
          f"(max {total.max():.3f}); LM iterations median {statistics.median(iters):.0f}")


if __name__ == "__main__":
    main()
