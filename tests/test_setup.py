"""The installed set-up: one headless OpenCV owns ``cv2``, and .ci/check_lock.py (the lock check that
.ci/run makes before `make test`) finds every difference between an environment and a lock."""

import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "check_lock.py"
LOCK = ROOT / "requirements.lock"

_spec = importlib.util.spec_from_file_location("check_lock", SCRIPT)
check_lock = sys.modules.setdefault("check_lock", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(check_lock)  # registered first: its dataclass looks its module up


def _top_level_names(dist: metadata.Distribution) -> set[str]:
    """Top-level importable names a distribution installs (top_level.txt and its RECORD)."""
    names = set((dist.read_text("top_level.txt") or "").split())
    for f in dist.files or ():
        first = f.parts[0]
        if len(f.parts) > 1 and not first.endswith((".dist-info", ".egg-info", ".data")) and first != "..":
            names.add(first)
        elif len(f.parts) == 1 and f.suffix in (".py", ".so"):
            names.add(f.name.split(".", 1)[0])
    return names


def test_exactly_one_headless_opencv_provides_cv2():
    providers = sorted({d.metadata["Name"] for d in metadata.distributions() if "cv2" in _top_level_names(d)})
    assert len(providers) == 1, f"distributions owning the cv2 module: {providers} (want exactly one)"
    (name,) = providers
    assert "headless" in name.lower(), f"cv2 comes from {name}, not a headless OpenCV"
    import cv2

    dist = metadata.distribution(name)
    owned = {str(f) for f in dist.files}
    module = Path(cv2.__file__).resolve().relative_to(Path(dist.locate_file("")).resolve())
    assert str(module) in owned, f"the imported cv2 ({cv2.__file__}) is not {name}'s"
    # what handlib and mediapipe's drawing_utils call is in the headless build
    used = ["imread", "imwrite", "imencode", "imdecode", "cvtColor", "GaussianBlur", "warpAffine", "resize",
            "circle", "ellipse", "fillPoly", "line", "rectangle", "arrowedLine"]
    assert not [f for f in used if not hasattr(cv2, f)], "cv2 lacks functions handlib or mediapipe use"
    img = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    ok, png = cv2.imencode(".png", img)
    assert ok and np.array_equal(cv2.imdecode(png, cv2.IMREAD_UNCHANGED), img)


def _site(tmp_path: Path, dists: dict[str, str]) -> Path:
    """A directory holding one minimal .dist-info per (name, version)."""
    site = tmp_path / "site"
    for name, version in dists.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return site


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_lock_check_lists_a_wrong_version_and_a_missing_package(tmp_path):
    site = _site(tmp_path, {"Foo_Bar": "1.0", "torch": "2.13.0+cpu", "numpy": "2.4.6"})
    lock = tmp_path / "lock.txt"
    # foo-bar: PEP 503 name of Foo_Bar; torch==2.13.0 matches the +cpu build
    lock.write_text("# a fake lock\nfoo-bar==1.0\ntorch==2.13.0\nnumpy==2.4.5\nnot-installed==3.0\n")
    proc = _run("--path", site, lock)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "wrong version  numpy: locked 2.4.5, installed 2.4.6" in proc.stderr
    assert "missing        not-installed==3.0" in proc.stderr
    assert "2 difference(s)" in proc.stderr
    assert "foo-bar" not in proc.stderr and "torch" not in proc.stderr


def test_lock_check_extra_packages_and_a_second_opencv(tmp_path):
    site = _site(tmp_path, {"numpy": "2.4.6", "extra-pkg": "0.1", "handlib": "0.1.0"})
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==2.4.6\n")
    strict = _run("--path", site, lock)
    assert strict.returncode == 1 and "not in lock    extra-pkg 0.1" in strict.stderr, strict.stderr
    assert "handlib" not in strict.stderr  # the project itself is never locked
    lenient = _run("--path", site, lock, "--allow-extra")
    assert lenient.returncode == 0, lenient.stderr
    assert "OK" in lenient.stdout and "note: not in lock extra-pkg 0.1" in lenient.stdout
    # a non-headless OpenCV fails even where extra packages are allowed
    site2 = _site(tmp_path / "2", {"numpy": "2.4.6", "opencv-contrib-python": "5.1.0.95"})
    proc = _run("--path", site2, lock, "--allow-extra")
    assert proc.returncode == 1 and "not allowed    opencv-contrib-python 5.1.0.95" in proc.stderr


def test_lock_check_refuses_a_malformed_lock(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==2.4.6\nscipy>=1.10\n")
    proc = _run("--path", _site(tmp_path, {"numpy": "2.4.6"}), lock)
    assert proc.returncode == 2 and "lock.txt:2: expected 'name==version', got 'scipy>=1.10'" in proc.stderr


def test_pip_check_exception_is_only_mediapipe_without_opencv_contrib():
    deliberate, other = check_lock.split_pip_check(
        "mediapipe 1.2.2 requires opencv-contrib-python, which is not installed.\n"
        "mediapipe 1.2.2 requires absl-py, which is not installed.\n"
        "tensorboard 2.21.0 has requirement numpy>=1.12.0, but you have numpy 1.0.\n")
    assert deliberate == ["mediapipe 1.2.2 requires opencv-contrib-python, which is not installed."]
    assert len(other) == 2 and other[0].startswith("mediapipe 1.2.2 requires absl-py")
    assert check_lock.split_pip_check("No broken requirements found.\n") == ([], [])


def test_installed_environment_matches_the_real_lock():
    """What `make install` installed is the lock (packages added by hand, such as a CUDA torch's, are
    allowed here; .ci/run's check refuses them too). Another torch than the lock's fails here."""
    proc = _run(LOCK, "--allow-extra")
    assert proc.returncode == 0, f"run `make install`; {SCRIPT.name} says:\n{proc.stderr}"
    assert proc.stdout.startswith("check_lock: OK")


def test_lock_satisfies_pyproject_and_leaves_out_the_second_opencv():
    """Editing pyproject.toml without `make lock` shows here."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as the lock
    lock = check_lock.read_lock(LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    unmet = []
    for line in wanted:
        req = Requirement(line)
        name = check_lock.canonical(req.name)
        if name not in lock or not req.specifier.contains(lock[name], prereleases=True):
            unmet.append(f"{line} (lock: {lock.get(name, 'absent')})")
    assert not unmet, f"pyproject.toml wants what {LOCK.name} does not give; run `make lock`: {unmet}"
    assert lock["torch"] == "2.13.0" and "opencv-python-headless" in lock
    assert not {"opencv-contrib-python", "opencv-python", "handlib"} & set(lock)


def test_makefile_python_floor_admits_every_locked_package():
    """`make install` refuses a Python below the Makefile's LOCK_PYTHON by name; that floor must be the
    lock's (its header's CPython) and every locked distribution's Requires-Python must admit it."""
    import re

    from packaging.specifiers import SpecifierSet

    version = lambda s: tuple(map(int, s.split(".")))  # noqa: E731
    floor = re.search(r"^LOCK_PYTHON := (\d+\.\d+\.\d+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    resolved = re.search(r"resolved with CPython (\d+\.\d+\.\d+)", LOCK.read_text()).group(1)
    assert version(floor) <= version(resolved)
    refuse = []
    for name in check_lock.read_lock(LOCK):
        spec = metadata.metadata(name).get("Requires-Python")
        if spec and not SpecifierSet(spec).contains(floor):
            refuse.append(f"{name} (Requires-Python {spec})")
    assert not refuse, f"locked packages refuse Python {floor}: {refuse}"
    assert sys.version_info[:3] >= version(floor)


@pytest.mark.parametrize("locked, installed, ok", [
    ("2.13.0", "2.13.0+cpu", True), ("2.13.0", "2.13.0", True), ("2.13.0+cpu", "2.13.0+cu128", False),
    ("2.13.0", "2.13.1", False), ("2.13.0", "2.13.0.post1", False)])
def test_version_matching_ignores_only_an_unlocked_local_label(locked, installed, ok):
    assert check_lock.version_matches(locked, installed) is ok
