"""The timing loop of this round's scripts: the median of n calls after a few untimed ones."""

import statistics
import time


def median_time(f, n: int = 15, warmup: int = 3) -> float:
    """Median seconds of f() over n calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        f()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
