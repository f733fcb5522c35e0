"""The trainer: a short run, bit-exact resume, skipped non-finite steps, DDP (gloo, 2 processes)."""
import csv
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import handlib.train as T
from handlib.augment import AugmentConfig
from handlib.config import profile
from handlib.model import ModelConfig
from handlib.train import StepSampler, TrainConfig, load_checkpoint, load_model, train


def _cfg(out, **kw):
    base = TrainConfig.from_profile(profile("ci"), out=str(out), steps=4, batch_size=4, num_samples=12,
                                    render_size=96, workers=0, log_every=1, ckpt_every=2, eval_samples=0,
                                    warmup=1, evidence_fraction=0.25)
    return dataclasses.replace(base, **kw)


def _mcfg():
    return ModelConfig.from_profile(profile("ci"))


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_step_sampler_is_a_function_of_seed_and_step():
    s = StepSampler(10, 4, seed=1, start=0, stop=5)
    batches = list(s)
    assert batches == list(StepSampler(10, 4, seed=1, start=0, stop=5))
    assert list(StepSampler(10, 4, seed=1, start=3, stop=5)) == batches[3:]  # resume mid-way
    draws = [d for b in batches for _, d in b]
    assert draws == list(range(20))  # each draw has its own id (seeds its augmentation)
    first_epoch = sorted(i for b in batches for i, d in b if d < 10)
    assert first_epoch == list(range(10))  # an epoch visits every index once
    shards = [StepSampler(10, 4, 1, 0, 5, rank=r, world=2).batch(2) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(s.batch(2))
    with pytest.raises(ValueError, match="divisible"):
        StepSampler(10, 5, 0, 0, 1, world=2)


def test_short_run_writes_checkpoint_metrics_and_eval(tmp_path, capsys):
    cfg = _cfg(tmp_path / "run", eval_samples=4)
    res = train(cfg, _mcfg())
    assert res["step"] == 4 and res["skipped"] == 0
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [r["stage"] for r in rows] == ["evidence", "joint", "joint", "joint"]
    assert rows[0]["articulation"] == "" and float(rows[-1]["articulation"]) > 0
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # weights_only=True
    assert state["step"] == 4 and state["train_config"]["steps"] == 4
    model = load_model(tmp_path / "run" / "checkpoint.pt")
    assert not model.training
    assert 0.0 <= res["eval"]["auc_20_50"] <= 1.0 and res["eval"]["num_samples"] == 4
    assert (tmp_path / "run" / "eval.json").is_file() and any((tmp_path / "run" / "tb").iterdir())
    assert "wrote" in capsys.readouterr().out


def test_resume_is_bit_exact(tmp_path):
    # Sec. 3.5's augmentation from the joint stage on: the checkpoint at step 2 holds samples made
    # from step 2's predictions that step 3 mixes in, so the resumed run needs them
    aug = AugmentConfig(warmup_epochs=0.0, mix_fraction=0.5)
    train(_cfg(tmp_path / "a", augment=aug), _mcfg(), log=lambda *a: None)
    train(_cfg(tmp_path / "b", stop_after=2, augment=aug), _mcfg(), log=lambda *a: None)  # "interrupted"
    assert len(load_checkpoint(tmp_path / "b" / "checkpoint.pt")["augment_buffer"]["data"]["image"]) > 0
    train(_cfg(tmp_path / "b", augment=aug), resume=True, log=lambda *a: None)
    ra, rb = _rows(tmp_path / "a" / "metrics.csv"), _rows(tmp_path / "b" / "metrics.csv")
    assert [int(r["augmented"]) for r in ra] == [0, 0, 2, 2]  # step 2 makes the first, step 3 mixes them
    keys = ["step", "stage", "lr", "total", "augmented", *T.L.TERMS]
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]
    sa = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    sb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_nonfinite_step_is_skipped_and_counted(tmp_path, monkeypatch):
    real = T.compute_terms
    calls = {"n": 0}

    def poisoned(*args, **kw):
        terms, extra = real(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["heatmap"] = terms["heatmap"] * float("nan")
        return terms, extra

    monkeypatch.setattr(T, "compute_terms", poisoned)
    seen = []
    cfg = _cfg(tmp_path / "nan", ckpt_every=1)
    res = train(cfg, _mcfg(), log=seen.append)
    assert res["skipped"] == 1 and any("non-finite heatmap" in s for s in seen)
    rows = _rows(tmp_path / "nan" / "metrics.csv")
    assert [int(r["skipped"]) for r in rows] == [0, 0, 1, 1]
    for r in rows:
        if r["step"] != "3":
            assert float(r["total"]) == float(r["total"])  # finite everywhere else
    # the parameters did not move on the skipped step: the state after step 3 equals that after step 2
    calls["n"] = 0
    train(_cfg(tmp_path / "s3", stop_after=3), _mcfg(), log=lambda *a: None)
    monkeypatch.setattr(T, "compute_terms", real)
    train(_cfg(tmp_path / "s2", stop_after=2), _mcfg(), log=lambda *a: None)
    s2 = load_checkpoint(tmp_path / "s2" / "checkpoint.pt")["model"]
    s3 = load_checkpoint(tmp_path / "s3" / "checkpoint.pt")["model"]
    # including BatchNorm's running statistics, which the poisoned forward pass had touched
    assert all(torch.equal(s2[k], s3[k]) for k in s2 if s2[k].is_floating_point())


def test_ddp_gloo_two_processes(tmp_path):
    env = dict(os.environ, HANDLIB_PROFILE="ci", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "handlib", "train", "--out", str(tmp_path / "ddp"), "--steps", "2", "--batch-size", "4",
           "--workers", "0", "--eval-samples", "0", "--log-every", "1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert (res.stdout + res.stderr).count("parameters identical on all 2 ranks") == 2
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["step"] == 2


def test_rendering_only_switched_on_samples_gives_the_same_silhouette_loss():
    from handlib.data import CropConfig, SyntheticHands, crop_to_hand
    from handlib.data.batch import collate
    from handlib.losses import LossWeights, laplacian_matrix
    from handlib.model import DHPE

    torch.manual_seed(0)
    model = DHPE(_mcfg())
    ds = SyntheticHands(seed=0, num=4, image_size=96)
    batch = collate([crop_to_hand(ds[i], CropConfig(size=64)) for i in range(4)])
    batch["has_mask"] = torch.tensor([True, False, True, False])  # Eq. 12 weight 0 for two samples
    w = LossWeights(constant_shape_weight=True)
    lap = laplacian_matrix(model.hand_model.faces, model.hand_model.num_verts)
    full = model(batch["image"], batch["K"], render=True)
    t_full, _ = T.compute_terms(model, full, batch, w, "joint", None, lap)
    part = model(batch["image"], batch["K"], render=False)
    t_part, extra = T.compute_terms(model, part, batch, w, "joint", None, lap)
    assert extra["shape_on"] == 0.5
    assert torch.allclose(t_full["silhouette"], t_part["silhouette"], rtol=1e-5)
    g_full = torch.autograd.grad(t_full["silhouette"], full.reg.code[-1])[0]
    g_part = torch.autograd.grad(t_part["silhouette"], part.reg.code[-1])[0]
    assert torch.allclose(g_full, g_part, rtol=1e-4, atol=1e-8) and g_part[1].abs().sum() == 0


def test_mesh_term_is_the_true_meshs_root_relative_error_and_trains_the_rotation():
    from handlib.data import CropConfig, SyntheticHands, crop_to_hand
    from handlib.data.batch import collate
    from handlib.losses import LossWeights, laplacian_matrix, mesh_loss
    from handlib.model import DHPE

    torch.manual_seed(0)
    model = DHPE(_mcfg())
    ds = SyntheticHands(seed=0, num=3, image_size=96)
    crop = CropConfig(size=64, rotation=30.0)
    batch = collate([crop_to_hand(ds[i], crop, np.random.default_rng(i)) for i in range(3)])
    true = model.hand_model.from_h(batch["h"])  # the crop's h (turned with it) is its 3D labels' mesh
    assert torch.allclose(true.joints, batch["kp3d"], atol=1e-5)
    batch["has_h"] = torch.tensor([True, False, True])
    lap = laplacian_matrix(model.hand_model.faces, model.hand_model.num_verts)
    out = model(batch["image"], batch["K"], render=False)
    terms, _ = T.compute_terms(model, out, batch, LossWeights(mesh=1.0), "joint", None, lap)
    expect = sum(mesh_loss(v[[0, 2]], j[[0, 2], 0], true.verts[[0, 2]], true.joints[[0, 2], 0])
                 for v, j in zip(out.reg.verts, out.reg.joints))
    assert torch.allclose(terms["mesh"], expect)
    # the term reaches the global rotation of every iteration's code, and only the samples with h
    g = torch.autograd.grad(terms["mesh"], out.reg.code[1])[0]
    assert g[[0, 2], :4].abs().sum() > 0 and g[1].abs().sum() == 0
    assert "mesh" not in T.compute_terms(model, out, batch, LossWeights(), "joint", None, lap)[0]  # weight 0
    del batch["h"], batch["has_h"]  # data without meshes (RHD, STB): no term
    assert "mesh" not in T.compute_terms(model, out, batch, LossWeights(mesh=1.0), "joint", None, lap)[0]


def test_export_keeps_weights_only_and_half_precision_loads_into_float32(tmp_path):
    import json

    train(_cfg(tmp_path / "run", steps=2), _mcfg(), log=lambda *a: None)
    src = tmp_path / "run" / "checkpoint.pt"
    full = T.export_checkpoint(src, tmp_path / "full.pt", command="test")
    half = T.export_checkpoint(src, tmp_path / "half.pt", half=True, command="test")
    info = json.loads((tmp_path / "half.json").read_text())
    assert info["weights_dtype"] == "float16" and info["command"] == "test" and info["step"] == 2
    assert half.stat().st_size < 0.6 * full.stat().st_size < 0.6 * src.stat().st_size
    assert "optimizer" not in load_checkpoint(full)
    a, b = load_model(full), load_model(half)
    assert all(p.dtype == torch.float32 for p in b.parameters())
    x = torch.rand(2, 3, 64, 64)
    K = torch.tensor([[80.0, 0, 31.5], [0, 80.0, 31.5], [0, 0, 1]]).expand(2, 3, 3)
    with torch.no_grad():
        ja, jb = a(x, K, render=False).joints, b(x, K, render=False).joints
    assert 0 < (ja - jb).abs().max() < 1e-3  # float16 rounding of the weights: ≤ 1 mm here
