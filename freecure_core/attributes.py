"""Which face attributes a prompt asks for: whole-word regexes with synonyms, plurals and negation.

The reference code tests three case-sensitive substrings ("hair", "eye", "glasses"), so "chair" selects hair
and "sunglasses"/"eyebrows" select the eyes (method.md 2.2). Here every pattern is a whole word (or phrase),
case-insensitive; when matches overlap the longest wins ("ear rings" is earrings, not ears; "facial hair" is
lower_face, not hair); known false friends are vetoed ("glasses of wine", "eye-level", "ice cap", "shades of").

Decisions (each has a test):
- Hair colour words alone mean hair: blonde/blond, brunette, redhead, auburn, "<x>-haired".
- Styles mean hair: curly, wavy, braids, bangs, ponytail, bun (only "hair/messy/top/... bun" or "in a bun").
- "bald", "shaved head", "hairless" select hair, and "clean-shaven"/"beardless" select lower_face: the foundation
  image's region then shows the change (an empty hair mask is harmless and reported by the node).
- Eye make-up (eyeliner, eyeshadow, mascara, eyelashes) and contact lenses mean eyes: it sits on and around
  the parsed eye region, and the foundation branch draws it.
- "hairpin"/"hair clip" are hair (worn in the hair region); "hairpin turn/bend" is vetoed.
- Singular "spectacle" (a show), "shades" alone and "glass(es) of ..." are not glasses; "wearing shades",
  "aviators", "goggles", "eyewear" are. "nosebleed" is not nose. Expressions (smile, frown) select nothing:
  expressions are APG's job, not a mask's.
- Negation: a mention is ignored when a cue (no, not, without, never, n't, free of, instead of, ...) stands
  before it in the same clause, at most 3 words earlier, with no other verb in between ("no glasses",
  "without a hat", "not wearing sunglasses", "no glasses or hat"). Clauses end at punctuation and at
  "and", "but", "with", "while". "-free"/"-less" forms ("glasses-free", "hatless") are negated too.
  Two cues in a row cancel ("never without glasses"). A positive mention anywhere wins over a negated one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

ALL_ATTRIBUTES = ("hair", "eyes", "brows", "glasses", "ears", "earrings", "nose", "mouth", "lips", "hat",
                  "necklace", "skin", "neck", "cloth", "lower_face")

# attribute -> regex alternatives (matched as whole words, case-insensitive).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "hair": (r"hairs?", r"hair\s?styles?", r"hairdos?", r"haircuts?", r"hairline", r"haired", r"updo",
             r"curly", r"wavy", r"braids?", r"braided", r"plaits?", r"plaited", r"bangs", r"ponytails?",
             r"pigtails?", r"(?:hair|messy|top|low|high|space)\s+buns?", r"in\s+an?\s+bun", r"mohawk",
             r"afro", r"dreadlocks", r"cornrows", r"mullet", r"(?:pixie|bob|buzz|crew)\s+cut", r"undercut",
             r"bald", r"balding", r"shaved\s+head", r"hairless", r"blonde?s?", r"brunettes?", r"redheads?",
             r"redheaded", r"auburn", r"hairpins?", r"hair\s?clips?", r"hair\s?bands?"),
    "eyes": (r"eyes?", r"eyed", r"iris(?:es)?", r"pupils?", r"heterochromia", r"eyeliner", r"eye\s?liner",
             r"eyeshadow", r"eye\s+shadow", r"mascara", r"eyelash(?:es)?", r"lashes", r"eye\s?patch",
             r"contact\s+lenses"),
    "brows": (r"eyebrows?", r"brows?", r"unibrow"),
    "glasses": (r"glasses", r"sunglasses", r"eyeglasses", r"spectacles", r"goggles", r"eyewear", r"monocle",
                r"aviators", r"(?:wearing|pair\s+of|aviator|mirrored)\s+shades"),
    "ears": (r"ears?", r"earlobes?"),
    "earrings": (r"earrings?", r"ear[\s-]rings?", r"ear\s+piercings?", r"pierced\s+ears?", r"ear\s?cuffs?"),
    "nose": (r"noses?", r"nostrils?", r"nose\s+(?:ring|stud|piercing)s?", r"septum(?:\s+(?:ring|piercing))?"),
    "mouth": (r"mouths?", r"teeth", r"tooth", r"fangs"),
    "lips": (r"lips?", r"lipsticks?", r"lip\s?gloss", r"lip\s+balm", r"lip\s+piercing"),
    "hat": (r"hats?", r"caps?", r"beanies?", r"berets?", r"fedoras?", r"helmets?", r"headbands?",
            r"turbans?", r"headscarf", r"headscarves", r"hijabs?", r"bonnets?", r"sombreros?", r"crowns?",
            r"tiaras?", r"headdress(?:es)?", r"headpieces?", r"headwear", r"hatless"),
    "necklace": (r"necklaces?", r"chokers?", r"pendants?", r"lockets?"),
    "skin": (r"skin", r"skinned", r"skin\s+tone", r"complexion", r"freckles", r"freckled", r"wrinkles",
             r"wrinkled"),
    "neck": (r"necks?",),
    "cloth": (r"cloth", r"clothes", r"clothing", r"outfits?", r"shirts?", r"t-?shirts?", r"blouses?",
              r"dress", r"dresses", r"gowns?", r"jackets?", r"coats?", r"suits?", r"tuxedos?", r"sweaters?",
              r"hoodies?", r"cardigans?", r"vests?", r"uniforms?", r"collars?", r"turtlenecks?", r"scarf",
              r"scarves", r"neckties?", r"bow\s+ties?", r"kimonos?", r"robes?", r"armou?r"),
    "lower_face": (r"beards?", r"bearded", r"beardless", r"mustaches?", r"moustaches?", r"goatees?",
                   r"stubble", r"sideburns", r"facial\s+hair", r"clean[\s-]shaven", r"five\s+o'?clock\s+shadow"),
}

# Forms that are a negated mention by themselves.
_NEGATED_FORMS = {r"hatless"}

# Phrases whose words must not count as attribute mentions.
_VETOES = (
    r"glass(?:es)?\s+of", r"(?:wine|beer|champagne|cocktail|drinking|shot|martini|water|magnifying)\s+glass(?:es)?",
    r"shades\s+of", r"eye[\s-]level", r"eye[\s-]catching", r"bird'?s?[\s-]eye", r"fish[\s-]?eye", r"eye\s+candy",
    r"ear[\s-]to[\s-]ear", r"ears?\s+of\s+(?:corn|wheat|grain|barley|rice)",
    r"(?:ice|polar|bottle|knee|hub|snow)\s+caps?", r"caps\s+lock", r"cap\s+sleeves?", r"crown\s+of",
    r"hat[\s-]trick", r"hairpin\s+(?:turn|bend|curve|corner)s?",
    r"mouth\s+of\s+(?:the\s+|a\s+)?(?:river|cave|tunnel|bay|harbou?r|canyon|estuary)",
    r"nose\s+of\s+(?:the\s+|a\s+|an\s+)?(?:plane|aircraft|airplane|jet|rocket|car|ship|boat)",
    r"neck\s+of\s+the\s+woods", r"(?:bottle|guitar)\s+necks?", r"skin[\s-]?tight",
    r"coats?\s+of\s+(?:paint|arms)",
)

_NEG_CUE = re.compile(r"\b(?:no|not|without|never|none|nor|neither|sans|minus|lacking|lacks?|except|"
                      r"free\s+of|instead\s+of|rather\s+than|\w+n['\u2019]t)\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[,.;:!?()\[\]{}|\n]|\b(?:and|but|with|while|whereas|yet|though|although|plus)\b",
                         re.IGNORECASE)
_NEG_SUFFIX = re.compile(r"\s*-\s*(?:free|less)\b", re.IGNORECASE)
_MAX_NEG_GAP = 3  # words allowed between the cue and the mention ("not wearing any dark sunglasses")
_WEARING = {"wearing", "having", "sporting", "showing", "rocking"}


def _compile(pattern: str) -> re.Pattern:
    return re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)


_PATTERNS = [(attr, _compile(p), p in _NEGATED_FORMS) for attr, ps in _SYNONYMS.items() for p in ps]
_VETO_PATTERNS = [_compile(p) for p in _VETOES]


@dataclass
class AttributeMatch:
    """What a prompt asks for.

    attributes: selected names in ALL_ATTRIBUTES order.
    evidence: (attribute, matched prompt text) for each selected attribute, first mention, same order.
    ignored: attributes that were only mentioned negated ("no glasses"), same order; not selected.
    ignored_evidence: (attribute, negated phrase such as "no glasses") for those.
    """
    attributes: list[str] = field(default_factory=list)
    evidence: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    ignored_evidence: list[tuple[str, str]] = field(default_factory=list)


def _is_other_verb(word: str) -> bool:
    """An -ing word that ends a negation's reach ("not smiling, glasses"), unless it is wearing-like or a mention."""
    w = word.lower()
    return w.endswith("ing") and w not in _WEARING and not any(p.fullmatch(w) for _, p, _ in _PATTERNS)


