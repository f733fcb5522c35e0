"""LBS speed: handlib.hand_model.lbs against smplx.lbs.lbs on the same arrays, in one process.

Prints forward and forward+backward times at batch 1, 64 and 1024 and the ratio smplx / handlib
(> 1 means handlib is faster), after checking that both give the same vertices and joints.
Targets (issue #2): ≥ 2× at batch 1 and ≥ 1.5× at batch 1024, forward+backward.

    python benchmarks/bench_hand_model.py [--model openhand|mano-shaped] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from smplx.lbs import lbs as smplx_lbs

from handlib.fixtures import random_mano_arrays
from handlib.hand_model import lbs
from handlib.open_hand import load_asset
from handlib.skeleton import MANO_PARENTS


def arrays_for(name: str, dtype) -> dict:
    a = load_asset() if name == "openhand" else random_mano_arrays()
    V = a["v_template"].shape[0]
    posedirs = a["posedirs"] if a["posedirs"].ndim == 2 else a["posedirs"].reshape(V * 3, -1).T
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
    return dict(v_template=t(a["v_template"]), shapedirs=t(a["shapedirs"]), posedirs=t(posedirs),
                J_regressor=t(a["J_regressor"]), parents=torch.tensor(MANO_PARENTS),
                lbs_weights=t(a["weights"]))


def timed(fn, m, betas, pose, backward: bool, reps: int) -> float:
    def step():
        b = betas.detach().requires_grad_(backward)
        p = pose.detach().requires_grad_(backward)
        v, j = fn(b, p, **m)
        if backward:
            (v.sum() + j.sum()).backward()

    for _ in range(max(2, reps // 10)):
        step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="openhand", choices=["openhand", "mano-shaped"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = arrays_for(args.model, torch.float32)
    m64 = arrays_for(args.model, torch.float64)
    g = torch.Generator().manual_seed(0)
    print(f"model: {args.model}, V={m['v_template'].shape[0]}, threads={args.threads}, "
          f"torch {torch.__version__}")
    # outputs equal (float64, identical arrays)
    b64, p64 = torch.randn(8, 10, generator=g, dtype=torch.float64), torch.randn(8, 48, generator=g,
                                                                                  dtype=torch.float64)
    (v1, j1), (v2, j2) = lbs(b64, p64, **m64), smplx_lbs(b64, p64, **m64)
    err = max((v1 - v2).abs().max().item(), (j1 - j2).abs().max().item())
    print(f"max |handlib − smplx| (float64): {err:.2e}")
    print(f"{'batch':>6} {'pass':>8} {'handlib ms':>11} {'smplx ms':>10} {'speed-up':>9}")
    for B in (1, 64, 1024):
        betas = torch.randn(B, 10, generator=g)
        pose = torch.randn(B, 48, generator=g) * 0.5
        reps = {1: 200, 64: 40, 1024: 6}[B]
        for backward in (False, True):
            ours, ref = [], []
            for _ in range(args.rounds):  # interleave to share any machine noise
                ours.append(timed(lbs, m, betas, pose, backward, reps))
                ref.append(timed(smplx_lbs, m, betas, pose, backward, reps))
            o, r = statistics.median(ours) * 1e3, statistics.median(ref) * 1e3
            print(f"{B:>6} {'fwd+bwd' if backward else 'fwd':>8} {o:>11.3f} {r:>10.3f} {r / o:>8.2f}×")


if __name__ == "__main__":
    main()
