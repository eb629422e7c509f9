"""The X-Mod encoder: embeddings, attention, per-language modules with their routing, heads.

Parameter names are Hugging Face's (``roberta.encoder.layer.0.output.adapter_modules.en_XX.dense1``
...), so ``save_pretrained`` writes the same directory that ``transformers.Xmod*`` classes load,
and ``from_pretrained`` reads theirs. The computation follows transformers' modeling_xmod
exactly (parity tests compare outputs); the differences are in how, not what:

* routing: the batch is grouped by language once per forward (one gather in, one out), and
  each layer runs each language's module on a contiguous slice, or many small segments as one
  batched matmul, or (CPU inference, a batch layout seen twice in a row) all of them as one
  grouped convolution on packed weights; a one-language batch takes no gather at all. The
  reference loops over every configured language in every layer.
* attention goes through ``scaled_dot_product_attention``, except on CPU for bf16 inference of
  short sequences and for training with attention dropout (see ``bf16_attention``,
  ``dropout_attention``).
* on CPU, linears run through oneDNN (see "CPU kernels" below), and dropout masks come from a
  faster generator (``Dropout``).
* the masked-LM head scores only the labelled positions when labels are given.

This module imports torch and numpy, and from the package config and weights (checkpoint files); nothing else.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import weights
from .config import XmodConfig

logger = logging.getLogger(__name__)

LangIds = Union[torch.Tensor, Sequence[str], Sequence[int], str, int, None]

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ---------------------------------------------------------------------------------------
# CPU kernels: oneDNN linears (fused epilogues and packed weights in inference; fp32 training)
# ---------------------------------------------------------------------------------------
# torch's float32 GEMM on CPU is MKL's, which takes a slower code path on AMD processors: about
# 220 GFLOP/s on this project's EPYC against oneDNN's 490 for the same fp32 product (same precision).
# So on CPU, when oneDNN is in the build:
# * inference (eval mode, no autograd), fp32 or bf16: one oneDNN call per linear, the activation or
#   the residual add applied inside it on the fp32 accumulator (rounded once, where the plain path
#   rounds the matmul output first). The big shared matrices are reordered once into oneDNN's
#   blocked layout and cached until they change: one extra copy of the encoder's dense weights
#   (not of the embeddings or the language modules), dropped by ``model.train()``.
# * fp32 training (autograd, no autocast): forward and both backward products through oneDNN.
# Same computations, not approximations. ``use_onednn(False)`` switches all of it off.
ONEDNN_ACTIVATIONS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"),
                      "relu": ("relu", ""), "silu": ("swish", ""), "swish": ("swish", ""), "tanh": ("tanh", "")}


def _onednn_in_build() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


_ONEDNN = {"enabled": True, "available": _onednn_in_build()}
# Inference-only derived tensors (packed or stacked weights) per module, outside the module so that
# state_dict, deepcopy and pickling never see them; an entry goes with its module.
INFERENCE_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple | dict]" = weakref.WeakKeyDictionary()


def use_onednn(enabled: bool) -> None:
    """Use (True, the default) or bypass the oneDNN linears on CPU (plain torch ops)."""
    _ONEDNN["enabled"] = bool(enabled)


def _onednn_ready(x: torch.Tensor) -> bool:
    # is_compiling first: under torch.compile the plain ops are traced (inductor fuses them itself)
    return (not torch.compiler.is_compiling() and _ONEDNN["enabled"] and _ONEDNN["available"]
            and x.device.type == "cpu")


def fusable(module: nn.Module, x: torch.Tensor) -> bool:
    """Inference through the fused oneDNN kernels (not under autocast, whose casts they would skip)."""
    return (not module.training and not torch.is_grad_enabled() and x.dtype in (torch.float32, torch.bfloat16)
            and _onednn_ready(x) and not torch.is_autocast_enabled("cpu"))


def onednn_trainable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 autograd through oneDNN (not under autocast, which already sends bf16 products there)."""
    return (torch.is_grad_enabled() and x.dtype == weight.dtype == torch.float32 and _onednn_ready(x)
            and not torch.is_autocast_enabled("cpu"))


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias in oneDNN (weight (out, in), any strides)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")


