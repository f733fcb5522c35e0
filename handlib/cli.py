"""Command line: ``python -m handlib <command>``.

Commands grow with the project; today:

* ``demo``: the whole pipeline (``handlib.demo``): OpenHand rebuilt and posed, a small synthetic
  test set, a network (found or briefly trained), scores with and without Eq. 13, and
  ``--out``/report.html (default ``runs/demo``); ``--hand-only`` stops after the hand model.
* ``train``: train DHPE (``handlib.train``) with the budget of ``$HANDLIB_PROFILE``; writes
  ``--out``/checkpoint.pt, metrics.csv, tb/ (TensorBoard) and eval.json. Under
  ``torchrun --nproc_per_node N -m handlib train ...`` it trains with DDP.
* ``eval``: score a checkpoint on held-out synthetic data or a real dataset (``handlib.evaluate``),
  with and without Eq. 13's test-time refinement; ``--json`` writes the scores.
* ``ablate``: train and score the ablation variants of Fig. 5 (``handlib.ablate``).
* ``predict``: one image → mesh.obj/.ply, joints.json, overlay.png under ``--out``
  (``handlib.predict``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def _eval(args) -> int:
    from .config import profile
    from .evaluate import dataset_for_eval, evaluate_model, write_report
    from .refine import RefineConfig
    from .train import load_model

    if not args.checkpoint.is_file():
        print(f"error: --checkpoint {args.checkpoint}: no such file "
              "(train one with `python -m handlib train`)", file=sys.stderr)
        return 2
    prof = profile()
    model = load_model(args.checkpoint, map_location=prof.device)
    data = dataset_for_eval(args.dataset, model.cfg.image_size, args.root, args.split, args.seed, args.num)
    steps = prof.refine_steps if args.refine_steps is None else args.refine_steps
    rcfg = (RefineConfig.fast if args.fast_refine else RefineConfig)(iterations=steps)
    res = evaluate_model(model, data, batch_size=args.batch_size, device=prof.device,
                         refine=rcfg if steps else None)
    res["refine_config"] = dataclasses.asdict(rcfg) if steps else None
    res.update(checkpoint=str(args.checkpoint), dataset=args.dataset, seed=args.seed)
    line = (f"{args.dataset} ({res['num_samples']} samples): AUC 20–50 mm {res['auc_20_50']:.3f}, "
            f"MPJPE {res['mpjpe_mm']:.1f} mm, PA-MPJPE {res['pa_mpjpe_mm']:.1f} mm")
    if steps:
        line += (f"; after {steps} refinement steps: AUC {res['auc_20_50_refined']:.3f}, "
                 f"MPJPE {res['mpjpe_mm_refined']:.1f} mm, PA-MPJPE {res['pa_mpjpe_mm_refined']:.1f} mm")
    print(line)
    if args.json:
        write_report(res, args.json)
        print(f"wrote {args.json}")
    return 0


def _eval_real(args) -> int:
    from .predict import resolve_checkpoint
    from .real_eval import RealEvalConfig, evaluate_real, real_table, write_json
    from .train import load_model

    try:
        ckpt = resolve_checkpoint(args.checkpoint)
        model = load_model(ckpt)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    detector = None
    if not args.no_pretrained:
        from .evidence_pretrained import PretrainedEvidence

        try:
            detector = PretrainedEvidence()
        except (ImportError, FileNotFoundError) as err:
            print(f"error: {err} (or pass --no-pretrained)", file=sys.stderr)
            return 2
    try:
        res = evaluate_real(model, args.root, detector, RealEvalConfig(refine_steps=args.refine_steps))
    except FileNotFoundError as err:
        print(f"error: --root {args.root}: {err}", file=sys.stderr)
        return 2
    finally:
        if detector is not None:
            detector.close()
    res["checkpoint"] = str(ckpt)
    print(real_table(res))
    if args.json:
        print(f"wrote {write_json(res, args.json)}")
    return 0


def _ablate(args) -> int:
    from .ablate import VARIANTS, AblationConfig, ablation_table, run_ablations
    from .config import profile

    variants = tuple(VARIANTS) if args.variants is None else \
        tuple(v.strip() for v in args.variants.split(","))
    try:
        cfg = AblationConfig(variants=variants, steps=args.steps, num_samples=args.num_samples,
                             eval_num=args.num, refine_steps=args.refine_steps, seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"profile {profile().name}: {len(variants)} variants → {args.out}")
    result = run_ablations(args.out, cfg)
    print(ablation_table(result))
    return 0


def _box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / max(aw * ah + bw * bh - inter, 1e-9)


def _detect(args, image, box=None):
    """The best MediaPipe detection for ``--evidence`` mediapipe/auto (None for network, or auto
    without mediapipe or its model, or no hand found in auto). With a ``--box``, the detection
    that overlaps it most (IoU > 0.1)."""
    if args.evidence == "network":
        return None
    from .evidence_pretrained import PretrainedEvidence, default_model_path

    if args.evidence == "auto":
        try:
            import mediapipe  # noqa: F401
        except ImportError:
            return None
        if not default_model_path().is_file():
            return None
    with PretrainedEvidence() as ev:
        dets = ev.detect(image)
    if box is not None:
        dets = sorted((d for d in dets if _box_iou(d.box, box) > 0.1), key=lambda d: -_box_iou(d.box, box))
    if not dets:
        if args.evidence == "mediapipe":
            raise FileNotFoundError("no hand detected" + (" in --box" if box is not None else "")
                                    + "; pass --box x,y,w,h and --evidence network")
        print("MediaPipe found no hand; using the network's own 2D evidence")
        return None
    return dets[0]


def _predict(args) -> int:
    from .config import profile
    from .data.common import DataError, read_image
    from .predict import (
        FOCAL_FACTOR,
        check_box,
        clip_box,
        parse_box,
        predict,
        resolve_checkpoint,
        save_prediction,
    )
    from .train import load_model

    try:
        image = read_image(args.image)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    H, W = image.shape[:2]
    box = None
    if args.box is not None:
        try:
            box = check_box(parse_box(args.box), W, H)
        except ValueError as err:
            print(f"error: --box {args.box!r}: {err}", file=sys.stderr)
            return 2
    if args.focal is not None and not args.focal > 0:
        print(f"error: --focal {args.focal}: expected a positive focal length in pixels", file=sys.stderr)
        return 2
    if args.refine_steps is not None and args.refine_steps < 0:
        print(f"error: --refine-steps {args.refine_steps}: expected ≥ 0", file=sys.stderr)
        return 2
    try:
        ckpt = resolve_checkpoint(args.checkpoint)
        prof = profile()
        model = load_model(ckpt, map_location=prof.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    steps = prof.refine_steps if args.refine_steps is None else args.refine_steps
    try:
        det = _detect(args, image, box)
    except (ImportError, FileNotFoundError) as err:
        print(f"error: --evidence {args.evidence}: {err}", file=sys.stderr)
        return 2
    left = args.left
    keypoints = None
    if det is not None:
        box = box if box is not None else check_box(clip_box(det.box, W, H), W, H)
        left = left or (det.side == "left" and not args.right)
        keypoints = det.kp2d
        print(f"MediaPipe: {det.side} hand (score {det.score:.2f}); Eq. 13 fits its 2D keypoints")
        if not steps:
            print("note: --refine-steps 0 uses the network alone; MediaPipe only gave the box and side")
    pred = predict(model, image, box=box, focal=args.focal, left=left, refine_steps=steps,
                   keypoints=keypoints, evidence="mediapipe")
    files = save_prediction(pred, args.out, image, image_path=str(args.image), checkpoint=str(ckpt))
    x, y, w, h = pred.box
    print(f"{args.image} ({W}×{H}): {pred.side} hand, box {x:g},{y:g},{w:g},{h:g}"
          + (" (default: the central square)" if pred.box_assumed else "")
          + f", focal {pred.focal:g} px" + (f" (assumed: {FOCAL_FACTOR} × the larger side, ≈45° FOV; "
                                            "pass --focal)" if pred.focal_assumed else ""))
    X, Y, Z = pred.joints[0]
    print(f"wrist at ({X:.3f}, {Y:.3f}, {Z:.3f}) m in the camera; "
          + (f"refined with {steps} Eq. 13 steps" if steps else "network estimate (no refinement)"))
    print(f"wrote {', '.join(files)} to {args.out}/")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="the whole pipeline → runs/demo/report.html (hand model, data, network, "
                                    "scores, refinement, ablations)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--no-build", action="store_true", help="skip rebuilding the asset from code")
    p.add_argument("--hand-only", action="store_true", help="only the hand model (pictures and meshes)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="network to use (default: $HANDLIB_CHECKPOINT, runs/cpu/checkpoint.pt, "
                        "else a brief run)")
    p.add_argument("--ablation", type=Path, default=None, help="an ablation.json to include in the report")
    t = sub.add_parser("train", help="train DHPE (sizes from $HANDLIB_PROFILE)")
    t.add_argument("--out", type=Path, default=Path("runs/train"))
    t.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    t.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the profile's)")
    t.add_argument("--stop-after", type=int, default=None, help="stop after this many steps of this run")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--data", type=Path, default=None, help="folder from data_scripts/make_synthetic.py")
    t.add_argument("--workers", type=int, default=None)
    t.add_argument("--eval-samples", type=int, default=None, help="held-out val samples scored at the end")
    t.add_argument("--ckpt-every", type=int, default=None)
    t.add_argument("--log-every", type=int, default=None)
    e = sub.add_parser("eval", help="score a checkpoint (3D PCK AUC 20–50 mm, MPJPE, PA-MPJPE)")
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--dataset", default="synthetic", help="synthetic | rhd | stb | freihand | dexter_object")
    e.add_argument("--root", type=Path, default=None, help="dataset folder (real datasets)")
    e.add_argument("--split", default=None)
    e.add_argument("--seed", type=int, default=0, help="synthetic: the dataset seed")
    e.add_argument("--num", type=int, default=500, help="number of samples")
    e.add_argument("--refine-steps", type=int, default=None,
                   help="also score after Eq. 13 refinement (default: the profile's refine_steps; 0: off)")
    e.add_argument("--fast-refine", action="store_true",
                   help="RefineConfig.fast(): term (b) every 2nd step, half-resolution R(h) (approximate)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--json", type=Path, default=None, help="write the scores here")
    q = sub.add_parser("predict", help="3D hand mesh and keypoints from one image (writes --out)")
    q.add_argument("image", type=Path, help="a photo (any format OpenCV reads)")
    q.add_argument("--box", default=None,
                   help="hand box x,y,w,h in pixels (default: the image's central square)")
    q.add_argument("--checkpoint", type=Path, default=None, help="default: $HANDLIB_CHECKPOINT")
    q.add_argument("--focal", type=float, default=None,
                   help="focal length in pixels (default, assumed: 1.2 × the larger side, ≈45° FOV)")
    q.add_argument("--left", action="store_true", help="a left hand (mirrored for the right-hand network)")
    q.add_argument("--right", action="store_true", help="a right hand (overrides MediaPipe's label)")
    q.add_argument("--evidence", choices=("auto", "mediapipe", "network"), default="auto",
                   help="2D evidence for Eq. 13: MediaPipe's pretrained landmarks (box, side, keypoints; "
                        "needs handlib[real] and data_scripts/get_pretrained.py) or the network's own; "
                        "auto: MediaPipe when available")
    q.add_argument("--refine-steps", type=int, default=None,
                   help="Eq. 13 refinement steps (default: the profile's refine_steps; 0: off)")
    q.add_argument("--out", type=Path, default=Path("runs/predict"),
                   help="folder for mesh.obj, mesh.ply, joints.json, overlay.png (default: runs/predict)")
    a = sub.add_parser("ablate", help="train and score the ablation variants (Fig. 5 d–e); "
                                      "writes a table and plot")
    a.add_argument("--out", type=Path, default=Path("runs/ablate"))
    a.add_argument("--variants", default=None, help="comma-separated subset (default: all)")
    a.add_argument("--steps", type=int, default=None,
                   help="training steps per variant (default: the profile's)")
    a.add_argument("--num-samples", type=int, default=None, help="synthetic training samples per variant")
    a.add_argument("--num", type=int, default=100, help="held-out test crops scored per variant")
    a.add_argument("--refine-steps", type=int, default=None,
                   help="Eq. 13 iterations at test time (default: the profile's refine_steps)")
    a.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("eval-real", help="score real annotated frames (mmpose test-data formats): "
                                         "MediaPipe + Eq. 13 vs the network alone")
    r.add_argument("--root", type=Path, required=True, help="e.g. ../shared/realdata/mmpose_testdata")
    r.add_argument("--checkpoint", type=Path, default=None,
                   help="default: $HANDLIB_CHECKPOINT or the shipped one")
    r.add_argument("--refine-steps", type=int, default=50)
    r.add_argument("--no-pretrained", action="store_true", help="score the network alone")
    r.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "eval-real":
        return _eval_real(args)
    if args.command == "ablate":
        return _ablate(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "demo":
        from .demo import DemoConfig, hand_model_demo, run_demo

        if args.hand_only:
            hand_model_demo(args.out, build=not args.no_build)
            return 0
        from .config import profile

        cfg = DemoConfig.from_profile(profile().name, build=not args.no_build,
                                      checkpoint=None if args.checkpoint is None else str(args.checkpoint),
                                      ablation=None if args.ablation is None else str(args.ablation))
        try:
            run_demo(args.out, cfg)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elif args.command == "train":
        from .config import profile
        from .train import TrainConfig, train

        over = {k: v for k, v in (("steps", args.steps), ("stop_after", args.stop_after),
                                  ("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed),
                                  ("data", None if args.data is None else str(args.data)),
                                  ("workers", args.workers), ("eval_samples", args.eval_samples),
                                  ("ckpt_every", args.ckpt_every), ("log_every", args.log_every))
                if v is not None}
        cfg = TrainConfig.from_profile(out=str(args.out), **over)
        if args.steps is not None and "warmup" not in over:
            cfg = dataclasses.replace(cfg, warmup=min(cfg.warmup, max(1, args.steps // 10)))
        print(f"profile {profile().name}: {cfg.steps} steps, batch {cfg.batch_size}, out {args.out}")
        train(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
