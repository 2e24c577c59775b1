"""FD face embeds for InstantID packs: identity tokens replaced by the zero-face tokens, input untouched."""
import pytest
import torch

from freecure_core.identity.face_embeds import zero_face_embeds


def test_cond_becomes_the_zero_face_tokens_and_the_input_is_not_mutated():
    cond, uncond = torch.randn(1, 16, 2048), torch.randn(1, 16, 2048)
    embeds = {"cond": cond, "uncond": uncond, "extra": "kept"}
    fd = zero_face_embeds(embeds)
    assert torch.equal(fd["cond"], uncond) and torch.equal(fd["uncond"], uncond) and fd["extra"] == "kept"
    assert embeds["cond"] is cond and fd["cond"] is not uncond  # a new dict with its own tensors
    assert not torch.equal(fd["cond"], cond)


def test_batched_identity_tokens_take_the_zero_tokens_per_row():
    fd = zero_face_embeds({"cond": torch.randn(3, 16, 64), "uncond": torch.randn(1, 16, 64)})
    assert fd["cond"].shape == (3, 16, 64) and torch.equal(fd["cond"][2], fd["uncond"][0])


@pytest.mark.parametrize("bad", [None, {"cond": torch.zeros(1, 16, 8)}, {"cond": 1, "uncond": 2},
                                 {"cond": torch.zeros(1, 16, 8), "uncond": torch.zeros(1, 4, 8)}])
def test_anything_else_is_refused_with_what_was_expected(bad):
    with pytest.raises(ValueError, match="FACE_EMBEDS|differ"):
        zero_face_embeds(bad)
