"""Prompt -> attributes: whole words with synonyms and plurals, no false friends, negation ignored."""
import pytest

from freecure_core.attributes import ALL_ATTRIBUTES, AttributeMatch, attributes_from_prompt

CASES = [
    # false friends of the reference's substring test (method.md 2.2)
    ("a man on a chair", set()),
    ("chairs and stairs", set()),
    ("spectacle of lights", set()),
    ("capture the capital, a hatch, that and what", set()),
    ("a mouthwatering lipid-rich meal, earnest hearing, a heart, nosebleed seats", set()),
    ("two glasses of wine on a table", set()),
    ("walls in shades of blue", set()),
    ("eye-level shot, bird's-eye view, fish-eye lens", set()),
    ("an ice cap, a hat-trick, a hairpin bend", set()),
    ("smiling, laughing, angry expression", set()),  # expressions are APG's job, not a mask's
    # glasses
    ("wearing spectacles", {"glasses"}),
    ("sunglasses", {"glasses"}),
    ("eyeglasses", {"glasses"}),
    ("a man wearing shades", {"glasses"}),
    ("ski goggles", {"glasses"}),
    # hair, colour words and styles
    ("blonde curly hair, blue eyes", {"hair", "eyes"}),
    ("a blonde woman", {"hair"}),
    ("a brunette, a redhead, auburn", {"hair"}),
    ("long-haired man", {"hair"}),
    ("Her HAIR in braids", {"hair"}),
    ("hairstyle with bangs and a ponytail", {"hair"}),
    ("a messy bun", {"hair"}),
    ("a burger bun", set()),
    ("bald man", {"hair"}),
    ("a hairpin", {"hair"}),
    # eyes, brows
    ("green eyes", {"eyes"}),
    ("a blue-eyed girl with heterochromia", {"eyes"}),
    ("heavy eyeliner and mascara", {"eyes"}),
    ("thick eyebrows", {"brows"}),
    ("furrowed brows, big eyes", {"brows", "eyes"}),
    # ears vs earrings
    ("earrings", {"earrings"}),
    ("gold ear rings", {"earrings"}),
    ("pierced ears", {"earrings"}),
    ("pointy elf ears", {"ears"}),
    ("big ears and hoop earrings", {"ears", "earrings"}),
    # the rest
    ("a nose ring", {"nose"}),
    ("red lipstick", {"lips"}),
    ("lip gloss, open mouth showing teeth", {"lips", "mouth"}),
    ("a red beret", {"hat"}),
    ("a baseball cap", {"hat"}),
    ("a full beard and a moustache", {"lower_face"}),
    ("facial hair", {"lower_face"}),
    ("a pearl necklace and a choker", {"necklace"}),
    ("freckles, dark-skinned", {"skin"}),
    ("long neck", {"neck"}),
    ("a white t-shirt and a leather jacket", {"cloth"}),
    ("a turtleneck sweater", {"cloth"}),
    ("skin-tight", set()),
]


@pytest.mark.parametrize("prompt, expected", CASES)
def test_prompt_table(prompt, expected):
    match = attributes_from_prompt(prompt)
    assert set(match.attributes) == expected, match
    assert match.attributes == [a for a in ALL_ATTRIBUTES if a in expected]  # canonical order


NEGATED = [
    ("no glasses, red hat", {"hat"}, {"glasses"}),
    ("a man without a hat", set(), {"hat"}),
    ("not wearing sunglasses", set(), {"glasses"}),
    ("no glasses or hat, curly hair", {"hair"}, {"glasses", "hat"}),
    ("a woman with no earrings and a necklace", {"necklace"}, {"earrings"}),
    ("she doesn't wear glasses", set(), {"glasses"}),
    ("glasses-free, hatless", set(), {"glasses", "hat"}),
    ("a man who is not smiling wearing glasses", {"glasses"}, set()),  # "not" negates "smiling" only
    ("no hat, but a hat on the table", {"hat"}, set()),  # a positive mention wins
    ("never without his glasses", {"glasses"}, set()),  # double negation
]


@pytest.mark.parametrize("prompt, selected, ignored", NEGATED)
def test_negation(prompt, selected, ignored):
    match = attributes_from_prompt(prompt)
    assert set(match.attributes) == selected, match
    assert set(match.ignored) == ignored, match


def test_evidence_names_the_first_matched_words():
    match = attributes_from_prompt("Blonde curly hair, blue EYES and Ray-Ban sunglasses")
    assert match.attributes == ["hair", "eyes", "glasses"]
    assert match.evidence == [("hair", "Blonde"), ("eyes", "EYES"), ("glasses", "sunglasses")]
    assert match.ignored == [] and match.ignored_evidence == []


def test_ignored_evidence_quotes_the_negated_phrase():
    match = attributes_from_prompt("no glasses, red hat, not wearing any earrings")
    assert match == AttributeMatch(attributes=["hat"], evidence=[("hat", "hat")], ignored=["glasses", "earrings"],
                                   ignored_evidence=[("glasses", "no glasses"),
                                                     ("earrings", "not wearing any earrings")])


def test_empty_and_bad_input():
    assert attributes_from_prompt("") == AttributeMatch()
    with pytest.raises(TypeError, match="text"):
        attributes_from_prompt(None)


def test_attribute_names():
    assert ALL_ATTRIBUTES == ("hair", "eyes", "brows", "glasses", "ears", "earrings", "nose", "mouth", "lips",
                              "hat", "necklace", "skin", "neck", "cloth", "lower_face")
