"""What the finetune and evaluate recipes share, for any task record: the task by name, input lengths, example
selection, batched prediction with a fixed language module, and scoring a model on fixed examples.

Nothing here knows a task by name: every task-specific decision is a field of its `Task` (xmodlm.tasks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from xmodlm import tasks
from xmodlm.config import XmodConfig
from xmodlm.model import XmodPreTrainedModel
from xmodlm.tasks import Outputs, Setup, Task

TASK_FILE = "task.json"  # written by the finetune recipe next to the model, read by evaluate


def task_named(name: str | None) -> Task:
    """The record of a --task value (an error naming the tasks when it is missing or unknown)."""
    if not name:
        raise ValueError(f"--task is required: one of {', '.join(tasks.names())}")
    return tasks.get(name)


def token_limit(config: XmodConfig) -> int:
    """Longest input the position embeddings allow (RoBERTa positions start after padding_idx)."""
    return config.max_position_embeddings - config.pad_token_id - 1


def resolve_max_length(max_length: int | None, task: Task, config: XmodConfig) -> int:
    """The task's default (task.max_length), capped by the model's positions; an explicit value must fit them."""
    limit = token_limit(config)
    if max_length is None:
        return min(task.max_length, limit)
    if not 3 < max_length <= limit:
        raise ValueError(f"--max-length {max_length}: this model takes 4 to {limit} tokens "
                         f"(max_position_embeddings {config.max_position_embeddings})")
    return max_length


def resolve_stride(stride: int | None, task: Task, max_length: int) -> int | None:
    """A windowed task's stride: the one given, else its default for max_length; None for other tasks."""
    if task.default_stride is None:
        return None
    return stride if stride is not None else task.default_stride(max_length)


def parse_range(text: str, what: str) -> slice:
    """'a:b', 'a:' or ':b' (Python slice bounds, by example index) -> slice."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return slice(int(start) if start.strip() else None, int(stop) if stop.strip() else None)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected START:END example indices, e.g. 0:1000 or 1000:") from None


def select(examples: list, index_range: str | None, limit: int | None, what: str) -> list:
    """Examples [a:b] of a file (pair index for NLI, question for QA, sentence for NER/POS), then the first `limit`.

    Splitting by index keeps parallel files (XNLI, XQuAD) aligned: the same range picks the same items in every
    language, so training on a:b of English and evaluating the rest never evaluates a translation of a training
    item."""
    n = len(examples)
    if index_range:
        examples = examples[parse_range(index_range, f"--{what}-range")]
        if not examples:
            raise ValueError(f"--{what}-range {index_range} selects none of the {n} examples")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--{what}-limit {limit}: must be at least 1")
        examples = examples[:limit]
    return examples


def _first_invalid_utf8(path: Path) -> str:
    """ "line N: invalid UTF-8 (reason)" for the first bad byte of a file, read a MiB at a time."""
    import codecs

    decoder, line, offset = codecs.getincrementaldecoder("utf-8")(), 1, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                start = max(0, e.start - len(e.object) + len(chunk))  # e.object: the decoder's pending bytes + chunk
                line += chunk.count(b"\n", 0, start)
                return f"line {line}: invalid UTF-8 at byte {offset + start} ({e.reason})"
            line += chunk.count(b"\n")
            offset += len(chunk)
    return "invalid UTF-8"


def load_examples(task: Task, path: str | Path) -> list:
    """The examples of a data file, which must exist and hold at least one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a {task.name} data file, "
                                f"{' or '.join(task.data_suffixes) or 'any name'})")
    try:
        examples = task.read(path)
    except UnicodeDecodeError:  # a binary or wrongly encoded file: where, not just which byte of a chunk
        raise ValueError(f"{path}: {_first_invalid_utf8(path)}; expected a UTF-8 text {task.name} data file") from None
    if not examples:
        raise ValueError(f"{path}: no {task.name} examples in this file")
    return examples


def head_labels(task: Task, config: XmodConfig) -> tuple[str, ...] | None:
    """The labels a trained head's outputs stand for (config.id2label, checked by the task); None for a task whose
    head has no labels."""
    if task.label_list is None:
        return None
    names = [config.id2label[i] for i in range(len(config.id2label))] if config.id2label else []
    return task.check_labels(names)


def head_overrides(labels: Sequence[str] | None) -> dict:
    """Config fields for a new task head: id2label fixes the classifier's width; None for heads without labels
    (QA's two outputs, start and end; MC's scorer, one output whatever the choices)."""
    return {"id2label": dict(enumerate(labels)) if labels is not None else None}


def _length(feature: dict) -> int:
    ids = feature["input_ids"]
    return max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


@torch.no_grad()
def predict(model: XmodPreTrainedModel, task: Task, features: Sequence[dict], lang_id: int,
            batch_size: int = 32) -> list[Outputs]:
    """Each feature's outputs (the head output's fields named by task.outputs, float32 on the CPU, the batch
    dimension removed, padded to the batch's length), every example routed to language ``lang_id``. Features are
    batched by length (less padding); outputs come back in the features' order."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: _length(features[i]))
    out: list[Any] = [None] * len(features)
    for k in range(0, len(order), batch_size):
        rows = order[k:k + batch_size]
        batch = task.collate([features[i] for i in rows])
        result = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       lang_ids=torch.full((len(rows),), lang_id, dtype=torch.long, device=device))
        columns = [getattr(result, name).float().cpu() for name in task.outputs]
        for j, i in enumerate(rows):
            out[i] = tuple(column[j] for column in columns)
    return out


def evaluator(task: Task, examples: Sequence, features: Sequence[dict], lang_id: int, batch_size: int,
              setup: Setup) -> Callable[[XmodPreTrainedModel], dict[str, float]]:
    """model -> the task's metrics on fixed examples in one language (the finetune recipe's validation)."""

    def evaluate(model: XmodPreTrainedModel) -> dict[str, float]:
        outputs = predict(model, task, features, lang_id, batch_size)
        return task.evaluate(task.decode(examples, features, outputs, setup), examples, setup)

    return evaluate