class OneDNNLinear(torch.autograd.Function):
    """F.linear for float32 CPU training, with the forward and both backward products in oneDNN.
    Differentiable once: for double backward (gradient penalties) call ``use_onednn(False)``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm(x, weight, bias)

    @staticmethod
    @once_differentiable  # oneDNN's kernels have no derivatives: a second backward is a clear error
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1])
        grad_x = _mm(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:  # (out, in) = grad2.T @ x2; oneDNN is fastest with the wider side as its "weight"
            x2 = x.reshape(-1, x.shape[-1])
            grad_w = _mm(x2.t(), grad2.t()).t() if weight.shape[0] >= weight.shape[1] else _mm(grad2.t(), x2.t())
        grad_b = grad2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def bf16_attention(q, k, v, mask):
    """Softmax attention for bfloat16 inputs in CPU inference, at about the flash kernel's precision:
    float32 scores and softmax, probabilities rounded to bfloat16 for the product with v.

    The scores come from two bfloat16 batched matmuls (oneDNN) instead of one float32 matmul (MKL's,
    slow on AMD): ``hi`` = q k^T rounded to bfloat16, then ``lo`` = q k^T - hi, which oneDNN
    accumulates in float32 before rounding it; hi + lo carries about 16 significant bits (the score
    error measured 6e-5 at |q k^T| ~ 100, against 2e-5 for a float32 matmul and 0.25 for bfloat16).
    The scores are held in full, so this serves short sequences (T <= 128). At 8 x 12 heads x 128 x 64
    it took 2.0 ms against 3.2 for torch 2.13's CPU bf16 flash kernel and 2.4 for float32 scores on
    one 2-core EPYC; on a Zen 4 (AVX-512 at AVX2's width) the two kernels measured the same in a
    whole forward, so there the precision is what it buys."""
    B, H, T, D = q.shape
    scale = D ** -0.5
    exact_scale = math.frexp(scale)[0] == 0.5  # a power of two: q * scale is exact in bfloat16
    # gather the strided head view into (B * H, T, D), then scale it in place when exact: a copy and a
    # contiguous multiply took 0.3 ms at 8 x 12 x 128 x 64 against 1.0 for one multiply from the strided view
    gathered = q.reshape(B * H, T, D)
    if exact_scale:  # where reshape could return a view, it is the caller's memory: scaled out of place
        shared = gathered.untyped_storage().data_ptr() == q.untyped_storage().data_ptr()
        gathered = gathered * scale if shared else gathered.mul_(scale)
    q = gathered
    k = k.reshape(B * H, T, D).transpose(1, 2)
    hi = torch.bmm(q, k)
    scores = hi.float().add_(torch.baddbmm(hi, q, k, beta=-1))
    if not exact_scale:
        scores.mul_(scale)
    if mask is not None:
        scores.view(B, H, T, T).masked_fill_(~mask, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1).to(torch.bfloat16)
    return torch.bmm(probs, v.reshape(B * H, T, D)).view(B, H, T, D)


def dropout_attention(q, k, v, mask, dropout: nn.Module):
    """Softmax attention with dropout on the probabilities, for CPU training: what SDPA's math path
    computes there (float32 for bf16 inputs, probabilities materialised), with the faster Dropout
    mask; torch's bernoulli took 7% of a bf16 training step in SDPA. Under autocast the products run
    in bf16 whatever their inputs (autocast casts them), so the inputs are not converted to float32
    first: the same result without two conversions per tensor."""
    scale = q.shape[-1] ** -0.5
    up = (lambda t: t) if torch.is_autocast_enabled(q.device.type) else (lambda t: t.float())
    scores = torch.matmul(up(q) * scale, up(k).transpose(-1, -2))
    if mask is not None:  # the scores' own minimum: under autocast they are bf16
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.matmul(dropout(torch.softmax(scores, dim=-1)), up(v)).to(q.dtype)


def concat(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    if len(linears) == 1:
        return linears[0].weight, linears[0].bias
    bias = None if linears[0].bias is None else torch.cat([m.bias for m in linears])
    return torch.cat([m.weight for m in linears]), bias


def packed_weights(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight of ``linears`` (concatenated along the output) reordered into oneDNN's blocked
    layout, and their bias; cached on the first linear until any tensor is replaced or changed."""
    tensors = [t for m in linears for t in (m.weight, m.bias) if t is not None]
    key = tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors)
    cached = INFERENCE_CACHE.get(linears[0])
    if cached is None or cached[0] != key:
        weight, bias = concat(linears)
        # no batch-size hint: the layout then serves any batch (a hint of 1 made fp32 at 1024 rows 4% slower)
        cached = INFERENCE_CACHE[linears[0]] = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach()), bias)
    return cached[1], cached[2]


def linear(linears: Sequence[nn.Linear], x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None,
           dropout: nn.Module | None = None, pack: bool = True, out: torch.Tensor | None = None) -> torch.Tensor:
    """``dropout(act(x @ W.T + b)) + residual``, W and b concatenating ``linears`` along the output.
    In CPU inference one fused oneDNN call; with ``pack`` on a cached pre-packed weight (worth it
    for the big shared matrices; the per-language modules are small and many, so they stay unpacked).
    ``out`` (inference only, with ``residual``) receives the sum instead of a new tensor."""
    weight = linears[0].weight
    if fusable(linears[0], x) and weight.dtype == x.dtype and (act is None or act in ONEDNN_ACTIVATIONS):
        weight, bias = packed_weights(linears) if pack else concat(linears)
        if residual is not None and act is None and out is None and residual.dtype == x.dtype:
            # the residual added on the fp32 accumulator: one rounding (as fast as a separate add)
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        attr, algorithm = ONEDNN_ACTIVATIONS[act] if act else ("none", "")
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [None], algorithm)
        if residual is None:
            return y
        return y.add_(residual) if out is None else torch.add(y, residual, out=out)
    weight, bias = concat(linears)
    y = OneDNNLinear.apply(x, weight, bias) if onednn_trainable(x, weight) else F.linear(x, weight, bias)
    if act is not None:
        y = activation(act)(y)
    if dropout is not None:
        y = dropout(y)
    if residual is None:
        return y
    return y + residual if out is None else torch.add(y, residual, out=out)


