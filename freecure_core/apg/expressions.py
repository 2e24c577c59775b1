"""Expression words in a prompt, and the split of a prompt into APG's template and attribute prompts.

APG (method.md section 4) inverts the image with a template prompt without the expression and regenerates it
with the template plus the expression words. `split_prompt` finds the expression phrases ("laughing happily",
"very angry looking", "with a big smile", "tongue out") and removes them for the template; the attribute prompt
is the whole prompt.

Rules (each has a test):
- Words are whole words, case-insensitive, with their inflections ("laughs", "laughed", "grinning").
- A phrase grows around its expression words over intensifiers ("very", "a bit"), manner adverbs ("happily",
  "worriedly", "broadly"), "looking"/"-looking"/"face"/"expression" after an adjective, and leads such as
  "looking", "is", "who is", "with a big", "wearing a", "breaking into" in front, plus tails like "out loud",
  "with joy", "at the camera", "on her face". Two phrases joined by "and"/"or" are one phrase.
- An article ("a", "the", "her") is taken only with a noun ("with a smile"), never from a subject
  ("a smiling woman" keeps "a woman").
- Not expressions: "happy hour", "happy birthday", "laughing stock", "crying shame", "sun glare", ...
- Negated phrases ("not smiling", "no smile", "without a smile") are reported, never removed: they are in both
  prompts, so APG does not add them (same negation rule as freecure_core.attributes).
- Expression phrases win over face-attribute words inside them ("open mouth", "raised eyebrows").
- keep_attributes=False also drops the FASA attribute phrases from the template ("with blonde curly hair",
  "wearing sunglasses"; inside the subject only the words: "a blonde woman" -> "a woman"); the attribute prompt
  still holds them, so APG then pushes those attributes as well.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..attributes import attribute_mentions, negation_start

# ------------------------------------------------------------------------------------------ vocabulary
# noun-capable forms: they may take an article and an adjective ("a big smile", "with a frown")
_NOUNS = (r"smiles?", r"grins?", r"frowns?", r"laughs?", r"laughter", r"smirks?", r"pouts?", r"scowls?",
          r"glares?", r"sneers?", r"grimaces?", r"snarls?", r"screams?", r"yawns?", r"winks?", r"tears",
          r"sobs?", r"gasps?", r"giggles?", r"chuckles?")
_VERBS = (r"laugh(?:ing|ed)", r"smil(?:ing|ed)", r"grin(?:ning|ned)", r"frown(?:ing|ed)", r"cry", r"cries",
          r"crying", r"cried", r"scream(?:ing|ed)", r"yawn(?:ing|ed)", r"wink(?:ing|ed)", r"smirk(?:ing|ed)",
          r"pout(?:ing|ed)", r"sob(?:bing|bed)", r"weep(?:s|ing)?", r"wept", r"giggl(?:ing|ed)", r"chuckl(?:ing|ed)",
          r"scowl(?:ing|ed)", r"glar(?:ing|ed)", r"sneer(?:ing|ed)", r"grimac(?:ing|ed)", r"beaming", r"blushing",
          r"snarl(?:ing|ed)", r"shout(?:s|ing|ed)", r"yell(?:s|ing|ed)", r"sulk(?:s|ing|ed)?", r"gasp(?:ing|ed)",
          r"wail(?:s|ing|ed)", r"whimper(?:s|ing|ed)?")
_ADJECTIVES = (r"angry", r"furious", r"enraged", r"irate", r"livid", r"sad", r"unhappy", r"happy", r"happier",
               r"joyful", r"joyous", r"cheerful", r"cheery", r"gleeful", r"delighted", r"elated", r"ecstatic",
               r"excited", r"amused", r"surprised", r"shocked", r"astonished", r"amazed", r"stunned", r"startled",
               r"scared", r"afraid", r"frightened", r"terrified", r"fearful", r"horrified", r"worried", r"anxious",
               r"nervous", r"disgusted", r"serious", r"stern", r"grumpy", r"annoyed", r"irritated", r"upset",
               r"depressed", r"gloomy", r"miserable", r"sorrowful", r"melancholic", r"melancholy", r"tearful",
               r"teary", r"pensive", r"confused", r"puzzled", r"bored", r"sleepy", r"drowsy", r"embarrassed",
               r"shy", r"bashful", r"smug", r"expressionless", r"emotionless", r"frustrated", r"displeased",
               r"sulky", r"grim", r"somber", r"sombre", r"solemn", r"contemptuous", r"heartbroken", r"grieving",
               r"mournful", r"hysterical", r"smiley", r"pouty", r"crying")
_EMOTION_ADVERBS = (r"happily", r"joyfully", r"cheerfully", r"gleefully", r"merrily", r"sadly", r"unhappily",
                    r"angrily", r"furiously", r"worriedly", r"nervously", r"anxiously", r"fearfully", r"tearfully",
                    r"sheepishly", r"smugly", r"sternly", r"grimly", r"gloomily", r"miserably", r"sorrowfully",
                    r"mournfully", r"excitedly", r"shyly", r"bashfully", r"sulkily", r"grumpily", r"irritably")
_PHRASES = (r"open[\s-]mouth(?:ed)?", r"mouth\s+(?:wide\s+)?open", r"tongue\s+(?:sticking\s+)?out",
            r"(?:sticking|sticks|stuck)\s+(?:out\s+)?(?:(?:her|his|their|its|a)\s+)?tongue(?:\s+out)?",
            r"puffed[\s-](?:out\s+)?cheeks", r"raised\s+(?:eye)?brows?", r"furrowed\s+(?:eye)?brows?",
            r"(?:clenched|gritted|bared)\s+teeth", r"pursed\s+lips", r"wide[\s-]eyed", r"teary[\s-]eyed",
            r"poker[\s-]faced?", r"straight[\s-]faced?", r"neutral\s+(?:expression|face)",
            r"blank\s+(?:expression|stare)")
_ADJECTIVAL_PHRASE = re.compile(r"(?:ed|^(?:sticking|sticks|stuck)\b.*)$", re.IGNORECASE)  # take no article
# phrases whose words are no expression
_VETOES = (r"happy\s+(?:hours?|birthday|new\s+year|holidays?|ending|meal|place|medium|path)",
           r"laughing\s+stock", r"crying\s+shame", r"(?:sun|lens|screen|light)\s+glare",
           r"glaring\s+(?:error|mistake|omission|sun|light)", r"serious\s+business", r"screaming\s+deal")

# words that join a phrase
_INTENSIFIERS = {"very", "really", "extremely", "slightly", "so", "super", "quite", "somewhat", "incredibly",
                 "truly", "visibly", "clearly", "utterly", "totally", "completely", "rather", "fairly", "too",
                 "mildly", "absolutely", "highly", "terribly", "deeply", "genuinely", "openly", "obviously", "most",
                 "more", "less", "overly", "increasingly"}
_TWO_WORD_INTENSIFIERS = {("a", "bit"), ("a", "little"), ("kind", "of"), ("sort", "of")}
_MANNER = {"softly", "gently", "warmly", "broadly", "widely", "wide", "brightly", "faintly", "slightly", "loudly",
           "quietly", "silently", "wildly", "hysterically", "uncontrollably", "maniacally", "heartily", "sweetly",
           "kindly", "knowingly", "slyly", "wryly", "playfully", "mischievously", "sarcastically", "seriously",
           "bitterly", "intensely", "menacingly", "coldly", "hard", "genuinely", "naturally", "radiantly",
           "politely", "awkwardly", "aloud", "silently", "openly", "subtly", "slowly", "suddenly"}
_NOUN_ADJECTIVES = {"big", "wide", "broad", "huge", "bright", "gentle", "soft", "warm", "faint", "slight", "small",
                    "little", "tiny", "toothy", "genuine", "sincere", "radiant", "cheeky", "sly", "wry", "knowing",
                    "goofy", "silly", "hearty", "loud", "crooked", "lopsided", "half", "subtle", "forced", "fake",
                    "sweet", "friendly", "kind", "open", "contagious", "infectious", "beaming", "dazzling",
                    "cheesy", "mischievous", "playful", "shy", "nervous", "sad", "happy", "slight"}
_DETERMINERS = {"a", "an", "the", "her", "his", "their", "its", "my", "your", "one's", "some"}
_NOUN_LEADS = {"with", "wearing", "showing", "has", "have", "having", "had", "flashing", "flashes", "give", "gives",
               "giving", "cracking", "cracks", "forcing", "forces", "into", "in", "burst", "bursts", "bursting",
               "breaking", "breaks", "broke"}
_LEADS = {"looking", "looks", "look", "appearing", "appears", "appear", "seems", "seeming", "seem", "is", "are",
          "was", "were", "being", "be", "feeling", "feels", "who's", "that's"}
_LEAD_PRONOUNS = {"who", "that", "which"}
_CONJUNCTIONS = {"and", "or", "&"}
_RIGHT_NOUNS = {"face", "faces", "faced", "expression", "expressions", "look"}
_TAILS = (r"out\s+loud", r"a\s+lot",
          r"(?:with|in|of)\s+(?:joy|delight|happiness|glee|laughter|rage|anger|fury|fear|terror|horror|surprise|"
          r"disgust|despair|sorrow|sadness|tears|pain|frustration|shock|amazement|excitement)",
          r"at\s+(?:the\s+)?(?:camera|viewer|viewers|audience|lens)",
          r"on\s+(?:her|his|their|its|the|a|my|your)\s+faces?", r"from\s+ear\s+to\s+ear")


def _compile_words(patterns) -> re.Pattern:
    return re.compile(rf"(?:{'|'.join(patterns)})", re.IGNORECASE)


_NOUN_RE = _compile_words(_NOUNS)
_CORE_RE = _compile_words(_NOUNS + _VERBS + _ADJECTIVES + _EMOTION_ADVERBS)
_PHRASE_RE = re.compile(rf"(?<!\w)(?:{'|'.join(_PHRASES)})(?!\w)", re.IGNORECASE)
_VETO_RE = re.compile(rf"(?<!\w)(?:{'|'.join(_VETOES)})(?!\w)", re.IGNORECASE)
_TAIL_RE = re.compile(rf"[\s-]+(?:{'|'.join(_TAILS)})(?!\w)", re.IGNORECASE)
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?|&")
_JOIN_RE = re.compile(r"[\s-]*")  # what may stand between two words of one phrase


@dataclass(frozen=True)
class ExpressionSplit:
    """APG's two prompts for one prompt.

    template: the prompt without its expression phrases (and, with keep_attributes=False, without the FASA
        attribute phrases), for the inversion.
    attributes: the whole prompt, for the regeneration.
    expression_words: the expression phrases found, in prompt order ("laughing happily", "big smile").
    negated: negated expression phrases left in both prompts ("not smiling").
    dropped_attributes: FASA attribute phrases removed from the template (keep_attributes=False only).
    """
    template: str
    attributes: str
    expression_words: tuple[str, ...] = ()
    negated: tuple[str, ...] = ()
    dropped_attributes: tuple[str, ...] = ()

    @property
    def has_expressions(self) -> bool:
        return bool(self.expression_words)


@dataclass
class _Span:
    start: int  # token index range of the expression words themselves, modifiers included
    end: int
    cut_start: int  # token index range removed from the template (leads, articles, conjunctions included)
    cut_end: int
    noun: bool = False
    tail_end: int | None = None  # character end of a tail phrase ("out loud"), if any


class _Tokens:
    """The prompt's words with their character spans."""

    def __init__(self, text: str):
        self.text = text
        self.spans = [m.span() for m in _WORD_RE.finditer(text)]
        self.words = [text[s:e].lower().replace("\u2019", "'") for s, e in self.spans]

    def __len__(self):
        return len(self.spans)

    def joined(self, i: int) -> bool:
        """True when word i and word i + 1 are separated only by spaces or hyphens (same phrase possible)."""
        if i < 0 or i + 1 >= len(self.spans):
            return False
        gap = self.text[self.spans[i][1]:self.spans[i + 1][0]]
        return _JOIN_RE.fullmatch(gap) is not None and "\n" not in gap

    def index_at(self, char: int) -> int:
        for i, (s, e) in enumerate(self.spans):
            if s <= char < e:
                return i
        raise ValueError(char)


