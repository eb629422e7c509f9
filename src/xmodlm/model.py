"""X-Mod (Pfeiffer et al. 2022, "Lifting the Curse of Multilinguality by Pre-training Modular
Transformers"): a RoBERTa encoder with one small bottleneck module per language in every layer.

For token ids with one language per row, it computes:

* embeddings: word + position (RoBERTa's: real tokens count from padding_idx + 1) + token type,
  LayerNorm, dropout.
* in every layer (``XmodLayer``): self-attention, output projection, dropout, residual; the
  feed-forward (dense, activation, dense, dropout, residual); then the row's language module
  (``XmodAdapter``: dense1 down to d / reduction, activation, dense2 back to d), dropout and its own
  residual (``XmodOutput``). The module's input is the feed-forward output through the module's own
  LayerNorm (``adapter_layer_norm``), through ``output.LayerNorm`` (``adapter_reuse_layer_norm``) or
  as it is; its residual is that input (``ln_before_adapter``) or the feed-forward output. Post-norm
  (xmod-base) normalises after attention's residual and applies ``output.LayerNorm`` again after
  the module's; pre-norm (the paper's large model) normalises before attention and before the
  feed-forward, and the encoder ends with a LayerNorm.
* routing (``Routing``): rows are grouped by language once per forward, so that in every layer each
  language's module runs on one contiguous slice; the outputs return to the input order.
* heads: masked LM (dense, gelu, LayerNorm, a decoder tied to the word embeddings; with labels, logits
  at the labelled positions only), sequence and token classification, question answering, multiple choice.

Parameter names are Hugging Face's (``roberta.encoder.layer.0.output.adapter_modules.en_XX.dense1``
...): ``save_pretrained`` writes what ``transformers.Xmod*`` classes load, ``from_pretrained`` reads
theirs, and parity tests compare the outputs with transformers' modeling_xmod. How it is made fast
lives in ``xmodlm.kernels``, behind ``linear``, ``attention``, ``run_language_modules`` and
``Dropout``. This module imports torch and, from the package, its config, the weight files (``weights``)
and the kernels.
"""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import weights
from .config import XmodConfig, validate_code
from .kernels import Dropout, LayerNorm, activation, drop_inference_cache, embedding_lookup, run_language_modules
from .kernels.attention import attention
from .kernels.linear import linear
from .kernels.loss import cross_entropy_or_zero, limited_cross_entropy, mask_beyond
from .kernels.rows import permute_rows

logger = logging.getLogger(__name__)

LangIds = Union[torch.Tensor, Sequence[str], Sequence[int], str, int, None]


