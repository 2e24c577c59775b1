"""Printing how many bytes of a FASA record a replay moved (bench_engine.py, gpu_check.py).

A record (fasa.record.FasaRecord: KVStore, flux.FluxRecord) counts the bytes of record tensors it serves to FASA
(`read_bytes`: what crosses to the GPU when the record lives in CPU RAM) and the bytes it really copies to another
device (`copied_bytes`). A replay guider serves them from a mask-compacted copy of the record it is given, made per
run, and puts that copy's counts in its report as report["record_traffic"]; the benchmarks read them there. A
counter the report lacks reads None: printed as "n/a".
"""
from __future__ import annotations

COUNTERS = ("read_bytes", "copied_bytes")


def per_step(traffic: dict, name: str, steps: int):
    """traffic[name] / steps, or None when the counter is missing."""
    value = traffic.get(name)
    return None if value is None else value / steps


def fmt_traffic(value) -> str:
    """Bytes as kB/MB/GB, "n/a" for None."""
    if value is None:
        return "n/a"
    if value >= 1e9:
        return f"{value / 1e9:.2f} GB"
    if value >= 1e6:
        return f"{value / 1e6:.1f} MB"
    return f"{value / 1e3:.1f} kB"
