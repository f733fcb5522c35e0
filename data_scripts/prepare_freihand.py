"""Check a downloaded FreiHAND v2 and write a compact annotation index (``handlib_freihand_index.npz``).

Download ``FreiHAND_pub_v2.zip`` and ``FreiHAND_pub_v2_eval.zip`` by hand from
https://lmb.informatik.uni-freiburg.de/resources/datasets/FreihandDataset.en.html (research only)
and unzip both into one folder; then::

    python data_scripts/prepare_freihand.py /path/to/FreiHAND_pub_v2 [--out PATH]

Expected output (real data)::

    # training/rgb has 130,240 images, training/mask 32,560
    # training has 32,560 samples      (unique annotations; × 4 background versions)
    # evaluation has 3,960 samples
    wrote /path/to/FreiHAND_pub_v2/handlib_freihand_index.npz

The index holds one row per unique annotation (image i uses row i % 32560). A second run prints
"... is up to date". No official checksums are published; the index records the SHA-256 of
the annotation JSON files.
"""
from __future__ import annotations

import sys

from handlib.data import freihand as fh
from handlib.data.common import build_index, index_argument_parser


def main(argv=None) -> int:
    ap = index_argument_parser(__doc__.splitlines()[0], "the FreiHAND_pub_v2 folder")
    args = ap.parse_args(argv)
    readers = {s: fh.FreiHAND(args.root, s, versions=("gs",)) for s in ("training", "evaluation")}
    n_rgb = sum(1 for _ in (args.root / "training" / "rgb").glob("*.jpg"))
    n_mask = sum(1 for _ in (args.root / "training" / "mask").glob("*.jpg"))
    print(f"# training/rgb has {n_rgb:,} images, training/mask {n_mask:,}")
    unique = readers["training"].unique
    if (n_rgb != len(fh.VERSIONS) * unique or n_mask != unique) and not args.allow_partial:
        print(f"expected {len(fh.VERSIONS)} × {unique:,} images and {unique:,} masks; nothing written")
        return 1
    inputs = [p for r in readers.values() for p in (r.K_path, r.xyz_path, r.mano_path) if p.is_file()]
    expected = {"training": fh.UNIQUE_TRAINING, "evaluation": fh.COUNTS["evaluation"]}
    out = args.out or args.root / "handlib_freihand_index.npz"
    return build_index(readers, out, inputs, expected, args.allow_partial, args.force)


if __name__ == "__main__":
    sys.exit(main())
