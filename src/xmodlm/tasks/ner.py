"""Named-entity recognition (PAN-X / WikiANN, CoNLL-2003, MasakhaNER); metric entity F1."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from xmodlm import metrics
from xmodlm.tasks import format_error, read_sentences, tagging
from xmodlm.tasks.tagging import Example

# The Hugging Face `wikiann` label ids (ner_tags), also PAN-X's tag set.
LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
_TAG = re.compile(r"^(?:O|[BIES]-\S+)$")
# PAN-X as distributed by XTREME prefixes every token with its language: "en:London".
_LANG_PREFIX = re.compile(r"^[a-z]{2,3}:(?=.)")


def load(path: str | Path, strip_language_prefix: bool | None = None) -> list[Example]:
    """Read a CoNLL file: `token tag` a line, a blank line between sentences.

    Fields are tab-separated if the line has a tab, else whitespace-separated; the token
    is the first field and the tag the last, so 4-column CoNLL-2003 files work too.
    `-DOCSTART-` lines are skipped. PAN-X tokens carry a language prefix ("en:London"):
    with strip_language_prefix=None one such "xx:" prefix is removed from every token if
    the file's first token has one; True always removes it, False never does.
    """
    strip = strip_language_prefix

    def parse(number: int, line: str):
        nonlocal strip
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or not fields[0]:
            raise format_error(path, number, "a token and a tag separated by whitespace", line)
        token, tag = fields[0], fields[-1].strip()
        if token == "-DOCSTART-":
            return None
        if not _TAG.match(tag):
            expected = "an IOB2/IOBES tag (O, B-TYPE, I-TYPE, E-TYPE, S-TYPE) as the last field"
            raise format_error(path, number, expected, line)
        if strip is None:
            strip = _LANG_PREFIX.match(token) is not None
        return (_LANG_PREFIX.sub("", token, count=1) if strip else token), tag

    return [Example(words, tags) for words, tags in read_sentences(path, parse)]


def from_hf(rows: Iterable[Mapping], label_names: Sequence[str] = LABELS) -> list[Example]:
    """Examples from rows in the Hugging Face `wikiann` schema (tokens, ner_tags ids)."""
    examples = []
    for i, row in enumerate(rows):
        ids = row["ner_tags"]
        if any(not 0 <= t < len(label_names) for t in ids):
            raise ValueError(f"row {i}: ner_tags {list(ids)} outside 0..{len(label_names) - 1} ({list(label_names)})")
        examples.append(Example(list(row["tokens"]), [label_names[t] for t in ids]))
    return examples


def load_hf(language: str, split: str = "validation", dataset: str = "wikiann") -> list[Example]:
    """Download WikiANN for one language with the `datasets` library (an optional dependency)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("load_hf needs the `datasets` package: pip install datasets") from e
    data = datasets.load_dataset(dataset, language, split=split)
    return from_hf(data, data.features["ner_tags"].feature.names)


def label_list(examples: Iterable[Example]) -> list[str]:
    """The labels of a data set: LABELS when its tags fit them (ids stay WikiANN's);
    otherwise O, then for each entity type in alphabetical order its B- and I- tags.

    Derive it from the training set and pass the same list when featurizing every
    evaluation language, so that label ids agree.
    """
    seen = {t for e in examples for t in e.tags}
    if seen <= set(LABELS):
        return list(LABELS)
    types = sorted({t[2:] for t in seen if t != "O"})
    extra = sorted(seen - {"O"} - {f"{p}-{t}" for t in types for p in "BI"})  # E-, S- tags
    return ["O", *(f"{p}-{t}" for t in types for p in "BI"), *extra]


def evaluate(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity precision, recall, F1 (percent), as seqeval / conlleval."""
    return metrics.entity_scores(predictions, references)


# Words the model never saw (truncated) are predicted O.
_TAGGER = tagging.Tagger(LABELS, fill="O")
featurize, collate, decode = _TAGGER.featurize, tagging.collate, _TAGGER.decode

TASK = tagging.task(
    "ner",
    tagger=_TAGGER,
    read=load,
    read_predictions_with=lambda path: load(path, strip_language_prefix=False),
    label_list=label_list,
    score=evaluate,
    metrics=("precision", "recall", "f1"),
    suffix=".conll",
    data_suffixes=(".txt", ".conll", ".tsv"),
)
