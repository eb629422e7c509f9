"""Sentence embeddings: the hidden states of one layer, pooled over each text's tokens.

This is the one place that turns a model's hidden states into sentence vectors; the pipeline (``Pipeline.encode``),
the ``xmodlm embed`` recipe, the retrieval evaluation and the contrastive fine-tuning all call it.

Layers are numbered as ``hidden_states`` (transformers' convention): 0 is the embedding output, i the output of the
i-th transformer layer, ``num_hidden_layers`` the last one (after the final LayerNorm in a pre-norm model); a
negative number counts from the end (-1: the last). ``layer=None`` means ``default_layer(config)``.

Pooling: "mean" averages the states of every real token of a text, <s> and </s> included and padding excluded (as
XTREME's retrieval scripts do); "cls" takes the state of <s>. ``normalize`` scales each vector to unit length, so
that a dot product is the cosine.

Texts are tokenized as ``<s> text </s>`` (cut to ``max_length``), batched by length (longest first: less padding,
and a batch too large for memory fails at once), and each text goes through its own language's module.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import XmodConfig
from .kernels import SLOW_BF16, onednn_bf16
from .model import XmodPreTrainedModel
from .tasks import encode_texts, inputs, prepare_tokenizer, single
from .tokenizer import for_language

POOLINGS = ("mean", "cls")
PRECISIONS = ("fp32", "bf16")


def default_layer(config: XmodConfig) -> int:
    """The layer whose states embed sentences by default: the middle of the encoder, rounded up
    (``(num_hidden_layers + 1) // 2``: 1 of 2, 2 of 4, 6 of 12), as XTREME's retrieval baselines take a middle layer.

    The README (*Sentence embeddings and retrieval*) gives the per-layer measurement behind it (model, languages,
    numbers): at this project's scale no layer stood out, before contrastive fine-tuning or after it (at layer 1,
    2 or 4 of 4), so the middle one stands. ``--layer`` / ``layer=`` choose another."""
    return (config.num_hidden_layers + 1) // 2


def resolve_layer(layer: int | None, config: XmodConfig) -> int:
    """A layer index in 0..num_hidden_layers (negative counts from the end; None: default_layer)."""
    n = config.num_hidden_layers
    if layer is None:
        return default_layer(config)
    if not -(n + 1) <= layer <= n:
        raise ValueError(f"layer {layer}: this model has layers 0 (embeddings) to {n} (or -1 to -{n + 1} from the end)")
    return layer % (n + 1)


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
    return pooling


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(B, T, H) states and their (B, T) mask -> (B, H) float32: the mean over real tokens, or the <s> state."""
    if check_pooling(pooling) == "cls":
        return hidden[:, 0].float()
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def forward_pooled(model: XmodPreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, lang_ids,
                   layers: Sequence[int], pooling: str = "mean", normalize: bool = True) -> torch.Tensor:
    """(len(layers), B, H) pooled states of one batch; differentiable (the contrastive loss trains through it).
    ``layers`` are resolved indices (0..num_hidden_layers)."""
    encoder = model.encoder_model
    out = encoder(input_ids, attention_mask=attention_mask, lang_ids=lang_ids, output_hidden_states=True)
    vectors = torch.stack([pool(out.hidden_states[i], attention_mask, pooling) for i in layers])
    return F.normalize(vectors, dim=-1) if normalize else vectors


def _autocast(precision: str, device: torch.device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu" and not onednn_bf16():
        warnings.warn(f"precision 'bf16': {SLOW_BF16}", RuntimeWarning, stacklevel=4)  # the caller of embed_ids
    return torch.autocast(device.type, dtype=torch.bfloat16)


@torch.no_grad()
def embed_ids(model: XmodPreTrainedModel, rows: Sequence[Sequence[int]], lang_ids, *,
              layers: Sequence[int | None] = (None,), pooling: str = "mean", normalize: bool = True,
              batch_size: int = 32, precision: str = "fp32", progress: bool = False) -> torch.Tensor:
    """(len(layers), N, H) float32 embeddings of N token-id rows (each ``<s> ... </s>``), on the CPU, in the rows'
    order. ``lang_ids``: one code or id for every row, or one per row. ``precision`` "bf16" runs the encoder under
    bf16 autocast (pooling and normalisation stay float32)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; it must be >= 1")
    check_pooling(pooling)
    config = model.config
    resolved = [resolve_layer(layer, config) for layer in layers]
    n = len(rows)
    if isinstance(lang_ids, (str, int)):
        lang_ids = [lang_ids] * n
    lang_ids = list(lang_ids)
    if len(lang_ids) != n:
        raise ValueError(f"{len(lang_ids)} languages for {n} texts")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.empty(len(resolved), n, config.hidden_size)
    order = sorted(range(n), key=lambda i: -len(rows[i]))
    try:
        with tqdm(total=n, desc="embedding", unit=" texts", disable=not progress, leave=False) as bar:
            for start in range(0, n, batch_size):
                chunk = order[start:start + batch_size]
                batch = inputs([rows[i] for i in chunk])
                with _autocast(precision, device):
                    vectors = forward_pooled(model, batch["input_ids"].to(device),
                                             batch["attention_mask"].to(device), [lang_ids[i] for i in chunk],
                                             resolved, pooling, normalize)
                out[:, chunk] = vectors.float().cpu()
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return out


def tokenize(tokenizer, texts: Sequence[str], max_length: int, langs: str | Sequence[str] | None = None
             ) -> list[list[int]]:
    """``<s> text </s>`` token ids of each text, cut to max_length tokens. ``tokenizer``: one Tokenizer, or a
    tokenizer.LanguageTokenizers, whose tokenizer for each text's language (``langs``: one code, or one per text)
    encodes it."""
    per_text = [langs] * len(texts) if langs is None or isinstance(langs, str) else list(langs)
    out: list[list[int]] = [[] for _ in texts]
    for code in dict.fromkeys(per_text):
        index = [i for i, c in enumerate(per_text) if c == code]
        tok = prepare_tokenizer(for_language(tokenizer, code))
        for i, ids in zip(index, encode_texts(tok, [texts[i] for i in index])):
            out[i] = single(ids, max_length)
    return out


def token_limit(config: XmodConfig) -> int:
    """Longest input the position embeddings allow (RoBERTa positions start after padding_idx)."""
    return config.max_position_embeddings - config.pad_token_id - 1


def embed_texts(model: XmodPreTrainedModel, tokenizer, texts: Sequence[str], lang_ids, *,
                layers: Sequence[int | None] = (None,), pooling: str = "mean", normalize: bool = True,
                batch_size: int = 32, max_length: int | None = None, precision: str = "fp32",
                progress: bool = False) -> torch.Tensor:
    """embed_ids on texts: (len(layers), N, H). max_length defaults to what the model's positions allow."""
    limit = token_limit(model.config)
    max_length = limit if max_length is None else max_length
    if not 3 <= max_length <= limit:
        raise ValueError(f"max_length {max_length}: this model takes 3 to {limit} tokens")
    codes = lang_ids if isinstance(lang_ids, str) or (isinstance(lang_ids, Sequence) and lang_ids and
                                                      isinstance(lang_ids[0], str)) else None
    return embed_ids(model, tokenize(tokenizer, texts, max_length, codes), lang_ids, layers=layers, pooling=pooling,
                     normalize=normalize, batch_size=batch_size, precision=precision, progress=progress)
