"""Mask resampling to attention token grids from the latent shape (non-square and odd sizes)."""
import pytest
import torch
import torch.nn.functional as F

from freecure_core.fasa.masks import (TokenMasks, check_mask_aspect, check_mask_batch, downsampled_grid,
                                 resample_mask)


def test_sdxl_1216x832_grids():
    latent = (832 // 8, 1216 // 8)  # (104, 152)
    assert downsampled_grid(latent, 0) == (104, 152)
    assert downsampled_grid(latent, 1) == (52, 76)
    assert downsampled_grid(latent, 2) == (26, 38)


def test_odd_latents_round_up_like_a_stride_2_conv():
    conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1)
    x = torch.zeros(1, 1, 75, 61)
    for level in range(1, 4):
        x = conv(x)
        assert downsampled_grid((75, 61), level) == tuple(x.shape[-2:])


def test_non_square_mask_lands_on_the_right_tokens():
    mask = torch.zeros(1, 832, 1216)
    mask[:, :, :608] = 1  # left half of the image
    tokens = resample_mask(mask, (26, 38)).view(26, 38)
    assert tokens[:, :19].eq(1).all() and tokens[:, 19:].eq(0).all()
    top = torch.zeros(1, 832, 1216)
    top[:, :208, :] = 1  # top quarter
    tokens = resample_mask(top, (52, 76)).view(52, 76)
    assert tokens[:13].eq(1).all() and tokens[13:].eq(0).all()


def test_nearest_is_torch_nearest_and_binary():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 97, 143, generator=g) > 0.6).float()
    got = resample_mask(mask, (19, 29))
    want = F.interpolate(mask[:, None], size=(19, 29), mode="nearest")[:, 0].flatten(1)
    assert torch.equal(got, want)
    assert set(got.unique().tolist()) <= {0.0, 1.0}


def test_area_mode_keeps_tokens_at_least_half_covered():
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :3] = 1  # 3 of 8 columns -> at a 2x2 grid: left tokens 3/4 covered
    assert resample_mask(mask, (2, 2), "area").view(2, 2).tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError, match="resampling mode"):
        resample_mask(mask, (2, 2), "bicubic")


def test_token_masks_cache_and_empty():
    tm = TokenMasks(torch.zeros(64, 96))
    assert tm.is_empty() and tm.at((8, 12)).shape == (1, 96)
    assert tm.at((8, 12)) is tm.at((8, 12))


def test_mask_checks_name_the_sizes():
    check_mask_batch(torch.zeros(1, 8, 8), 4)
    with pytest.raises(ValueError, match="batch of 3 but the latent has 2"):
        check_mask_batch(torch.zeros(3, 8, 8), 2)
    check_mask_aspect(torch.zeros(1, 832, 1216), (104, 152))
    with pytest.raises(ValueError, match="512x512 pixels"):
        check_mask_aspect(torch.zeros(1, 512, 512), (104, 152))


def test_nearest_passes_soft_values_through_and_area_stays_binary():
    """A feathered edge reaches FASA as weights with nearest; area keeps tokens at least half covered, as 1."""
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1
    mask[:, :, 4:6] = 0.3  # a soft edge
    got = resample_mask(mask, (8, 8)).view(8, 8)
    assert torch.equal(got, mask[0])
    assert resample_mask(mask, (2, 2), "area").view(2, 2).tolist() == [[1, 0], [1, 0]]  # right half: 0.15 average
    binary = (torch.rand(1, 50, 70, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert torch.equal(resample_mask(binary, (9, 13)), F.interpolate(binary[:, None], size=(9, 13))[:, 0].flatten(1))
    assert not TokenMasks(mask * 0.2).is_empty() and TokenMasks(torch.zeros(8, 8)).is_empty()
