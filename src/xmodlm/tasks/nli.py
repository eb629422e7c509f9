"""XNLI: premise / hypothesis pairs with three labels; metric accuracy."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from xmodlm import metrics
from xmodlm.model import XmodForSequenceClassification
from xmodlm.tasks import (Outputs, Setup, Task, argmax, encode_texts, format_error, format_lines, inputs, pair,
                          prepare_tokenizer, read_line_predictions, read_lines)

logger = logging.getLogger(__name__)

# Label ids as in the Hugging Face `xnli` dataset.
LABELS = ("entailment", "neutral", "contradiction")
# XNLI's machine-translated training files spell the third label "contradictory".
_LABEL_ID = {"entailment": 0, "neutral": 1, "contradiction": 2, "contradictory": 2}
# Header names seen in XNLI releases: XTREME/MT files, and the original xnli.*.tsv.
_PREMISE, _HYPOTHESIS, _LABEL = ("premise", "sentence1"), ("hypothesis", "sentence2"), ("label", "gold_label")


@dataclass(frozen=True)
class Example:
    premise: str
    hypothesis: str
    label: int  # index into LABELS


def load(path: str | Path, language: str | None = None) -> list[Example]:
    """Read an XNLI TSV file.

    Without a header the columns are premise, hypothesis, label (XTREME's copy). With a
    header, columns are found by name (premise/sentence1, hypothesis/sentence2,
    label/gold_label), which also reads the original multi-column xnli.dev.tsv; there
    `language` keeps only that language's rows. Fields are split on tabs only: XNLI
    text contains unbalanced quotes, so CSV quoting must not be applied.
    """
    examples = []
    columns, width, expected = (0, 1, 2), 3, "3 tab-separated fields (premise, hypothesis, label)"
    lang_column = None
    for number, line in read_lines(path):
        fields = line.split("\t")
        if number == 1 and any(f.strip().lower() in _LABEL for f in fields):
            columns, lang_column = _header(path, fields)
            width, expected = len(fields), f"{len(fields)} tab-separated fields, as in the header"
            continue
        if not line.strip():
            continue
        if len(fields) != width:
            raise format_error(path, number, expected, line)
        if language is not None:
            if lang_column is None:
                raise ValueError(f"{path} has no 'language' column to select {language!r} by")
            if fields[lang_column] != language:
                continue
        premise, hypothesis, label = (fields[c] for c in columns)
        if label.strip() not in _LABEL_ID:
            raise format_error(path, number, f"a label in {', '.join(LABELS)}", label)
        examples.append(Example(premise, hypothesis, _LABEL_ID[label.strip()]))
    return examples


def _header(path, fields: list[str]) -> tuple[tuple[int, int, int], int | None]:
    names = [f.strip().lower() for f in fields]

    def find(options):
        for option in options:
            if option in names:
                return names.index(option)
        raise format_error(path, 1, f"a header naming one of {options}", "\t".join(fields))

    lang = names.index("language") if "language" in names else None
    return (find(_PREMISE), find(_HYPOTHESIS), find(_LABEL)), lang


def from_hf(rows: Iterable[Mapping]) -> list[Example]:
    """Examples from rows in the Hugging Face `xnli` schema (label 0/1/2 as in LABELS)."""
    examples = []
    for i, row in enumerate(rows):
        if row["label"] not in (0, 1, 2):
            raise ValueError(f"row {i}: label {row['label']!r} is not 0, 1 or 2 ({', '.join(LABELS)})")
        examples.append(Example(row["premise"], row["hypothesis"], int(row["label"])))
    return examples


def load_hf(language: str, split: str = "validation", dataset: str = "xnli") -> list[Example]:
    """Download XNLI for one language with the `datasets` library (an optional dependency)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("load_hf needs the `datasets` package: pip install datasets") from e
    return from_hf(datasets.load_dataset(dataset, language, split=split))


def featurize(examples: Sequence[Example], tok: Tokenizer, max_length: int = 128) -> list[dict]:
    """`<s> premise </s></s> hypothesis </s>`, the longer side truncated first."""
    tok = prepare_tokenizer(tok)
    premises = encode_texts(tok, [e.premise for e in examples])
    hypotheses = encode_texts(tok, [e.hypothesis for e in examples])
    return [
        {"input_ids": pair(p, h, max_length), "labels": e.label}
        for e, p, h in zip(examples, premises, hypotheses)
    ]


def collate(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    batch = inputs([f["input_ids"] for f in features])
    batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    return batch


def evaluate(predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    """Accuracy (percent) of predicted label ids."""
    return {"accuracy": metrics.accuracy(list(predictions), list(references))}


# ---------------------------------------------------------------- the record


def head_labels(names: Sequence[str]) -> tuple[str, ...]:
    """A trained head's labels (by output id) checked to be LABELS in some order; unnamed ones are taken as LABELS."""
    names = tuple(names)
    if sorted(names) == sorted(LABELS):
        return names
    if len(names) == 3 and all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        logger.warning("the NLI head's labels are unnamed (LABEL_0..2): assuming the order %s", list(LABELS))
        return LABELS
    raise ValueError(f"the model's labels {list(names)} are not the NLI labels {list(LABELS)}")


def _decode(examples: Sequence[Example], features: Sequence[dict], outputs: Sequence[Outputs],
            setup: Setup) -> list[int]:
    """Label indices into LABELS (the references' order), whatever the order of the head's outputs."""
    order = [LABELS.index(name) for name in setup.labels] if setup.labels else list(range(len(LABELS)))
    return [order[i] for i in argmax(outputs)]


TASK = Task(
    name="nli",
    head=XmodForSequenceClassification,
    head_tensors=("classifier.dense.weight", "classifier.dense.bias",
                  "classifier.out_proj.weight", "classifier.out_proj.bias"),
    max_length=128,
    metrics=("accuracy",),
    suffix=".txt",
    data_suffixes=(".tsv",),
    read=load,
    featurize=lambda examples, tok, max_length, setup: featurize(examples, tok, max_length),
    collate=collate,
    decode=_decode,
    format=lambda predictions, examples: format_lines(predictions, LABELS),
    read_predictions=lambda path, examples: read_line_predictions(path, examples, LABELS),
    evaluate=lambda predictions, examples, setup: evaluate(predictions, [e.label for e in examples]),
    label_list=lambda examples: list(LABELS),
    check_labels=head_labels,
)
