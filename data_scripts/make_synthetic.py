"""Write a seeded synthetic RHD-like split to disk (PNG images and masks, labels, one manifest).

No download needed: OpenHand is rendered over scikit-image's bundled photos and procedural
textures (``handlib.data.synthetic``). Every sample is a fixed function of (seed, split, index), so
the run is resumable (complete samples are skipped) and a rerun writes nothing new::

    python data_scripts/make_synthetic.py --out data/synthetic --seed 0 --num 20000 --size 128 \\
        --split train --workers 2

Expected output (2-core CPU)::

    train: generated 20,000 samples (0 already present) in ... s = ... samples/min with 2 worker(s)
    # train has 20,000 samples (128 px) -> data/synthetic/train.npz

Read it back with ``handlib.data.SyntheticHands.from_disk("data/synthetic", "train")``; it yields the
same samples as ``SyntheticHands(seed=0, num=20000, image_size=128, split="train")``.
``--num`` and ``--size`` default to the ``HANDLIB_PROFILE`` budget (``profile().num_samples``,
2 × ``profile().image_size``). A bar shows progress on a terminal (not in logs or notebooks:
``handlib.progress``); the summary lines above are printed in any case. Bad arguments end it with
exit code 2 and one line, ``error: --flag VALUE: what was expected``.
"""
from __future__ import annotations

import dataclasses
import sys

from handlib.cli import BadInput, OneLineParser, folder_to_write, whole_number
from handlib.config import profile
from handlib.data import synthetic
from handlib.progress import bars_enabled


def main(argv=None) -> int:
    ap = OneLineParser(prog="make_synthetic.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=folder_to_write, required=True, help="output folder (holds every split)")
    ap.add_argument("--seed", type=whole_number(0), default=0)
    ap.add_argument("--num", type=whole_number(1), default=None,
                    help="samples (default: the profile's num_samples)")
    ap.add_argument("--size", type=whole_number(16), default=None,
                    help="image side in px (default: 2 × profile crop)")
    ap.add_argument("--split", choices=sorted(synthetic.SPLITS), default="train")
    ap.add_argument("--workers", type=whole_number(1), default=1, help="processes (one per core)")
    ap.add_argument("--batch", type=whole_number(1), default=synthetic.SyntheticConfig.batch_size,
                    help="samples per batched render (changes no byte)")
    ap.add_argument("--overwrite", action="store_true", help="regenerate all, even with another config")
    ap.add_argument("--no-progress", action="store_true", help="no bar, even on a terminal")
    try:
        args = ap.parse_args(argv)
        num = profile().num_samples if args.num is None else args.num
        cfg = synthetic.SyntheticConfig(image_size=args.size or synthetic.default_image_size())
        cfg = dataclasses.replace(cfg, batch_size=args.batch)
        try:
            synthetic.write_split(args.out, args.seed, num, args.split, cfg, workers=args.workers,
                                  progress=bars_enabled(not args.no_progress), overwrite=args.overwrite)
        except ValueError as err:  # the folder holds this split with another seed or config
            raise BadInput(f"--out {args.out}: {err}") from None
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
