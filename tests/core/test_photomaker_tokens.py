"""PhotoMaker prompt logic without ComfyUI (freecure_core/identity/photomaker_tokens.py); the tokens of a real
CLIP are tested in tests/bridge/test_photomaker_pair.py."""
import pytest
import torch

from freecure_core.identity import photomaker_tokens as pt


def test_the_class_word_is_the_last_word_before_the_trigger():
    assert pt.split_trigger("a photo of a woman photomaker, smiling") == ("a photo of a woman",
                                                                          "a photo of a woman, smiling")
    assert pt.class_word("a photo of a woman photomaker, smiling") == "woman"


@pytest.mark.parametrize("text", ["a woman smiling", "photomaker woman", "a woman, photomaker"])
def test_a_prompt_without_a_trigger_after_a_class_word_is_refused(text):
    with pytest.raises(ValueError, match="needs the trigger word 'photomaker' right after the class word"):
        pt.split_trigger(text)


def test_class_token_mask_marks_exactly_the_copies():
    mask = pt.class_token_mask([2, 3], 6, "cpu")
    assert mask.tolist() == [[False, False, True, True, False, False]] and mask.dtype == torch.bool
    with pytest.raises(ValueError, match="outside the 6-token prompt embedding"):
        pt.class_token_mask([6], 6, "cpu")
