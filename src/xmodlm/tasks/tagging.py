"""Word tagging, the one implementation behind NER and POS: sentences of words, one tag per word.

A tagging task differs from another only in its tags (`labels`: the default list, `label_list`: the list of a
data set), the tag predicted for words the model never saw (`fill`), its file format and its metric; the
featurisation, batching, decoding and prediction files are shared. Each task module builds its record with `task`
and its module functions with `Tagger`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from xmodlm.model import XmodForTokenClassification
from xmodlm.tasks import IGNORE_INDEX, Outputs, Setup, Task, inputs, pad, prepare_tokenizer, single

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    words: list[str]
    tags: list[str]


def featurize(examples: Sequence[Example], tok: Tokenizer, max_length: int, labels: Sequence[str]) -> list[dict]:
    """input_ids `<s> words </s>`, labels on first subwords only.

    Only a word's first subword carries its label; later subwords, special tokens and
    words cut by max_length get IGNORE_INDEX. `word_ids` (same length as input_ids) holds
    the word index at first subwords and -1 elsewhere, for `decode`.
    """
    tok = prepare_tokenizer(tok)
    label_id = {t: i for i, t in enumerate(labels)}
    features = []
    for n, ex in enumerate(examples):
        enc = tok.encode(list(ex.words), is_pretokenized=True, add_special_tokens=False)
        word_of = enc.word_ids[: max_length - 2]
        ids = single(enc.ids, max_length)
        word_ids, label_ids = [-1], [IGNORE_INDEX]
        previous = None
        for w in word_of:
            first = w is not None and w != previous
            previous = w
            word_ids.append(w if first else -1)
            if not first:
                label_ids.append(IGNORE_INDEX)
            elif ex.tags[w] in label_id:
                label_ids.append(label_id[ex.tags[w]])
            else:
                raise ValueError(f"example {n}: tag {ex.tags[w]!r} is not in the label list {list(labels)}")
        word_ids.append(-1)
        label_ids.append(IGNORE_INDEX)
        features.append({"input_ids": ids, "labels": label_ids, "word_ids": word_ids})
    return features


def collate(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    batch = inputs([f["input_ids"] for f in features])
    batch["labels"] = pad([f["labels"] for f in features], IGNORE_INDEX, batch["input_ids"].shape[1])
    return batch


def decode(
    features: Sequence[dict],
    predicted_ids: Sequence[Sequence[int]],
    num_words: Sequence[int],
    labels: Sequence[str],
    fill: str,
) -> list[list[str]]:
    """Per-word tags from per-position label ids (e.g. logits.argmax(-1)).

    Words without a labelled position (cut by max_length, or no subword at all) get
    `fill`, so predictions always line up with the full reference sentence.
    """
    if not len(features) == len(predicted_ids) == len(num_words):
        raise ValueError(
            f"{len(features)} features, {len(predicted_ids)} prediction rows, {len(num_words)} sentences"
        )
    out = []
    for f, row, n in zip(features, predicted_ids, num_words):
        tags = [fill] * n
        for position, w in enumerate(f["word_ids"]):
            if w >= 0:
                tags[w] = labels[int(row[position])]
        out.append(tags)
    return out


@dataclass(frozen=True)
class Tagger:
    """A task module's featurize / decode: the shared ones with its default labels and fill tag."""

    labels: tuple[str, ...]  # the default label list
    fill: str  # predicted for words the model never saw

    def featurize(self, examples: Sequence[Example], tok: Tokenizer, max_length: int = 128,
                  labels: Sequence[str] | None = None) -> list[dict]:
        """input_ids `<s> words </s>`; labels on first subwords only (see tagging.featurize)."""
        return featurize(examples, tok, max_length, self.labels if labels is None else labels)

    def decode(self, features: Sequence[dict], predicted_ids: Sequence[Sequence[int]], examples: Sequence[Example],
               labels: Sequence[str] | None = None) -> list[list[str]]:
        """Per-word tags; words the model never saw (truncated) get the fill tag."""
        return decode(features, predicted_ids, [len(e.words) for e in examples],
                      self.labels if labels is None else labels, self.fill)


# ---------------------------------------------------------------- prediction files


def format_predictions(predictions: Sequence[Sequence[str]], examples: Sequence[Example]) -> str:
    """`word<TAB>predicted tag` lines, a blank line after each sentence."""
    return "".join("".join(f"{w}\t{t}\n" for w, t in zip(ex.words, tags)) + "\n"
                   for ex, tags in zip(examples, predictions))


def read_predictions(path: str | Path, examples: Sequence[Example],
                     load: Callable[[str | Path], list[Example]]) -> list[list[str]]:
    """format_predictions read back with `load`, checked to hold the reference sentences' words."""
    predicted = load(path)
    if len(predicted) != len(examples):
        raise ValueError(f"{path}: {len(predicted)} predicted sentences for {len(examples)} reference sentences")
    for i, (p, ex) in enumerate(zip(predicted, examples)):
        if p.words != ex.words:
            raise ValueError(f"{path}: sentence {i + 1} has the words {p.words[:6]}..., the reference "
                             f"{ex.words[:6]}...: the files are not aligned")
    return [p.tags for p in predicted]


# ---------------------------------------------------------------- the record


def task(
    name: str,
    *,
    tagger: Tagger,
    read: Callable[[str | Path], list[Example]],
    read_predictions_with: Callable[[str | Path], list[Example]],
    label_list: Callable[[Iterable[Example]], list[str]],
    score: Callable[[Sequence[Sequence[str]], Sequence[Sequence[str]]], dict[str, float]],
    metrics: tuple[str, ...],
    suffix: str,
    data_suffixes: tuple[str, ...],
    max_length: int = 128,
) -> Task:
    """The Task record of a tagging task: a token-classification head over `tagger`'s tags.

    score(predicted tags, reference tags) is the task's metric; read_predictions_with loads a predictions file
    (the word<TAB>tag lines format_predictions writes).
    """

    def featurize_run(examples: Sequence[Example], tok: Tokenizer, max_length: int, setup: Setup) -> list[dict]:
        labels = list(setup.labels or ())
        if setup.unseen_labels:
            # Reference tags the head never learned (e.g. MISC) only need an id to be featurized; it is never
            # predicted, so such entities count as missed.
            unseen = sorted({t for e in examples for t in e.tags} - set(labels))
            if unseen:
                logger.warning("%s: tags %s are not among the model's labels; they are never predicted",
                               setup.lang, unseen)
                labels += unseen
        return featurize(examples, tok, max_length, labels)

    def decode_run(examples: Sequence[Example], features: Sequence[dict], outputs: Sequence[Outputs],
                   setup: Setup) -> list[list[str]]:
        predicted = [row[0].argmax(-1).tolist() for row in outputs]
        return decode(features, predicted, [len(e.words) for e in examples], setup.labels or (), tagger.fill)

    def evaluate_run(predictions: Any, examples: Sequence[Example], setup: Setup) -> dict[str, float]:
        return score(predictions, [e.tags for e in examples])

    return Task(
        name=name,
        head=XmodForTokenClassification,
        head_tensors=("classifier.weight", "classifier.bias"),
        max_length=max_length,
        metrics=metrics,
        suffix=suffix,
        data_suffixes=data_suffixes,
        read=read,
        featurize=featurize_run,
        collate=collate,
        decode=decode_run,
        format=format_predictions,
        read_predictions=lambda path, examples: read_predictions(path, examples, read_predictions_with),
        evaluate=evaluate_run,
        label_list=label_list,
    )
