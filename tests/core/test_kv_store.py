"""The record/replay store: compaction, and refusal of mismatched replays."""
import pytest
import torch

from freecure_core.fasa.record import KVStore, RecordInfo, ReplayMismatch, tensor_fingerprint

SITE = ("output", 1, 0)


def store(kind="kv", rows=("cond",)):
    info = RecordInfo(kind=kind, rows=rows, family="sd1", site_keys=(SITE,), latent_shape=(2, 4, 8, 12),
                      sigmas=(14.6, 3.0, 0.0), noise_id="n", latent_id="l", weights_id="w")
    s = KVStore(info)
    for sigma in (14.6, 3.0):
        ev = s.begin_eval(sigma)
        s.put(ev, SITE, "cond", (torch.arange(2 * 24 * 3.0).view(2, 24, 3) + ev, torch.ones(2, 24, 3) * ev))
    return s


def compatible(**over):
    kw = dict(latent_shape=(2, 4, 8, 12), sigmas=[14.6, 3.0, 0.0], noise_id="n", latent_id="l", site_keys=[SITE],
              rows_needed=("cond",), weights_id="w", family="sd1")
    kw.update(over)
    return kw


def test_compaction_keeps_in_mask_tokens_and_leaves_the_original():
    s = store()
    masks = torch.zeros(2, 24)
    masks[0, [1, 5]] = 1
    masks[1, [5, 7]] = 1
    before = s.entries[(0, SITE, "cond")][0].clone()
    c = s.compacted_copy({SITE: masks})
    k, v = c.get(0, SITE, "cond", "cpu", torch.float32)
    assert torch.equal(k, before[:, [1, 5, 7]])
    assert c.key_mask(SITE, "cpu").tolist() == [[1, 1, 0], [0, 1, 1]]
    assert torch.equal(s.entries[(0, SITE, "cond")][0], before)
    assert c.nbytes() == s.nbytes() * 3 // 24


def test_first_chunk_wins_and_missing_entries_are_none():
    s = store()
    s.put(0, SITE, "cond", (torch.zeros(2, 24, 3), torch.zeros(2, 24, 3)))
    assert s.get(0, SITE, "cond", "cpu", torch.float32)[0].abs().sum() > 0
    assert s.get(0, SITE, "uncond", "cpu", torch.float32) is None


@pytest.mark.parametrize("over, message", [
    (dict(latent_shape=(1, 4, 8, 12)), "latent of shape"),
    (dict(sigmas=[14.6, 2.0, 0.0]), "sigma schedule"),
    (dict(sigmas=[14.6, 0.0]), "sigma schedule"),
    (dict(noise_id="other"), "initial noise"),
    (dict(latent_id="other"), "input latent"),
    (dict(site_keys=[("output", 2, 0)]), "lacks FASA layers"),
    (dict(rows_needed=("cond", "uncond")), "uncond"),
    (dict(family="sdxl"), "sd1 model"),
])
def test_mismatched_replays_are_refused(over, message):
    with pytest.raises(ReplayMismatch, match=message):
        store().check_compatible(**compatible(**over))


def test_attention_input_records_need_the_same_weights():
    store("kv").check_compatible(**compatible(weights_id="other"))
    with pytest.raises(ReplayMismatch, match="store to 'kv'"):
        store("x").check_compatible(**compatible(weights_id="other"))


def test_evaluations_are_checked_by_sigma():
    s = store()
    s.check_eval(0, 14.6)
    s.check_eval(1, 3.0000001)
    with pytest.raises(ReplayMismatch, match="evaluation 1"):
        s.check_eval(1, 2.5)
    with pytest.raises(ReplayMismatch, match="more model evaluations"):
        s.check_eval(2, 0.5)


def test_fingerprint_tracks_values_shape_and_dtype():
    a = torch.arange(6.0)
    assert tensor_fingerprint(a) == tensor_fingerprint(a.clone())
    assert tensor_fingerprint(a) != tensor_fingerprint(a + 1)
    assert tensor_fingerprint(a) != tensor_fingerprint(a.view(2, 3))
    assert tensor_fingerprint(a) != tensor_fingerprint(a.double())