def _core_tokens(tok: _Tokens) -> dict[int, tuple[int, bool]]:
    """start token -> (end token, noun-capable) for each expression word or phrase outside the vetoes."""
    vetoed = [m.span() for m in _VETO_RE.finditer(tok.text)]
    found: dict[int, tuple[int, bool]] = {}
    taken: set[int] = set()
    for m in _PHRASE_RE.finditer(tok.text):
        i, j = tok.index_at(m.start()), tok.index_at(m.end() - 1) + 1
        found[i] = (j, not _ADJECTIVAL_PHRASE.search(m.group(0)))
        taken.update(range(i, j))
    for i, ((s, e), w) in enumerate(zip(tok.spans, tok.words)):
        if i in taken or any(vs <= s and e <= ve for vs, ve in vetoed):
            continue
        if _CORE_RE.fullmatch(w):
            found[i] = (i + 1, bool(_NOUN_RE.fullmatch(w)))
    return found


def _grow(tok: _Tokens, start: int, end: int, noun: bool, cores: dict) -> _Span:
    """Extend the expression words at [start, end) over modifiers, right nouns, tails and left leads."""
    w = tok.words
    # right: adverbs, "looking", nouns such as "face" / "expression", further expression words
    while end < len(tok) and tok.joined(end - 1):
        if w[end] in _MANNER or w[end] == "looking":
            end += 1
        elif w[end] in _RIGHT_NOUNS:
            end, noun = end + 1, True
        elif end in cores:
            end, noun = cores[end][0], cores[end][1]
        else:
            break
    tail = _TAIL_RE.match(tok.text, tok.spans[end - 1][1])
    tail_end = tail.end() if tail else None
    if tail:
        end = tok.index_at(tail.end() - 1) + 1
    # left: modifiers; an article and leads only in front of a noun
    i = start
    while i > 0 and tok.joined(i - 1):
        prev = w[i - 1]
        if i > 1 and tok.joined(i - 2) and (w[i - 2], prev) in _TWO_WORD_INTENSIFIERS and not noun:
            i -= 2
        elif prev in _INTENSIFIERS or prev in _MANNER or (i - 1) in cores and cores[i - 1][0] == i:
            i -= 1
        elif noun and prev in _NOUN_ADJECTIVES:
            i -= 1
        else:
            break
    phrase_start, cut = i, i
    if noun and cut > 0 and tok.joined(cut - 1) and w[cut - 1] in _DETERMINERS:
        cut -= 1
    while cut > 0 and tok.joined(cut - 1) and (w[cut - 1] in _LEADS or (noun and w[cut - 1] in _NOUN_LEADS)
                                               or (w[cut - 1] in _LEAD_PRONOUNS
                                                   and (cut < phrase_start or w[cut - 1] == "who"))):
        cut -= 1
    return _Span(phrase_start, end, cut, end, noun, tail_end)


