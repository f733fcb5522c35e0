"""The one timing loop of the benchmark scripts (run as ``python benchmarks/<name>.py``, which puts
this folder on ``sys.path``)."""
from __future__ import annotations

import statistics
import time


def timeit(fn, budget_s: float = 1.5, max_reps: int = 30) -> tuple[float, float]:
    """Median and min seconds of ``fn()`` after two warm-up calls (allocator, thread pool, kernel
    plans): at least 3 timed calls, then more until ``budget_s`` or ``max_reps``."""
    fn()
    fn()
    times, t_end = [], time.perf_counter() + budget_s
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)
