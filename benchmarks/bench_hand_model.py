"""LBS speed: handlib.hand_model.lbs against smplx.lbs.lbs on the same arrays, in one process.

Prints forward and forward+backward times at batch 1, 64 and 1024 and the ratio smplx / handlib
(> 1 means handlib is faster), after checking that both give the same vertices and joints. The two
are called alternately, call by call, and the median time per call is reported, so machine noise
hits both alike.
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


def compare(fns: dict, m, betas, pose, backward: bool, calls: int) -> dict:
    """Median seconds per call for each function, calling them alternately so they share noise."""
    def step(fn):
        b = betas.detach().requires_grad_(backward)
        p = pose.detach().requires_grad_(backward)
        v, j = fn(b, p, **m)
        if backward:
            (v.sum() + j.sum()).backward()

    items = list(fns.items())
    for _, fn in items * 3:  # warm-up
        step(fn)
    times = {name: [] for name in fns}
    for i in range(calls):
        for name, fn in (items if i % 2 == 0 else items[::-1]):
            t0 = time.perf_counter()
            step(fn)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="openhand", choices=["openhand", "mano-shaped"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--calls", type=float, default=1.0, help="scale the number of timed calls")
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
        calls = int({1: 600, 64: 80, 1024: 16}[B] * args.calls)
        for backward in (False, True):
            t = compare({"handlib": lbs, "smplx": smplx_lbs}, m, betas, pose, backward, calls)
            o, r = t["handlib"] * 1e3, t["smplx"] * 1e3
            print(f"{B:>6} {'fwd+bwd' if backward else 'fwd':>8} {o:>11.3f} {r:>10.3f} {r / o:>8.2f}×")
    if args.model == "openhand":
        # Model level: HandModel drops OpenHand's all-zero pose blend shapes (posedirs=None), which
        # smplx.lbs always multiplies. Same outputs; labelled separately because the arrays differ.
        skip = {**m, "posedirs": None}
        print("model level (handlib skips the all-zero posedirs, as HandModel does):")
        for B in (1, 64):
            betas = torch.randn(B, 10, generator=g)
            pose = torch.randn(B, 48, generator=g) * 0.5
            t = compare({"handlib": lambda b, p, **_: lbs(b, p, **skip), "smplx": smplx_lbs}, m, betas, pose,
                        True, int({1: 600, 64: 80}[B] * args.calls))
            o, r = t["handlib"] * 1e3, t["smplx"] * 1e3
            print(f"{B:>6} {'fwd+bwd':>8} {o:>11.3f} {r:>10.3f} {r / o:>8.2f}×")


if __name__ == "__main__":
    main()
