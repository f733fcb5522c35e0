"""Where a network's synthetic 3D error is: the hand's orientation (README, "The orientation").

For each checkpoint, on ``--num`` crops of a synthetic seed (default: the unseen seed 20261206) it
prints the 3D AUC 20–50 mm (root and bone-scale alignment), PA-MPJPE, the global rotation error of
h (the angle between the predicted and the true R(q)), the rotation of the joints (the angle of
the Procrustes rotation between predicted and true joints, what Procrustes alignment forgives), and
the rotation error of h binned by how far the true hand is turned from the regressor's h_0 (the
quaternion's seam shows as growth toward 180°).

    HANDLIB_PROFILE=cpu python benchmarks/orientation.py handlib/assets/dhpe_cpu.pt runs/rot6d/checkpoint.pt

320 crops take ~30 s per checkpoint on 2 cores.
"""
from __future__ import annotations

import argparse

import torch


def angle_deg(R: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations → (B,) their angles in degrees (the norm of the axis-angle)."""
    from handlib.rotations import matrix_to_axis_angle

    return torch.rad2deg(matrix_to_axis_angle(R).norm(dim=-1))


def predict(path: str, seed: int, num: int, batch: int = 32):
    """The network's joints and h beside the truth (right-hand frame) on ``num`` crops of ``seed``."""
    from handlib.data.batch import collate
    from handlib.evaluate import dataset_for_eval
    from handlib.train import load_model

    model = load_model(path)  # renders: eval's rule (Profile.render_size_for), 256 px for the cpu network
    ds = dataset_for_eval("synthetic", model.cfg.image_size, seed=seed, num=num, crop=model.cfg.crop_config())
    out = {"P": [], "G": [], "hp": [], "ht": []}
    for i in range(0, num, batch):
        b = collate([ds[j] for j in range(i, min(num, i + batch))])
        with torch.no_grad():
            o = model(b["image"], b["K"], render=False)
        for key, value in (("P", o.joints), ("G", b["kp3d"]), ("hp", o.h), ("ht", b["h"])):
            out[key].append(value.double())
    K = torch.eye(3, dtype=torch.float64)[None]
    h0 = model.regressor.code_to_h(model.regressor.initial_code(1, torch.float64), K, model.cfg.image_size)
    return {k: torch.cat(v) for k, v in out.items()}, h0[0, :4]


def report(path: str, seed: int, num: int) -> None:
    from handlib import metrics
    from handlib.rotations import quaternion_to_matrix

    r, q0 = predict(path, seed, num)
    scale = metrics.evaluate_3d(r["P"], r["G"])
    pa = metrics.evaluate_3d(r["P"], r["G"], mode="procrustes")
    Rp, Rt = quaternion_to_matrix(r["hp"][:, :4]), quaternion_to_matrix(r["ht"][:, :4])
    err_h = angle_deg(Rp.transpose(1, 2) @ Rt)
    err_j = angle_deg(metrics.similarity_transform(r["P"], r["G"])[1])  # Procrustes' rotation
    from_start = angle_deg(quaternion_to_matrix(q0).T[None] @ Rt)
    print(f"{path} ({num} crops of seed {seed}): AUC 20–50 mm {scale['auc']:.3f}, PA-MPJPE "
          f"{pa['mean_mm']:.1f} mm, rotation of h {err_h.mean():.1f}° / {err_h.median():.1f}° "
          f"(mean / median), "
          f"of the joints {err_j.mean():.1f}° / {err_j.median():.1f}°")
    for lo in range(0, 180, 30):
        sel = (from_start >= lo) & (from_start < lo + 30)
        if sel.any():
            print(f"  true hand {lo:3d}–{lo + 30:3d}° from h_0: {int(sel.sum()):4d} crops, "
                  f"rotation of h {err_h[sel].mean():5.1f}° mean")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--seed", type=int, default=20261206, help="synthetic seed (default: never trained on)")
    ap.add_argument("--num", type=int, default=320)
    args = ap.parse_args()
    torch.set_num_threads(2)
    for path in args.checkpoints:
        report(path, args.seed, args.num)


if __name__ == "__main__":
    main()
