"""Benchmark metrics, matching the official scripts: accuracy, entity F1, SQuAD / MLQA EM and F1.

Every score is a percentage (0-100), as in the XTREME and X-Mod tables; the SQuAD script
reports x100 too, while seqeval and conlleval's internals use fractions.

References whose behaviour is reproduced (not their code):
- entity P/R/F1: conlleval.pl and seqeval 1.2.2 in its default (non-strict) mode;
- exact match / F1: the SQuAD v1.1 evaluation script (XQuAD, TyDiQA-GoldP);
- language-aware exact match / F1: MLQA's mlqa_evaluation_v1.py.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = [
    "accuracy",
    "token_accuracy",
    "entities",
    "entity_scores",
    "normalize_answer",
    "answer_exact_match",
    "answer_f1",
    "squad_scores",
    "MLQA_LANGUAGES",
]


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Percentage of positions where prediction == reference."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("accuracy of an empty reference list is undefined")
    correct = sum(p == r for p, r in zip(predictions, references))
    return 100.0 * correct / len(references)


def token_accuracy(predictions: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Accuracy over all tokens of all sentences (POS tagging)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted sentences for {len(references)} references")
    for i, (p, r) in enumerate(zip(predictions, references)):
        if len(p) != len(r):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(r)} reference tags")
    return accuracy([t for s in predictions for t in s], [t for s in references for t in s])


# ---------------------------------------------------------------- entity-level scores

_TAG = re.compile(r"^(?:O|[BIES]-.+)$")


def _split_tag(tag: str) -> tuple[str, str]:
    if not _TAG.match(tag):
        raise ValueError(f"tag {tag!r} is not 'O' or PREFIX-TYPE with PREFIX in B, I, E, S (IOB2 / IOBES)")
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of one sentence as (type, first, last) with inclusive token indices.

    Chunk boundaries follow conlleval and seqeval's default mode, so malformed IOB2 is read
    the way they read it: an I- tag that does not continue an entity of the same type
    (after O, after another type, or at the start) opens a new entity; B- always opens one;
    a change of type always closes the current one.
    """
    found = []
    start = None
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate([*tags, "O"]):  # the trailing O closes an entity at the end
        prefix, type_ = _split_tag(tag)
        ends = prev_prefix != "O" and (
            prev_prefix in "ES" or prefix in "BSO" or prev_type != type_
        )
        if ends:
            found.append((prev_type, start, i - 1))
        begins = prefix != "O" and (
            prefix in "BS" or prev_prefix in "ESO" or prev_type != type_
        )
        if begins:
            start = i
        prev_prefix, prev_type = prefix, type_
    return found


def entity_scores(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 over sentences (percentages).

    An entity counts as correct only if type, start and end all match. Division by zero
    gives 0, as in seqeval.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted sentences for {len(references)} references")
    pred, gold = set(), set()
    for i, (p, r) in enumerate(zip(predictions, references)):
        if len(p) != len(r):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(r)} reference tags")
        pred.update((i, *e) for e in entities(p))
        gold.update((i, *e) for e in entities(r))
    correct = len(pred & gold)
    precision = correct / len(pred) if pred else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}


# ---------------------------------------------------------------- QA: SQuAD v1.1 and MLQA

# Articles removed after punctuation, as whole words (Python's \b is Unicode-aware).
# Arabic is special: the MLQA script removes every occurrence of the string "ال",
# including inside words, and we reproduce that rather than the intent.
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"ال",
    "hi": None,
    "zh": None,
}
MLQA_LANGUAGES = tuple(_ARTICLES)
_SQUAD_ARTICLES = re.compile(_ARTICLES["en"])
_MLQA_ARTICLES = {k: re.compile(v) for k, v in _ARTICLES.items() if v}
_SQUAD_PUNCT = frozenset(string.punctuation)
# The MLQA script's "Chinese character" test: exactly the range U+4E00..U+9FA5.
_MLQA_CJK = re.compile("[\u4e00-\u9fa5]")


@functools.cache
def _mlqa_punct() -> frozenset[str]:
    # Every code point whose Unicode category is P*, plus ASCII punctuation (which adds
    # the symbols $+<=>^`|~). Built on first use: it scans all of Unicode (~0.3 s).
    cats = (chr(c) for c in range(sys.maxunicode))
    return frozenset(ch for ch in cats if unicodedata.category(ch).startswith("P")) | _SQUAD_PUNCT


def _mixed_segmentation(text: str, punct: frozenset[str]) -> list[str]:
    # zh: each CJK character (and punctuation mark) is a token; runs of anything else
    # are split on whitespace.
    tokens, run = [], []
    for ch in text:
        if _MLQA_CJK.match(ch) or ch in punct:
            tokens.extend("".join(run).split())
            run = []
            tokens.append(ch)
        else:
            run.append(ch)
    tokens.extend("".join(run).split())
    return tokens


def normalize_answer(text: str, lang: str | None = None) -> str:
    """Lowercase, drop punctuation, drop articles, rejoin tokens with single spaces.

    lang=None is the SQuAD v1.1 normalisation (XQuAD, TyDiQA-GoldP, English articles,
    ASCII punctuation). A language code selects MLQA's: Unicode punctuation, that
    language's articles, and for zh one token per CJK character.
    """
    text = text.lower()
    if lang is None:
        text = "".join(ch for ch in text if ch not in _SQUAD_PUNCT)
        return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())
    if lang not in _ARTICLES:
        raise ValueError(
            f"MLQA normalisation knows the languages {', '.join(MLQA_LANGUAGES)}, not {lang!r}; "
            "use lang=None for SQuAD v1.1 normalisation (XQuAD, TyDiQA-GoldP)"
        )
    punct = _mlqa_punct()
    text = "".join(ch for ch in text if ch not in punct)
    if lang in _MLQA_ARTICLES:
        text = _MLQA_ARTICLES[lang].sub(" ", text)
    tokens = _mixed_segmentation(text, punct) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


def answer_exact_match(prediction: str, gold: str, lang: str | None = None) -> bool:
    return normalize_answer(prediction, lang) == normalize_answer(gold, lang)


def answer_f1(prediction: str, gold: str, lang: str | None = None) -> float:
    """Token-overlap F1 (fraction) between normalised answers; 0 when nothing overlaps."""
    pred = normalize_answer(prediction, lang).split()
    ref = normalize_answer(gold, lang).split()
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    lang: str | None = None,
) -> dict[str, float]:
    """Exact match and F1 (percentages), each the max over a question's gold answers.

    Averaged over all reference questions: a question without a prediction scores 0 (as
    the official scripts do); predictions for unknown ids are ignored.
    """
    if not references:
        raise ValueError("no reference questions")
    em = f1 = 0.0
    for qid, golds in references.items():
        if isinstance(golds, str):
            raise TypeError(f"references[{qid!r}] must be a list of answer strings, not a string")
        if qid not in predictions:
            continue
        pred = predictions[qid]
        em += max((answer_exact_match(pred, g, lang) for g in golds), default=False)
        f1 += max((answer_f1(pred, g, lang) for g in golds), default=0.0)
    n = len(references)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}
