"""Soft-silhouette speed and memory: tile-culled ``soft_silhouette`` against ``soft_silhouette_dense``.

Forward and forward+backward at 64, 128 and 224 px, batch 1 and 16, on OpenHand (825 V / 1627 F)
when ``handlib/assets/open_hand_v1.npz`` exists, else a hand-like blob of ellipsoids (780 V /
1536 F), 0.4 m in front of a camera with focal = image size (the hand spans about half the
image). Every configuration runs in its own subprocess so that its peak memory (``ru_maxrss``)
is its own. The dense reference is skipped where its estimated footprint exceeds ~4 GB.
Also times the RGB rasteriser (images/s). Targets on a 2-core CPU: one hand at 128 px
forward+backward ≤ 15 ms; batch 16 at 224 px peak memory ≤ 1.5 GB; RGB ≥ 20 images/s at 128 px.

    python benchmarks/bench_render.py [--threads 2] [--sizes 64 128 224] [--batches 1 16]
                                      [--tiles 1 2 4 8] [--skip-dense]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch
from timing import timeit  # benchmarks/timing.py

from handlib.camera import intrinsics
from handlib.open_hand import load_asset
from handlib.raster import render_rgb
from handlib.render import soft_silhouette, soft_silhouette_dense

DENSE_LIMIT = 4.5e9  # bytes: "about 4 GB", and keeps the 128 px fwd+bwd target configuration


def bench_mesh():
    """OpenHand placed 0.4 m ahead, palm to the camera: (V, 3) vertices, (F, 3) faces, name."""
    a = load_asset()
    v = torch.tensor(a["v_template"], dtype=torch.float32)
    v = (v - v.mean(0)) @ torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T  # palm (−y) → camera
    return v + torch.tensor([0.0, 0.0, 0.4]), torch.tensor(a["faces"].astype(np.int64)), "OpenHand"


def batch_of(v, B, seed=0):
    """B slightly moved copies, so that batch elements are not identical."""
    g = torch.Generator().manual_seed(seed)
    return v[None] + (torch.rand(B, 1, 3, generator=g) - 0.5) * torch.tensor([0.02, 0.02, 0.05])


def one(impl: str, size: int, B: int, backward: bool) -> dict:
    """Run one configuration in this process and return its timings and peak RSS."""
    v, f, _ = bench_mesh()
    verts = batch_of(v, B)
    K = intrinsics(size, (size - 1) / 2, (size - 1) / 2)
    render = soft_silhouette if impl == "culled" else soft_silhouette_dense
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def step():
        x = verts.clone().requires_grad_(backward)
        A = render(x, f, K, (size, size))
        if backward:
            A.sum().backward()
    med, best = timeit(step)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(median_ms=med * 1e3, min_ms=best * 1e3, peak_mb=peak / 2**20,
                delta_mb=(peak - base_rss) / 2**20)


def dense_bytes(size, B, F, backward):
    """Footprint of the dense path: ~8 (forward) or ~40 (autograd) float32 (B, H·W, F) arrays (measured)."""
    return B * size * size * F * 4 * (40 if backward else 8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--skip-dense", action="store_true", help="time only the culled renderer")
    ap.add_argument("--one", nargs=4, metavar=("IMPL", "SIZE", "B", "BACKWARD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        impl, size, B, bwd = args.one
        print(json.dumps(one(impl, int(size), int(B), bwd == "1")))
        return

    v, f, name = bench_mesh()
    print(f"mesh: {name}, V={len(v)}, F={len(f)}; torch {torch.__version__}, {args.threads} threads")
    rows = []
    for size in args.sizes:
        for B in args.batches:
            for bwd in (False, True):
                res = {}
                for impl in ("culled", "dense"):
                    too_big = dense_bytes(size, B, len(f), bwd) > DENSE_LIMIT
                    if impl == "dense" and (args.skip_dense or too_big):
                        res[impl] = None
                        continue
                    out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--one",
                                          impl, str(size), str(B), str(int(bwd))],
                                         capture_output=True, text=True, check=True)
                    res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((size, B, "fwd+bwd" if bwd else "fwd", res))
                print_row(*rows[-1])

    # tile size of the culling (RenderConfig.tile_size), in this process
    v1 = batch_of(v, 1)
    for T in args.tiles:
        K = intrinsics(128, 63.5, 63.5)

        def step(T=T, K=K):
            x = v1.clone().requires_grad_(True)
            soft_silhouette(x, f, K, 128, tile_size=T).sum().backward()
        med, best = timeit(step)
        print(f"tile_size {T}: 128 px, batch 1, fwd+bwd {med * 1e3:.2f} ms (min {best * 1e3:.2f})")

    # RGB rasteriser throughput (data synthesis, Sec. 3.5)
    for size in (128, 224):
        B = 16
        verts = batch_of(v, B)
        cols = torch.rand(B, len(v), 3)
        K = intrinsics(size, (size - 1) / 2, (size - 1) / 2)
        med, _ = timeit(lambda verts=verts, K=K, size=size, cols=cols: render_rgb(verts, f, K, size,
                                                                                  vert_colors=cols))
        print(f"render_rgb {size} px, batch {B}: {med * 1e3:.1f} ms per batch = {B / med:.0f} images/s")


HEADER = False


def print_row(size, B, mode, res):
    global HEADER
    if not HEADER:
        print(f"{'size':>5} {'B':>3} {'mode':>8} | {'culled ms (min)':>16} {'peak MB':>8} "
              f"| {'dense ms (min)':>16} {'peak MB':>8} | {'time c/d':>8} {'mem c/d':>8}")
        HEADER = True
    c, d = res["culled"], res["dense"]
    line = f"{size:>5} {B:>3} {mode:>8} | {c['median_ms']:8.2f} ({c['min_ms']:6.2f}) {c['peak_mb']:8.0f} | "
    if d is None:
        line += f"{'skipped':>25} | {'':>8} {'':>8}"
    else:
        line += (f"{d['median_ms']:8.1f} ({d['min_ms']:6.1f}) {d['peak_mb']:8.0f} | "
                 f"{c['median_ms'] / d['median_ms']:8.4f} {c['peak_mb'] / d['peak_mb']:8.3f}")
    print(line, flush=True)


if __name__ == "__main__":
    main()
