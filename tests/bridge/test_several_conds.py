"""Several positive conditionings (issue 18, item 6), in-process on the tiny SD1.5: ConditioningCombine, area and
mask conds each become their own chunk of a model call, and FASA pairs PD chunk k with FD chunk k.

The equalities are taken at the first model evaluation, where every run starts from the same input: a UNet computes
each chunk's rows on their own, so a chunk of a combined run must give exactly what a run with that one conditioning
pair gives (to float rounding across batch sizes), and an area chunk exactly what a run on the cropped latent with the
cropped mask gives. Outputs are captured after attn1 at every FASA layer.
"""
from __future__ import annotations

import pytest
import torch

import nodes

from support import tiny_models

from freecure_core.comfy_bridge import sampling as S
from freecure_core.comfy_bridge.checks import FreeCureConflict
from freecure_core.comfy_bridge.guiders import FoundationGuider
from freecure_core.fasa.config import FASAConfig
from freecure_core.fasa.masks import crop_mask, resample_mask
from freecure_core.fasa.record import FasaRecord, ReplayMismatch
from freecure_core.fasa.transfer import HostCopies

H, W, STEPS, CFG, SEED = 16, 24, 3, 5.0, 3
SAME = 1e-5  # the same rows computed in batches of another size
APART = 1e-3  # outputs that FASA with another FD chunk or mask would give differ by more than this
AREA = (8, 8, 4, 8)  # (h, w, y, x) latent cells: the area cond's region (64x64 px at x=64, y=32)


def cond(seed: int):
    return tiny_models.sd15_conditioning(seed)


def combine(*conds):
    """What ConditioningCombine makes of several conditionings."""
    out = conds[0]
    for c in conds[1:]:
        out = nodes.ConditioningCombine().combine(out, c)[0]
    return out


def set_area(c, area=AREA):
    h, w, y, x = area
    return nodes.ConditioningSetArea().append(c, w * 8, h * 8, x * 8, y * 8, 1.0)[0]


def set_mask(c, mask, bounds=False):
    return nodes.ConditioningSetMask().append(c, mask, "mask bounds" if bounds else "default", 1.0)[0]


def set_range(c, start, end):
    return nodes.ConditioningSetTimestepRange().set_range(c, start, end)[0]


P1, P2, F1, F2, NEG = cond(11), cond(21), cond(13), cond(23), cond(12)


def pixel_mask(box=None, h=H, w=W):
    """(1, h*8, w*8) mask; box = (top, left, bottom, right) in latent cells."""
    m = torch.zeros(1, h * 8, w * 8)
    if box is not None:
        t, l, b, r = box
        m[:, t * 8:b * 8, l * 8:r * 8] = 1
    return m


FASA_SITES = {("output", i, 0) for i in range(4)}  # the tiny SD1.5's reference layers (both decoder levels)
BOX = (2, 6, 11, 15)  # overlaps the area's top-left part and the whole-image chunk


class Captured:
    """attn1 outputs of the cond chunks of a MODEL's calls: [(site key, sigma, tokens, rows)]."""

    def __init__(self, model):
        self.calls: list[tuple] = []
        self.model = model.clone()
        self.model.set_model_attn1_output_patch(self._capture)

    def _capture(self, n, extra):
        key = (extra["block"][0], extra["block"][1], extra["block_index"])
        sigma = float(extra["sigmas"].flatten()[0])
        rows = n.shape[0] // len(extra["cond_or_uncond"])
        for i, c in enumerate(extra["cond_or_uncond"]):
            if c == 0:
                self.calls.append((key, sigma, n.shape[1], n[i * rows:(i + 1) * rows].detach().clone()))
        return n

    def first_eval(self, tokens=None) -> dict:
        """{FASA site key: [cond chunk outputs]} at the first model evaluation, optionally only chunks of `tokens`."""
        first = max(s for _, s, _, _ in self.calls)
        out: dict = {}
        for key, sigma, n, rows in self.calls:
            if key in FASA_SITES and sigma == first and (tokens is None or n in tokens):
                out.setdefault(key, []).append(rows)
        return out


MODEL = tiny_models.build_tiny_sd15(0)  # the weights of the sd15 fixture


