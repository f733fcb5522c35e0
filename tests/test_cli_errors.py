"""Bad input at the command line: exit code 2 and one line naming the flag, never a traceback.

Every command (demo, train, eval, predict, ablate, eval-real, and data_scripts/make_synthetic.py)
is driven through a table of bad inputs; the checks are the same for every row. Nothing here
trains or scores: each row must fail before any work starts.
"""
import dataclasses
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from handlib import cli
from handlib.config import profile
from handlib.data.common import DataError, MissingData
from handlib.data.synthetic import SyntheticConfig, SyntheticFolder, write_split
from handlib.model import DHPE, ModelConfig
from handlib.train import TrainConfig, load_checkpoint, load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class Evil:
    """Unpickling this creates a file: proof that a loader ran code from the checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """The bad (and a few good) inputs, by name → path."""
    d = tmp_path_factory.mktemp("bad")
    model = DHPE(ModelConfig.from_profile(profile("ci"))).eval()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(d / "good.pt", model, opt, sched, 0, TrainConfig(), 0)
    (d / "truncated.pt").write_bytes((d / "good.pt").read_bytes()[:1000])
    (d / "empty.pt").write_bytes(b"")
    (d / "text.txt").write_text("not a checkpoint, not an image\n")
    torch.save({"hello": torch.zeros(3)}, d / "wrong_kind.pt")  # a valid torch file of another kind
    torch.save({"format": "handlib-dhpe/1", "x": Evil(d / "marker")}, d / "evil.pt")
    state = torch.load(d / "good.pt", weights_only=True)
    state["model"] = {k: v[..., :1] if v.ndim else v for k, v in state["model"].items()}
    torch.save(state, d / "wrong_shapes.pt")  # the right format, weights of another network
    cv2.imwrite(str(d / "hand.png"), np.full((64, 48, 3), 128, np.uint8))  # 48 wide, 64 high
    (d / "empty_dir").mkdir()
    (d / "corrupt_manifest").mkdir()
    (d / "corrupt_manifest" / "train.npz").write_bytes(b"PK\x03\x04 truncated zip")
    write_split(d / "train_only", 0, 2, "train", SyntheticConfig(image_size=64), progress=False,
                log=lambda *a: None)
    (d / "ablation_wrong.json").write_text('{"variants": [1, 2]}')
    (d / "out_dir").mkdir()
    (d / "out_dir" / "checkpoint.pt").write_bytes((d / "good.pt").read_bytes()[:1000])
    return {p.name: p for p in d.iterdir()} | {"missing": d / "nope.pt", "missing.png": d / "nope.png"}


# (command line with {name} placeholders for the files above, the flag the one line must name)
BAD = [
    # demo
    ("demo --checkpoint {truncated.pt}", "--checkpoint"),
    ("demo --checkpoint {missing}", "--checkpoint"),
    ("demo --checkpoint {empty_dir}", "--checkpoint"),
    ("demo --ablation {missing}", "--ablation"),
    ("demo --ablation {text.txt}", "--ablation"),
    ("demo --ablation {ablation_wrong.json}", "--ablation"),
    ("demo --out {text.txt}", "--out"),
    # train
    ("train --data {empty_dir}", "--data"),
    ("train --data {text.txt}", "--data"),
    ("train --data {missing}", "--data"),
    ("train --data {corrupt_manifest}", "--data"),
    ("train --data {train_only}", "--data"),  # no val split for the score at the end
    ("train --out {empty_dir} --resume", "--resume"),
    ("train --out {out_dir} --resume", "--resume"),  # a truncated checkpoint.pt
    ("train --steps -1", "--steps"),
    ("train --set nope=1", "--set nope"),  # no such field
    ("train --set augment.nope=1", "--set augment.nope"),
    ("train --set lr.x=1", "--set lr.x"),  # lr has no fields
    ("train --set augment.enabled=1", "--set augment.enabled"),  # an int where a bool is expected
    ("train --set lr", "--set lr"),  # no value
    ("train --set augment.warmup_epochs=-1", "--set augment.warmup_epochs"),  # the config's own check
    ("train --set model.regressor.rotation=euler", "--set model.regressor.rotation"),  # its own check
    ("train --set model.nope=1", "--set model.nope"),
    ("train --out {out_dir} --resume --set model.regressor.start=upright", "--set model.regressor.start"),
    ("train --steps 0", "--steps"),
    ("train --batch-size 0", "--batch-size"),
    ("train --lr 0", "--lr"),
    ("train --lr nan", "--lr"),
    ("train --seed -3", "--seed"),
    ("train --workers -1", "--workers"),
    ("train --steps ten", "--steps"),
    # eval
    ("eval --checkpoint {truncated.pt}", "--checkpoint"),
    ("eval --checkpoint {empty.pt}", "--checkpoint"),
    ("eval --checkpoint {text.txt}", "--checkpoint"),
    ("eval --checkpoint {wrong_kind.pt}", "--checkpoint"),
    ("eval --checkpoint {wrong_shapes.pt}", "--checkpoint"),
    ("eval --checkpoint {evil.pt}", "--checkpoint"),
    ("eval --checkpoint {missing}", "--checkpoint"),
    ("eval", "--checkpoint"),
    ("eval --checkpoint {good.pt} --num 0", "--num"),
    ("eval --checkpoint {good.pt} --refine-steps -1", "--refine-steps"),
    ("eval --checkpoint {good.pt} --batch-size 0", "--batch-size"),
    ("eval --checkpoint {good.pt} --dataset nope", "--dataset"),
    ("eval --checkpoint {good.pt} --dataset rhd", "--root"),
    ("eval --checkpoint {good.pt} --dataset rhd --root {empty_dir}", "--root"),
    ("eval --checkpoint {good.pt} --dataset freihand --root {text.txt}", "--root"),
    ("eval --checkpoint {good.pt} --dataset rhd --root {empty_dir} --split nope", "--split"),
    ("eval --checkpoint {good.pt} --split nope", "--split"),
    ("eval --checkpoint {good.pt} --json {empty_dir}", "--json"),
    # predict
    ("predict {missing.png}", "image"),
    ("predict {text.txt}", "image"),
    ("predict {empty.pt}", "image"),
    ("predict {empty_dir}", "image"),
    ("predict {hand.png} --box 1,2,3", "--box"),
    ("predict {hand.png} --box=0,0,10,-4", "--box"),
    ("predict {hand.png} --box=-1,0,10,10", "--box"),
    ("predict {hand.png} --box 10,10,40,40", "--box"),  # past the 48 px wide image
    ("predict {hand.png} --box a,b,c,d", "--box"),
    ("predict {hand.png} --focal -5", "--focal"),
    ("predict {hand.png} --focal 0", "--focal"),
    ("predict {hand.png} --focal inf", "--focal"),
    ("predict {hand.png} --refine-steps -1", "--refine-steps"),
    ("predict {hand.png} --left --right", "--right"),
    ("predict {hand.png} --checkpoint {truncated.pt}", "--checkpoint"),
    ("predict {hand.png} --checkpoint {wrong_kind.pt}", "--checkpoint"),
    ("predict {hand.png} --out {text.txt}", "--out"),
    ("predict {hand.png} --evidence magic", "--evidence"),
    # ablate
    ("ablate --variants full,nope", "--variants"),
    ("ablate --variants ,", "--variants"),
    ("ablate --num 0", "--num"),
    ("ablate --steps 0", "--steps"),
    ("ablate --num-samples 0", "--num-samples"),
    ("ablate --refine-steps -2", "--refine-steps"),
    ("ablate --out {text.txt}", "--out"),
    # eval-real
    ("eval-real --root {empty_dir} --no-pretrained --checkpoint {good.pt}", "--root"),
    ("eval-real --root {text.txt} --no-pretrained --checkpoint {good.pt}", "--root"),
    ("eval-real --root {missing} --no-pretrained --checkpoint {good.pt}", "--root"),
    ("eval-real --root {empty_dir} --checkpoint {truncated.pt}", "--checkpoint"),
    ("eval-real --root {empty_dir} --refine-steps -1", "--refine-steps"),
    ("eval-real --checkpoint {good.pt}", "--root"),
    # no command at all, an unknown one
    ("", "command"),
    ("fly", "command"),
]


def _argv(line: str, files: dict) -> list[str]:
    return [re.sub(r"\{(.+?)\}", lambda m: str(files[m[1]]), w) for w in line.split()]


def _check_one_line(rc: int, out: str, err: str, flag: str) -> str:
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    line = lines[0]
    assert line.startswith("error: ") and flag in line, line
    for text in ("Traceback", "weights_only=False", "Exception"):
        assert text not in out + err, (text, out + err)
    assert out == "", out  # nothing ran
    return line


@pytest.fixture
def ci(monkeypatch):
    monkeypatch.setenv("HANDLIB_PROFILE", "ci")
    monkeypatch.delenv("HANDLIB_CHECKPOINT", raising=False)


@pytest.mark.parametrize("line,flag", BAD, ids=[b[0].replace(" ", "_") for b in BAD])
def test_bad_input_is_one_line_naming_the_flag(f, line, flag, ci, capsys):
    rc = cli.main(_argv(line, f))
    cap = capsys.readouterr()
    _check_one_line(rc, cap.out, cap.err, flag)
    assert not f["evil.pt"].with_name("marker").exists()  # no code from a checkpoint ever ran


def test_messages_say_what_was_expected(f, ci, capsys):
    """The reason, not just the flag: one look at a few lines."""
    expect = [
        ("eval --checkpoint {truncated.pt}", "truncated"),
        ("eval --checkpoint {wrong_kind.pt}", "not a handlib DHPE checkpoint"),
        ("eval --checkpoint {evil.pt}", "Python objects"),
        ("eval --checkpoint {wrong_shapes.pt}", "weights do not fit"),
        ("train --data {empty_dir}", "make_synthetic.py"),
        ("train --data {train_only}", "--eval-samples 0"),
        ("predict {text.txt}", "image /"),
        ("predict {text.txt}", "unreadable image"),
        ("predict {hand.png} --box 10,10,40,40", "48×64"),
        ("predict {hand.png} --focal -5", "--focal -5: expected a positive focal length"),
        ("train --steps -1", "--steps -1: expected a whole number ≥ 1"),
        ("demo --ablation {ablation_wrong.json}", "not an ablation.json"),
    ]
    for line, text in expect:
        rc = cli.main(_argv(line, f))
        cap = capsys.readouterr()
        assert text in _check_one_line(rc, cap.out, cap.err, "error: "), (line, cap.err)


def test_the_environment_checkpoint_is_named(f, ci, monkeypatch, capsys):
    monkeypatch.setenv("HANDLIB_CHECKPOINT", str(f["truncated.pt"]))
    rc = cli.main(["predict", str(f["hand.png"]), "--out", str(f["empty_dir"])])
    line = _check_one_line(rc, *capsys.readouterr(), "$HANDLIB_CHECKPOINT=")
    assert "truncated" in line and not any(f["empty_dir"].iterdir())
    monkeypatch.setenv("HANDLIB_PROFILE", "laptop")
    _check_one_line(cli.main(["eval", "--checkpoint", str(f["good.pt"])]), *capsys.readouterr(),
                    "HANDLIB_PROFILE")


def test_loaders_raise_the_project_error(f):
    """The depth where it happens: loaders raise DataError (MissingData for absent files)."""
    for name in ("truncated.pt", "empty.pt", "text.txt", "wrong_kind.pt", "evil.pt", "wrong_shapes.pt"):
        with pytest.raises(DataError, match=name.replace(".", r"\.")) as info:
            load_model(f[name])
        assert info.value.path == f[name] and "weights_only=False" not in str(info.value)
    with pytest.raises(MissingData):  # also a FileNotFoundError, as before
        load_checkpoint(f["missing"])
    assert issubclass(MissingData, FileNotFoundError) and issubclass(DataError, ValueError)
    with pytest.raises(MissingData, match="no manifest train.npz"):
        SyntheticFolder(f["empty_dir"], "train")
    with pytest.raises(DataError, match="unreadable manifest"):
        SyntheticFolder(f["corrupt_manifest"], "train")
    assert len(SyntheticFolder(f["train_only"], "train")) == 2  # the good one still opens
    assert not f["evil.pt"].with_name("marker").exists()


def _make_synthetic():
    path = ROOT / "data_scripts" / "make_synthetic.py"
    spec = importlib.util.spec_from_file_location("make_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("line,flag", [("--out {text.txt}", "--out"), ("--out {empty_dir} --num 0", "--num"),
                                       ("--out {empty_dir} --workers 0", "--workers"),
                                       ("--out {empty_dir} --split nope", "--split"), ("", "--out")])
def test_make_synthetic_bad_input(f, line, flag, ci, capsys):
    rc = _make_synthetic()(_argv(line, f))
    _check_one_line(rc, *capsys.readouterr(), flag)


def test_make_synthetic_other_config_in_the_folder(f, ci, capsys):
    rc = _make_synthetic()(["--out", str(f["train_only"]), "--num", "2", "--size", "32", "--no-progress"])
    assert "another seed or config" in _check_one_line(rc, *capsys.readouterr(), "--out")


def test_a_real_process_prints_one_line(f):
    """Outside pytest's capture too: no warning or traceback reaches stderr."""
    env = {**os.environ, "HANDLIB_PROFILE": "ci"}
    env.pop("HANDLIB_CHECKPOINT", None)
    res = subprocess.run([sys.executable, "-m", "handlib", "eval", "--checkpoint", str(f["truncated.pt"])],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    line = _check_one_line(res.returncode, res.stdout, res.stderr, "--checkpoint")
    assert str(f["truncated.pt"]) in line


# ----------------------------------------------------------------------------------------------
# Progress on long commands (handlib.progress): bars only on a terminal, one line per stage
# ----------------------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_only_on_a_terminal_outside_notebooks(monkeypatch, capsys):
    from handlib import progress

    items = range(3)
    assert progress.bar(items, "x") is items  # pytest's stderr is no terminal: no bar, no output
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    shown = progress.bar(items, "scoring", total=3)
    assert shown is not items and list(shown) == [0, 1, 2] and "scoring" in term.getvalue()
    assert progress.bar(items, "x", enabled=False) is items  # a caller can always turn it off
    kernel = type("ZMQInteractiveShell", (), {})()  # what IPython.get_ipython() is in Jupyter
    monkeypatch.setitem(sys.modules, "IPython", type(sys)("IPython"))
    sys.modules["IPython"].get_ipython = lambda: kernel
    assert progress.bar(items, "x") is items and not progress.interactive()
    assert capsys.readouterr().err == ""


def test_a_stage_is_one_line_off_a_terminal_and_two_on_one(monkeypatch, capsys):
    from handlib.progress import stage

    with stage("[4/5] scores") as t:
        pass
    assert capsys.readouterr().out.splitlines() == [f"[4/5] scores: done in {t['seconds']:.1f} s"]
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with stage("[4/5] scores"):
        pass
    assert capsys.readouterr().out.splitlines()[0] == "[4/5] scores …"


def test_train_set_reaches_any_field_of_the_config(ci):
    """`train --set`: dotted paths into the nested configs, Python literals, the field's own type."""
    args = cli.build_parser().parse_args(
        ["train", "--out", "runs/x", "--steps", "7", "--set", "augment.enabled=False",
         "--set", "finetune=['top', 'all']", "--set", "weights.feature=0", "--set", "lr=0.002",
         "--set", "data=some/folder"])
    cfg = cli.train_config(args)
    base = TrainConfig.from_profile(out="runs/x", steps=7)
    assert cfg.augment.enabled is False and base.augment.enabled is True
    assert cfg.finetune == ("top", "all") and cfg.weights.feature == 0.0 and cfg.lr == 0.002
    assert cfg.data == "some/folder" and cfg.steps == 7  # a bare word is a string
    assert cfg.warmup == 1  # --steps 7 shortens the warm-up to max(1, 7 // 10) ...
    args = cli.build_parser().parse_args(["train", "--steps", "7", "--set", "warmup=3"])
    assert cli.train_config(args).warmup == 3  # ... unless --set says otherwise
    # nothing else moved
    assert dataclasses.replace(cfg, augment=base.augment, finetune=base.finetune, weights=base.weights,
                               lr=base.lr, data=None, warmup=base.warmup, progress=base.progress) == base
    assert cli.model_config(args) is None  # no model.… item: the trainer takes the profile's network


def test_train_set_model_reaches_the_network_config(ci):
    """`train --set model.PATH=VALUE`: a field of ModelConfig; the TrainConfig is untouched."""
    from handlib.model import ModelConfig

    args = cli.build_parser().parse_args(
        ["train", "--out", "runs/x", "--set", "model.regressor.rotation=6d", "--set", "lr=0.002",
         "--set", "model.regressor.start=upright", "--set", "model.crop_margin=2"])
    mcfg, base = cli.model_config(args), ModelConfig.from_profile()
    assert mcfg.regressor.rotation == "6d" and mcfg.regressor.start == "upright"
    assert mcfg.crop_margin == 2.0 and base.regressor.rotation == "quaternion"
    assert dataclasses.replace(mcfg, regressor=base.regressor, crop_margin=base.crop_margin) == base
    assert cli.train_config(args) == TrainConfig.from_profile(out="runs/x", lr=0.002, progress=False)
