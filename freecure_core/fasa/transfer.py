"""How a record kept in CPU RAM reaches the device FASA runs on, one evaluation ahead (fasa.record.FasaRecord.fetch).

A copier starts the copies of one evaluation's entries and later hands them to the compute stream:

- StreamCopies (CUDA): the copies run on a side stream from pinned memory without blocking the host; the compute
  stream waits on an event recorded after them, and each tensor is marked as used by the compute stream, so the
  caching allocator does not reuse its memory early.
- HostCopies: the same interface with plain copies and no streams; FasaRecord never picks it by itself (a record on
  the device it is read on needs no copier), it lets the one-ahead bookkeeping run where there is no GPU.
"""
from __future__ import annotations

import torch


def _copy(tensors, device, dtype, non_blocking: bool) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device=device, dtype=dtype or t.dtype, non_blocking=non_blocking, copy=True) for t in tensors)


class StreamCopies:
    """Copies to a CUDA device on a side stream, waited for by the compute stream through an event."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def start(self, items: dict, dtype) -> tuple[dict, object]:
        """({key: tensors on the device}, event after their copies) for items {key: tensors in CPU RAM}."""
        # after the work already queued: memory the compute stream frees is not reused under it
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            moved = {key: _copy(tensors, self.device, dtype, True) for key, tensors in items.items()}
            event = torch.cuda.Event()
            event.record(self.stream)
        return moved, event

    def ready(self, tensors: tuple, event) -> tuple:
        """tensors, once the compute stream has been told to wait for their copies (no host wait)."""
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(event)
        for t in tensors:
            t.record_stream(stream)
        return tensors


class HostCopies:
    """StreamCopies' interface with plain copies to `device` and no event."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self, items: dict, dtype) -> tuple[dict, None]:
        """({key: copies on the device}, None)."""
        return {key: _copy(tensors, self.device, dtype, False) for key, tensors in items.items()}, None

    def ready(self, tensors: tuple, event) -> tuple:
        """tensors (already there)."""
        return tensors
