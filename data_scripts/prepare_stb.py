"""Check a downloaded STB and write a compact annotation index (``handlib_stb_index.npz``).

Download the Stereo Hand Pose Tracking Benchmark (images B1–B6 × Counting/Random and
``labels/``) by hand from https://github.com/zhjwustc/icip17_stereo_hand_pose_dataset (research
only) and unpack it so that ``labels/`` and the sequence folders (directly or under ``images/``)
share one folder; then::

    python data_scripts/prepare_stb.py /path/to/STB [--out PATH] [--cameras BB_left BB_right]

Expected output (real data, default cameras = the standard stereo split)::

    # train has 30,000 samples
    # test has 6,000 samples
    wrote /path/to/STB/handlib_stb_index.npz

A second run prints "... is up to date". No official checksums are published; the index records
the SHA-256 of every label file used.
"""
from __future__ import annotations

import sys

from handlib.data import stb
from handlib.data.common import build_index, index_argument_parser


def main(argv=None) -> int:
    ap = index_argument_parser(__doc__.splitlines()[0], "the STB folder (holding labels/)")
    ap.add_argument("--cameras", nargs="+", default=["BB_left", "BB_right"], choices=sorted(stb.CAMERAS))
    args = ap.parse_args(argv)
    readers = {s: stb.STB(args.root, s, cameras=tuple(args.cameras)) for s in ("train", "test")}
    per_frame = len(args.cameras)
    expected = {s: len(stb.SPLIT_SEQUENCES[s]) * stb.FRAMES_PER_SEQUENCE * per_frame for s in readers}
    labels = sorted({r.label_path(q, stb.CAMERAS[c][1]) for r in readers.values() for q in r.sequences
                     for c in r.cameras})
    missing = [str(r.image_path(i)) for r in readers.values() for i in range(len(r))
               if not r.image_path(i).is_file()]
    print(f"# {len(labels)} label files, {len(missing):,} images missing" +
          (f" (first: {missing[0]})" if missing else ""))
    if missing and not args.allow_partial:
        return 1
    tag = "" if tuple(args.cameras) == ("BB_left", "BB_right") else "_" + "_".join(args.cameras)
    out = args.out or args.root / f"handlib_stb{tag}_index.npz"
    return build_index(readers, out, labels, expected, args.allow_partial, args.force)


if __name__ == "__main__":
    sys.exit(main())
