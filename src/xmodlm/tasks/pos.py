"""Part-of-speech tagging with Universal Dependencies UPOS tags; metric token accuracy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from xmodlm import metrics
from xmodlm.tasks import collate_words, decode_words, featurize_words, format_error, read_sentences

# The 17 universal POS tags of UD v2, alphabetical (the order XTREME's udpos uses).
LABELS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
MISSING = "_"  # predicted for words the model never saw (truncated): always wrong


@dataclass(frozen=True)
class Example:
    words: list[str]
    tags: list[str]


def load(path: str | Path) -> list[Example]:
    """Read CoNLL-U if the file name ends in .conllu, else XTREME's `token<TAB>tag` TSV."""
    return load_conllu(path) if str(path).endswith(".conllu") else load_tsv(path)


def load_tsv(path: str | Path) -> list[Example]:
    """XTREME udpos: `token<TAB>UPOS` a line, a blank line between sentences.

    Only a tab separates the fields: some UD tokens contain spaces.
    """
    def parse(number: int, line: str):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise format_error(path, number, "token<TAB>tag", line)
        return fields[0], fields[1]

    return [Example(words, tags) for words, tags in read_sentences(path, parse)]


def load_conllu(path: str | Path) -> list[Example]:
    """Universal Dependencies CoNLL-U: 10 tab-separated columns, UPOS is the 4th.

    Comment lines (#) are skipped, and so are multiword-token ranges ("1-2") and empty
    nodes ("1.1"): the syntactic words are what UD annotates with UPOS.
    """
    def parse(number: int, line: str):
        if line.startswith("#"):
            return None
        fields = line.split("\t")
        if len(fields) != 10:
            raise format_error(path, number, f"10 tab-separated CoNLL-U columns (found {len(fields)})", line)
        index = fields[0]
        if "-" in index or "." in index:
            return None
        if not index.isdigit():
            raise format_error(path, number, "a word index (1, 2, ...), a range (1-2) or an empty node (1.1)", line)
        return fields[1], fields[3]

    return [Example(words, tags) for words, tags in read_sentences(path, parse)]


def label_list(examples: Iterable[Example]) -> list[str]:
    """LABELS, plus any other tag the data uses, sorted after them."""
    seen = {t for e in examples for t in e.tags}
    return [*LABELS, *sorted(seen - set(LABELS))]


def featurize(
    examples: Sequence[Example], tok: Tokenizer, max_length: int = 128, labels: Sequence[str] = LABELS
) -> list[dict]:
    """input_ids `<s> words </s>`; labels on first subwords only (see featurize_words)."""
    return featurize_words(examples, tok, max_length, labels)


def collate(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    return collate_words(features)


def decode(
    features: Sequence[dict],
    predicted_ids: Sequence[Sequence[int]],
    examples: Sequence[Example],
    labels: Sequence[str] = LABELS,
) -> list[list[str]]:
    """Per-word tags; words the model never saw (truncated) get MISSING and count as errors."""
    return decode_words(features, predicted_ids, [len(e.words) for e in examples], labels, fill=MISSING)


def evaluate(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Accuracy (percent) over all words."""
    return {"accuracy": metrics.token_accuracy(predictions, references)}
