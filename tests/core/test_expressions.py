"""Prompt -> APG template and expression words: the paper's prompts, inflections, false friends, negation, tidy."""
import pytest

from freecure_core.apg.expressions import ExpressionSplit, describe, split_prompt

# (prompt, template, expression words), keep_attributes on
CASES = [
    # the paper's evaluation prompts (method.md section 4)
    ("a man, very angry looking", "a man", ("very angry looking",)),
    ("a woman frowning worriedly", "a woman", ("frowning worriedly",)),
    ("a photo of a woman laughing happily, with blonde curly hair, wearing sunglasses",
     "a photo of a woman, with blonde curly hair, wearing sunglasses", ("laughing happily",)),
    ("a man smiling", "a man", ("smiling",)),
    ("a man, unhappy looking, in a park", "a man, in a park", ("unhappy looking",)),
    ("an angry-looking man", "a man", ("angry-looking",)),
    # inflections, case
    ("a woman laughs", "a woman", ("laughs",)),
    ("a man who laughed", "a man", ("laughed",)),
    ("that smiling woman", "that woman", ("smiling",)),
    ("A Woman SMILING", "A Woman", ("SMILING",)),
    ("a grinning boy", "a boy", ("grinning",)),
    ("a man looking very angry", "a man", ("very angry",)),
    ("she is laughing out loud", "she", ("laughing out loud",)),
    ("a woman who's a bit sad", "a woman", ("a bit sad",)),
    # articles go with nouns only
    ("a smiling woman", "a woman", ("smiling",)),
    ("an angry woman", "a woman", ("angry",)),
    ("a woman with a big smile", "a woman", ("big smile",)),
    ("a woman with a big smile and blue eyes", "a woman with blue eyes", ("big smile",)),
    ("a woman with an angry expression, wearing a hat", "a woman, wearing a hat", ("angry expression",)),
    ("a redhead bursting into tears", "a redhead", ("tears",)),
    ("a woman in tears", "a woman", ("tears",)),
    # joined phrases, conjunctions
    ("a man laughing and crying", "a man", ("laughing and crying",)),
    ("a woman dancing and laughing in the park", "a woman dancing in the park", ("laughing",)),
    ("a woman laughing and dancing", "a woman dancing", ("laughing",)),
    # phrases and tails
    ("a man with his tongue out", "a man", ("tongue out",)),
    ("a woman with her mouth wide open, raised eyebrows", "a woman", ("mouth wide open", "raised eyebrows")),
    ("a girl smiling at the camera", "a girl", ("smiling at the camera",)),
    ("a man grinning from ear to ear", "a man", ("grinning from ear to ear",)),
    ("a woman crying with joy", "a woman", ("crying with joy",)),
    ("a man with a smile on his face", "a man", ("smile on his face",)),
    # punctuation and weights tidy
    ("a man, (laughing:1.2), hat", "a man, hat", ("laughing",)),
    ("smiling, a woman ,  in a park", "a woman, in a park", ("smiling",)),
    ("laughs, laughed", "", ("laughs", "laughed")),
]


@pytest.mark.parametrize("prompt, template, words", CASES)
def test_template_and_words(prompt, template, words):
    split = split_prompt(prompt)
    assert split.template == template, split
    assert split.expression_words == words, split
    assert split.attributes == prompt.strip() and split.has_expressions


NO_EXPRESSION = [
    "a photo of a woman with blonde curly hair, wearing sunglasses",
    "happy hour at a bar", "a happy birthday banner", "the laughing stock of the town", "it is a crying shame",
    "sun glare on the lens", "a glaring error", "smileys everywhere", "a beam of light", "grinding coffee",
    "a man on a chair", "",
]


@pytest.mark.parametrize("prompt", NO_EXPRESSION)
def test_no_false_positives(prompt):
    split = split_prompt(prompt)
    assert split.expression_words == () and not split.has_expressions, split
    assert split.template == split.attributes == prompt.strip()
    assert describe(split) == "no expression words: APG will pass the image through"


NEGATED = [
    ("a man who is not smiling", ("not smiling",)),
    ("a woman with no smile", ("no smile",)),
    ("a woman who isn't smiling, wearing a hat", ("isn't smiling",)),
    ("not looking happy", ("not looking happy",)),
    ("never frowning", ("never frowning",)),
]


@pytest.mark.parametrize("prompt, negated", NEGATED)
def test_negations_stay_in_both_prompts(prompt, negated):
    split = split_prompt(prompt)
    assert split.negated == negated and split.expression_words == ()
    assert split.template == split.attributes == prompt
    assert "negated (kept in both prompts)" in describe(split)


def test_negation_does_not_reach_across_a_clause():
    split = split_prompt("a woman without a smile, laughing")
    assert split.negated == ("without a smile",)
    assert split.expression_words == ("laughing",)
    assert split.template == "a woman without a smile"


KEEP_OFF = [
    ("a photo of a woman laughing happily, with blonde curly hair, wearing sunglasses", "a photo of a woman",
     ("with blonde curly hair", "wearing sunglasses")),
    ("portrait of a blonde woman, smiling", "portrait of a woman", ("blonde",)),
    ("a long-haired man with glasses, smiling", "a man", ("long-haired", "with glasses")),
    ("a woman, blue eyes, red hat, smiling, in a park", "a woman, in a park", ("blue eyes", "red hat")),
    ("a woman smiling, no glasses", "a woman, no glasses", ()),  # negated attributes stay
    ("a woman, red hat, blonde hair", "a woman, red hat, blonde hair", ()),  # no expression: nothing to split
    ("a man with his mouth open", "a man", ()),  # the expression phrase wins over the 'mouth' attribute
]


@pytest.mark.parametrize("prompt, template, dropped", KEEP_OFF)
def test_keep_attributes_off_leaves_the_subject(prompt, template, dropped):
    kept = split_prompt(prompt, keep_attributes=True)
    off = split_prompt(prompt, keep_attributes=False)
    assert off.template == template, off
    assert off.dropped_attributes == dropped and kept.dropped_attributes == ()
    assert off.attributes == kept.attributes == prompt
    assert off.expression_words == kept.expression_words


def test_keep_attributes_on_keeps_them_in_the_template():
    split = split_prompt("a woman laughing, with blonde curly hair and blue eyes, wearing sunglasses")
    assert split.template == "a woman, with blonde curly hair and blue eyes, wearing sunglasses"


def test_describe_names_the_words():
    split = split_prompt("a woman laughing happily, not frowning")
    assert describe(split) == ("expression words: 'laughing happily'; negated (kept in both prompts): "
                               "'not frowning'")
    off = split_prompt("a woman laughing, red hat", keep_attributes=False)
    assert "attribute phrases dropped from the template: 'red hat'" in describe(off)


def test_result_type_and_bad_input():
    assert isinstance(split_prompt("a smiling man"), ExpressionSplit)
    with pytest.raises(TypeError, match="FreeCure: the prompt must be text"):
        split_prompt(None)
