"""Pixel-space mask operations: label union, exact grow/shrink, feathering, colouring, overlay, bbox."""
import pytest
import torch

from freecure_core.parsing.mask_ops import (colorize_labels, feather_mask, grow_mask, labels_to_mask, mask_bbox,
                                            overlay_mask)


def _square(size=40, x0=10, y0=12, side=10):
    m = torch.zeros(1, size, size)
    m[:, y0:y0 + side, x0:x0 + side] = 1
    return m


def test_labels_to_mask_is_the_union():
    labels = torch.tensor([[[0, 1, 2], [3, 17, 1]], [[17, 17, 0], [4, 5, 6]]])
    mask = labels_to_mask(labels, [1, 17])
    assert mask.dtype == torch.float32 and mask.shape == labels.shape
    assert mask.tolist() == [[[0, 1, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 0]]]
    assert labels_to_mask(labels, []).sum() == 0 and labels_to_mask(labels, []).shape == labels.shape
    assert labels_to_mask(labels, [99]).sum() == 0
    with pytest.raises(TypeError, match="integer"):
        labels_to_mask(labels.float(), [1])


@pytest.mark.parametrize("pixels", [1, 3, 7, -1, -3, -4])
def test_grow_and_shrink_are_exact_in_pixels(pixels):
    grown = grow_mask(_square(), pixels)
    assert mask_bbox(grown[0]) == (10 - pixels, 12 - pixels, 20 + pixels, 22 + pixels)
    assert grown.sum() == (10 + 2 * pixels) ** 2  # a square stays a filled square
    assert set(grown.unique().tolist()) <= {0.0, 1.0}


def test_grow_edge_cases():
    sq = _square()
    assert torch.equal(grow_mask(sq, 0), sq)
    assert grow_mask(sq, -5).sum() == 0  # shrinking by half the side removes it
    assert grow_mask(sq, 100).sum() == 40 * 40  # larger than the image: fills it
    full_edge = torch.zeros(1, 20, 20)
    full_edge[:, 5:15, :5] = 1  # touches the left border only
    assert mask_bbox(grow_mask(full_edge, -2)[0]) == (0, 7, 3, 13)  # the border counts as inside
    assert grow_mask(sq[0], 2).shape == (1, 40, 40)  # (H, W) in, (B, H, W) out
    soft = sq * 0.4
    assert grow_mask(soft, 2).max() == pytest.approx(0.4)  # grey-level dilation keeps soft values
    with pytest.raises(ValueError, match="whole number"):
        grow_mask(sq, 1.5)


def test_feather_stays_in_range_and_is_monotone_across_an_edge():
    sq = _square(64, 20, 20, 24)
    soft = feather_mask(sq, 6)
    assert soft.shape == sq.shape
    assert soft.min() >= 0 and soft.max() <= 1
    row = soft[0, 32]  # through the middle of the square
    left, right = row[:33], row[31:]
    assert (left[1:] - left[:-1] >= -1e-6).all() and (right[1:] - right[:-1] <= 1e-6).all()
    assert (row[19] + row[20]).item() / 2 == pytest.approx(0.5, abs=1e-3)  # the edge lands at 0.5
    assert row[32] > 0.99 and row[5] < 0.01
    assert 0 < soft[0, 32, 17] < 0.5  # the ramp reaches outside the original edge by about `pixels`
    assert soft.sum().item() == pytest.approx(sq.sum().item(), rel=1e-4)  # a blur keeps the area
    assert torch.equal(feather_mask(sq, 0), sq)
    tiny = feather_mask(torch.ones(1, 3, 3), 20)  # kernel wider than the image
    assert torch.allclose(tiny, torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match=">= 0"):
        feather_mask(sq, -1)


def test_colorize_labels_uses_the_palette():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    palette = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 128, 255]], dtype=torch.uint8)
    img = colorize_labels(labels, palette)
    assert img.shape == (1, 2, 2, 3) and img.dtype == torch.float32
    assert img[0, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert img[0, 1, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert torch.equal(colorize_labels(labels, palette.numpy()), img)
    with pytest.raises(ValueError, match="palette"):
        colorize_labels(torch.tensor([[[3]]]), palette)


def test_overlay_mask_blends_the_colour_where_masked():
    images = torch.full((2, 4, 4, 3), 0.2)
    mask = torch.zeros(1, 4, 4)
    mask[:, 1, 2] = 1
    out = overlay_mask(images, mask, color=(0, 1, 0), alpha=0.5)
    assert out.shape == images.shape
    assert out[1, 1, 2].tolist() == pytest.approx([0.1, 0.6, 0.1])
    assert torch.equal(out[:, 0, 0], images[:, 0, 0])
    big = overlay_mask(images, torch.ones(1, 8, 8))  # resized to the image
    assert big[0, 0, 0].tolist() == pytest.approx([0.6, 0.1, 0.1])
    with pytest.raises(ValueError, match="batch"):
        overlay_mask(torch.zeros(2, 4, 4, 3), torch.zeros(3, 4, 4))


def test_mask_bbox():
    assert mask_bbox(_square()[0]) == (10, 12, 20, 22)  # x1, y1 exclusive
    assert mask_bbox(torch.zeros(5, 5)) is None
    one = torch.zeros(1, 5, 7)
    one[0, 4, 6] = 1
    assert mask_bbox(one) == (6, 4, 7, 5)
    assert mask_bbox(one * 0.3) is None and mask_bbox(one * 0.3, threshold=0.1) == (6, 4, 7, 5)
    with pytest.raises(ValueError, match="one"):
        mask_bbox(torch.zeros(2, 5, 5))
