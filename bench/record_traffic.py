"""How many bytes of a FASA record a replay moves (bench_engine.py, gpu_check.py).

A record (fasa.record.FasaRecord: KVStore, flux.FluxRecord) counts the bytes of record tensors it serves to FASA
(`read_bytes`: what crosses to the GPU when the record lives in CPU RAM) and the bytes it really copies to another
device (`copied_bytes`). A replay guider serves them from a mask-compacted copy of the record it is given, made per
run, so `replay_traffic` reads the counters of the record itself (their change over the block) and of the compacted
copies made of it inside the block, and keeps the larger of the two (an implementation may count on either). A
counter no record has reads None: print it as "n/a".
"""
from __future__ import annotations

import contextlib

COUNTERS = ("read_bytes", "copied_bytes")


def _read(record, name):
    value = getattr(record, name, None)
    return None if value is None else int(value)


@contextlib.contextmanager
def replay_traffic(record):
    """Yields a dict that, when the block ends, holds {counter: bytes moved inside the block, or None} and
    "copies": the compacted copies made of `record` inside the block. Wraps type(record).compacted_copy for the
    block's duration."""
    cls = type(record)
    own = "compacted_copy" in cls.__dict__
    original = cls.compacted_copy
    copies = []

    def compacted_copy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self is record:
            copies.append(out)
        return out

    before = {name: _read(record, name) for name in COUNTERS}
    result: dict = {"copies": copies}
    cls.compacted_copy = compacted_copy
    try:
        yield result
    finally:
        if own:
            cls.compacted_copy = original
        else:
            del cls.compacted_copy
        for name in COUNTERS:
            after = _read(record, name)
            counted = [v for v in (_read(c, name) for c in copies) if v is not None]
            own_delta = None if after is None else after - (before[name] or 0)
            if own_delta is None and not counted:
                result[name] = None
            else:
                result[name] = max(own_delta or 0, sum(counted))


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
