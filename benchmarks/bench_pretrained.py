"""MediaPipe's hand networks: handlib's torch modules against the TFLite runtime (ai-edge-litert), per image.

For the landmark network (224 px) and the palm detector (192 px): the runtime at batch 1 (and at
batch 32 after ``resize_tensor_input``), torch forward at batch 1 and 32 in NCHW and channels-last,
and torch forward+backward (a gradient for every weight) — with 1 and 2 threads, all in this one
process so that the ratios compare like with like. Target on a 2-core CPU: torch landmark forward at
batch 32 ≤ 3× the runtime's per-image time.

    python benchmarks/bench_pretrained.py [--threads 1 2] [--batches 1 32] [--budget 2.0] [--no-chunk]

Columns: the runtime's ms per image at this batch; torch forward (NCHW), forward channels-last,
forward+backward; torch/rt = torch forward / runtime at the same batch; best/rt = the faster torch
forward / the runtime at batch 1 (the target's ratio). The landmark net runs CPU batches 4 images at a
time (``HandLandmarkNet.cpu_chunk``; ``--no-chunk`` shows one piece).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from timing import timeit  # benchmarks/timing.py

from handlib.pretrained import LANDMARK_MEMBER, PALM_MEMBER, HandLandmarkNet, PalmDetector, read_task_member


def runtime_fn(member: str, size: int, B: int, threads: int):
    """A closure running the TFLite runtime on a (B, size, size, 3) batch (None if it cannot resize)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=read_task_member(None, member)[0], num_threads=threads)
    idx = it.get_input_details()[0]["index"]
    if B != 1:
        try:
            it.resize_tensor_input(idx, [B, size, size, 3])
        except Exception:  # noqa: BLE001 - a model that cannot be batched: report it as absent
            return None
    it.allocate_tensors()
    x = np.random.default_rng(0).random((B, size, size, 3), dtype=np.float32)

    def run():
        it.set_tensor(idx, x)
        it.invoke()
    return run


def outputs(model, x) -> list:
    """Every output tensor: the landmark net's four heads (and features), or the palm's decoded anchors."""
    if isinstance(model, PalmDetector):
        return list(model.decode(x))
    out = model(x)
    return [out.landmarks, out.presence, out.handedness, out.world]


def torch_fn(model, size: int, B: int, channels_last: bool, backward: bool):
    x = torch.rand(B, 3, size, size, generator=torch.Generator().manual_seed(0))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)

    def run():
        if backward:
            model.zero_grad(set_to_none=True)
            sum(o.sum() for o in outputs(model, x)).backward()
        else:
            with torch.inference_mode():
                outputs(model, x)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timing per configuration")
    ap.add_argument("--no-chunk", action="store_true", help="landmark batches in one piece (cpu_chunk=None)")
    args = ap.parse_args()
    landmark = HandLandmarkNet.from_task()
    if args.no_chunk:
        landmark.cpu_chunk = None
    models = {"landmark": (landmark, LANDMARK_MEMBER, 224),
              "palm": (PalmDetector.from_task(), PALM_MEMBER, 192)}
    print(f"torch {torch.__version__}; ms per image (median of ≥3 runs, batch time / B)")
    print(f"{'net':>8} {'thr':>3} {'B':>3} | {'runtime':>8} | {'torch':>8} {'ch-last':>8} {'fwd+bwd':>8} "
          f"| {'torch/rt':>8} {'best/rt':>7}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, (model, member, size) in models.items():
            rt1 = timeit(runtime_fn(member, size, 1, threads), args.budget)[0]
            for B in args.batches:
                rt_run = runtime_fn(member, size, B, threads) if B > 1 else None
                rt = timeit(rt_run, args.budget)[0] / B if rt_run else rt1
                res = [timeit(torch_fn(model, size, B, cl, bwd), args.budget)[0] / B
                       for cl, bwd in ((False, False), (True, False), (False, True))]
                best = min(res[:2])
                ms = " ".join(f"{r * 1e3:8.2f}" for r in res)
                ratios = f"{res[0] / rt:8.2f} {best / rt1:7.2f}"
                print(f"{name:>8} {threads:>3} {B:>3} | {rt * 1e3:8.2f} | {ms} | {ratios}", flush=True)


if __name__ == "__main__":
    main()
