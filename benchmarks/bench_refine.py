"""Eq. 13 test-time refinement speed: 50 iterations at the ``cpu`` profile size (128 px).

Times :func:`handlib.refine.refine` (default :class:`RefineConfig`: 50 Adam steps, all three terms)
for one image and for a batch of 8 synthetic 128 px crops, on ``DHPE`` with the ``cpu`` profile's
architecture (ResNet-18 at half width) and random weights. The cost does not depend on the weights
except through where the mesh lands, so two starts are timed:

* ``gt``: the crop's ground-truth h, a hand spanning ~2/3 of the crop as a trained network's
  estimate would (the realistic case);
* ``net``: the random network's own h (≈ h_0, a hand at the reference depth, partly off the crop).

Prints the median and the minimum of ``--runs`` timed calls (after one warm-up), the process CPU
time of the median call (on a busy machine the minimum and the CPU time are the better guide to an
idle one), and the ratio of seconds per image to the issue's target of 1.0 s. With ``--parts`` it
also times one step's pieces alone, forward + backward as in ``refine``: LBS + projection + f_ref,
the soft silhouette R(h), and the backbone on x ⊙ R(h) (contiguous and channels-last).

With ``--fast`` it times :meth:`RefineConfig.fast` instead (term (b) every 2nd step, R(h) at half
resolution, cull threshold 1e-3: approximate), and ``--compare`` prints both configurations'
rows one after the other with the ratio default / fast of the best times.

    python benchmarks/bench_refine.py [--threads 1] [--runs 3] [--batches 1 8] [--parts]
                                      [--cull-threshold 1e-3] [--no-channels-last] [--no-fold-bn]
                                      [--fast | --compare]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch

from handlib.backbone import fold_batchnorm
from handlib.camera import project
from handlib.config import profile
from handlib.data import CropConfig, SyntheticHands, crop_to_hand
from handlib.data.batch import collate
from handlib.model import DHPE, ModelConfig, mask_image
from handlib.refine import RefineConfig, _silhouette, refine, refined_target
from handlib.regressor import code_to_h, h_to_code

TARGET_S = 1.0  # issue: 50 iterations for one 128 px image within 1 s on the CPU


def setup(B: int):
    """The cpu-profile model (eval, random weights), a batch of B synthetic crops and its outputs."""
    torch.manual_seed(0)
    model = DHPE(ModelConfig.from_profile(profile("cpu"))).eval()
    S = model.cfg.image_size
    ds = SyntheticHands(seed=0, num=B, image_size=2 * S, split="test")
    batch = collate([crop_to_hand(s, CropConfig(size=S)) for s in ds.__getitems__(list(range(B)))])
    with torch.no_grad():
        out = model(batch["image"], batch["K"], render=False)
    return model, batch, out


def timeit(fn, runs: int) -> tuple[float, float, float]:
    """Median and minimum wall seconds, and CPU seconds of the median call, after one warm-up."""
    fn()  # warm-up: allocator, thread pool, the cached Laplacian form
    rows = []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        rows.append((time.perf_counter() - t0, time.process_time() - c0))
    rows.sort()
    return rows[len(rows) // 2][0], rows[0][0], rows[len(rows) // 2][1]


def parts(model, batch, out, cfg: RefineConfig, reps: int = 15) -> dict:
    """Minimum milliseconds of one step's pieces, each forward + backward as in ``refine``."""
    x, K, S = batch["image"], batch["K"], model.cfg.image_size
    code0 = h_to_code(batch["h"], K, S)
    F, j2d = out.evidence.features, out.evidence.j2d
    verts = model.hand_model.from_h(batch["h"]).verts
    rc = dataclasses.replace(model.renderer.config,
                             cull_threshold=cfg.cull_threshold or model.renderer.config.cull_threshold)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    cl = copy.deepcopy(model.evidence.backbone).to(memory_format=torch.channels_last)
    folded = fold_batchnorm(model.evidence.backbone).to(memory_format=torch.channels_last)

    def lbs():
        c = code0.clone().requires_grad_(True)
        mesh = model.hand_model.from_h(code_to_h(c, K, S))
        with torch.no_grad():
            t = refined_target(model, c, F, mesh.joints, j2d)
        (project(mesh.joints, K) - t).pow(2).sum().backward()

    def render(scale=1.0):
        def f():
            v = verts.clone().requires_grad_(True)
            _silhouette(model, v, K, dataclasses.replace(cfg, silhouette_scale=scale)).sum().backward()
        return f

    def backbone(net, fmt):
        def f():
            m = torch.full(x.shape[:1] + x.shape[2:], 0.5, requires_grad=True)
            net(mask_image(x, m).contiguous(memory_format=fmt)).pooled.sum().backward()
        return f

    pieces = {"LBS + project + f_ref": lbs, f"R(h), cull {rc.cull_threshold:g}": render(),
              f"R(h) half res, cull {rc.cull_threshold:g}": render(0.5),
              "backbone, contiguous": backbone(model.evidence.backbone, torch.contiguous_format),
              "backbone, channels-last": backbone(cl, torch.channels_last),
              "backbone, BN folded, ch.-last": backbone(folded, torch.channels_last)}
    res = {name: 1e3 * timeit(fn, reps)[1] for name, fn in pieces.items()}
    for p, f in zip(model.parameters(), flags):
        p.requires_grad_(f)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--runs", type=int, default=3, help="timed calls per configuration")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--iterations", type=int, default=RefineConfig().iterations)
    ap.add_argument("--cull-threshold", type=float, default=None, help="RefineConfig.cull_threshold")
    ap.add_argument("--no-channels-last", action="store_true", help="RefineConfig.channels_last=False")
    ap.add_argument("--parts", action="store_true", help="also time one step's pieces")
    ap.add_argument("--no-fold-bn", action="store_true", help="RefineConfig.fold_bn=False")
    ap.add_argument("--fast", action="store_true", help="time RefineConfig.fast() (approximate)")
    ap.add_argument("--compare", action="store_true", help="time the default and the fast preset")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = RefineConfig(iterations=args.iterations, cull_threshold=args.cull_threshold,
                        channels_last=not args.no_channels_last, fold_bn=not args.no_fold_bn)
    fast = RefineConfig.fast(iterations=args.iterations, channels_last=not args.no_channels_last,
                             fold_bn=not args.no_fold_bn)
    configs = {"default": base, "fast": fast} if args.compare else {"fast" if args.fast else "default":
                                                                    fast if args.fast else base}
    for name, cfg in configs.items():
        print(f"{name}: {cfg.iterations} iterations, {cfg.optimizer} lr {cfg.lr}, cull_threshold "
              f"{cfg.cull_threshold}, channels_last {cfg.channels_last}, fold_bn {cfg.fold_bn}, "
              f"feature_every {cfg.feature_every}, silhouette_scale {cfg.silhouette_scale}")
    print(f"cpu profile (128 px, resnet18_half), random weights; torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"{'config':>7} {'batch':>5} {'start':>5} {'median s':>9} {'min s':>7} {'cpu s':>7} "
          f"{'min s/image':>11} {'min ms/step':>11} {'÷ 1.0 s':>8}")
    for B in args.batches:
        model, batch, out = setup(B)
        x, K = batch["image"], batch["K"]
        for start in ("gt", "net"):
            o = dataclasses.replace(out, h=batch["h"]) if start == "gt" else out
            best_of = {}
            for name, cfg in configs.items():
                run = lambda o=o, m=model, x=x, K=K, c=cfg: refine(m, x, K, o, c)  # noqa: E731
                med, best, cpu = timeit(run, args.runs)
                best_of[name] = best
                print(f"{name:>7} {B:>5} {start:>5} {med:9.3f} {best:7.3f} {cpu:7.3f} {best / B:11.3f} "
                      f"{1e3 * best / max(1, cfg.iterations):11.1f} {best / B / TARGET_S:8.2f}", flush=True)
            if len(best_of) == 2:
                ratio = best_of["default"] / best_of["fast"]
                print(f"{'':>7} {B:>5} {start:>5} default / fast = {ratio:.2f}×")
        cfg = next(iter(configs.values()))
        if args.parts:
            for name, ms in parts(model, batch, out, cfg).items():
                print(f"      batch {B}, one step, {name:<24} fwd+bwd {ms:7.2f} ms (min)", flush=True)


if __name__ == "__main__":
    main()
