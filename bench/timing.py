"""Timing helpers shared by the benchmark scripts."""
import statistics
import time


def timed(fn):
    """(fn(), seconds it took)."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def median_time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