def _merge(tok: _Tokens, spans: list[_Span]) -> list[_Span]:
    """Join phrases separated only by "and"/"or" (or nothing) into one phrase."""
    out: list[_Span] = []
    for sp in spans:
        if out:
            last = out[-1]
            between = list(range(last.end, sp.cut_start))
            touching = sp.cut_start < last.end or (not between and tok.joined(last.end - 1))
            joined_by_and = (len(between) == 1 and tok.words[between[0]] in _CONJUNCTIONS
                             and tok.joined(last.end - 1) and tok.joined(between[0]))
            if touching or joined_by_and:
                last.end = max(last.end, sp.end)
                last.cut_end = max(last.cut_end, sp.cut_end)
                last.noun = sp.noun
                continue
        out.append(sp)
    return out


def _expression_spans(tok: _Tokens) -> list[_Span]:
    cores = _core_tokens(tok)
    spans, i = [], 0
    for start in sorted(cores):
        if start < i:
            continue
        end, noun = cores[start]
        sp = _grow(tok, start, end, noun, cores)
        spans.append(sp)
        i = sp.end
    return _merge(tok, spans)


def _chars(tok: _Tokens, i: int, j: int) -> tuple[int, int]:
    return tok.spans[i][0], tok.spans[j - 1][1]


def _take_conjunction(tok: _Tokens, sp: _Span) -> tuple[int, int]:
    """Character range to cut for a phrase, with one neighbouring "and"/"or" so none is left dangling."""
    w = tok.words
    i, j = sp.cut_start, sp.cut_end
    if i > 0 and tok.joined(i - 1) and w[i - 1] in _CONJUNCTIONS:
        i -= 1
    elif j < len(tok) and tok.joined(j - 1) and w[j] in _CONJUNCTIONS:
        if sp.noun and sp.cut_start < sp.start and w[sp.cut_start] in _NOUN_LEADS:
            i = sp.start  # "with a big smile and blue eyes" -> "with blue eyes": keep the lead
            while i > sp.cut_start and w[i - 1] in _DETERMINERS | _NOUN_ADJECTIVES:
                i -= 1
            i = max(i, sp.cut_start + 1)
        j += 1
    return _chars(tok, i, j)


