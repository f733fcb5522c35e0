"""Synthetic-data throughput: samples/min on the fly and written to disk with 1 and 2 workers.

Target (issue): at least 1,000 samples/min at 128 px on a 2-core CPU. Measures
(1) ``SyntheticHands``-style generation in this process, batched (``cfg.batch_size``) and one
sample per call, and (2) ``write_split`` (PNG + labels + manifest) into a temporary folder with
``--workers 1`` and ``2``. The first batch of each run warms the caches (models, photos) and is
not timed for on-the-fly generation; the disk runs include everything, pool start-up too.

    python benchmarks/bench_synthetic.py [--size 128] [--num 512] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from handlib.data import synthetic


def on_the_fly(cfg: synthetic.SyntheticConfig, num: int, rounds: int = 3) -> float:
    """Best-of-``rounds`` samples/min of :func:`synthetic.generate` (indices disjoint per round)."""
    synthetic.generate(0, range(cfg.batch_size), cfg)  # warm-up: models, asset, photos
    best = 0.0
    for r in range(rounds):
        t0 = time.perf_counter()
        synthetic.generate(0, range(10_000 + r * num, 10_000 + (r + 1) * num), cfg)
        best = max(best, 60.0 * num / (time.perf_counter() - t0))
    return best


def to_disk(cfg: synthetic.SyntheticConfig, num: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synthetic.write_split(tmp, 0, num, "train", cfg, workers=workers, progress=False, log=lambda *_: None)
        return 60.0 * num / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--num", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    cfg = synthetic.SyntheticConfig(image_size=args.size)
    print(f"synthetic {args.size} px, {args.num} samples; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads in this process")
    print(f"on the fly, batch {cfg.batch_size}: {on_the_fly(cfg, args.num):8,.0f} samples/min")
    one = dataclasses.replace(cfg, batch_size=1)
    print(f"on the fly, batch 1:  {on_the_fly(one, args.num // 4):8,.0f} samples/min")
    for w in args.workers:
        rate = to_disk(cfg, args.num, w)
        print(f"to disk, {w} worker(s): {rate:8,.0f} samples/min (PNG + labels + manifest)")


if __name__ == "__main__":
    main()
