"""What a replay reads from its record (FasaRecord.fetch): bytes served and bytes copied, entries unchanged."""
import torch

from freecure_core.fasa.flux import FluxRecord, FluxRecordInfo
from freecure_core.fasa.record import KVStore, RecordInfo, pinned_like
from freecure_core.fasa.transfer import HostCopies


def _store(offload=True):
    info = RecordInfo(kind="kv", rows=("cond",), family="sd1", site_keys=(("output", 3, 0),))
    store = KVStore(info, offload=offload)
    for ev in range(3):
        store.put(ev, ("output", 3, 0), "cond", (torch.full((1, 6, 8), float(ev)), torch.full((1, 6, 8), -float(ev))))
    return store


def test_fetch_serves_the_entry_and_counts_bytes_read():
    store = _store()
    k, v = store.get(1, ("output", 3, 0), "cond", "cpu", torch.float32)
    assert torch.equal(k, torch.full((1, 6, 8), 1.0)) and torch.equal(v, torch.full((1, 6, 8), -1.0))
    assert store.read_bytes == 2 * 6 * 8 * 4 and store.copied_bytes == 0  # same device: nothing crosses
    assert store.get(5, ("output", 3, 0), "cond", "cpu", torch.float32) is None
    assert store.read_bytes == 2 * 6 * 8 * 4


def test_fetch_in_another_dtype_and_the_flux_record():
    store = _store()
    k, _ = store.get(2, ("output", 3, 0), "cond", "cpu", torch.bfloat16)
    assert k.dtype == torch.bfloat16 and store.entries[(2, ("output", 3, 0), "cond")][0].dtype == torch.float32
    rec = FluxRecord(FluxRecordInfo(blocks=(("single", 0),), sigmas=(), latent_shape=(), noise_id="", latent_id="",
                                    weights_id=""))
    rec.put(0, ("single", 0), torch.ones(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))
    k, v = rec.get(0, ("single", 0), "cpu", torch.float32)
    assert torch.equal(k, torch.ones(1, 2, 5, 4)) and rec.read_bytes == 2 * 40 * 4
    assert rec.get(0, ("single", 0))[0] is rec.entries[(0, ("single", 0))][0]  # no device: the stored tensors


def test_a_cpu_record_is_plain_memory_and_compaction_keeps_it_so():
    store = _store()
    assert not store.entries[(0, ("output", 3, 0), "cond")][0].is_pinned()  # pinned only when copied off a GPU
    compact = store.compacted_copy({("output", 3, 0): torch.tensor([[1.0, 0, 1, 0, 0, 1]])})
    assert compact.entries[(1, ("output", 3, 0), "cond")][0].shape == (1, 3, 8)
    t = torch.ones(3)
    assert pinned_like(t, torch.zeros(3)) is t
    store.settle()  # nothing in flight: a no-op


def test_copies_made_one_evaluation_ahead_serve_each_entry_as_stored():
    """The bookkeeping a CUDA replay of a record in CPU RAM uses (fasa.transfer.StreamCopies), run with HostCopies:
    the first read of evaluation e copies e and e + 1, an entry read twice is served twice from one copy, earlier
    evaluations' copies are dropped, and a read in another dtype converts the copy."""
    store = _store()
    store.ahead_copies = HostCopies
    site, entry_bytes = ("output", 3, 0), 2 * 6 * 8 * 4
    k, v = store.get(0, site, "cond", "cpu", torch.float32)
    assert torch.equal(k, torch.zeros(1, 6, 8)) and sorted(store._pending) == [0, 1]
    assert store.copied_bytes == 2 * entry_bytes  # evaluations 0 and 1
    k_again, _ = store.get(0, site, "cond", "cpu", torch.float32)  # PD entries sharing one FD entry
    assert torch.equal(k_again, k) and store.copied_bytes == 2 * entry_bytes and store.read_bytes == 2 * entry_bytes
    k, v = store.get(1, site, "cond", "cpu", torch.float32)
    assert torch.equal(v, torch.full((1, 6, 8), -1.0)) and sorted(store._pending) == [1, 2]
    k, _ = store.get(2, site, "cond", "cpu", torch.bfloat16)
    assert k.dtype == torch.bfloat16 and torch.equal(k.float(), torch.full((1, 6, 8), 2.0))
    assert store.copied_bytes == 3 * entry_bytes  # each evaluation copied once; evaluation 3 has no entries
    assert k.data_ptr() != store.entries[(2, site, "cond")][0].data_ptr()  # served from the copy, record untouched
    store.release()
    assert not store._pending and store._copier is None
