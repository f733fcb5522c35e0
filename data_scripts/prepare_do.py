"""Check a downloaded Dexter+Object and write a compact annotation index (``handlib_do_index.npz``).

Download Dexter+Object by hand from
https://handtracker.mpi-inf.mpg.de/projects/RealtimeHO/dexter+object.htm (research only) and
unpack it (a folder holding ``data/<sequence>/{color,depth,annotations}``); then::

    python data_scripts/prepare_do.py /path/to/dexter+object [--out PATH]

Expected output (real data)::

    # test has 3,145 samples
    # fingertips annotated: ... of 15,725
    wrote /path/to/dexter+object/handlib_do_index.npz

A second run prints "... is up to date". No official checksums are published; the index records
the SHA-256 of every annotation file.
"""
from __future__ import annotations

import sys

from handlib.data import dexter_object as do
from handlib.data.common import build_index, index_argument_parser


def main(argv=None) -> int:
    ap = index_argument_parser(__doc__.splitlines()[0], "the Dexter+Object folder (holding data/)")
    args = ap.parse_args(argv)
    reader = do.DexterObject(args.root)
    for seq in do.SEQUENCES:
        print(f"# {seq} has {sum(1 for s, _, _ in reader.items if s == seq):,} frames")
    tips = sum(int(reader.load(i, image=False)["valid"].sum()) for i in range(len(reader)))
    print(f"# fingertips annotated: {tips:,} of {5 * len(reader):,}")
    out = args.out or args.root / "handlib_do_index.npz"
    return build_index({"test": reader}, out, [reader.anno_path(s) for s in do.SEQUENCES],
                       {"test": do.TOTAL_FRAMES}, args.allow_partial, args.force)


if __name__ == "__main__":
    sys.exit(main())
