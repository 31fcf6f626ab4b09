"""Text normalisation for lexical search: the same steps for what is indexed and what is asked.

``index_terms`` turns a memory into the words it is indexed by; ``query_terms`` turns a
question into the words searched for. Both lowercase, split on anything that is not a letter
or digit (dropping possessive/contraction tails: "Caroline's" → "caroline"), map irregular
English verb and noun forms to their base ("went" → "go", "children" → "child"), and drop
stop words. ``stems`` then applies the Porter stemmer (the algorithm SQLite FTS5's ``porter``
tokenizer uses) and strips diacritics, on both sides, so suffix variants meet.

    >>> query_terms("When did Caroline go to the support groups?")
    ['caroline', 'go', 'support', 'groups']
    >>> stems(query_terms("When did Caroline go to the support groups?"))
    ['carolin', 'go', 'support', 'group']
"""
from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_TAIL = re.compile(r"'(?:s|re|ve|ll|d|m|t)$")

# Function words and question scaffolding: they carry no topic, only noise and long posting
# lists (which also cost time on a large store).
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are aren as at be because been
before being below between both but by can cannot could couldn did didn do does doesn doing
don down during each else ever few for from further get gets got had hadn has hasn have
haven having he her here hers herself him himself his how however i if in into is isn it its
itself just let ll me might more most must mustn my myself no nor not now of off on once only
or other ought our ours ourselves out over own re same shall shan she should shouldn so some
such than that the their theirs them themselves then there these they this those through to
too under until up upon us ve very was wasn we were weren what whatever when where whether
which while who whom whose why will with won would wouldn yet you your yours yourself
yourselves oh yeah yes hey hi okay ok um uh wow really thing things lot lots
kind sort maybe much many something anything everything someone anyone everyone
""".split())

# Request words: what people say to an assistant around the topic ("please read the notes and
# tell me ..."). Searched, but only to order what a topic word found: never the only reason a
# memory is recalled (``weak``). Stemmed when first used.
WEAK_WORDS = frozenset("""
please pls thanks thank tell show explain help need want look check give remember recall
mind try say ask describe summarize summarise list sure quick quickly exactly actually
basically read know let
""".split())
_weak_stems: frozenset[str] | None = None


def weak(stems_: list[str]) -> frozenset[str]:
    """The request words among the stemmed query ``stems_`` (``WEAK_WORDS``)."""
    global _weak_stems
    if _weak_stems is None:
        _weak_stems = frozenset(stems(sorted(WEAK_WORDS)))
    return _weak_stems.intersection(stems_)


# Irregular forms the porter stemmer cannot join with their base form.
_IRREGULAR = {
    "went": "go", "gone": "go", "goes": "go", "ran": "run", "bought": "buy", "brought": "bring",
    "made": "make", "took": "take", "taken": "take", "saw": "see", "seen": "see",
    "came": "come", "gave": "give", "given": "give", "found": "find", "felt": "feel",
    "kept": "keep", "left": "leave", "met": "meet", "paid": "pay", "said": "say",
    "sold": "sell", "sent": "send", "spent": "spend", "taught": "teach", "thought": "think",
    "told": "tell", "wrote": "write", "written": "write", "began": "begin", "begun": "begin",
    "built": "build", "chose": "choose", "chosen": "choose", "drew": "draw", "drawn": "draw",
    "drove": "drive", "driven": "drive", "ate": "eat", "eaten": "eat", "fell": "fall",
    "fallen": "fall", "flew": "fly", "flown": "fly", "forgot": "forget", "grew": "grow",
    "grown": "grow", "heard": "hear", "held": "hold", "knew": "know", "known": "know",
    "led": "lead", "lost": "lose", "meant": "mean", "read": "read", "rode": "ride",
    "sang": "sing", "sung": "sing", "sat": "sit", "slept": "sleep", "spoke": "speak",
    "spoken": "speak", "stood": "stand", "swam": "swim", "threw": "throw", "thrown": "throw",
    "understood": "understand", "woke": "wake", "won": "win", "wore": "wear", "worn": "wear",
    "became": "become", "caught": "catch", "fought": "fight", "hid": "hide", "hung": "hang",
    "lit": "light", "shot": "shoot", "shown": "show", "struck": "strike", "tore": "tear",
    "children": "child", "kids": "kid", "men": "man", "women": "woman", "people": "person",
    "feet": "foot", "teeth": "tooth", "mice": "mouse", "lives": "life", "wives": "wife",
    "better": "good", "best": "good", "worse": "bad", "worst": "bad",
}


def words(text: str) -> list[str]:
    """Lowercased word tokens with contraction/possessive tails removed."""
    out = []
    irregular = _IRREGULAR.get
    for token in _WORD.findall(text.lower().replace("\u2019", "'")):
        if "'" in token:
            if token.endswith("n't"):
                continue                # negated auxiliaries: stop words ("won't" ≠ "won")
            token = _TAIL.sub("", token).replace("'", "")
            if not token:
                continue
        out.append(irregular(token, token))
    return out


def index_terms(text: str) -> list[str]:
    """The content words of ``text``, in order (what FTS5 indexes)."""
    return [w for w in words(text) if w not in STOP_WORDS and (len(w) > 1 or w.isdigit())]


def index_text(text: str) -> str:
    return " ".join(index_terms(text))


def query_terms(text: str) -> list[str]:
    """The distinct content words of a query, in order of first appearance."""
    return list(dict.fromkeys(index_terms(text)))


def match_expression(terms: list[str], columns: tuple[str, ...]) -> str:
    """An FTS5 MATCH expression: any of ``terms`` in any of ``columns``.

    Terms are already reduced to letters and digits; quoting makes FTS5 read each one as a
    plain string, never as an operator (``NOT``, ``OR``) or a column filter.
    """
    ors = " OR ".join(f'"{t}"' for t in terms)
    return f"{{{' '.join(columns)}}} : ({ors})"


_STEMS: dict[str, str] = {}          # word → stem; stemming a word costs ~30 µs uncached
_STEMS_MAX = 200_000
_stemmer = None


def stems(terms: list[str]) -> list[str]:
    """``terms`` Porter-stemmed and without diacritics, in order."""
    global _stemmer
    out = []
    for term in terms:
        stem = _STEMS.get(term)
        if stem is None:
            if _stemmer is None:
                import snowballstemmer
                _stemmer = snowballstemmer.stemmer("porter")
            plain = term if term.isascii() else "".join(
                c for c in unicodedata.normalize("NFKD", term) if not unicodedata.combining(c))
            stem = _stemmer.stemWord(plain)
            if len(_STEMS) >= _STEMS_MAX:
                _STEMS.clear()
            _STEMS[term] = stem
        out.append(stem)
    return out
