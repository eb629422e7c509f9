"""Benchmark tasks by name, and the XLM-R input conventions that every task shares.

Each task module (nli, ner, pos, qa, mc) offers the same small surface:
    load(path) -> list[Example]             the benchmark's real file format
    featurize(examples, tok, max_length)    -> list[dict] of python lists / ints
    collate(features) -> dict[str, Tensor]  keys named like the model's forward arguments
    evaluate(predictions, references)       -> dict of percentages (see xmodlm.metrics)
plus what a task needs between logits and predictions: LABELS (nli, ner, pos),
label_list and decode (ner, pos: per-word tags), postprocess (qa: answer strings).
Modules are imported on demand by `get`, so this file never imports its children.

Inputs follow XLM-R: <s>=0 (also the classification token), <pad>=1, </s>=2, <unk>=3;
one sequence is `<s> A </s>`, a pair `<s> A </s></s> B </s>`. Special tokens are added
here, never by the tokenizer's post-processor, so its configuration does not matter.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import torch
from tokenizers import Tokenizer

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
IGNORE_INDEX = -100  # label of positions the loss and the metrics skip
NAMES = ("nli", "ner", "pos", "qa", "mc")
_SPECIALS = {"<s>": BOS_ID, "<pad>": PAD_ID, "</s>": EOS_ID, "<unk>": UNK_ID}


def get(name: str) -> ModuleType:
    """The task module for a name in NAMES."""
    if name not in NAMES:
        raise ValueError(f"unknown task {name!r}; tasks are {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


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


# ---------------------------------------------------------------- token classification (NER, POS)


def featurize_words(
    examples: Sequence, tok: Tokenizer, max_length: int, labels: Sequence[str]
) -> list[dict]:
    """Features for word-tagging examples (fields `words`, `tags`).

    Only a word's first subword carries its label; later subwords, special tokens and
    words cut by max_length get IGNORE_INDEX. `word_ids` (same length as input_ids) holds
    the word index at first subwords and -1 elsewhere, for `decode_words`.
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


def collate_words(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    batch = inputs([f["input_ids"] for f in features])
    batch["labels"] = pad([f["labels"] for f in features], IGNORE_INDEX, batch["input_ids"].shape[1])
    return batch


def decode_words(
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