def negation_start(prompt: str, start: int, end: int) -> int | None:
    """Index where the negating cue of the mention at [start, end) begins, or None if it is not negated."""
    if _NEG_SUFFIX.match(prompt, end):
        return start
    clause_start = 0
    for m in _CLAUSE_END.finditer(prompt, 0, start):
        clause_start = m.end()
    cues = list(_NEG_CUE.finditer(prompt, clause_start, start))
    if not cues:
        return None
    cue = cues[-1]
    if len(cues) > 1 and not prompt[cues[-2].end():cue.start()].strip():
        return None  # double negation: "never without glasses"
    gap = re.findall(r"[\w'\u2019-]+", prompt[cue.end():start])
    if len(gap) > _MAX_NEG_GAP or any(_is_other_verb(w) for w in gap):
        return None
    return cue.start()


def attribute_mentions(prompt: str) -> list[tuple[int, int, str, bool]]:
    """Non-overlapping (start, end, attribute, negated_form) mentions, leftmost-longest, outside vetoes."""
    vetoed = [m.span() for v in _VETO_PATTERNS for m in v.finditer(prompt)]
    found = []
    for attr, pattern, negated_form in _PATTERNS:
        for m in pattern.finditer(prompt):
            s, e = m.span()
            if not any(s < ve and vs < e for vs, ve in vetoed):
                found.append((s, e, attr, negated_form))
    found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
    kept, last_end = [], -1
    for f in found:
        if f[0] >= last_end:
            kept.append(f)
            last_end = f[1]
    return kept


def attributes_from_prompt(prompt: str) -> AttributeMatch:
    """The face attributes a prompt mentions (see the module docstring for the rules)."""
    if not isinstance(prompt, str):
        raise TypeError(f"FreeCure: the prompt must be text, got {type(prompt).__name__}")
    positive: dict[str, str] = {}
    negative: dict[str, str] = {}
    for start, end, attr, negated_form in attribute_mentions(prompt):
        cue = start if negated_form else negation_start(prompt, start, end)
        if cue is None:
            positive.setdefault(attr, prompt[start:end])
        else:
            tail = _NEG_SUFFIX.match(prompt, end)
            negative.setdefault(attr, prompt[cue:tail.end() if tail else end])
    order = [a for a in ALL_ATTRIBUTES if a in positive]
    dropped = [a for a in ALL_ATTRIBUTES if a in negative and a not in positive]
    return AttributeMatch(attributes=order, evidence=[(a, positive[a]) for a in order],
                          ignored=dropped, ignored_evidence=[(a, negative[a]) for a in dropped])
