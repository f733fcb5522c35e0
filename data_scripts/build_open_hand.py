"""Rebuild the OpenHand asset (``handlib/assets/open_hand_v1.npz``) and print its counts.

Usage::

    python data_scripts/build_open_hand.py [--out PATH]

Expected output (2-core CPU): ``V 825  F 1627  boundary loops 1  hand length 187.1 mm`` in ~10 s.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from handlib import open_hand


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=open_hand.ASSET_PATH, help="output .npz")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    arrays = open_hand.build_open_hand()
    seconds = time.perf_counter() - t0
    open_hand.save_asset(arrays, args.out)
    v, f, tips = arrays["v_template"], arrays["faces"], arrays["tip_vertex_ids"]
    length = np.linalg.norm(v[tips[2]] - arrays["J"][0]) * 1000
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    print(f"V {len(v)}  F {len(f)}  boundary loops {len(open_hand.boundary_loops(f))}  "
          f"hand length {length:.1f} mm  build {seconds:.1f} s")


if __name__ == "__main__":
    main()
