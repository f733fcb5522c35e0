"""Check a downloaded RHD and write a compact annotation index (``handlib_rhd_index.npz``).

Download ``RHD_v1-1.zip`` by hand from
https://lmb.informatik.uni-freiburg.de/resources/datasets/RenderedHandposeDataset.en.html
(research only) and unzip it; then::

    python data_scripts/prepare_rhd.py /path/to/RHD_published_v2 [--out PATH]

Expected output (real data; reading 44k masks to pick the dominant hand takes a few minutes)::

    # training has 41,258 samples
    # evaluation has 2,728 samples
    wrote /path/to/RHD_published_v2/handlib_rhd_index.npz

A second run prints "... is up to date" and writes nothing. No official checksums are published;
the index records the SHA-256 of both annotation pickles so that copies can be compared.
"""
from __future__ import annotations

import sys

from handlib.data import rhd
from handlib.data.common import build_index, index_argument_parser


def main(argv=None) -> int:
    ap = index_argument_parser(__doc__.splitlines()[0], "the RHD_published_v2 folder")
    args = ap.parse_args(argv)
    readers = {s: rhd.RHD(args.root, s) for s in ("training", "evaluation")}
    for s in readers:
        n_img = sum(1 for _ in (args.root / s / "color").glob("*.png"))
        print(f"# {s}/color has {n_img:,} images")
    out = args.out or args.root / "handlib_rhd_index.npz"
    return build_index(readers, out, [r.anno_path for r in readers.values()], rhd.COUNTS,
                       args.allow_partial, args.force)


if __name__ == "__main__":
    sys.exit(main())