class Dropout(nn.Dropout):
    """nn.Dropout with a faster CPU training mask: each element's keep decision is a 16-bit random
    draw, kept with probability (65536 - k) / 65536 for k = round(p * 65536), and scaled by that
    probability's exact inverse, so the expectation is exact. p is thus rounded to a multiple of
    1/65536 (0.1 -> 0.100006). The draws come four per 64-bit output of numpy's SFC64 generator,
    seeded for each call from torch's global generator (so ``torch.manual_seed`` and saved RNG
    states govern it as they govern torch's own dropout). Measured on the 2-core EPYC (Zen 4) at
    16 x 128 x 256: 0.27 ms for the mask against 1.0 with three draws per 64-bit output of torch's
    Mersenne Twister (strided, so the comparison could not vectorise) and 3.0 for torch's
    bernoulli_. Elsewhere (GPU, eval, in place) nn.Dropout."""

    def forward(self, x):
        drop = round(self.p * 65536)
        if not self.training or self.inplace or x.device.type != "cpu" or not 0 < drop < 65536:
            return super().forward(x)
        n = x.numel()
        seed = int(torch.empty((), dtype=torch.int64).random_())
        draws = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n]
        # compared in numpy (10x faster than torch's int16 comparison), multiplied as uint8 (torch
        # multiplies bf16 by a uint8 mask 4x faster than by a bool one)
        keep = torch.from_numpy(draws >= drop - 32768).view(torch.uint8).view(x.shape)
        return (x * keep).mul_(65536 / (65536 - drop))


# ---------------------------------------------------------------------------------------
# Outputs (the reference's field names)
# ---------------------------------------------------------------------------------------
@dataclass
class BaseModelOutput:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, V), or (N, V) at the N labelled positions
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


TokenClassifierOutput = SequenceClassifierOutput
MultipleChoiceModelOutput = SequenceClassifierOutput


@dataclass
class QuestionAnsweringModelOutput:
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------
# Language routing
# ---------------------------------------------------------------------------------------
@dataclass
class Routing:
    """How a batch maps to language modules: contiguous row ranges after an optional regroup."""

    segments: list[tuple[str, int, int]]  # (language code, first row, end row)
    order: torch.Tensor | None = None  # rows regrouped by language, or None if already grouped
    inverse: torch.Tensor | None = None

    def __post_init__(self):  # derived once per forward, read by every layer
        self.codes = tuple(code for code, _, _ in self.segments)
        self.rows = [end - start for _, start, end in self.segments]
        self.equal = all(r == self.rows[0] for r in self.rows)
        # equal groups of rows, each of one language: one per row / gcd(rows) (the grouped path)
        self.groups = sum(self.rows) // (math.gcd(*self.rows) or 1)


def resolve_lang_ids(lang_ids: LangIds, config: XmodConfig, batch_size: int) -> list[int]:
    """One language index per example, validated against ``config.languages``."""
    languages = config.languages
    if lang_ids is None:
        if config.default_language is None:
            raise ValueError(
                "no lang_ids given and config.default_language is not set: pass lang_ids (codes or ids) "
                f"or call set_default_language(code); the model's languages: {languages}"
            )
        return [languages.index(config.default_language)] * batch_size
    if isinstance(lang_ids, str):
        lang_ids = [lang_ids]
    if isinstance(lang_ids, torch.Tensor):
        if lang_ids.dim() == 2:  # (B, T) as the reference documents it: one language per row
            if not bool((lang_ids == lang_ids[:, :1]).all()):
                raise ValueError("lang_ids of shape (batch, seq_len) must hold one language per row")
            lang_ids = lang_ids[:, 0]
        if lang_ids.is_floating_point():
            if not bool((lang_ids == lang_ids.round()).all()):
                raise ValueError(f"lang_ids must be integers; got {lang_ids.tolist()}")
        values = [int(v) for v in lang_ids.reshape(-1).tolist()]
    elif isinstance(lang_ids, int):
        values = [lang_ids]
    else:
        values = list(lang_ids)
    if len(values) == 1 and batch_size != 1:
        values = values * batch_size
    if len(values) != batch_size:
        raise ValueError(f"lang_ids has {len(values)} entries for a batch of {batch_size} examples")
    index = {code: i for i, code in enumerate(languages)}
    ids = []
    for v in values:
        if isinstance(v, str):
            if v not in index:
                raise ValueError(f"unknown language {v!r}; the model's languages: {languages}")
            ids.append(index[v])
        else:
            v = int(v)
            if not 0 <= v < len(languages):
                raise ValueError(
                    f"language id {v} is out of range 0..{len(languages) - 1}; the model's languages: {languages}"
                )
            ids.append(v)
    return ids


def make_routing(ids: list[int], languages: list[str], device: torch.device) -> Routing:
    n = len(ids)
    if all(i == ids[0] for i in ids):
        return Routing([(languages[ids[0]], 0, n)])
    order = sorted(range(n), key=ids.__getitem__)  # stable: rows keep their order within a language
    grouped = [ids[i] for i in order]
    segments, start = [], 0
    for row in range(1, n + 1):
        if row == n or grouped[row] != grouped[start]:
            segments.append((languages[grouped[start]], start, row))
            start = row
    if order == list(range(n)):
        return Routing(segments)
    order_t = torch.tensor(order, device=device)
    return Routing(segments, order_t, torch.argsort(order_t))


# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------
class XmodEmbeddings(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        limit = self.position_embeddings.num_embeddings
        # Derived positions never exceed seq_len + padding_idx, so only a long input or explicit
        # position_ids need the exact maximum (a reduction and, on a GPU, a sync).
        check = position_ids is not None or input_ids.shape[1] + self.padding_idx >= limit
        if position_ids is None:
            # RoBERTa: real tokens count from padding_idx + 1, padding keeps padding_idx.
            not_pad = input_ids.ne(self.padding_idx).int()
            position_ids = torch.cumsum(not_pad, dim=1).type_as(not_pad) * not_pad + self.padding_idx
            position_ids = position_ids.long()
        if check and int(position_ids.max()) >= limit:
            raise ValueError(
                f"sequence needs position {int(position_ids.max())} but max_position_embeddings is "
                f"{self.position_embeddings.num_embeddings} (at most "
                f"{self.position_embeddings.num_embeddings - self.padding_idx - 1} tokens)"
            )
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class XmodSelfAttention(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)  # no parameters: names unaffected

    def forward(self, x, mask):
        B, T, C = x.shape
        # One (3C x C) projection instead of three: fewer, larger matmuls (names stay the reference's).
        qkv = linear((self.query, self.key, self.value), x).view(B, T, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, T, D)
        if q.dtype == torch.bfloat16 and fusable(self.query, q) and T <= 128:
            y = bf16_attention(q, k, v, mask)
        elif self.training and self.dropout.p > 0 and q.device.type == "cpu":
            y = dropout_attention(q, k, v, mask, self.dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class XmodSelfOutput(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)


class XmodAttention(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.self = XmodSelfAttention(config)
        self.output = XmodSelfOutput(config)

    def forward(self, x, mask):
        h = self.output.LayerNorm(x) if self.pre_norm else x
        h = linear((self.output.dense,), self.self(h, mask), residual=x, dropout=self.output.dropout)
        return h if self.pre_norm else self.output.LayerNorm(h)


class XmodIntermediate(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        activation(config.hidden_act)  # an unknown name fails here, at construction
        self.act_name = config.hidden_act

    def forward(self, x):
        return linear((self.dense,), x, act=self.act_name)


class XmodAdapter(nn.Module):
    """One language's bottleneck: d -> d / reduction -> d."""

    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense1 = nn.Linear(config.hidden_size, config.adapter_size)
        self.dense2 = nn.Linear(config.adapter_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.act_name = config.hidden_act

    def forward(self, x, residual=None, dropout=None, out=None):
        """``dropout(module(x)) + residual`` (written into ``out`` when given, inference only)"""
        h = linear((self.dense1,), x, act=self.act_name, pack=False)
        return linear((self.dense2,), h, residual=residual, dropout=dropout, pack=False, out=out)


class XmodOutput(nn.Module):
    """Feed-forward output, residual, then the language module with its own residual."""

    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.ln_before_adapter = config.ln_before_adapter
        self.adapter_reuse_layer_norm = config.adapter_reuse_layer_norm
        if config.adapter_layer_norm:
            self.adapter_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        else:
            self.adapter_layer_norm = None
        if config.shared_module:
            shared = XmodAdapter(config)
            self.adapter_modules = nn.ModuleDict({code: shared for code in config.languages})
        else:
            self.adapter_modules = nn.ModuleDict({code: XmodAdapter(config) for code in config.languages})

    def forward(self, x, residual, routing: Routing):
        h = linear((self.dense,), x, residual=residual, dropout=self.dropout)
        skip = h
        if self.adapter_layer_norm is not None:
            h = self.adapter_layer_norm(h)
        elif self.adapter_reuse_layer_norm:
            h = self.LayerNorm(h)
        if self.ln_before_adapter:
            skip = h
        return self.run_modules(h, routing, skip)

    def run_modules(self, h, routing: Routing, skip):
        """``dropout(module_of_each_row(h)) + skip``"""
        segments = routing.segments
        if len(segments) == 1:
            return self.adapter_modules[segments[0][0]](h, skip, self.dropout)
        table = self.adapter_modules._modules
        modules = [table[code] for code in routing.codes]
        if all(m is modules[0] for m in modules):  # one module under every code (shared baseline)
            return modules[0](h, skip, self.dropout)
        groups = self._grouped(h, routing, modules[0], skip)
        if groups:
            y = self.run_grouped(h, routing, modules, skip, groups)
            if y is not None:  # None: weights not packed yet (this layout seen once)
                return y
        if self._batched(h, routing, modules[0]):
            if routing.equal and not torch.is_grad_enabled() and not self.training:
                return self.run_batched(h, routing, modules, skip)  # the residual rides in the last product
            return self.dropout(self.run_batched(h, routing, modules)) + skip
        if torch.is_grad_enabled() or not fusable(self, h):
            # split (not slicing): its backward is one concatenation, not a zero-filled batch per segment;
            # one dropout over the whole batch, not one per segment (each call has fixed costs)
            outputs = [module(part) for module, part in zip(modules, h.split(routing.rows))]
            return self.dropout(torch.cat(outputs)) + skip
        out = torch.empty_like(h)  # inference: each segment writes its rows, no concatenation
        act = modules[0].act_name
        if act in ONEDNN_ACTIVATIONS and modules[0].dense1.weight.dtype == h.dtype:  # the kernels, called directly
            kernel, (attr, algorithm) = torch.ops.mkldnn._linear_pointwise, ONEDNN_ACTIVATIONS[act]
            for module, (_, start, end) in zip(modules, segments):
                d1, d2 = module._modules["dense1"]._parameters, module._modules["dense2"]._parameters
                inner = kernel(h[start:end], d1["weight"], d1["bias"], attr, [None], algorithm)
                torch.add(kernel(inner, d2["weight"], d2["bias"], "none", [None], ""), skip[start:end], out=out[start:end])
            return out
        for module, (_, start, end) in zip(modules, segments):
            module(h[start:end], skip[start:end], self.dropout, out=out[start:end])
        return out

    @staticmethod
    def _batched(h, routing: Routing, module) -> bool:
        """Many segments: padded batched matmuls instead of a Python loop of small ones.

        Measured on CPU (bf16): small matmuls always gain (81 x 64 tokens at width 256: 5x faster
        than the loop). Larger ones gain only without copies: in inference, where the stacked weights
        are cached, equal segments run as a view (81 x 32 at width 768: 7.3 ms per layer against 10.3;
        8 x 128: 1.65 against 1.79), while padding them into a stack loses to the loop (8 unequal
        segments x 640 tokens at width 256: 65.4 against 64.0 ms per forward). So: at least 8
        segments and at most 25% padding; then small matmuls (< 8M multiply-adds per segment), or
        equal segments in inference, or equal segments in training up to 32M multiply-adds: bf16
        autocast training steps with 8 equal segments (2-core Zen 4, interleaved) were 3-5% faster
        batched at 8.4M and 16.8M per segment (width 256, 2 and 4 rows of 128), the same at 33.5M
        (width 512) and 2.6% slower at 75M (width 768).
        """
        rows = routing.rows
        if len(rows) < 8 or max(rows) * len(rows) > 1.25 * sum(rows):
            return False
        tokens = h.shape[1] if h.dim() == 3 else 1
        size = max(rows) * tokens * module.dense1.in_features * module.dense1.out_features
        return size < 8_000_000 or (routing.equal and (not torch.is_grad_enabled() or size < 32_000_000))

    @staticmethod
    def _grouped(h, routing: Routing, module, skip) -> int:
        """The number of groups for ``run_grouped``, or 0 where it does not apply.

        It applies in CPU inference through oneDNN (same dtype, an activation oneDNN fuses) where the
        batch splits into at most twice as many equal groups of rows as it has languages (a language
        with 2 rows among languages with 1 takes 2 groups, and its weights are read twice). Measured
        in bf16 at width 768 (2-core EPYC): the two products at 81 x 32 tokens 4.95 ms against 8.97
        for the batched matmuls, at 8 x 128 1.50 against 1.82; a 12-layer forward of 8 x 128 with
        one language twice 261 ms against 271 for the loop of kernels. Packing the weights costs
        more than it saves on one call (81 x 32: 810 ms a forward when a new layout came every
        call, against 626), hence ``reuse_first`` in ``grouped_weights``.
        """
        if not (fusable(module, h) and module.act_name in ONEDNN_ACTIVATIONS and module.dense1.weight.dtype == h.dtype
                and h.is_contiguous() and skip.is_contiguous() and h.dim() >= 2):
            return 0
        return routing.groups if routing.groups <= 2 * len(routing.rows) else 0

    def _cached(self, slot: str, key, modules, build, reuse_first: bool = False):
        """``build(params)`` for the modules' parameters, kept across inference calls (no autograd) in
        this module's ``slot`` until ``key`` differs or a parameter is replaced or changed (identity,
        storage and version, checked through the modules' dicts: at 81 languages this runs every
        layer, so it must be cheap). With ``reuse_first``, built only when the same key comes twice
        in a row (None the first time): for a value that pays only when reused. A key seen once does
        not evict the value built for another, so a stray batch leaves a repeated layout packed."""
        params = [lin._parameters[name] for m in modules for lin in (m._modules["dense1"], m._modules["dense2"])
                  for name in ("weight", "bias")]
        if torch.is_grad_enabled():
            return build(params)
        slots = INFERENCE_CACHE.setdefault(self, {})
        state = [(p._version, p.data_ptr()) for p in params]

        def holds(entry) -> bool:
            return (entry is not None and entry[0] == key and entry[2] == state
                    and all(a is b for a, b in zip(entry[1], params)))
        if holds(slots.get(slot)):
            return slots[slot][3]
        if reuse_first and not holds(slots.get(slot + " seen")):
            slots[slot + " seen"] = (key, params, state, None)
            return None
        value = build(params)
        if reuse_first:  # the reused value takes over: one cached copy of the weights per module
            slots.clear()
        slots[slot] = (key, params, state, value)
        return value

    def stacked_weights(self, modules) -> tuple[torch.Tensor, ...]:
        """(n, d, r), (n, 1, r), (n, r, d), (n, 1, d) for the batched path (cached in inference; the
        modules' parameters, compared by identity, are the whole key)."""
        def build(params):
            w1, b1, w2, b2 = (torch.stack(params[i::4]) for i in range(4))
            return w1.transpose(1, 2), b1.unsqueeze(1), w2.transpose(1, 2), b2.unsqueeze(1)
        return self._cached("stacked", None, modules, build)

    def run_batched(self, h, routing: Routing, modules, skip=None):
        """Every segment's module as two padded batched matmuls; ``skip`` (equal segments only) is
        added inside the second product instead of its bias (which follows in place)."""
        rows, segments = routing.rows, routing.segments
        width = max(rows)
        if routing.equal:  # e.g. one row per language: a view, no copy
            x = h
        else:
            x = torch.stack([F.pad(h[start:end], (0, 0) * (h.dim() - 1) + (0, width - (end - start)))
                             for _, start, end in segments])  # (n, width, ..., d)
        n, d = len(segments), h.shape[-1]
        w1, b1, w2, b2 = self.stacked_weights(modules)
        inner = modules[0].act(torch.baddbmm(b1, x.reshape(n, -1, d), w1))
        if skip is not None:
            return torch.baddbmm(skip.reshape(n, -1, d), inner, w2).add_(b2).reshape(h.shape)
        y = torch.baddbmm(b2, inner, w2).reshape(n, width, *h.shape[1:])
        return y.reshape(h.shape) if routing.equal else torch.cat([y[i, :count] for i, count in enumerate(rows)])

    def grouped_weights(self, modules, tokens: int) -> tuple:
        """Both products' weights as grouped 1x1 convolution weights (one group per entry of
        ``modules``) in oneDNN's layout for inputs of ``tokens`` positions, and their biases (cached).
        The layout is chosen for that input size: reused at another, oneDNN ran up to 100x slower,
        so the size is part of the key."""
        groups = len(modules)

        def build(params):
            w1, b1, w2, b2 = (torch.cat(params[i::4]).detach() for i in range(4))
            pack = torch.ops.mkldnn._reorder_convolution_weight
            return (pack(w1[:, :, None, None], [0, 0], [1, 1], [1, 1], groups, [1, groups * w1.shape[1], tokens, 1]), b1,
                    pack(w2[:, :, None, None], [0, 0], [1, 1], [1, 1], groups, [1, groups * w2.shape[1], tokens, 1]), b2)
        return self._cached("grouped", tokens, modules, build, reuse_first=True)

    def run_grouped(self, h, routing: Routing, modules, skip, groups: int):
        """``module_of_each_row(h) + skip`` in CPU inference as two grouped 1x1 convolutions in oneDNN:
        one call per product for the whole batch, on weights packed once, with the activation and the
        residual fused. The rows split into ``groups`` equal groups, each of one language; positions
        become the convolution's spatial axis and (group, channel) its channels."""
        width, rows_per_group = h.shape[-1], h.shape[0] // groups
        tokens = h.numel() // (groups * width)
        weights = self.grouped_weights([m for m, n in zip(modules, routing.rows) for _ in range(n // rows_per_group)], tokens)
        if weights is None:
            return None
        w1, b1, w2, b2 = weights

        def channels_last(t):  # (groups, tokens, d) -> an NCHW view (1, groups * d, tokens, 1) of NHWC memory
            return t.reshape(groups, tokens, width).transpose(0, 1).contiguous().view(1, tokens, 1, -1).permute(0, 3, 1, 2)
        x = channels_last(h)
        residual = x if skip is h else channels_last(skip)
        conv = torch.ops.mkldnn._convolution_pointwise
        attr, algorithm = ONEDNN_ACTIVATIONS[modules[0].act_name]
        inner = conv(x, w1, b1, [0, 0], [1, 1], [1, 1], groups, attr, [None], algorithm)
        y = conv.binary(inner, residual, w2, b2, [0, 0], [1, 1], [1, 1], groups, "add", None, None, [], None)
        # back to (rows, ..., d) order; contiguous, as every other path returns (LayerNorm would copy anyway)
        return y.permute(0, 2, 3, 1).reshape(tokens, groups, width).transpose(0, 1).contiguous().view(h.shape)


class XmodLayer(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.attention = XmodAttention(config)
        self.intermediate = XmodIntermediate(config)
        self.output = XmodOutput(config)

    def forward(self, x, mask, routing: Routing):
        a = self.attention(x, mask)
        h = self.output.LayerNorm(a) if self.pre_norm else a
        out = self.output(self.intermediate(h), a, routing)
        # Post-norm applies output.LayerNorm a second time, after the module (as the reference).
        return out if self.pre_norm else self.output.LayerNorm(out)


class XmodEncoder(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.layer = nn.ModuleList([XmodLayer(config) for _ in range(config.num_hidden_layers)])
        if config.pre_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        else:
            self.LayerNorm = None

    def forward(self, x, mask, routing: Routing, output_hidden_states=False):
        states = [x] if output_hidden_states else None
        for layer in self.layer:
            x = layer(x, mask, routing)
            if states is not None:
                states.append(x)
        if self.LayerNorm is not None:
            x = self.LayerNorm(x)
            if states is not None:  # the reference's last hidden state is the normed one
                states[-1] = x
        return x, states


class XmodPooler(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


# ---------------------------------------------------------------------------------------
# Base class: initialisation, languages, checkpoints
# ---------------------------------------------------------------------------------------
class XmodPreTrainedModel(nn.Module):
    base_model_prefix = "roberta"
    # Parameter-name prefixes of the encoder ("backbone"); everything else is a task head.
    _backbone = ("embeddings.", "encoder.", "pooler.")

    def __init__(self, config: XmodConfig):
        super().__init__()
        self.config = config

    @property
    def encoder_model(self) -> "XmodModel":
        return self if isinstance(self, XmodModel) else getattr(self, self.base_model_prefix)

    def init_weights(self) -> None:
        self.apply(self._init_module)
        self.tie_weights()

    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, XmodLMHead):
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        pass

    def train(self, mode: bool = True):
        """As nn.Module.train; entering training also drops the inference caches (packed and stacked
        weights), which only serve eval mode."""
        if mode:
            for module in self.modules():
                INFERENCE_CACHE.pop(module, None)
        return super().train(mode)

    # -- languages ----------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        return list(self.config.languages)

    def set_default_language(self, language: str) -> None:
        if language not in self.config.languages:
            raise ValueError(f"unknown language {language!r}; the model's languages: {self.config.languages}")
        self.config.default_language = language

    def module_tables(self) -> list[nn.ModuleDict]:
        """Each layer's language-module table (code -> module, in id order), first layer first. Its
        attribute keeps transformers' name, ``layer.output.adapter_modules``."""
        return [layer.output.adapter_modules for layer in self.encoder_model.encoder.layer]

    def add_language(self, code: str, init_from: str | Sequence[str] | None = None) -> int:
        """Add ``code``'s module to every layer; returns its id (always the next free one).

        ``init_from``: None (the model's random initialisation), one code (a copy of that
        language's modules), or several codes (their average). Other languages are untouched.
        """
        if code in self.config.languages:
            raise ValueError(f"language {code!r} is already in the model ({self.config.languages})")
        sources = [init_from] if isinstance(init_from, str) else list(init_from or [])
        for src in sources:
            if src not in self.config.languages:
                raise ValueError(f"init_from language {src!r} is not one of the model's languages {self.config.languages}")
        for table in self.module_tables():
            first = next(iter(table.values()))
            if self.config.shared_module:
                table[code] = first
                continue
            weight = first.dense1.weight
            new = XmodAdapter(self.config).to(device=weight.device, dtype=weight.dtype).train(first.training)
            if sources:
                with torch.no_grad():
                    for name, p in new.named_parameters():
                        p.copy_(torch.stack([table[s].get_parameter(name) for s in sources]).mean(0))
            else:
                new.apply(self._init_module)
            table[code] = new
        self.config.languages.append(code)
        return len(self.config.languages) - 1

    def freeze_embeddings_and_language_adapters(self) -> None:
        """The paper's fine-tuning protocol: embeddings, language modules and their norm stay fixed."""
        for name, p in self.named_parameters():
            if is_embedding_or_module_param(name):
                p.requires_grad_(False)

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    # -- checkpoints (weights.py) -------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` as transformers does (tied tensors once)."""
        weights.save_pretrained(self, directory)

    def _tied_keys(self) -> set[str]:
        return set()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **config_overrides):
        """Load a checkpoint directory written by xmodlm or transformers (or a hub id).

        Task-head weights absent from the checkpoint (e.g. a classifier on top of a
        pre-trained MLM) are freshly initialised and logged; a missing encoder weight, a
        shape mismatch or an unreadable file is an error naming the file and the tensor.
        """
        return weights.from_pretrained(cls, name_or_path, **config_overrides)

    def load_checkpoint_weights(self, directory: str | os.PathLike) -> None:
        """Copy the weights of a checkpoint directory into this model (see weights.load_checkpoint_weights)."""
        weights.load_checkpoint_weights(self, directory)


def module_language(name: str) -> str | None:
    """The language whose module holds parameter ``name`` (``...output.adapter_modules.<code>.dense1.weight``);
    None for every other parameter."""
    _, found, rest = name.partition(".adapter_modules.")
    return rest.split(".", 1)[0] if found else None


def is_embedding_or_module_param(name: str) -> bool:
    """Parameters that the paper's fine-tuning freezes: embeddings, language modules, their norm."""
    return ".embeddings." in f".{name}" or module_language(name) is not None or ".adapter_layer_norm." in name


# ---------------------------------------------------------------------------------------
# The encoder and its heads
# ---------------------------------------------------------------------------------------
class XmodModel(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = XmodEmbeddings(config)
        self.encoder = XmodEncoder(config)
        self.pooler = XmodPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T), 1 = token, 0 = padding
        lang_ids: LangIds = None,  # (B,) ids into config.languages, or codes
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        if isinstance(lang_ids, str) and lang_ids == "auto":
            raise ValueError('lang_ids="auto" needs the text: use xmodlm.pipeline.Pipeline (or '
                             "xmodlm.languages.resolve_auto_lang_ids(texts, model)) to pick codes per input")
        ids = resolve_lang_ids(lang_ids, self.config, input_ids.shape[0])
        routing = make_routing(ids, self.config.languages, input_ids.device)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys a query may attend to
        if routing.order is not None:
            x = x.index_select(0, routing.order)
            mask = mask.index_select(0, routing.order) if mask is not None else None
        h, states = self.encoder(x, mask, routing, output_hidden_states)
        if routing.order is not None:
            h = h.index_select(0, routing.inverse)
            states = [s.index_select(0, routing.inverse) for s in states] if states else states
        pooled = self.pooler(h) if self.pooler is not None else None
        return BaseModelOutput(h, pooled, tuple(states) if states else None)


class XmodLMHead(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, h):
        # The decoder is the (tied) embedding matrix: never packed (a second copy of it would be large).
        return linear((self.decoder,), self.layer_norm(linear((self.dense,), h, act="gelu")), pack=False)


class XmodForMaskedLM(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig):
        super().__init__(config)
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.lm_head = XmodLMHead(config)
        self.init_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.decoder.weight = self.roberta.embeddings.word_embeddings.weight
        self.lm_head.decoder.bias = self.lm_head.bias

    def _tied_keys(self) -> set[str]:
        keys = {"lm_head.decoder.bias"}
        return keys | {"lm_head.decoder.weight"} if self.config.tie_word_embeddings else keys

    def forward(self, input_ids, attention_mask=None, lang_ids: LangIds = None, labels=None,
                token_type_ids=None, position_ids=None, output_hidden_states=False,
                all_logits: bool = False) -> MaskedLMOutput:
        """With ``labels`` (-100 = not scored), logits are computed at the scored positions only,
        shape (N, V) in row-major order, unless ``all_logits`` asks for (B, T, V)."""
        out = self.roberta(input_ids, attention_mask, lang_ids, token_type_ids, position_ids, output_hidden_states)
        h = out.last_hidden_state
        if labels is None:
            return MaskedLMOutput(None, self.lm_head(h), out.hidden_states)
        scored = labels.ne(-100)
        if all_logits:
            logits = self.lm_head(h)
            selected = logits[scored]
        else:
            logits = selected = self.lm_head(h[scored])  # (N, V): the vocabulary projection dominates
        loss = F.cross_entropy(selected.float(), labels[scored]) if selected.shape[0] else selected.sum() * 0.0
        return MaskedLMOutput(loss, logits, out.hidden_states)


class XmodClassificationHead(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, h):
        x = self.dropout(h[:, 0])  # <s>
        return self.out_proj(self.dropout(torch.tanh(self.dense(x))))


def classification_loss(config: XmodConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1)) if config.num_labels == 1 \
            else F.mse_loss(logits.float(), labels.float())
    if problem == "single_label_classification":
        return F.cross_entropy(logits.float().view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class XmodForSequenceClassification(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig):
        super().__init__(config)
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.classifier = XmodClassificationHead(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, lang_ids: LangIds = None, labels=None,
                token_type_ids=None, position_ids=None, output_hidden_states=False) -> SequenceClassifierOutput:
        out = self.roberta(input_ids, attention_mask, lang_ids, token_type_ids, position_ids, output_hidden_states)
        logits = self.classifier(out.last_hidden_state)
        loss = classification_loss(self.config, logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss, logits, out.hidden_states)


class XmodForTokenClassification(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig):
        super().__init__(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, lang_ids: LangIds = None, labels=None,
                token_type_ids=None, position_ids=None, output_hidden_states=False) -> TokenClassifierOutput:
        out = self.roberta(input_ids, attention_mask, lang_ids, token_type_ids, position_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, self.config.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss, logits, out.hidden_states)


class XmodForQuestionAnswering(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig):
        super().__init__(config)
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, lang_ids: LangIds = None, start_positions=None,
                end_positions=None, token_type_ids=None, position_ids=None,
                output_hidden_states=False) -> QuestionAnsweringModelOutput:
        out = self.roberta(input_ids, attention_mask, lang_ids, token_type_ids, position_ids, output_hidden_states)
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored, as in the reference.
            ignored = start_logits.size(1)
            start = start_positions.view(-1).clamp(0, ignored)
            end = end_positions.view(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits.float(), start, ignore_index=ignored)
                    + F.cross_entropy(end_logits.float(), end, ignore_index=ignored)) / 2
        return QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states)


class XmodForMultipleChoice(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig):
        super().__init__(config)
        self.roberta = XmodModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, lang_ids: LangIds = None, labels=None,
                token_type_ids=None, position_ids=None, output_hidden_states=False) -> MultipleChoiceModelOutput:
        """``input_ids`` (B, C, T); ``lang_ids`` one per example (B,), or one per choice (B, C)."""
        B, C, T = input_ids.shape
        if isinstance(lang_ids, torch.Tensor) and lang_ids.dim() == 2 and lang_ids.shape == (B, C):
            flat_langs = lang_ids.reshape(-1)
        elif lang_ids is None or isinstance(lang_ids, (str, int)):
            flat_langs = lang_ids
        else:
            per_example = resolve_lang_ids(lang_ids, self.config, B)
            flat_langs = [i for i in per_example for _ in range(C)]

        def flat(t):
            return t.reshape(B * C, -1) if t is not None else None

        out = self.roberta(flat(input_ids), flat(attention_mask), flat_langs, flat(token_type_ids),
                           flat(position_ids), output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output)).view(B, C)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return MultipleChoiceModelOutput(loss, logits, out.hidden_states)


def load_pretrained(name_or_path: str | os.PathLike, **config_overrides) -> XmodPreTrainedModel:
    """The class named in config.json's ``architectures`` (default: masked LM), loaded from there."""
    config = XmodConfig.from_pretrained(weights.resolve_pretrained(name_or_path))
    names = config.extra.get("architectures") or ["XmodForMaskedLM"]
    by_name = {cls.__name__: cls for cls in HEADS.values()}
    if names[0] not in by_name:
        raise ValueError(f"{name_or_path}: architecture {names[0]!r} is not one of {sorted(by_name)}")
    return by_name[names[0]].from_pretrained(name_or_path, **config_overrides)


HEADS = {
    "base": XmodModel,
    "mlm": XmodForMaskedLM,
    "sequence-classification": XmodForSequenceClassification,
    "token-classification": XmodForTokenClassification,
    "question-answering": XmodForQuestionAnswering,
    "multiple-choice": XmodForMultipleChoice,
}
