"""The FreeCure paper's 20 evaluation prompts (Table 6) with ``<class>`` standing for the subject word.

8 one-attribute, 8 two-attribute and 4 three-attribute prompts. The paper text available to this project lists the
one-attribute prompts in full and gives the others as examples; the ones not quoted there are reconstructed from
the same vocabulary and structure and are marked ``reconstructed=True`` (their attributes are the paper's: hair
colour/style, eye colour, earrings, glasses, mask, expressions).
"""
from __future__ import annotations

from dataclasses import dataclass

TEMPLATE = "a photo of a <class> {}"
CLASS_TOKEN = "<class>"


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt: its text with <class>, how many attributes it asks for, and whether it is reconstructed."""
    text: str
    attributes: int
    reconstructed: bool = False

    def for_class(self, class_word: str) -> str:
        """The prompt with <class> replaced by the identity's class word (man, woman, boy, girl, person, ...)."""
        return substitute(self.text, class_word)


def substitute(text: str, class_word: str) -> str:
    """text with every <class> replaced by class_word (ValueError for an empty class word)."""
    word = str(class_word).strip()
    if not word:
        raise ValueError("FreeCure: the class word (man, woman, ...) is empty")
    return text.replace(CLASS_TOKEN, word)


def _p(words: str, n: int, reconstructed: bool = False) -> EvalPrompt:
    return EvalPrompt(TEMPLATE.format(words), n, reconstructed)


PAPER_PROMPTS: tuple[EvalPrompt, ...] = (
    _p("with black curly hair", 1),
    _p("with blonde curly hair", 1),
    _p("with red long straight hair", 1),
    _p("very angry looking", 1),
    _p("frowning worriedly", 1),
    _p("laughing happily", 1),
    _p("wearing a mask", 1),
    _p("wearing sunglasses", 1),
    _p("with white curly hair, frowning", 2),
    _p("with blonde curly hair and blue eyes", 2),
    _p("with black hair, wearing silver earrings", 2),
    _p("wearing sunglasses, laughing", 2),
    _p("with red long straight hair, smiling", 2, True),
    _p("with green eyes, wearing a mask", 2, True),
    _p("with black curly hair, very angry looking", 2, True),
    _p("with blonde long hair, wearing glasses", 2, True),
    _p("with red curly hair, wearing pearl earrings, unhappy looking", 3),
    _p("with blue eyes and blonde curly hair, smiling", 3),
    _p("with black long hair, wearing sunglasses, laughing", 3, True),
    _p("with white short hair, wearing silver earrings, frowning", 3, True),
)


def load_prompts(path=None) -> list[EvalPrompt]:
    """PAPER_PROMPTS, or the prompts of a text file (one per line, '#' comments; <class> where the subject goes;
    the attribute count is read from the prompt)."""
    if path is None:
        return list(PAPER_PROMPTS)
    from ..attributes import attributes_from_prompt
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if CLASS_TOKEN not in line:
                raise ValueError(f"FreeCure: {path}:{n}: the prompt has no {CLASS_TOKEN} where the subject goes: {line!r}")
            out.append(EvalPrompt(line, len(attributes_from_prompt(line).attributes)))
    if not out:
        raise ValueError(f"FreeCure: {path} holds no prompt")
    return out
