"""The real-photo fit on synthetic renders: ``FitConfig`` weights chosen on frames other than the real ones.

The shared real frames hold 4 hands with 3D labels, too few to choose a weight on without fitting the
frames. This script renders synthetic *test* hands (a seed and split the fit never saw), runs
MediaPipe on each whole render like a photo, keeps the detections that overlap the true hand, and
runs ``predict``'s fit path (the shipped network on the detection's upright crop, then
:func:`handlib.fit.fit_hand`) once per value of one ``FitConfig`` field. Per value it prints the
root-relative MPJPE, the Procrustes-aligned PA-MPJPE, the global rotation error (the Kabsch rotation
between the root-relative joints), the 2D error, and on how many hands the value beats the sweep's
first value; then the same for the network alone and MediaPipe's world landmarks.

    python benchmarks/fit_on_renders.py --field network_orientation --values 0 0.5 1 2
    python benchmarks/fit_on_renders.py --field network_share --values 0 0.3 0.5

Defaults (README, "Converged, and turned by the network"): 160 renders of seed 11's test split at
320 px, no occluders (MediaPipe finds about 42 % of them: the hands are small); ~4 min on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np


def rotation_deg(P: np.ndarray, G: np.ndarray) -> float:
    """Angle of the Kabsch rotation between two (21, 3) joint sets about their roots, degrees."""
    from handlib.fit import kabsch

    R = kabsch(P - P[0], G - G[0])
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def scores(P, G, j2d, kp2d) -> tuple:
    """(root-relative mm, PA mm, rotation °, 2D px) of joints P against G (``eval-real``'s 3D scores)."""
    from handlib.real_eval import scores_3d

    s = scores_3d(np.asarray(P, np.float64), np.asarray(G, np.float64))
    e2d = float(np.linalg.norm(j2d - kp2d, axis=1).mean())
    return s["mpjpe_mm"], s["pa_mpjpe_mm"], rotation_deg(np.asarray(P), G), e2d


def main(argv=None) -> None:
    from handlib.data.synthetic import SyntheticConfig, generate
    from handlib.evidence_pretrained import box_iou_xywh
    from handlib.fit import FitConfig
    from handlib.predict import clip_box, predict
    from handlib.pretrained import open_detector
    from handlib.skeleton import keypoint_box
    from handlib.train import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fields = [f.name for f in dataclasses.fields(FitConfig)]
    ap.add_argument("--field", default="network_orientation", choices=fields)
    ap.add_argument("--values", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--num", type=int, default=160)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--image-size", type=int, default=320)
    ap.add_argument("--checkpoint", default="handlib/assets/dhpe_cpu.pt")
    args = ap.parse_args(argv)

    model = load_model(args.checkpoint)
    cfgs = {v: FitConfig(**{args.field: v}) for v in args.values}
    rows: dict = {**{v: [] for v in cfgs}, "network alone": [], "MediaPipe world landmarks": []}
    synth = SyntheticConfig(image_size=args.image_size, occluder_prob=0.0)
    with open_detector("torch") as det:
        for start in range(0, args.num, synth.batch_size):
            batch = range(start, min(start + synth.batch_size, args.num))
            for s in generate(args.seed, batch, synth, "test"):
                img, K, G = s["image"], s["K"].astype(np.float64), s["kp3d"].astype(np.float64)
                dets = [d for d in det.detect(img) if box_iou_xywh(d.box, keypoint_box(s["kp2d"])) > 0.3]
                if not dets:
                    continue
                d, (H, W) = dets[0], img.shape[:2]
                cam = dict(focal=float(0.5 * (K[0, 0] + K[1, 1])), principal=(float(K[0, 2]), float(K[1, 2])),
                           box=clip_box(d.box, W, H), left=d.side == "left", refine_steps=0)
                for v, fc in cfgs.items():
                    out = predict(model, img, keypoints=d.kp2d, world=d.world, evidence="mediapipe",
                                  fit_cfg=fc, **cam)
                    rows[v].append(scores(out.joints, G, out.j2d, s["kp2d"]))
                net = predict(model, img, crop_keypoints=d.kp2d, **cam)
                rows["network alone"].append(scores(net.joints, G, net.j2d, s["kp2d"]))
                rows["MediaPipe world landmarks"].append(scores(d.world, G, d.kp2d, s["kp2d"]))
    n = len(rows["network alone"])
    print(f"{n} of {args.num} renders detected (seed {args.seed}, test split, {args.image_size} px, "
          "no occluders)\n")
    print(f"| {args.field} | root-relative MPJPE (mm) | PA-MPJPE (mm) | rotation (°) | 2D (px) | better than "
          f"{args.values[0]:g} on |\n|---|---|---|---|---|---|")
    base = np.array(rows[args.values[0]])[:, 0]
    for k, v in rows.items():
        a = np.array(v)
        label = f"{k:g}" if isinstance(k, float) else k
        print(f"| {label} | {a[:, 0].mean():.1f} | {a[:, 1].mean():.1f} | {a[:, 2].mean():.1f} | "
              f"{a[:, 3].mean():.2f} | {np.mean(a[:, 0] < base):.0%} |")


if __name__ == "__main__":
    main()
