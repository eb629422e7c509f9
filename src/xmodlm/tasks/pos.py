"""Part-of-speech tagging with Universal Dependencies UPOS tags; metric token accuracy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from xmodlm import metrics
from xmodlm.tasks import format_error, read_sentences, tagging
from xmodlm.tasks.tagging import Example

# The 17 universal POS tags of UD v2, alphabetical (the order XTREME's udpos uses).
LABELS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
MISSING = "_"  # predicted for words the model never saw (truncated): always wrong


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


def evaluate(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Accuracy (percent) over all words."""
    return {"accuracy": metrics.token_accuracy(predictions, references)}


_TAGGER = tagging.Tagger(LABELS, fill=MISSING)
featurize, collate, decode = _TAGGER.featurize, tagging.collate, _TAGGER.decode

TASK = tagging.task(
    "pos",
    tagger=_TAGGER,
    read=load,
    read_predictions_with=load_tsv,
    label_list=label_list,
    score=evaluate,
    metrics=("accuracy",),
    suffix=".tsv",
    data_suffixes=(".tsv", ".conllu"),
)
