"""Scoring a greedy answer against a fact's object and aliases: the rules of `warehouse eval
--match`, shared by the evaluator, the study's findings and the accuracy bench."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from warehouse.store.errors import WarehouseError

MATCHES = ("prefix", "paper-prefix", "starts-with", "contains")
# The scoring rule behind each match mode, by name. The name is part of every cache key of
# scored answers (results files, the baseline's sidecar, stats filtered by it), so a rule
# that changes gets a new name and what was scored under the old one is scored anew.
RULES = {
    "prefix": "answer-prefix-3",
    "paper-prefix": "paper-prefix",
    "starts-with": "starts-with",
    "contains": "contains",
}

# A partial answer (the continuation stops inside the answer) needs this many normalized
# characters: " 1" is no birth year, '"T' no word. See `is_correct`.
MIN_PARTIAL = 3
# Scripts written without spaces between words: no word boundary to check after an answer.
_UNSPACED = ("CJK ", "IDEOGRAPHIC", "HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA", "THAI", "LAO")


def _kept(folded: str) -> str:
    return "".join(
        ch for ch in folded if not unicodedata.category(ch).startswith(("P", "Z", "S", "C"))
    )


def normalize_answer(text: str) -> str:
    """Case-folded, without whitespace, punctuation, symbols or U+FFFD (a split UTF-8 char)."""
    return _kept(unicodedata.normalize("NFKC", text).casefold())


def is_correct(continuation: str, obj: str, aliases: Sequence[str] = ()) -> bool:
    """Whether a greedy continuation carries the answer (the object or an alias).

    After `normalize_answer` on both sides, correct when the continuation
    - starts with the whole answer and the answer ends a word there (" Paris." and " Paris is"
      are right for Paris, " Parisian" is not; " Fe," is right for Fe, " Fer" is not; in
      scripts without spaces any next character ends it: "東京都です"), or
    - stops inside the answer after at least `MIN_PARTIAL` characters (" Osl" for Oslo,
      " Buenos" for Buenos Aires, "187" for 1879; not " 1", " Os" or "东" for 东京).
    The second is the rule "at least min(3, length of the first word) characters of the
    answer, or its whole first word, and never fewer than 3 characters unless the whole
    answer", which reduces to 3 characters whatever a word is (a CJK answer is one word).
    """
    said = normalize_answer(continuation)
    if not said:
        return False
    for answer in (obj, *aliases):
        gold = normalize_answer(answer)
        if not gold:
            continue
        if said.startswith(gold) and _ends_word(continuation, len(gold)):
            return True
        if gold.startswith(said) and len(said) >= MIN_PARTIAL:
            return True
    return False


def is_paper_correct(continuation: str, obj: str, aliases: Sequence[str] = ()) -> bool:
    """The paper's lenient rule: after `normalize_answer`, the continuation is a non-empty
    prefix of the object or an alias (so " 1" is right for 1879), or starts with one."""
    said = normalize_answer(continuation)
    if not said:
        return False
    for answer in (obj, *aliases):
        gold = normalize_answer(answer)
        if gold and (gold.startswith(said) or said.startswith(gold)):
            return True
    return False


def _ends_word(continuation: str, n: int) -> bool:
    """Whether the continuation's first `n` normalized characters end a word: what follows
    them is not a letter, digit or mark of the same word (none is, between or after
    characters of a script written without spaces)."""
    last = ""
    seen = 0
    for ch in unicodedata.normalize("NFKC", continuation):
        if seen == n:
            return not (_in_word(last) and _in_word(ch))
        kept = _kept(ch.casefold())
        seen += len(kept)
        last = kept[-1:] or last
        if seen > n:  # one character folded to several ("ß" -> "ss") straddles the end
            return False
    return True


def _in_word(ch: str) -> bool:
    if not ch or not unicodedata.category(ch).startswith(("L", "N", "M")):
        return False
    return not unicodedata.name(ch, "").startswith(_UNSPACED)


def rule_name(match: str) -> str:
    """The name of the scoring rule of a match mode (`RULES`); an unknown mode is an error."""
    if match not in RULES:
        raise WarehouseError(f"unknown match mode {match!r}; choose from {', '.join(MATCHES)}")
    return RULES[match]


def score(generated: str, obj: str, aliases: Sequence[str] = (), match: str = "prefix") -> bool:
    """Whether a continuation answers the fact, after `normalize_answer` (case-folded, without
    whitespace, punctuation and symbols) on both sides, for the object or any alias.

    prefix: carries the answer (`is_correct`): starts with the whole answer, which ends a word
            there, or stops inside it after at least 3 characters (" Paris." and " Par" are
            right for Paris, " Pa", " Parisian", " the" and "" wrong);
    paper-prefix: a non-empty prefix of the answer, or starting with it (`is_paper_correct`);
    starts-with: starts with the whole answer; contains: holds the whole answer anywhere.
    """
    rule_name(match)
    if match == "prefix":
        return is_correct(generated, obj, aliases)
    if match == "paper-prefix":
        return is_paper_correct(generated, obj, aliases)
    said = normalize_answer(generated)
    golds = [g for g in map(normalize_answer, (obj, *aliases)) if g]
    if not said:
        return False
    if match == "starts-with":
        return any(said.startswith(g) for g in golds)
    return any(g in said for g in golds)
