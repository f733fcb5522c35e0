"""The ablation command (Fig. 5 d–e) and the demo pipeline, at toy sizes in the ci profile."""
import dataclasses
import json
import math

import pytest

from handlib.ablate import VARIANTS, AblationConfig, ablation_table, run_ablations, variant_configs
from handlib.config import profile
from handlib.demo import DemoConfig, run_demo
from handlib.model import ModelConfig
from handlib.report import numbers_html, table_html, write_html
from handlib.train import TrainConfig


def test_each_variant_changes_exactly_what_it_names():
    base, mcfg = TrainConfig.from_profile(profile("ci")), ModelConfig.from_profile(profile("ci"))
    changed = {}
    for name in VARIANTS:
        t, m = variant_configs(name, base, mcfg)
        diff = [f"weights.{f.name}" for f in dataclasses.fields(base.weights)
                if getattr(t.weights, f.name) != getattr(base.weights, f.name)]
        diff += [f"augment.{f.name}" for f in dataclasses.fields(base.augment)
                 if getattr(t.augment, f.name) != getattr(base.augment, f.name)]
        diff += [f"regressor.{f.name}" for f in dataclasses.fields(mcfg.regressor)
                 if getattr(m.regressor, f.name) != getattr(mcfg.regressor, f.name)]
        changed[name] = sorted(diff)
    assert changed == {"full": [], "no_refinement": [], "no_augmentation": ["augment.enabled"],
                       "no_2d_losses": ["weights.feature", "weights.heatmap"],
                       "no_refiner": ["regressor.use_refiner"],
                       "constant_shape_weight": ["weights.constant_shape_weight"],
                       "pose_only": ["weights.silhouette"]}
    with pytest.raises(ValueError, match="unknown"):
        AblationConfig(variants=("full", "no_such_thing"))


def test_ablation_trains_scores_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    cfg = AblationConfig(variants=("full", "no_refinement", "no_refiner"), steps=4, num_samples=16,
                         eval_num=4, refine_steps=2, workers=0)
    res = run_ablations(tmp_path, cfg, log=lambda *a: None)
    v = res["variants"]
    assert list(v) == ["full", "no_refinement", "no_refiner"]
    # "no_refinement" is the full network scored without Eq. 13
    assert v["no_refinement"]["network"] == "full" and not v["no_refinement"]["refined"]
    assert v["no_refinement"]["auc_20_50"] == v["full"]["auc_20_50_net"]
    assert v["full"]["refined"] and v["full"]["auc_20_50"] != v["full"]["auc_20_50_net"] or \
        v["full"]["mean_mm"] != v["full"]["mean_mm_net"]
    for r in v.values():
        assert 0.0 <= r["auc_20_50"] <= 1.0 and len(r["pck"]) == len(r["thresholds_mm"]) == 31
        assert 0.0 <= r["shape_on"] <= 1.0  # Eq. 12's share, read back from the run's metrics.csv
    assert not (tmp_path / "no_refinement").exists()  # no network of its own
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["variants"]["no_refiner"]["description"] == VARIANTS["no_refiner"][0]
    table = (tmp_path / "ablation.md").read_text()
    assert table.count("\n") == 2 + 3 and VARIANTS["no_refiner"][0] in table
    assert (tmp_path / "pck.png").stat().st_size > 5000
    again = run_ablations(tmp_path, cfg, log=lambda *a: None)  # checkpoints reached the steps: reused
    assert math.isnan(again["variants"]["full"]["train_seconds"])
    assert again["variants"]["full"]["auc_20_50"] == v["full"]["auc_20_50"]
    assert ablation_table(again).splitlines()[0].startswith("| variant")


def test_report_helpers_escape_and_format(tmp_path):
    t = table_html([{"a": "<b>", "x": 0.12345, "y": float("nan"), "z": 123.456}])
    assert "&lt;b&gt;" in t and "0.123" in t and "–" in t and "123.5" in t
    assert "<b>0.500</b>" in numbers_html({"AUC": 0.5})
    page = write_html(tmp_path / "r" / "p.html", "T & t", [t]).read_text()
    assert page.startswith("<!DOCTYPE html>") and "T &amp; t" in page


def test_demo_pipeline_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HANDLIB_CHECKPOINT", raising=False)
    cfg = DemoConfig(data_num=6, eval_num=6, train_steps=4, examples=2, meshes=1, refine_steps=2, build=False)
    s = run_demo(tmp_path / "demo", cfg)
    out = tmp_path / "demo"
    # the budget first, then one timed line per stage (no terminal here: no bars, nothing on stderr)
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert lines[0] == s["budget"] and "6 of 6 synthetic test crops" in lines[0] and "2 steps" in lines[0]
    timed = [ln for ln in lines if ": done in " in ln]
    assert [ln.split(":")[0][:5] for ln in timed] == [f"[{k}/5]" for k in range(1, 6)]
    assert list(s["stage_seconds"]) == ["hand_model", "network", "test_set", "scores", "report"]
    # the five stage times and the total are each rounded to 0.1 s: the sum may exceed it by 6 × 0.05 s
    assert s["stage_seconds"]["scores"] > 0 and sum(s["stage_seconds"].values()) <= s["seconds"] + 0.3 + 1e-9
    assert "it/s" not in printed.err and "%|" not in printed.err
    assert s["checkpoint"] == str(out / "train" / "checkpoint.pt") and "brief" in s["checkpoint_source"]
    page = (out / "report.html").read_text()
    for text in ("Headline numbers", "Ablations", "handlib ablate", "Examples", "plotly", "Training",
                 "budget (ci profile)"):
        assert text in page, text
    assert page.count("data:image/png;base64,") >= 3  # PCK, examples, losses
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_samples"] == 6 and 0 <= ev["auc_20_50_refined"] <= 1 and ev["refine_iterations"] == 2
    assert (out / "data" / "test.npz").is_file() and (out / "hand.html").is_file()
    # with an ablation given, the report carries its table
    abl = {"profile": "ci", "eval_set": "x", "variants": {"full": {
        "description": "everything", "refined": True, "pck": [0.5] * 31,
        "thresholds_mm": list(range(20, 51)), "auc_20_50": 0.5}}}
    (tmp_path / "abl.json").write_text(json.dumps(abl))
    s2 = run_demo(out, dataclasses.replace(cfg, ablation=str(tmp_path / "abl.json")))
    page = (out / "report.html").read_text()
    assert s2["ablation"].endswith("abl.json") and "everything" in page and "Training" in page