# ------------------------------------------------------------------------------------------ FASA attributes
_CHUNK_BREAK = re.compile(r"[,;:.!?()\[\]{}|\n]")
_SEGMENT_LEADS = {"with", "wearing", "having", "has", "sporting", "and", "in", "featuring", "&", "plus"}


def _attribute_cuts(tok: _Tokens, protected: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """Character ranges of the FASA attribute phrases to drop from the template, with their text.

    A mention in a modifier segment ("with blonde hair", "wearing glasses", a comma chunk "blue eyes") drops the
    segment; a mention in the prompt's head segment ("a blonde woman") drops only the mention's words.
    """
    text = tok.text
    mentions = []
    for s, e, _attr, negated_form in attribute_mentions(text):
        if negated_form or negation_start(text, s, e) is not None:
            continue
        if any(ps < e and s < pe for ps, pe in protected):
            continue
        mentions.append((s, e))
    if not mentions:
        return []
    # segments: token ranges split at chunk breaks and at segment leads
    bounds, seg_start, first_chunk = [], 0, True
    head = None
    for i in range(len(tok)):
        new_chunk = i > 0 and _CHUNK_BREAK.search(text, tok.spans[i - 1][1], tok.spans[i][0]) is not None
        if i > 0 and (new_chunk or tok.words[i] in _SEGMENT_LEADS):
            bounds.append((seg_start, i))
            if head is None and first_chunk:
                head = (seg_start, i)
            first_chunk = first_chunk and not new_chunk
            seg_start = i
    if len(tok):
        bounds.append((seg_start, len(tok)))
        if head is None:
            head = (seg_start, len(tok))
    cuts = []
    for a, b in bounds:
        s, e = _chars(tok, a, b)
        inside = [(ms, me) for ms, me in mentions if s <= ms and me <= e]
        if not inside:
            continue
        if (a, b) == head:
            for ms, me in inside:
                ms, me = _hyphen_compound(text, ms, me)
                cuts.append((ms, me, text[ms:me]))
        elif not any(ps < e and s < pe for ps, pe in protected):
            cuts.append((s, e, text[s:e]))
    return cuts


def _hyphen_compound(text: str, s: int, e: int) -> tuple[int, int]:
    """Widen a mention to its hyphenated compound ("long-haired", "blue-eyed")."""
    while s > 1 and text[s - 1] == "-" and text[s - 2].isalnum():
        s -= 1
        while s > 0 and text[s - 1].isalnum():
            s -= 1
    while e + 1 < len(text) and text[e] == "-" and text[e + 1].isalnum():
        e += 1
        while e < len(text) and text[e].isalnum():
            e += 1
    return s, e


# ------------------------------------------------------------------------------------------ tidy
_ARTICLE_END = re.compile(r"\b([Aa]n?)(\s+)$")


def _fix_article(left: str, right: str) -> str:
    """'a'/'an' at the end of `left` agreeing with the first word of `right` (rough vowel rule)."""
    m = _ARTICLE_END.search(left)
    word = re.match(r"\s*([A-Za-z]+)", right)
    if not m or not word:
        return left
    article = m.group(1)
    wanted = "an" if word.group(1)[0].lower() in "aeiou" else "a"
    if article.lower() == wanted:
        return left
    wanted = wanted.capitalize() if article[0].isupper() else wanted
    return left[:m.start(1)] + wanted + m.group(2)


def _tidy(text: str) -> str:
    text = re.sub(r"\(\s*(?::\s*[\d.]+)?\s*\)", "", text)  # emptied (weighted) groups
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([,;:.!?)\]])", r"\1", text)
    text = re.sub(r"([(\[]) +", r"\1", text)
    text = re.sub(r"([,;])(?:\s*[,;])+", r"\1", text)  # empty chunks
    text = re.sub(r"(?m)^[\s,;]+|[\s,;]+$", "", text)
    return text.strip()


