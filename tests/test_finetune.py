"""Training DHPE on MediaPipe's pretrained network: the fine-tuning scopes of TrainConfig.finetune,
the parameter groups (no weight decay on pretrained weights), keypoints="landmarks" (no heat maps),
and the upright crops the model config asks for."""
import dataclasses

import numpy as np
import pytest
import torch

from handlib.backbone import build_backbone
from handlib.config import profile
from handlib.evidence_pretrained import default_model_path
from handlib.model import DHPE, ModelConfig
from handlib.skeleton import MIDDLE_MCP
from handlib.train import TrainConfig, build_data, load_checkpoint, param_groups, train

pytest.importorskip("tflite")
needs_task = pytest.mark.skipif(not default_model_path().is_file(),
                                reason=f"{default_model_path()} absent: run data_scripts/get_pretrained.py")

MP = ModelConfig(backbone="mediapipe", image_size=224, keypoints="landmarks", crop="upright", crop_margin=1.8)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """The whole module runs with one torch thread (conftest.one_torch_thread)."""


@needs_task
def test_mediapipe_scopes_are_nested_and_end_with_the_heads():
    bb = build_backbone("mediapipe")
    ids = {s: {id(p) for p in bb.scope_parameters(s)} for s in ("none", "heads", "top", "all")}
    assert ids["none"] == set() and ids["heads"] < ids["top"] < ids["all"]
    assert ids["all"] == {id(p) for p in bb.parameters()}
    # the heads read the pooled 1152-d feature; "top" adds the stride-32 blocks (most of the weights)
    sizes = {s: sum(p.numel() for p in bb.scope_parameters(s)) for s in ids}
    assert 1152 * 63 < sizes["heads"] < sizes["top"] < sizes["all"]
    assert sizes["top"] > 0.5 * sizes["all"]
    with pytest.raises(ValueError, match="scope"):
        bb.scope_parameters("middle")


def test_resnet_scopes():
    bb = build_backbone("resnet_tiny")
    assert {id(p) for p in bb.scope_parameters("top")} == {id(p) for p in bb.layer4.parameters()}
    assert bb.scope_parameters("heads") == []
    assert len(bb.scope_parameters("all")) == len(list(bb.parameters()))


def test_landmarks_need_the_mediapipe_backbone_and_old_configs_still_load():
    with pytest.raises(ValueError, match="landmarks"):
        ModelConfig(backbone="resnet_tiny", image_size=64, keypoints="landmarks")
    with pytest.raises(ValueError, match="crop"):
        ModelConfig(backbone="resnet_tiny", image_size=64, crop="tilted")
    old = dataclasses.asdict(ModelConfig.from_profile(profile("ci")))
    for k in ("keypoints", "crop", "crop_margin"):  # a checkpoint written before these fields
        del old[k]
    cfg = ModelConfig.from_dict(old)
    assert (cfg.keypoints, cfg.crop, cfg.crop_margin) == ("heatmap", "box", 1.5)


@needs_task
def test_param_groups_keep_pretrained_weights_out_of_weight_decay():
    model = DHPE(MP)
    cfg = TrainConfig(lr=1e-3, weight_decay=1e-4, pretrained_lr=0.1)  # 0.1: see that the factor applies
    new, pre = param_groups(model, cfg)
    assert (new["lr"], new["weight_decay"]) == (1e-3, 1e-4)
    assert pre["lr"] == pytest.approx(1e-4) and pre["weight_decay"] == 0.0
    assert {id(p) for p in pre["params"]} == {id(p) for p in model.evidence.backbone.parameters()}
    assert model.evidence.head is None  # j2D_0 is the network's own landmarks
    # a from-random backbone is one group with the rest
    groups = param_groups(DHPE(ModelConfig.from_profile(profile("ci"))), cfg)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4


@needs_task
def test_training_changes_only_the_weights_of_each_stages_scope(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"), steps=2, batch_size=2, num_samples=4, render_size=160,
                      workers=0, log_every=1, ckpt_every=2, eval_samples=0, warmup=1, evidence_fraction=0.5,
                      feature_fraction=0.5, finetune=("heads", "top"), progress=False,
                      augment=dataclasses.replace(TrainConfig().augment, enabled=False))
    torch.manual_seed(0)
    before = DHPE(MP).state_dict()
    train(dataclasses.replace(cfg, steps=1, evidence_fraction=1.0, out=str(tmp_path / "one")), MP,
          log=lambda *a: None)
    after_one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]
    train(cfg, MP, log=lambda *a: None)
    after_two = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    bb = build_backbone("mediapipe")
    names = {id(p): n for n, p in bb.named_parameters()}
    scope = {s: {"evidence.backbone." + names[id(p)] for p in bb.scope_parameters(s)}
             for s in ("heads", "top")}
    backbone_keys = [k for k in before if k.startswith("evidence.backbone.")]
    changed_one = {k for k in backbone_keys if not torch.equal(before[k], after_one[k])}
    changed_two = {k for k in backbone_keys if not torch.equal(after_one[k], after_two[k])}
    assert changed_one and changed_one <= scope["heads"]  # stage "evidence": the heads only
    assert changed_two - scope["heads"] and changed_two <= scope["top"]  # stage "joint": the top too
    # no Eq. 3 term without heat maps; Eq. 6's t = 0 term trains the landmarks
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rows[0]["heatmap"] == "" and float(rows[0]["refiner"]) > 0


@needs_task
def test_training_crops_follow_the_model_config():
    cfg = TrainConfig(num_samples=3, render_size=160, crop_jitter=(0.0, 0.0, 0.0))
    data = build_data(cfg, MP, jitter=False)
    s = data[(0, 0)]
    assert s["image"].shape == (224, 224, 3)
    d = s["kp2d"][MIDDLE_MCP] - s["kp2d"][0]
    assert d[1] < 0 and abs(d[0]) < 1e-3 * np.linalg.norm(d)  # upright
    box = build_data(cfg, ModelConfig.from_profile(profile("ci")), jitter=False)[(0, 0)]
    np.testing.assert_allclose(box["kp2d"][MIDDLE_MCP], [31.5, 31.5], atol=1e-3)  # Eq. 8: centred MCP


@needs_task
def test_a_frozen_backbone_trains_only_the_regressor(tmp_path):
    """finetune "none" with MediaPipe's own landmarks: an evidence stage would train nothing (a clear
    error, not autograd's), and without one the backbone stays MediaPipe's while f_reg learns."""
    cfg = TrainConfig(out=str(tmp_path / "run"), steps=1, batch_size=2, num_samples=4, render_size=160,
                      workers=0, log_every=1, ckpt_every=1, eval_samples=0, warmup=1, evidence_fraction=1.0,
                      finetune=("none", "none"), progress=False,
                      augment=dataclasses.replace(TrainConfig().augment, enabled=False))
    with pytest.raises(ValueError, match=r"finetune\[0\]='none'.*evidence_fraction=0"):
        train(cfg, MP, log=lambda *a: None)
    torch.manual_seed(0)
    before = DHPE(MP).state_dict()
    train(dataclasses.replace(cfg, evidence_fraction=0.0, out=str(tmp_path / "joint")), MP,
          log=lambda *a: None)
    after = load_checkpoint(tmp_path / "joint" / "checkpoint.pt")["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not {k for k in changed if k.startswith("evidence.")}  # MediaPipe's weights, untouched
    assert {k for k in changed if k.startswith("regressor.")}  # f_reg and f_ref learnt
