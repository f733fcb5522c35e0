#!/usr/bin/env python3
"""Check the installed Python environment against handlib's lock file, or write that lock file.

    python .ci/check_lock.py                      # check requirements.lock (CI, after `make install`)
    python .ci/check_lock.py LOCK --allow-extra   # packages not in LOCK are notes, not failures
    python .ci/check_lock.py --path SITE LOCK     # check the distributions in SITE (no `pip check`)
    python .ci/check_lock.py --write LOCK         # write LOCK from this environment (`make lock`)

A check compares every installed distribution (importlib.metadata, names normalised as PEP 503 says)
with the lock's ``name==version`` lines and lists each difference: a wrong version, a locked package
that is missing, an installed package the lock does not list, and a second OpenCV. It then runs
``pip check`` and fails on any broken requirement but one, which is deliberate: mediapipe 1.2.2
requires ``opencv-contrib-python``, a non-headless OpenCV that would own the ``cv2`` module beside
``opencv-python-headless``; the lock leaves it out (mediapipe only calls drawing functions that the
headless build has). Exit status 0 when the environment is the lock, 1 when it is not, 2 on a bad lock.

A locked version without a local label matches an installed one with it (PEP 440: ``torch==2.13.0``
matches ``2.13.0+cpu`` and ``2.13.0+cu128``), so a CUDA build of the locked torch passes.
Standard library only: it must run in any environment it is asked about.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCK = ROOT / "requirements.lock"
PROJECT = "handlib"  # installed editable by `make`, never locked
# Left out of the lock on purpose, and an error wherever installed: each would be a second
# distribution owning the top-level `cv2` module beside opencv-python-headless.
FORBIDDEN = {
    "opencv-contrib-python": "mediapipe 1.2.2 requires it, but it would be a second OpenCV owning cv2 "
    "beside opencv-python-headless (mediapipe only calls cv2 drawing functions, which the headless "
    "build has)",
    "opencv-python": "a second, non-headless OpenCV owning cv2 beside opencv-python-headless",
}
# The one `pip check` complaint the lock causes on purpose (see FORBIDDEN).
DELIBERATE = re.compile(r"^mediapipe \S+ requires opencv-contrib-python, which is not installed\.$")
LINE = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([^\s;#]+)$")
HEADER = """\
# handlib's lock: the exact version of every package CI tests, transitive ones included
# (resolved with CPython {python} on {system} {machine}; handlib itself is not listed).
# Made by `make lock`: a fresh temporary venv, pip install "{torch}" -e ".[dev]" (pyproject's
# ranges), then `.ci/check_lock.py --write requirements.lock` (every installed distribution, PEP 503
# names). To upgrade a package: edit pyproject.toml (torch: LOCK_TORCH in the Makefile), run
# `make lock`, then `make test`, and commit both files.
# `make install` installs exactly these with `pip install --no-deps` (torch via TORCH_SPEC, which
# defaults to the torch line below); .ci/run checks the result with .ci/check_lock.py.
# Left out on purpose: opencv-contrib-python, which mediapipe 1.2.2 requires: it would be a second
# OpenCV owning `cv2` beside opencv-python-headless, and mediapipe only calls cv2 drawing functions
# that the headless build has. So `pip check` reports that one missing requirement; check_lock.py
# accepts exactly it. Versions are written without local labels (torch 2.13.0+cpu -> torch==2.13.0).
"""


class LockError(ValueError):
    """The lock file cannot be read."""


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: runs of -, _, . become one -, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """The version without its local label (``2.13.0+cpu`` -> ``2.13.0``)."""
    return version.split("+", 1)[0]


def version_matches(locked: str, installed: str) -> bool:
    """PEP 440 ``==``: a locked version without a local label ignores the installed one's label."""
    return installed == locked or ("+" not in locked and public_version(installed) == locked)


def read_lock(path: Path) -> dict[str, str]:
    """Canonical name -> version from ``name==version`` lines (comments and blank lines skipped)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise LockError(f"cannot read lock file {path}: {err}") from err
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            raise LockError(f"{path}:{number}: expected 'name==version', got {raw!r}")
        name = canonical(match[1])
        if name in pins:
            raise LockError(f"{path}:{number}: {name} is locked twice")
        pins[name] = match[2]
    if not pins:
        raise LockError(f"{path} locks no package")
    return pins


def installed_distributions(path: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Canonical name -> version of the distributions on ``path`` (default sys.path), and problems:
    a distribution installed twice with different versions, or one without a name."""
    found: dict[str, str] = {}
    problems: list[str] = []
    dists = metadata.distributions(path=path) if path is not None else metadata.distributions()
    for dist in dists:
        raw_name = dist.metadata["Name"]
        if not raw_name:
            problems.append(f"a distribution without a name at {getattr(dist, '_path', '?')}")
            continue
        name = canonical(raw_name)
        if name in found:
            if found[name] != dist.version:
                problems.append(f"{name} is installed twice: {found[name]} and {dist.version}")
            continue  # the same distribution seen through a repeated sys.path entry
        found[name] = dist.version
    return found, problems


def split_pip_check(output: str) -> tuple[list[str], list[str]]:
    """Split ``pip check`` output into (the deliberate complaint, every other complaint)."""
    deliberate, other = [], []
    for line in output.splitlines():
        line = line.strip()
        if not line or line == "No broken requirements found.":
            continue
        (deliberate if DELIBERATE.match(line) else other).append(line)
    return deliberate, other