def _cut(text: str, ranges: list[tuple[int, int]]) -> str:
    out, pos = "", 0
    for s, e in sorted(ranges):
        if s < pos:
            s = pos
        if e <= s:
            continue
        out = _fix_article(out + text[pos:s], text[e:])
        pos = e
    return _tidy(out + text[pos:])


# ------------------------------------------------------------------------------------------ API
def find_expressions(prompt: str) -> tuple[list[tuple[int, int, str]], list[str]]:
    """(cut ranges with their phrase, negated phrases) of the expression phrases in `prompt`."""
    if not isinstance(prompt, str):
        raise TypeError(f"FreeCure: the prompt must be text, got {type(prompt).__name__}")
    tok = _Tokens(prompt)
    cuts, negated = [], []
    for sp in _expression_spans(tok):
        s, e = _chars(tok, sp.start, sp.end)
        if sp.tail_end is not None:
            e = max(e, sp.tail_end)
        cue = negation_start(prompt, _chars(tok, sp.cut_start, sp.end)[0], e)
        if cue is None:
            cue = negation_start(prompt, s, e)
        if cue is not None:
            negated.append(prompt[cue:e])
            continue
        cs, ce = _take_conjunction(tok, sp)
        cuts.append((cs, max(ce, e), prompt[s:e]))
    return cuts, negated


