"""Progress on long commands: tqdm bars on a terminal, plain lines elsewhere.

One decision, made here for every command (``demo``, ``eval``, ``eval-real``, ``ablate``,
``predict``, ``data_scripts/make_synthetic.py``): a bar is drawn only when stderr is a terminal and
we are not inside a Jupyter kernel (:func:`interactive`). In a notebook, a log file or a pipe there
are no bars; :func:`stage` then prints one plain line per stage, with its time.

Library functions take a ``progress: bool`` argument and pass it to :func:`bar` /
:func:`bars_enabled`, so a caller can turn bars off even on a terminal::

    for batch in bar(loader, "scoring", total=len(loader), enabled=progress):
        ...
    with stage("[4/5] scores"):   # "[4/5] scores …" first on a terminal, then
        ...                       # "[4/5] scores: done in 73.2 s"
"""
from __future__ import annotations

import contextlib
import sys
import time

__all__ = ["interactive", "bars_enabled", "bar", "echo", "stage"]


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (whose stderr is not a terminal anyway; checked to be sure)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """Whether progress bars may be drawn: stderr is a terminal and this is not a notebook."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) and not _in_notebook()


def bars_enabled(progress: bool = True) -> bool:
    """``progress`` and :func:`interactive` (e.g. for ``TrainConfig.progress``)."""
    return bool(progress) and interactive()


def bar(iterable, desc: str, total: int | None = None, enabled: bool = True, unit: str = "it"):
    """``iterable`` wrapped in a tqdm bar on a terminal (and ``enabled``); else ``iterable`` itself.

    The bar disappears when done (``leave=False``): :func:`stage` lines stay, bars do not.
    """
    if not bars_enabled(enabled):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True,
                file=sys.stderr)


def echo(*parts) -> None:
    """``print`` that does not break a bar being drawn (``tqdm.write``); a drop-in ``log=``."""
    from tqdm import tqdm

    tqdm.write(" ".join(str(p) for p in parts), file=sys.stdout)


@contextlib.contextmanager
def stage(name: str, log=print):
    """Time a stage: ``name …`` when it starts (terminal only), ``name: done in N.N s`` when it
    ends (always: the one plain line of a log file or notebook). Yields a dict whose ``seconds``
    is set on exit, so a caller can record the time."""
    timing = {"seconds": None}
    if interactive():
        log(f"{name} …")
    t0 = time.perf_counter()
    yield timing
    timing["seconds"] = time.perf_counter() - t0
    log(f"{name}: done in {timing['seconds']:.1f} s")