def prepared(latent_hw=(H, W)):
    """Latent, noise, sigmas and sampler of a tiny run, as KSampler makes them."""
    latent = {"samples": torch.zeros(1, 4, *latent_hw)}
    latent_image, noise, _, sigmas, sampler = S.prepare_sampling(MODEL, latent, SEED, STEPS, "euler", "normal", 1.0)
    return latent_image, noise, sigmas, sampler


def run_pair(pos, fd_pos, mask, *, neg=NEG, replay=False, latent_hw=(H, W), noise=None, omega=2.0):
    """Stage 3 (lockstep, or replay of a stage-1 record) from `noise`; returns (PD samples, report, PD capture)."""
    model = MODEL
    latent_image, own_noise, sigmas, sampler = prepared(latent_hw)
    noise = own_noise if noise is None else noise
    pd_capture = Captured(model)
    fasa = FASAConfig(mask=mask, omega=omega)
    kv = None
    if replay:
        stage1 = FoundationGuider(model, fd_pos, neg, CFG, ("cond",), "reference", "auto")
        stage1.sample(noise, latent_image, sampler, sigmas, seed=SEED)
        kv = stage1.store
    guider = S.make_guider(pd_capture.model, model, pos, neg, fd_pos, neg, CFG, fasa, kv)
    out = guider.sample(noise, latent_image, sampler, sigmas, seed=SEED)
    return out[:1], guider.report, pd_capture


def assert_close(a, b, what):
    diff = (a - b).abs().max().item()
    assert diff <= SAME, f"{what}: max difference {diff:.3g}"


def far(a, b) -> bool:
    return (a - b).abs().max().item() > APART


@pytest.fixture(scope="module")
def singles():
    """First-evaluation attn1 outputs of single-conditioning runs: (p1, f1), (p2, f2), and the crossed (p1, f2)."""
    mask = pixel_mask(BOX)
    return {name: run_pair(p, f, mask)[2].first_eval()
            for name, (p, f) in {"p1f1": (P1, F1), "p2f2": (P2, F2), "p1f2": (P1, F2)}.items()}


@pytest.mark.parametrize("replay", [False, True], ids=["lockstep", "replay"])
def test_combined_prompts_pair_pd_chunk_k_with_fd_chunk_k(singles, replay):
    pd, report, capture = run_pair(combine(P1, P2), combine(F1, F2), pixel_mask(BOX), replay=replay)
    combined = capture.first_eval()
    assert report["fasa_places"] == report["fasa_places_expected"] > 0
    assert set(combined) == FASA_SITES and len(report["sites"]) == 4
    for key, chunks in combined.items():
        assert len(chunks) == 2, key
        (s1,), (s2,), (crossed,) = singles["p1f1"][key], singles["p2f2"][key], singles["p1f2"][key]
        # each PD chunk is what its own pair gives: p1 attended to f1 and p2 to f2 (never to the first FD chunk)
        match = [[(c - s).abs().max().item() <= SAME for s in (s1, s2)] for c in chunks]
        assert sorted(match) == [[False, True], [True, False]], (key, match)
    last = max(combined)
    assert far(singles["p1f1"][last][0], singles["p1f2"][last][0]), "p1 with f2 would be indistinguishable"
    if replay:
        lock, _, _ = run_pair(combine(P1, P2), combine(F1, F2), pixel_mask(BOX))
        assert_close(pd, lock, "combined replay vs lockstep")


def test_a_timestep_split_pd_pairs_each_active_entry_with_fd(singles):
    """PhotoMaker's PD (FD text until merge_start, then the fused one) against a single FD entry: at each step one
    entry is active on each side, so they pair; at the first step PD's active entry is p1."""
    pd_pos = combine(set_range(P1, 0.0, 0.5), set_range(P2, 0.5, 1.0))
    _, report, capture = run_pair(pd_pos, F1, pixel_mask(BOX))
    assert report["fasa_places"] == report["fasa_places_expected"] > 0
    for key, (chunk,) in capture.first_eval().items():
        assert_close(chunk, singles["p1f1"][key][0], f"first step at {key}")


def _area_tokens(level_grids):
    return {h * w for h, w in level_grids}