def split_prompt(prompt: str, keep_attributes: bool = True) -> ExpressionSplit:
    """APG's (template, attributes) prompts for `prompt`: the template lacks the expression phrases.

    keep_attributes=True keeps the FASA attribute words (hair, glasses, ...) in both prompts so APG does not
    push them away; False also removes them from the template (see the module docstring), but only when the
    prompt has expression words: without any, template == attributes, so APG passes the image through.
    """
    cuts, negated = find_expressions(prompt)
    ranges = [(s, e) for s, e, _ in cuts]
    dropped: list[str] = []
    if not keep_attributes and cuts:  # no expression words: both prompts stay equal, so APG passes through
        for s, e, phrase in _attribute_cuts(_Tokens(prompt), ranges):
            ranges.append((s, e))
            dropped.append(phrase.strip())
    template = _cut(prompt, ranges) if ranges else prompt.strip()
    return ExpressionSplit(template=template, attributes=prompt.strip(),
                           expression_words=tuple(p for _, _, p in cuts), negated=tuple(negated),
                           dropped_attributes=tuple(dropped))


def describe(split: ExpressionSplit) -> str:
    """One line for the node: the expression words found (or that APG will pass the image through)."""
    if not split.has_expressions:
        text = "no expression words: APG will pass the image through"
    else:
        text = "expression words: " + ", ".join(repr(w) for w in split.expression_words)
    if split.negated:
        text += "; negated (kept in both prompts): " + ", ".join(repr(w) for w in split.negated)
    if split.dropped_attributes:
        text += "; attribute phrases dropped from the template: " + ", ".join(repr(w) for w in split.dropped_attributes)
    return text
