"""Cross-lingual sentence retrieval (Tatoeba / BUCC-style): no head; sentences are embedded (xmodlm.embeddings)
and each one's translation is searched among the other language's sentences (xmodlm.retrieval).

Its data is a pair of files, not one file of labelled examples, so the record names its own recipe module
(``recipe``): ``xmodlm evaluate --task retrieval`` scores accuracy@1/5/10 in both directions at every layer, and
``xmodlm finetune --task retrieval`` trains the encoder with an in-batch contrastive loss on translation pairs.
The head-path fields below only say so when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer

from xmodlm.model import XmodForMaskedLM
from xmodlm.retrieval import KS, Pairs, metric_names, read_pairs, scores
from xmodlm.tasks import Task, encode_texts, inputs, prepare_tokenizer, single
from xmodlm.tokenizer import for_language


def load(src: str | Path, tgt: str | Path) -> Pairs:
    """The translation pairs of two files, aligned by id (``x.txt`` + ``x.ids``) or by line."""
    return read_pairs(src, tgt)


def featurize(pairs: dict[str, Pairs], pivot: str, languages: Sequence[str], tok: Tokenizer,
              max_length: int) -> list[dict]:
    """One feature per pair: source and target ``<s> ... </s>`` ids, their language ids, and the pair's key as an
    integer (the same verse in two pairs shares its key: its pivot sentence is the same). ``tok``: a Tokenizer, or
    a tokenizer.LanguageTokenizers (each language's text through its own, where it has one)."""
    keys: dict[str, int] = {}
    features = []
    pivot_tok = prepare_tokenizer(for_language(tok, pivot))
    for lang, p in pairs.items():
        src = encode_texts(prepare_tokenizer(for_language(tok, lang)), p.src)
        tgt = encode_texts(pivot_tok, p.tgt)
        for key, a, b in zip(p.keys, src, tgt):
            features.append({"input_ids": single(a, max_length), "pair_input_ids": single(b, max_length),
                             "lang": languages.index(lang), "pair_lang": languages.index(pivot),
                             "key": keys.setdefault(key, len(keys))})
    return features


def collate(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    src = inputs([f["input_ids"] for f in features])
    tgt = inputs([f["pair_input_ids"] for f in features])
    return {**src, "lang_ids": torch.tensor([f["lang"] for f in features]),
            "pair_input_ids": tgt["input_ids"], "pair_attention_mask": tgt["attention_mask"],
            "pair_lang_ids": torch.tensor([f["pair_lang"] for f in features]),
            "keys": torch.tensor([f["key"] for f in features])}


def evaluate(src: torch.Tensor, tgt: torch.Tensor, ks: Sequence[int] = KS, **options) -> dict[str, float]:
    """Accuracy@k (percent) both ways of aligned unit-vector embeddings (xmodlm.retrieval.scores)."""
    return scores(src, tgt, ks, **options)


def _not_here(*args, **kwargs):
    raise ValueError("retrieval reads a pair of files (--data SRC=FILE --data TGT=FILE) and has no head "
                     "predictions to re-score: run xmodlm evaluate --task retrieval")


TASK = Task(
    name="retrieval",
    # No head: fine-tuning keeps the checkpoint's class (a pre-trained masked LM stays one) and evaluation uses any
    # checkpoint's encoder, so a masked LM adds no tensor.
    head=XmodForMaskedLM,
    head_tensors=(),
    max_length=128,
    metrics=metric_names(),
    suffix=".tsv",
    data_suffixes=(".txt (+ .ids beside it: aligned by id)", "any other name (aligned by line)"),
    read=_not_here,
    featurize=_not_here,
    collate=_not_here,
    decode=_not_here,
    format=_not_here,
    read_predictions=_not_here,
    evaluate=_not_here,
    recipe="xmodlm.recipes.retrieval",
)
