"""detect_hands (torch) against mediapipe's HandLandmarker on every photo under a folder.

Issue #14's agreement target: the same hands found, the same handedness, mean keypoint difference
≤ 1 px. Reads every .jpg/.png under ``--root`` (default ``../shared/realdata``, research-only, read in
place), runs both pipelines and prints one line per photo, then the totals. Needs the mediapipe
package (a dev dependency) and the fetched model.

    python benchmarks/agreement_pretrained.py [--root ../shared/realdata]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from handlib.evidence_pretrained import PretrainedEvidence
    from handlib.pretrained import detect_hands

    torch.set_num_threads(1)  # beside mediapipe's own threads on a small machine
    files = sorted(p for p in args.root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no .jpg/.png photos under {args.root}")
    diffs, same_count, same_side = [], 0, 0
    with PretrainedEvidence() as ev:
        for f in files:
            img = np.asarray(Image.open(f).convert("RGB"))
            ref, got = ev.detect(img), detect_hands(img)
            same_count += len(ref) == len(got)
            row = []
            for r in ref:
                if not got:
                    continue
                d = [np.linalg.norm(g.kp2d - r.kp2d, axis=1).mean() for g in got]
                g = got[int(np.argmin(d))]
                diffs.append(min(d))
                same_side += g.side == r.side
                row.append(f"{min(d):.2f}")
            print(f"{f.relative_to(args.root)} {img.shape[1]}×{img.shape[0]}: mediapipe {len(ref)} hand(s), "
                  f"torch {len(got)}; mean keypoint difference (px) {' '.join(row) or '–'}")
    d = np.array(diffs)
    print(f"{len(files)} photos: same number of hands in {same_count}; {len(d)} hands, "
          f"same side {same_side}; keypoint difference mean {d.mean():.2f} px, "
          f"median {np.median(d):.2f}, max {d.max():.2f}")


if __name__ == "__main__":
    main()
