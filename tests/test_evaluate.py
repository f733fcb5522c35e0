"""evaluate_model and `python -m handlib eval`: keys, refinement scores, errors."""
import json

import pytest
import torch

from handlib import cli
from handlib.config import profile
from handlib.evaluate import dataset_for_eval, evaluate_model
from handlib.metrics import evaluate_3d
from handlib.model import DHPE, ModelConfig
from handlib.refine import RefineConfig
from handlib.train import TrainConfig, save_checkpoint


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DHPE(ModelConfig.from_profile(profile("ci"))).eval()


def test_scores_match_metrics_and_refinement_keys(model):
    data = dataset_for_eval("synthetic", 64, seed=1, num=6)
    res = evaluate_model(model, data, batch_size=4, refine=RefineConfig(iterations=3))
    assert res["num_samples"] == 6
    for key in ("auc_20_50", "mpjpe_mm", "pa_mpjpe_mm", "mean_px", "mask_iou"):
        assert key in res and key + "_refined" in res
    assert res["pa_mpjpe_mm"] <= res["mpjpe_mm"] + 1e-6
    # the same numbers from the metrics module directly
    from handlib.data.batch import collate

    batch = collate([data[i] for i in range(6)])
    with torch.no_grad():
        out = model(batch["image"], batch["K"], render=False)
    ref = evaluate_3d(out.joints, batch["kp3d"], batch["valid"], mode="scale")
    assert res["auc_20_50"] == pytest.approx(ref["auc"], abs=1e-9)
    assert res["mean_mm"] == pytest.approx(ref["mean_mm"], rel=1e-5)


def test_dataset_errors():
    with pytest.raises(ValueError, match="dataset"):
        dataset_for_eval("nope", 64)
    with pytest.raises(ValueError, match="--root"):
        dataset_for_eval("rhd", 64)


def test_eval_cli_writes_json(tmp_path, model, monkeypatch, capsys):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(tmp_path / "c.pt", model, opt, sched, 0, TrainConfig(), 0)
    rc = cli.main(["eval", "--checkpoint", str(tmp_path / "c.pt"), "--num", "4", "--refine-steps", "2",
                   "--json", str(tmp_path / "e.json")])
    assert rc == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert {"auc_20_50", "mpjpe_mm", "pa_mpjpe_mm", "auc_20_50_refined", "mpjpe_mm_refined",
            "pa_mpjpe_mm_refined"} <= set(res)
    assert "AUC 20–50 mm" in capsys.readouterr().out
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