@pytest.mark.parametrize("replay", [False, True], ids=["lockstep", "replay"])
def test_an_area_cond_gets_the_mask_cropped_to_its_area(replay):
    h, w, y, x = AREA
    mask = pixel_mask(BOX)
    latent_image, noise, _, _ = prepared()
    whole_pd, whole_fd = combine(P1, set_area(P2)), combine(F1, set_area(F2))
    pd, report, capture = run_pair(whole_pd, whole_fd, mask, replay=replay, noise=noise)
    assert report["fasa_places"] == report["fasa_places_expected"] > 0
    area_grids = [(h, w), ((h + 1) // 2, (w + 1) // 2)]
    in_area = capture.first_eval(_area_tokens(area_grids))

    # the same area evaluated as its own image: the latent and noise cropped, the mask cropped
    cropped_mask = mask[:, y * 8:(y + h) * 8, x * 8:(x + w) * 8]
    assert torch.equal(crop_mask(mask, AREA, (H, W)), cropped_mask)
    crop_noise = noise[:, :, y:y + h, x:x + w].contiguous()
    _, _, crop_capture = run_pair(P2, F2, cropped_mask, latent_hw=(h, w), noise=crop_noise)
    alone = crop_capture.first_eval()
    _, _, plain_capture = run_pair(P2, F2, pixel_mask(h=h, w=w), latent_hw=(h, w), noise=crop_noise)
    plain = plain_capture.first_eval()
    assert set(in_area) == set(alone) and len(in_area) == 4
    for key, (chunk,) in in_area.items():
        assert_close(chunk, alone[key][0], f"area chunk at {key}")
    assert any(far(alone[k][0], plain[k][0]) for k in alone), "FASA did not act inside the area"
    # the whole-image mask resampled onto the crop's grid (the old behaviour) is another mask
    for grid in area_grids:
        assert not torch.equal(resample_mask(mask, grid), resample_mask(cropped_mask, grid))
    if replay:
        lock, _, _ = run_pair(whole_pd, whole_fd, mask, noise=noise)
        assert_close(pd, lock, "area replay vs lockstep")


def test_a_masked_cond_pairs_on_the_whole_latent():
    cond_mask = pixel_mask((0, 0, 8, 24))[:, ::8, ::8].clone()  # a conditioning mask in latent cells
    pd_pos, fd_pos = combine(P1, set_mask(P2, cond_mask)), combine(F1, set_mask(F2, cond_mask))
    lock, report, _ = run_pair(pd_pos, fd_pos, pixel_mask(BOX))
    assert report["fasa_places"] == report["fasa_places_expected"] > 0
    replay, _, _ = run_pair(pd_pos, fd_pos, pixel_mask(BOX), replay=True)
    assert_close(replay, lock, "masked cond replay vs lockstep")
    plain, _, _ = run_pair(pd_pos, fd_pos, pixel_mask())
    assert far(lock, plain)


@pytest.mark.parametrize("pd_pos, fd_pos, words", [
    (P1, combine(F1, F2), ["positive has 1 active entry", "fd_positive has 2 active entries"]),
    (combine(P1, P2, cond(31)), combine(F1, F2), ["positive has 3 active entries", "fd_positive has 2 active"]),
    (combine(P1, set_area(P2)), F1, ["the area 64x64 px at x=64, y=32 conditioning is on one branch only"]),
    (F1, combine(P1, set_area(P2)), ["the area 64x64 px at x=64, y=32 conditioning is on one branch only"]),
    (combine(P1, set_area(P2)), combine(F1, set_area(F2, (8, 8, 0, 0))),
     ["area 64x64 px at x=64, y=32", "area 64x64 px at x=0, y=0"]),
    (combine(P1, set_mask(P2, pixel_mask((0, 0, 8, 24))[:, ::8, ::8].clone())),
     combine(F1, set_mask(F2, pixel_mask((8, 0, 16, 24))[:, ::8, ::8].clone())), ["mask "]),
    (combine(set_range(P1, 0.0, 0.5), set_range(P2, 0.5, 1.0)), combine(F1, F2),
     ["positive has 1 active entry", "fd_positive has 2 active entries"]),
], ids=["count", "count3", "area-pd-only", "area-fd-only", "area", "mask", "timestep-range"])
def test_mismatched_conditionings_are_refused_naming_the_difference(pd_pos, fd_pos, words):
    with pytest.raises(FreeCureConflict) as err:
        run_pair(pd_pos, fd_pos, pixel_mask(BOX))
    msg = str(err.value)
    assert msg.startswith("FreeCure:") and all(w in msg for w in words), msg
    assert "Set Area" in msg and "empty mask" in msg, msg


@pytest.mark.parametrize("pd_pos, fd_pos, words", [
    (P1, combine(F1, F2), ["positive has 1 active entry", "the kv record's positive has 2 active entries"]),
    (combine(P1, set_area(P2)), F1, ["positive has 2 active entries [whole image; area 64x64 px at x=64, y=32]",
                                     "the kv record's positive has 1 active entry [whole image]"]),
], ids=["count", "area"])
def test_a_replay_of_another_structure_is_refused_naming_the_record(pd_pos, fd_pos, words):
    with pytest.raises(ReplayMismatch) as err:
        run_pair(pd_pos, fd_pos, pixel_mask(BOX), replay=True)
    msg = str(err.value)
    assert msg.startswith("FreeCure:") and all(w in msg for w in words), msg


def test_a_mismatch_with_an_empty_mask_samples_plainly():
    """Nothing is paired when FASA has nothing to do: an empty mask samples as before, whatever the structures."""
    pd, report, _ = run_pair(P1, combine(F1, F2), pixel_mask())
    assert report["fasa_calls"] == 0


@pytest.mark.parametrize("replay", [False, True], ids=["lockstep", "replay"])
def test_one_fd_entry_is_shared_by_every_pd_entry(singles, replay):
    """PD combines two prompts, FD has one: both PD chunks attend to FD's one chunk (as PhotoMaker's PD does at the
    step where its two timestep ranges meet)."""
    _, report, capture = run_pair(combine(P1, P2), F1, pixel_mask(BOX), replay=replay)
    assert report["fasa_places"] == report["fasa_places_expected"] > 0
    for key, chunks in capture.first_eval().items():
        assert any((c - singles["p1f1"][key][0]).abs().max().item() <= SAME for c in chunks), key


def test_a_shared_fd_entry_replays_the_same_from_copies_made_ahead(monkeypatch):
    """Two PD chunks read one FD entry at every evaluation. A record in CPU RAM replayed on a GPU is copied one
    evaluation ahead (fasa.transfer.StreamCopies); HostCopies runs that bookkeeping here: same samples bit for bit, the
    record's entries each copied once per evaluation, and each read twice."""
    pos, mask = combine(P1, P2), pixel_mask(BOX)
    plain, plain_report, _ = run_pair(pos, F1, mask, replay=True)
    monkeypatch.setattr(FasaRecord, "ahead_copies", HostCopies)
    ahead, report, _ = run_pair(pos, F1, mask, replay=True)
    assert torch.equal(ahead, plain)
    assert report["fasa_places"] == plain_report["fasa_places"] > 0
    traffic = report["record_traffic"]
    assert plain_report["record_traffic"]["copied_bytes"] == 0  # CPU record read on the CPU: nothing copied
    assert traffic["read_bytes"] == plain_report["record_traffic"]["read_bytes"] == 2 * traffic["copied_bytes"] > 0


def test_empty_mask_is_bit_identical_to_plain_sampling_with_several_conds(sd15):
    cond_mask = pixel_mask((0, 0, 8, 24))[:, ::8, ::8].clone()
    pd_pos = combine(P1, set_area(P2), set_mask(cond(31), cond_mask, bounds=True))
    fd_pos = combine(F1, set_area(F2), set_mask(cond(33), cond_mask, bounds=True))
    latent = {"samples": torch.zeros(1, 4, H, W)}

    def ksampler(pos):
        return nodes.common_ksampler(sd15, SEED, STEPS, CFG, "euler", "normal", pos, NEG, latent)[0]["samples"]

    empty = FASAConfig(mask=pixel_mask())
    pd, fd, _ = S.sample_freecure(sd15, sd15, pd_pos, NEG, fd_pos, NEG, latent, SEED, STEPS, CFG, "euler", "normal",
                                  1.0, empty)
    assert torch.equal(pd["samples"], ksampler(pd_pos)) and torch.equal(fd["samples"], ksampler(fd_pos))
    stage1, kv = S.sample_foundation(sd15, fd_pos, NEG, latent, SEED, STEPS, CFG, "euler", "normal", 1.0)
    assert torch.equal(stage1["samples"], fd["samples"])
    pd_replay, _, _ = S.sample_freecure(sd15, sd15, pd_pos, NEG, fd_pos, NEG, latent, SEED, STEPS, CFG, "euler",
                                        "normal", 1.0, empty, kv)
    assert torch.equal(pd_replay["samples"], pd["samples"])
