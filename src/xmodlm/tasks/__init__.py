"""Benchmark tasks as a registry of records, and the XLM-R input conventions that every task shares.

A task is one `Task` record: what the recipes (finetune, evaluate, score) need to know about it, from the model
head it trains to the file its predictions are written to. Each built-in task module (nli, ner, pos, qa, mc)
declares its record as `TASK` next to the benchmark's own functions (load, featurize, collate, evaluate, ...);
`get` imports a module on its first use, so this file never imports its children. A task defined elsewhere is
made known with `register`:

    register(Task(name="sst", head=XmodForSequenceClassification, ...))

after which the finetune, evaluate and score recipes run in that process take task="sst" like a built-in name.
Adding a built-in task (and so a --task value of the CLI) is one module declaring TASK plus its name in BUILTIN.

Inputs follow XLM-R: <s>=0 (also the classification token), <pad>=1, </s>=2, <unk>=3;
one sequence is `<s> A </s>`, a pair `<s> A </s></s> B </s>`. Special tokens are added
here, never by the tokenizer's post-processor, so its configuration does not matter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from xmodlm.model import XmodPreTrainedModel

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
IGNORE_INDEX = -100  # label of positions the loss and the metrics skip
BUILTIN = ("nli", "ner", "pos", "qa", "mc", "retrieval")  # modules of this package, each declaring TASK
NAMES = BUILTIN  # the built-in task names (names() adds registered ones)
_SPECIALS = {"<s>": BOS_ID, "<pad>": PAD_ID, "</s>": EOS_ID, "<unk>": UNK_ID}

Outputs = tuple  # one feature's model outputs: a tensor per name in Task.outputs, batch dimension removed


# ---------------------------------------------------------------- the task record


@dataclass(frozen=True)
class Setup:
    """What a run fixes for a task beyond its examples; passed to the record's featurize, decode and evaluate.

    Fields a task has no use for are ignored by it (a Setup() is valid for every task).
    """

    labels: tuple[str, ...] | None = None  # the head's labels by output id (id2label order); None: no labels
    stride: int | None = None  # windowed tasks: tokens shared by consecutive windows (None: the task's default)
    lang: str | None = None  # the data's language as the run names it, for messages
    metric_lang: str | None = None  # what Task.metric_language chose (QA: the ISO code MLQA normalises in)
    unseen_labels: bool = False  # featurize reference labels the head lacks (warned, never predicted), not raise


def _same_labels(labels: Sequence[str]) -> tuple[str, ...]:
    return tuple(labels)


@dataclass(frozen=True)
class Task:
    """Everything task-specific the finetune, evaluate and score recipes use.

    The callables take the run's `Setup` where the task may need one, so that the recipes call every task alike:
        read(path) -> examples                              a data file in the benchmark's format
        featurize(examples, tok, max_length, setup) -> features (dicts of python lists / ints)
        collate(features) -> batch                          tensors named like the head's forward arguments
        decode(examples, features, outputs, setup) -> predictions, from each feature's `outputs` (model logits)
        format(predictions, examples) -> text               the predictions file evaluate writes
        read_predictions(path, examples) -> predictions     that file read back (and checked) by score
        evaluate(predictions, examples, setup) -> {metric: percentage}, the keys being `metrics`
    """

    name: str
    head: type[XmodPreTrainedModel]  # the xmodlm.model class fine-tuned and evaluated
    head_tensors: tuple[str, ...]  # the head's parameters (state-dict names): what a task checkpoint adds to an MLM
    max_length: int  # default tokens per input (capped by the model's positions)
    metrics: tuple[str, ...]  # evaluate's keys, in table order; averaged over languages
    suffix: str  # of the predictions file, e.g. ".txt"
    data_suffixes: tuple[str, ...]  # usual suffixes of the data files read takes (for messages; any name is read)
    read: Callable[[str | Path], list]
    featurize: Callable[[Sequence, Tokenizer, int, Setup], list[dict]]
    collate: Callable[[Sequence[dict]], dict[str, torch.Tensor]]
    decode: Callable[[Sequence, Sequence[dict], Sequence[Outputs], Setup], Any]
    format: Callable[[Any, Sequence], str]
    read_predictions: Callable[[Path, Sequence], Any]
    evaluate: Callable[[Any, Sequence, Setup], dict[str, float]]
    # The head's labels for a training set (they become config.id2label); None: a head without labels, e.g. span
    # or choice scores.
    label_list: Callable[[Sequence], list[str]] | None = None
    # A trained head's labels (id2label, by id) -> the labels decode reads outputs by; raises when they are not
    # this task's labels.
    check_labels: Callable[[Sequence[str]], tuple[str, ...]] = _same_labels
    outputs: tuple[str, ...] = ("logits",)  # fields of the head's output that decode receives, in this order
    # Windowed tasks: max_length -> the default stride (Setup.stride); None: the task does not window its inputs.
    default_stride: Callable[[int], int] | None = None
    # Tasks whose metric can depend on the language: (normalization, data language) -> Setup.metric_lang, raising
    # for an unsupported pair; normalization None picks the task's default. None: one metric for every language.
    metric_language: Callable[[str | None, str | None], str | None] | None = None
    # A task scored without a head's predictions (retrieval: sentence embeddings compared across languages): the
    # module (a dotted name, imported when used) whose ``finetune(FinetuneSettings)`` and
    # ``evaluate(EvaluateSettings)`` the finetune and evaluate recipes call in place of their head path. Fields of the
    # head path (featurize, decode, ...) are then the task's own business. None: the head path.
    recipe: str | None = None

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"task name {self.name!r}: expected letters, digits, - or _")
        if not self.metrics:
            raise ValueError(f"task {self.name}: metrics must name at least one score")
        if not self.suffix.startswith("."):
            raise ValueError(f"task {self.name}: suffix {self.suffix!r} should start with a dot")
        if self.max_length < 4:
            raise ValueError(f"task {self.name}: max_length {self.max_length} leaves no room for text")


# ---------------------------------------------------------------- the registry


REGISTRY: dict[str, Task] = {}  # name -> record: built-ins once loaded by get, and every registered task


def register(task: Task, replace: bool = False) -> Task:
    """Make a task known to get (and so to the recipes' --task); returns it.

    A name already taken (a built-in one included) is an error unless replace is true.
    """
    taken = get(task.name) if task.name in names() else None
    if taken is not None and taken is not task and not replace:
        raise ValueError(f"task {task.name!r} is already defined; pass replace=True to redefine it")
    REGISTRY[task.name] = task
    return task


def names() -> tuple[str, ...]:
    """Every task name: the built-in ones, then those registered."""
    return BUILTIN + tuple(n for n in REGISTRY if n not in BUILTIN)


def get(name: str) -> Task:
    """The record of a task name (a built-in module is imported on first use)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name not in BUILTIN:
        raise ValueError(f"unknown task {name!r}; tasks are {', '.join(names())}")
    return REGISTRY.setdefault(name, importlib.import_module(f"{__name__}.{name}").TASK)


# ---------------------------------------------------------------- reading files


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending); a UTF-8 BOM is dropped.

    Only \\n ends a line (a stray \\r inside text stays text); CRLF endings are removed.
    """
    with open(path, encoding="utf-8-sig", newline="\n") as f:
        for number, line in enumerate(f, 1):
            yield number, line.rstrip("\r\n")


def read_sentences(path: str | Path, parse) -> list[tuple[list[str], list[str]]]:
    """(words, tags) per sentence of a one-token-a-line file with blank lines between sentences.

    ``parse(line_number, line)`` returns (word, tag), or None for a line to skip (comments,
    -DOCSTART-, multiword ranges); it raises for a malformed line.
    """
    sentences, words, tags = [], [], []
    for number, line in read_lines(path):
        if not line.strip():
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        parsed = parse(number, line)
        if parsed is not None:
            words.append(parsed[0])
            tags.append(parsed[1])
    if words:
        sentences.append((words, tags))
    return sentences


def format_error(path: str | Path, line_number: int, expected: str, line: str) -> ValueError:
    """A ValueError that names the file, the line and what it should have held."""
    shown = line if len(line) <= 80 else line[:77] + "..."
    return ValueError(f"{path}:{line_number}: expected {expected}, got {shown!r}")


# ---------------------------------------------------------------- tokenizer conventions


def prepare_tokenizer(tok: Tokenizer) -> Tokenizer:
    """Check the XLM-R special-token ids; return a tokenizer that neither pads nor truncates.

    Padding or truncation configured on `tok` would change what encode returns, so such a
    tokenizer is copied with both switched off (the caller's object is left alone).
    """
    wrong = {t: tok.token_to_id(t) for t, i in _SPECIALS.items() if tok.token_to_id(t) != i}
    if wrong:
        raise ValueError(
            f"tokenizer has special-token ids {wrong}; the XLM-R convention needs "
            "<s>=0, <pad>=1, </s>=2, <unk>=3"
        )
    if tok.padding is None and tok.truncation is None:
        return tok
    tok = Tokenizer.from_str(tok.to_str())
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode_texts(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def single(a: Sequence[int], max_length: int) -> list[int]:
    """`<s> A </s>`, A cut at the end to fit max_length."""
    if max_length < 3:
        raise ValueError(f"max_length {max_length} leaves no room for a token between <s> and </s>")
    return [BOS_ID, *a[: max_length - 2], EOS_ID]


def pair(a: Sequence[int], b: Sequence[int], max_length: int) -> list[int]:
    """`<s> A </s></s> B </s>`, truncating the longer side first.

    Tokens are removed one at a time from the end of whichever side is longer at that
    moment; on a tie, from B (as transformers' 'longest_first' does).
    """
    budget = max_length - 4
    if budget < 2:
        raise ValueError(f"max_length {max_length} leaves no room for a pair (4 special tokens)")
    la, lb = len(a), len(b)
    excess = la + lb - budget
    if excess > 0:
        # Cut the longer side down to the shorter, then share what is left, A keeping the
        # odd token because ties are cut from B.
        cut_a = min(excess, max(0, la - lb))
        cut_b = min(excess - cut_a, max(0, lb - la))
        rest = excess - cut_a - cut_b
        cut_a += rest // 2
        cut_b += rest - rest // 2
        la, lb = la - cut_a, lb - cut_b
    return [BOS_ID, *a[:la], EOS_ID, EOS_ID, *b[:lb], EOS_ID]


# ---------------------------------------------------------------- batching


def pad(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """[len(rows), length or longest row] long tensor, right-padded with value."""
    length = max(map(len, rows)) if length is None else length
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def inputs(rows: Sequence[Sequence[int]], length: int | None = None) -> dict[str, torch.Tensor]:
    """input_ids padded with <pad> and the matching attention_mask."""
    ids = pad(rows, PAD_ID, length)
    mask = pad([[1] * len(r) for r in rows], 0, ids.shape[1])
    return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------- one prediction a line (classification tasks)


def argmax(outputs: Sequence[Outputs]) -> list[int]:
    """The highest-scoring class (or choice) of each feature, from its first output."""
    return [int(row[0].argmax(-1)) for row in outputs]


def format_lines(predictions: Sequence[int], names: Sequence[str] | None = None) -> str:
    """One prediction a line: the label name when `names` are given, else the index."""
    return "".join(f"{names[p] if names is not None else p}\n" for p in predictions)


def read_line_predictions(path: str | Path, examples: Sequence, names: Sequence[str] | None = None,
                          expected: str = "an index") -> list[int]:
    """format_lines read back: one label name (of `names`) or index a line, as many as there are examples."""
    values = []
    for number, line in read_lines(path):
        text = line.strip()
        if not text:
            continue
        if names is not None and text in names:
            values.append(list(names).index(text))
        elif text.isdigit():
            values.append(int(text))
        else:
            raise format_error(path, number, f"a label ({', '.join(names)}) or its id" if names else expected, line)
    if len(values) != len(examples):
        raise ValueError(f"{path}: {len(values)} predictions for {len(examples)} reference examples")
    return values