def run_pip_check() -> tuple[list[str], list[str]]:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if proc.returncode not in (0, 1) or "No module named pip" in proc.stderr:
        return [], [f"`{sys.executable} -m pip check` could not run: {proc.stderr.strip()}"]
    return split_pip_check(proc.stdout)


@dataclass
class Report:
    wrong: list[tuple[str, str, str]] = field(default_factory=list)  # name, locked, installed
    missing: list[tuple[str, str]] = field(default_factory=list)  # name, locked
    extra: list[tuple[str, str]] = field(default_factory=list)  # name, installed
    forbidden: list[tuple[str, str]] = field(default_factory=list)  # name, installed
    problems: list[str] = field(default_factory=list)  # broken installs, pip check
    notes: list[str] = field(default_factory=list)

    def failures(self, allow_extra: bool) -> int:
        return (len(self.wrong) + len(self.missing) + len(self.forbidden) + len(self.problems)
                + (0 if allow_extra else len(self.extra)))

    def lines(self, allow_extra: bool) -> list[str]:
        out = [f"  wrong version  {n}: locked {lock}, installed {inst}" for n, lock, inst in self.wrong]
        out += [f"  missing        {n}=={lock} (locked, not installed)" for n, lock in self.missing]
        out += [f"  not allowed    {n} {inst} is installed: {FORBIDDEN[n]}" for n, inst in self.forbidden]
        tag = "note: not in lock" if allow_extra else "not in lock   "
        out += [f"  {tag} {n} {inst} (installed, not locked)" for n, inst in self.extra]
        out += [f"  broken         {p}" for p in self.problems]
        return out


def compare(lock: dict[str, str], installed: dict[str, str]) -> Report:
    report = Report()
    for name, locked in sorted(lock.items()):
        if name not in installed:
            report.missing.append((name, locked))
        elif not version_matches(locked, installed[name]):
            report.wrong.append((name, locked, installed[name]))
    for name, version in sorted(installed.items()):
        if name in FORBIDDEN:
            report.forbidden.append((name, version))
        elif name not in lock and name != PROJECT:
            report.extra.append((name, version))
    return report


def check(lock_path: Path, site: str | None, allow_extra: bool) -> int:
    try:
        lock = read_lock(lock_path)
    except LockError as err:
        print(f"check_lock: {err}", file=sys.stderr)
        return 2
    installed, problems = installed_distributions([site] if site else None)
    report = compare(lock, installed)
    report.problems += problems
    where = site or f"{sys.prefix} (Python {platform.python_version()})"
    if site is None:
        deliberate, other = run_pip_check()
        report.problems += [f"pip check: {line}" for line in other]
        why = f"deliberate: the lock leaves opencv-contrib-python out (see {lock_path.name}'s header)"
        report.notes += [f"pip check: {line} -- {why}" for line in deliberate]
    failures = report.failures(allow_extra)
    lines = report.lines(allow_extra)
    if failures:
        print(f"check_lock: the environment at {where} differs from {lock_path}:", file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)
        print(f"check_lock: FAILED, {failures} difference(s). `make install` installs the lock "
              "(a package not in it: `pip uninstall` it, or start afresh with `make clean install`); "
              "after editing pyproject.toml, run `make lock`.", file=sys.stderr)
    else:
        print(f"check_lock: OK, the {len(lock)} locked packages are installed at {where} "
              f"with the versions of {lock_path}.")
        for line in lines + [f"  note: {n}" for n in report.notes]:
            print(line)
    return 1 if failures else 0


def write(lock_path: Path) -> int:
    """Write the lock from the running environment, which must be consistent (`pip check` clean)."""
    deliberate, other = run_pip_check()
    if deliberate or other:
        print("check_lock: not writing a lock from an environment with broken requirements:\n  "
              + "\n  ".join(deliberate + other), file=sys.stderr)
        return 1
    installed, problems = installed_distributions()
    if problems:
        print("check_lock: not writing a lock: " + "; ".join(problems), file=sys.stderr)
        return 1
    pins = {name: public_version(version) for name, version in installed.items()
            if name != PROJECT and name not in FORBIDDEN}
    if "torch" not in pins:
        print("check_lock: not writing a lock without torch in the environment", file=sys.stderr)
        return 1
    header = HEADER.format(python=platform.python_version(), system=platform.system(),
                           machine=platform.machine(), torch=f"torch=={pins['torch']}")
    body = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    lock_path.write_text(header + body)
    left_out = sorted(set(installed) & set(FORBIDDEN))
    print(f"check_lock: wrote {lock_path}: {len(pins)} packages"
          + (f"; left out: {', '.join(left_out)}" if left_out else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("lock", nargs="?", type=Path, default=DEFAULT_LOCK,
                        help=f"the lock file (default {DEFAULT_LOCK.relative_to(ROOT)})")
    parser.add_argument("--allow-extra", action="store_true",
                        help="installed packages that the lock does not list are notes, not failures")
    parser.add_argument("--path", metavar="SITE",
                        help="check the distributions in this directory instead (skips pip check)")
    parser.add_argument("--write", action="store_true", help="write LOCK from this environment")
    args = parser.parse_args(argv)
    if args.write:
        if args.path or args.allow_extra:
            parser.error("--write takes neither --path nor --allow-extra")
        return write(args.lock)
    return check(args.lock, args.path, args.allow_extra)


if __name__ == "__main__":
    sys.exit(main())