# --- Modules ----------------------------------------------------------------------------------------
class XmodEmbeddings(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        limit = self.position_embeddings.num_embeddings
        # derived positions never exceed seq_len + padding_idx: only then is the maximum (a GPU sync) needed
        check = position_ids is not None or input_ids.shape[1] + self.padding_idx >= limit
        if position_ids is None:
            # RoBERTa: real tokens count from padding_idx + 1, padding keeps padding_idx.
            not_pad = input_ids.ne(self.padding_idx).int()
            position_ids = torch.cumsum(not_pad, dim=1).type_as(not_pad) * not_pad + self.padding_idx
            position_ids = position_ids.long()
        if check and int(position_ids.max()) >= limit:
            raise ValueError(f"sequence needs position {int(position_ids.max())} but max_position_embeddings "
                             f"is {limit} (at most {limit - self.padding_idx - 1} tokens)")
        x = embedding_lookup(self.word_embeddings, input_ids) + self.position_embeddings(position_ids)
        types = self.token_type_embeddings
        x = x + (types.weight[0] if token_type_ids is None else types(token_type_ids))
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
        projected = linear((self.query, self.key, self.value), x)
        q, k, v = projected.view(B, T, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
        y = attention(q, k, v, mask, self.dropout, self.training, projected)  # softmax(q k^T / sqrt(D)) v, dropout
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class XmodSelfOutput(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)


class XmodAttention(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.self = XmodSelfAttention(config)
        self.output = XmodSelfOutput(config)

    def forward(self, x, mask):
        h = self.output.LayerNorm(x) if self.pre_norm else x
        norm = None if self.pre_norm else self.output.LayerNorm  # post-norm: in the product's call where it can be
        return linear((self.output.dense,), self.self(h, mask), residual=x, dropout=self.output.dropout, norm=norm)


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

    def forward(self, x):
        """dense2(act(dense1(x))); small and one per language, so its weights are never packed"""
        return linear((self.dense2,), linear((self.dense1,), x, act=self.act_name, pack=False), pack=False)


class XmodOutput(nn.Module):
    """Feed-forward output and residual, then each row's language module with its own residual."""

    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.ln_before_module = config.ln_before_adapter
        self.module_reuse_layer_norm = config.adapter_reuse_layer_norm
        norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.adapter_layer_norm else None
        self.adapter_layer_norm = norm  # the module's own input norm (transformers' names here and below)
        shared = XmodAdapter(config) if config.shared_module else None  # shared baseline: one module for all
        self.adapter_modules = nn.ModuleDict({code: shared or XmodAdapter(config) for code in config.languages})

    def forward(self, x, residual, routing: Routing, norm=None):
        """``norm``: the LayerNorm after the module (post-norm) or None; both norms ride in products where they can."""
        before = self.adapter_layer_norm or (self.LayerNorm if self.module_reuse_layer_norm else None)
        if self.ln_before_module:
            h = skip = linear((self.dense,), x, residual=residual, dropout=self.dropout, norm=before)
        else:
            skip = linear((self.dense,), x, residual=residual, dropout=self.dropout)
            h = skip if before is None else before(skip)
        return self.run_modules(h, routing, skip, norm)

    def run_modules(self, h, routing: Routing, skip, norm=None):
        """``norm(dropout(module_of_each_row(h)) + skip)`` (norm None: none), the rows grouped by language as
        ``routing`` says."""
        table = self.adapter_modules._modules  # the dict itself: read for every language in every layer
        modules = [table[code] for code in routing.codes]
        y = run_language_modules(routing.rows, modules, h, skip, self.dropout, self.training, self, norm)
        if y is not None:  # the kernels' faster way to the same result
            return y
        # the definition: each language's module on its rows (split, whose backward is one concatenation)
        y = self.dropout(torch.cat([module(part) for module, part in zip(modules, h.split(routing.rows))])) + skip
        return y if norm is None else norm(y)


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
        # Post-norm applies output.LayerNorm a second time, after the module (as the reference).
        return self.output(self.intermediate(h), a, routing, None if self.pre_norm else self.output.LayerNorm)


class XmodEncoder(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.layer = nn.ModuleList([XmodLayer(config) for _ in range(config.num_hidden_layers)])
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_norm else None

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


# --- Language routing -------------------------------------------------------------------------------
@dataclass
class Routing:
    """How a batch maps to language modules: contiguous row ranges after an optional regroup."""

    segments: list[tuple[str, int, int]]  # (language code, first row, end row)
    order: torch.Tensor | None = None  # rows regrouped by language, or None if already grouped
    inverse: torch.Tensor | None = None

    def __post_init__(self):  # derived once per forward, read by every layer
        self.codes = tuple(code for code, _, _ in self.segments)
        self.rows = tuple(end - start for _, start, end in self.segments)


def resolve_lang_ids(lang_ids: LangIds, config: XmodConfig, batch_size: int) -> list[int]:
    """One language index per example, validated against ``config.languages``."""
    languages = config.languages
    if lang_ids is None:
        if config.default_language is None:
            raise ValueError("no lang_ids given and config.default_language is not set: pass lang_ids (codes or ids) "
                             f"or call set_default_language(code); the model's languages: {languages}")
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
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float(v).is_integer():
                raise ValueError(f"lang_ids must be integers or codes; got {v!r} in {values[:8]}")
            v = int(v)
            if not 0 <= v < len(languages):
                raise ValueError(f"language id {v} is out of range 0..{len(languages) - 1}; "
                                 f"the model's languages: {languages}")
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


# --- Outputs (the reference's field names) ----------------------------------------------------------
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


TokenClassifierOutput = MultipleChoiceModelOutput = SequenceClassifierOutput


@dataclass
class QuestionAnsweringModelOutput:
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# --- Base class: initialisation, languages, checkpoints ---------------------------------------------
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
        """As nn.Module.train; entering training also drops the kernels' inference caches (packed and
        stacked weights), which only serve eval mode."""
        if mode:
            drop_inference_cache(self)
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
        validate_code(code)
        if code in self.config.languages:
            raise ValueError(f"language {code!r} is already in the model ({self.config.languages})")
        sources = [init_from] if isinstance(init_from, str) else list(init_from or [])
        for src in sources:
            if src not in self.config.languages:
                raise ValueError(f"init_from language {src!r} is not one of the model's languages "
                                 f"{self.config.languages}")
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
        """A checkpoint directory written by xmodlm or transformers (or a hub id); a task head the checkpoint
        lacks starts fresh (logged); a missing encoder tensor or a bad file is an error naming it."""
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


# --- The encoder and its heads ----------------------------------------------------------------------
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
            x = permute_rows(x, routing.order, routing.inverse)
            mask = mask.index_select(0, routing.order) if mask is not None else None
        h, states = self.encoder(x, mask, routing, output_hidden_states)
        if routing.order is not None:
            h = permute_rows(h, routing.inverse, routing.order)
            states = [s.index_select(0, routing.inverse) for s in states] if states else states
        pooled = self.pooler(h) if self.pooler is not None else None
        return BaseModelOutput(h, pooled, tuple(states) if states else None)


class XmodLMHead(nn.Module):
    def __init__(self, config: XmodConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, h):
        # The decoder is the (tied) embedding matrix: never packed (a second copy of it would be large).
        return linear((self.decoder,), self.layer_norm(linear((self.dense,), h, act="gelu")), pack=False, tied=True)


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
        """With ``labels`` (-100 = not scored), logits at the scored positions only, (N, V) in row-major order,
        unless ``all_logits`` asks for (B, T, V). ``config.extra``'s ``language_vocab_starts`` / ``_sizes`` keep a
        language's softmax to its rows [start, stop) (logit -inf outside: the rows that existed when it was trained,
        or its own), so its masked-LM scores stay exact after an addition (transformers does not read them)."""
        out = self.roberta(input_ids, attention_mask, lang_ids, token_type_ids, position_ids, output_hidden_states)
        h = out.last_hidden_state
        limits = self._vocab_ranges(lang_ids, input_ids.shape[0], h.device)  # (B, 2) or None
        if labels is None:
            return MaskedLMOutput(None, mask_beyond(self.lm_head(h), limits), out.hidden_states)
        scored = labels.ne(-100)
        if all_logits:
            logits = self.lm_head(h)
            selected = logits[scored]
        else:
            logits = selected = self.lm_head(h[scored])  # (N, V): the vocabulary projection dominates
        at_scored = None if limits is None else limits[:, None].expand(*labels.shape, 2)[scored]
        loss = limited_cross_entropy(selected, labels[scored], at_scored)
        kept = (limits, None) if all_logits else (at_scored, labels[scored])  # outside targets: every row
        return MaskedLMOutput(loss, mask_beyond(logits, *kept), out.hidden_states)

    def _vocab_ranges(self, lang_ids: LangIds, batch_size: int, device) -> torch.Tensor | None:
        """Each example's vocabulary range [start, stop), or None where every example scores every row."""
        if not self.config.extra.get("language_vocab_sizes"):
            return None
        ranges = [self.config.vocab_range(self.config.languages[i])
                  for i in resolve_lang_ids(lang_ids, self.config, batch_size)]
        return None if all(r == (0, self.config.vocab_size) for r in ranges) else torch.tensor(ranges, device=device)


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
    problem = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification"
                                      if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
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
            loss = cross_entropy_or_zero(logits.view(-1, self.config.num_labels), labels.view(-1), -100)
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
            loss = (cross_entropy_or_zero(start_logits, start, ignored)
                    + cross_entropy_or_zero(end_logits, end, ignored)) / 2
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
