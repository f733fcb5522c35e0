"""The ablation command (Fig. 5 d–e) and the demo pipeline, at toy sizes in the ci profile."""
import dataclasses
import json
import math

import numpy as np
import pytest

from handlib import ablate
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
    # the cpu recipe trains without Sec. 3.5; the ablation's full model still has it, and only
    # no_augmentation turns it off
    cpu = TrainConfig.from_profile(profile("cpu"))
    assert not cpu.augment.enabled and base.augment.enabled
    # and the paper's Eq. 7: our mesh term is off in every variant, whatever the recipe's weight
    cpu = dataclasses.replace(cpu, weights=dataclasses.replace(cpu.weights, mesh=0.5))
    for name in VARIANTS:
        t, _ = variant_configs(name, cpu, ModelConfig.from_profile(profile("cpu")))
        assert t.augment.enabled == (name != "no_augmentation"), name
        assert t.weights.mesh == 0.0, name
        if name in ("full", "no_refinement", "no_refiner"):  # nothing else of the recipe changes
            assert dataclasses.replace(t, augment=cpu.augment, weights=cpu.weights) == cpu, name
            assert dataclasses.replace(t.weights, mesh=0.5) == cpu.weights, name
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


def test_ablation_over_seeds_pairs_every_variant_with_full(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    cfg = AblationConfig(variants=("full", "no_refinement", "pose_only"), steps=2, num_samples=8,
                         eval_num=4, refine_steps=1, workers=0, seed=3, seeds=2)
    res = run_ablations(tmp_path, cfg, log=lambda *a: None)
    v = res["variants"]
    # one folder per trained variant and seed; no_refinement scores the full network of each seed
    assert sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*/checkpoint.pt")) == \
        ["full/seed3", "full/seed4", "pose_only/seed3", "pose_only/seed4"]
    assert not (tmp_path / "no_refinement").exists() and res["seeds"] == [3, 4]
    assert v["no_refinement"]["auc_20_50_per_seed"] == v["full"]["auc_20_50_net_per_seed"]
    for r in v.values():  # the mean and std (ddof 1) are those of the per-seed values
        for k in [*ablate.KEYS, *(k + "_net" for k in ablate.KEYS), "shape_on"]:
            vals = r[k + "_per_seed"]
            assert len(vals) == 2 and r[k] == pytest.approx(np.mean(vals), nan_ok=True)
            assert r[k + "_std"] == pytest.approx(np.std(vals, ddof=1), nan_ok=True)
        assert len(r["pck"]) == len(r["pck_std"]) == 31 and np.isfinite(r["pck_std"]).all()
        crops = r["per_crop_mm_per_seed"]  # every keypoint is valid: per-crop means average to mean_mm
        assert [len(c) for c in crops] == [4, 4]
        assert np.mean(crops, axis=1) == pytest.approx(r["mean_mm_per_seed"])
    assert v["full"]["verdict"] == "reference" and "delta_auc" not in v["full"]
    for name in ("no_refinement", "pose_only"):
        r, f = v[name], v["full"]
        d = np.subtract(r["auc_20_50_per_seed"], f["auc_20_50_per_seed"])
        assert r["delta_auc_per_seed"] == pytest.approx(d) and r["delta_auc"] == pytest.approx(d.mean())
        assert r["delta_auc_std"] == pytest.approx(np.std(d, ddof=1))
        e = np.subtract(r["per_crop_mm_per_seed"], f["per_crop_mm_per_seed"]).ravel()
        lo, hi = r["delta_mm_ci95"]
        assert r["delta_crops"] == 8 and r["delta_mm"] == pytest.approx(e.mean()) and lo <= e.mean() <= hi
        assert r["spread_auc"] == pytest.approx(max(r["auc_20_50_std"], f["auc_20_50_std"]))
        assert r["verdict"] == ablate.verdict(r["delta_auc"], r["spread_auc"], 2)
    saved = ablate.load_ablation(tmp_path / "ablation.json")["variants"]
    assert saved["pose_only"]["verdict"] == v["pose_only"]["verdict"]
    assert (tmp_path / "ablation.md").read_text().count("\n") == 2 + 3
    lines = []
    again = run_ablations(tmp_path, cfg, log=lines.append)  # every checkpoint reached the steps: reused
    assert sum("reusing" in ln for ln in lines) == 4 and "training" not in " ".join(lines)
    assert all(math.isnan(r["train_seconds"]) for r in again["variants"].values())
    assert again["variants"]["pose_only"]["auc_20_50_per_seed"] == v["pose_only"]["auc_20_50_per_seed"]


def test_verdict_rule():
    verdict = ablate.verdict  # (mean ΔAUC, seed-to-seed spread, seeds)
    assert verdict(-0.05, 0.01, 3) == "reproduced"  # the variant is worse than full, beyond the spread
    assert verdict(+0.05, 0.01, 3) == "reversed"
    assert verdict(-0.005, 0.01, 3) == verdict(0.01, 0.01, 3) == verdict(0.0, 0.0, 2) == "within noise"
    assert verdict(-0.05, float("nan"), 1) == "one seed: no spread measured"
    assert verdict(float("nan"), 0.01, 3).startswith("not measured")
    with pytest.raises(ValueError, match="seeds"):
        AblationConfig(seeds=0)
    assert AblationConfig(seed=2, seeds=3).seed_list() == [2, 3, 4]
    assert AblationConfig(variants=("no_refinement", "pose_only")).networks() == ["full", "pose_only"]


def test_bootstrap_interval_is_deterministic():
    x = np.random.default_rng(1).normal(2.0, 1.0, 200)
    lo, hi = ablate.bootstrap_ci(x)
    assert (lo, hi) == ablate.bootstrap_ci(x) and lo < x.mean() < hi and hi - lo < 0.5
    assert ablate.bootstrap_ci([1.5] * 5) == (1.5, 1.5)
    assert all(math.isnan(b) for b in ablate.bootstrap_ci([]))


def _fake_run(auc, auc_net, crops, crops_net):
    """A :func:`ablate._score_all` entry without a network: only what the summary reads."""
    ev = {"auc_20_50_refined": auc, "auc_20_50": auc_net, "pck_refined": [auc] * 31, "pck": [auc_net] * 31,
          "thresholds_mm": list(np.linspace(20, 50, 31)), "per_sample_mm_refined": crops,
          "per_sample_mm": crops_net, "pa_mpjpe_mm_refined": 20.0, "mean_px_refined": 5.0}
    return {"eval": ev, "train_seconds": 1.0, "eval_seconds": 0.5, "shape_on": 0.25}


def _fake_study(seeds: int) -> dict:
    """Three seeds of AUCs chosen to give every verdict (full ≈ 0.50 ± 0.01 after Eq. 13)."""
    aucs = {"full": [0.50, 0.51, 0.49], "no_augmentation": [0.40, 0.41, 0.40],  # worse: reproduced
            "no_2d_losses": [0.60, 0.62, 0.61],  # better: reversed
            "pose_only": [0.505, 0.50, 0.495]}  # the same within the spread
    scored = {}
    for net, a in aucs.items():
        for s in range(seeds):
            crops = [100.0 - 100 * a[s], 110.0 - 100 * a[s]]  # a better AUC, smaller errors
            scored[net, s] = _fake_run(a[s], a[s] - 0.02, crops, [c + 3.0 for c in crops])
    cfg = AblationConfig(variants=("full", "no_refinement", *list(aucs)[1:]), seeds=seeds)
    return {"profile": "ci", "eval_set": "fake", "seeds": cfg.seed_list(),
            "variants": ablate._summarise(scored, cfg, steps=2)}


def test_summary_table_and_plot_cover_every_verdict():
    res = _fake_study(3)
    v = res["variants"]
    assert {n: r["verdict"] for n, r in v.items()} == {
        "full": "reference", "no_refinement": "reproduced", "no_augmentation": "reproduced",
        "no_2d_losses": "reversed", "pose_only": "within noise"}
    # no_refinement is Eq. 13's effect on the same networks: AUC −0.02, +3 mm on every crop
    assert v["no_refinement"]["delta_auc"] == pytest.approx(-0.02)
    assert v["no_refinement"]["delta_mm"] == pytest.approx(3.0) and v["no_refinement"]["delta_mm_ci95"] == \
        pytest.approx([3.0, 3.0])
    assert v["no_augmentation"]["delta_auc_per_seed"] == pytest.approx([-0.10, -0.10, -0.09])
    assert v["no_augmentation"]["delta_mm"] == pytest.approx(np.mean([10, 10, 10, 10, 9, 9]))
    assert v["pose_only"]["spread_auc"] == pytest.approx(0.01)  # full's std beats pose_only's 0.005
    json.dumps(res)  # plain floats and lists
    table = ablation_table(res).splitlines()
    assert len(table) == 2 + 5 and "3 seeds" in table[0]
    row = {ln.split("`")[1]: ln for ln in table[2:]}
    assert "0.500 ± 0.010" in row["full"] and "| — | — |" in row["full"]
    assert row["full"].endswith("| reference |")
    assert "-0.097 ± 0.006" in row["no_augmentation"] and "+9.7 [" in row["no_augmentation"]
    assert row["no_2d_losses"].endswith("| reversed |") and row["pose_only"].endswith("| within noise |")
    assert "| 25% |" in row["pose_only"]
    fig = ablate.plot_pck(res)
    assert len(fig.axes[0].collections) == 5  # a ± std band per variant
    one = _fake_study(1)  # one seed: no spread, no band, still a table
    verdicts = {r["verdict"] for n, r in one["variants"].items() if n != "full"}
    assert verdicts == {"one seed: no spread measured"}
    table1 = ablation_table(one)
    assert "0.500 |" in table1 and "0.500 ±" not in table1 and "1 seed)" in table1
    assert len(ablate.plot_pck(one).axes[0].collections) == 0
    old = {"profile": "ci", "eval_set": "x", "variants": {"full": {  # an ablation.json of before seeds
        "description": "everything", "refined": True, "pck": [0.5] * 31,
        "thresholds_mm": list(range(20, 51)), "auc_20_50": 0.5, "pa_mpjpe_mm": 9.0, "mean_px": 2.0}}}
    assert "| everything (`full`) | 0.500 | — | — | 9.0 | 2.0 |" in ablation_table(old)
    ablate.plot_pck(old)
    import matplotlib.pyplot as plt

    plt.close("all")


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
