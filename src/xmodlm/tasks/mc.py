"""Multiple choice: XCOPA (premise, two alternatives, cause / effect); metric accuracy."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from xmodlm import metrics
from xmodlm.model import XmodForMultipleChoice
from xmodlm.tasks import (Task, argmax, encode_texts, format_error, format_lines, inputs, pair, prepare_tokenizer,
                          read_line_predictions, read_lines)

# How the question joins the premise. Each choice becomes the pair
#   (premise + " " + CONNECTORS[question], choice)
# i.e. `<s> The man turned on the faucet. What happened as a result? </s></s> Water flowed
# from the spout. </s>`, scored by the multiple-choice head. The connector is English for
# every language on purpose: the model is fine-tuned in English and transferred zero-shot,
# and a fixed prompt keeps the input the same across languages. Pass `connectors` to
# featurize to phrase it otherwise (e.g. in the target language).
CONNECTORS = {"cause": "What was the cause?", "effect": "What happened as a result?"}
_KEYS = ("premise", "choice1", "choice2", "question", "label")


@dataclass(frozen=True)
class Example:
    premise: str
    choices: tuple[str, ...]
    question: str  # "cause" or "effect"
    label: int  # index into choices
    idx: int | None = None


def load(path: str | Path) -> list[Example]:
    """Read XCOPA jsonl: one object a line with premise, choice1, choice2, question, label."""
    examples = []
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise format_error(path, number, "one JSON object", line) from None
        if not isinstance(row, dict) or any(k not in row for k in _KEYS):
            raise format_error(path, number, f"an object with the keys {', '.join(_KEYS)}", line)
        if row["question"] not in CONNECTORS:
            raise format_error(path, number, 'question "cause" or "effect"', line)
        if row["label"] not in (0, 1):
            raise format_error(path, number, "label 0 or 1", line)
        examples.append(_example(row))
    return examples


def _example(row: Mapping) -> Example:
    choices = (row["choice1"], row["choice2"])
    return Example(row["premise"], choices, row["question"], int(row["label"]), row.get("idx"))


def featurize(
    examples: Sequence[Example],
    tok: Tokenizer,
    max_length: int = 128,
    connectors: Mapping[str, str] = CONNECTORS,
) -> list[dict]:
    """One pair per choice (see CONNECTORS): input_ids is a list of num_choices lists."""
    tok = prepare_tokenizer(tok)
    contexts = encode_texts(tok, [f"{e.premise} {connectors[e.question]}" for e in examples])
    choices = encode_texts(tok, [c for e in examples for c in e.choices])
    features, k = [], 0
    for ex, context in zip(examples, contexts):
        rows = [pair(context, choices[k + i], max_length) for i in range(len(ex.choices))]
        k += len(ex.choices)
        features.append({"input_ids": rows, "labels": ex.label})
    return features


def collate(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask [batch, num_choices, seq]; labels [batch]."""
    num_choices = {len(f["input_ids"]) for f in features}
    if len(num_choices) != 1:
        raise ValueError(f"a batch needs one number of choices, got {sorted(num_choices)}")
    n = num_choices.pop()
    flat = inputs([row for f in features for row in f["input_ids"]])
    batch = {k: v.view(len(features), n, -1) for k, v in flat.items()}
    batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    return batch


def evaluate(predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    """Accuracy (percent) of the chosen alternative."""
    return {"accuracy": metrics.accuracy(list(predictions), list(references))}


# The choice with the highest score; no labels (config.id2label is unset: one score per choice).
TASK = Task(
    name="mc",
    head=XmodForMultipleChoice,
    head_tensors=("roberta.pooler.dense.weight", "roberta.pooler.dense.bias", "classifier.weight", "classifier.bias"),
    max_length=128,
    metrics=("accuracy",),
    suffix=".txt",
    data_suffixes=(".jsonl",),
    read=load,
    featurize=lambda examples, tok, max_length, setup: featurize(examples, tok, max_length),
    collate=collate,
    decode=lambda examples, features, outputs, setup: argmax(outputs),
    format=lambda predictions, examples: format_lines(predictions),
    read_predictions=lambda path, examples: read_line_predictions(path, examples, expected="a choice index"),
    evaluate=lambda predictions, examples, setup: evaluate(predictions, [e.label for e in examples]),
)
