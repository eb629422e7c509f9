"""The per-language modules of a whole batch in a few large calls instead of one module call per
language: the own AMX kernel over all segments (bf16 inference on AMX; without AMX its AVX-512 twin, measured
1.1-1.2x faster than the oneDNN paths on a Zen 5: round12/vmods.md), one
module for the batch,
padded batched matmuls, grouped convolutions on packed weights, or a loop of direct kernel calls,
each where it pays."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import native
from .amp import cpu_bf16_autocast
from .module_training import native_modules_apply, native_training_modules
from .linear import INFERENCE_CACHE, ONEDNN_ACTIVATIONS, fusable, fused_dtype, linear, norm_in_call, packed_weights
from .residual_norm import bf16_twin, dropout_residual_norm

# (rows, equal, groups) of the last call: every layer of a forward passes the same rows (a tuple)
_last_layout: tuple = (None, False, 0)


def run_language_modules(rows, modules, h, skip, dropout, training: bool, owner, norm=None):
    """``norm(dropout(module_of_each_row(h)) + skip)`` computed faster than the per-language loop, or None
    where nothing beats that loop (the caller then runs it, and the norm).

    ``rows``: a tuple of row counts, one per segment (h's rows come grouped by language, segment by
    segment); ``modules``: each segment's module, duck-typed: ``dense1`` and ``dense2`` (nn.Linear),
    ``act_name`` and ``act``; ``training``: the caller's mode (autograd is read from torch);
    ``owner``: the object under which stacked or packed module weights are cached; ``norm``: a
    kernels.LayerNorm or None (none), inside the own AMX kernel's call where it applies."""
    if not training and _own_kernel_applies(h, skip, modules[0]):
        return run_own_kernel(h, rows, modules, skip, norm)
    return _without_amx(rows, modules, h, skip, dropout, training, owner, norm)


def _without_amx(rows, modules, h, skip, dropout, training: bool, owner, norm):
    """``run_language_modules`` where the own AMX kernel does not apply."""
    module = modules[0]
    if len(rows) == 1 or all(m is module for m in modules):  # one language, or one shared module: no split
        inner = linear((module.dense1,), h, act=module.act_name, pack=False)
        return linear((module.dense2,), inner, residual=skip, dropout=dropout, pack=False, norm=norm)

    def then(y):
        return y if norm is None else norm(y)
    if native_modules_apply(h, modules, training):  # bf16 autocast training: one kernel call each way
        y = native_training_modules(h, rows, modules, bf16_twin(h))
        fused = None if norm is None else dropout_residual_norm(y, dropout, skip, norm)
        return fused if fused is not None else then(dropout(y) + skip)
    layout = _last_layout
    if layout[0] is not rows:
        layout = _layout(rows)
    _, equal, groups = layout
    groups = _grouped(h, groups, len(rows), module, skip)
    if groups:
        y = run_grouped(owner, h, rows, modules, skip, groups)
        if y is not None:  # None: weights not packed yet (this layout seen once)
            return then(y)
    if _batched(h, rows, equal, module):
        if equal and not torch.is_grad_enabled() and not training:
            return then(run_batched(owner, h, rows, equal, modules, skip))  # the residual rides in the last product
        y = run_batched(owner, h, rows, equal, modules)
        fused = None if norm is None else dropout_residual_norm(y, dropout, skip, norm)
        return fused if fused is not None else then(dropout(y) + skip)
    if torch.is_grad_enabled() or not fusable(training, h):
        return None
    act = module.act_name
    if act not in ONEDNN_ACTIVATIONS or module.dense1.weight.dtype != h.dtype:
        return None
    out = torch.empty_like(h)  # inference: each segment writes its rows, no concatenation
    kernel, (attr, algorithm) = torch.ops.mkldnn._linear_pointwise, ONEDNN_ACTIVATIONS[act]
    for m, x, residual, target in zip(modules, h.split(rows), skip.split(rows), out.split(rows)):
        d1, d2 = m._modules["dense1"]._parameters, m._modules["dense2"]._parameters
        inner = kernel(x, d1["weight"], d1["bias"], attr, [None], algorithm)
        torch.add(kernel(inner, d2["weight"], d2["bias"], "none", [None], ""), residual, out=target)
    return then(out)


def _own_kernel_applies(h, skip, module) -> bool:
    """bf16 inference (or under bf16 autocast) of GELU modules in whole tiles, where the AMX kernel is built or,
    without it, its vector twin (AVX-512 bf16 products, e.g. AMD Zen 4 and 5)."""
    first = module.dense1
    return (fused_dtype(False, h) == torch.bfloat16 and module.act_name == "gelu" and h.is_contiguous()
            and skip.shape == h.shape and native.fits(first.out_features, first.in_features)
            and (native.available() or native.vector_available()))


def run_own_kernel(h, rows, modules, skip, norm=None):
    """``norm(module_of_each_row(h) + skip)`` in CPU inference as one call of the own kernel (``native.modules``:
    AMX's, or without it its vector twin, on the same packed weights) over all segments, each with its module's
    packed weights: GELU and the residual on the float32 accumulator, the norm (a kernels.LayerNorm, or None) on each
    finished row; under autocast (fp32 ``skip``) the residual's sum in fp32 after, then the norm."""
    width = h.shape[-1]
    positions = h.numel() // (h.shape[0] * width)  # rows of the kernel per row of h
    counts = [n * positions for n in rows]
    x = h.to(torch.bfloat16).reshape(-1, width)
    first = [packed_weights((m.dense1,), torch.bfloat16, "amx") for m in modules]
    second = [packed_weights((m.dense2,), torch.bfloat16, "amx") for m in modules]
    # the rows split between the threads, each thread's rows going through both products while in its cache
    residual = skip.reshape(-1, width)
    same = residual.dtype == torch.bfloat16
    args = norm_in_call(norm, residual) if same else None
    y = native.modules(x, counts, first, second, residual if same else None, args)
    y = (y if same else residual + y).view(h.shape)
    return norm(y) if norm is not None and args is None else y


def _layout(rows) -> tuple:
    """(rows, whether all segments have as many rows, into how many equal groups of rows, each of one
    language, the batch splits: one per row / gcd(rows)), kept for the next call with the same rows."""
    global _last_layout
    equal = all(r == rows[0] for r in rows)
    _last_layout = (rows, equal, sum(rows) // (math.gcd(*rows) or 1))
    return _last_layout


def _batched(h, rows, equal: bool, module) -> bool:
    """Many segments: padded batched matmuls instead of a Python loop of small ones.

    Small matmuls always gain. Larger ones gain only without copies: in inference, where the stacked
    weights are cached, equal segments run as a view, while padding unequal ones into a stack loses
    to the loop. So: at least 8 segments and at most 25% padding; then small matmuls (< 8M
    multiply-adds per segment), or equal segments in inference, or equal segments in training up to
    32M multiply-adds (beyond, bf16 autocast training steps were no faster batched than looped).
    """
    if len(rows) < 8 or max(rows) * len(rows) > 1.25 * sum(rows):
        return False
    tokens = h.shape[1] if h.dim() == 3 else 1
    size = max(rows) * tokens * module.dense1.in_features * module.dense1.out_features
    return size < 8_000_000 or (equal and (not torch.is_grad_enabled() or size < 32_000_000))


def _grouped(h, groups: int, segments: int, module, skip) -> int:
    """The number of groups for ``run_grouped``, or 0 where it does not apply.

    It applies in CPU inference through oneDNN (same dtype, or bf16 autocast; an activation oneDNN fuses) where the
    batch splits into at most twice as many equal groups of rows as it has languages (a language
    with 2 rows among languages with 1 takes 2 groups, and its weights are read twice). There it beats
    the batched matmuls and the loop of kernels; packing the weights costs more than it saves on one
    call, hence ``reuse_first`` in ``grouped_weights``.
    """
    dtype = fused_dtype(module.training, h)
    same = module.dense1.weight.dtype == h.dtype or torch.is_autocast_enabled("cpu")  # autocast: cast, cached
    if not (dtype is not None and same and module.act_name in ONEDNN_ACTIVATIONS
            and h.is_contiguous() and skip.is_contiguous() and h.dim() >= 2):
        return 0
    return groups if groups <= 2 * segments else 0


def _cached(owner, slot: str, key, modules, build, reuse_first: bool = False):
    """``build(params)`` for the modules' parameters, kept across inference calls (no autograd) in
    ``owner``'s cache entry under ``slot`` until ``key`` differs or a parameter is replaced or changed
    (identity, storage and version, checked through the modules' dicts: with many languages this
    runs every layer, so it must be cheap). With ``reuse_first``, built only when the same key comes
    twice in a row (None the first time): for a value that pays only when reused. A key seen once
    does not evict the value built for another, so a stray batch leaves a repeated layout packed."""
    params = [lin._parameters[name] for m in modules for lin in (m._modules["dense1"], m._modules["dense2"])
              for name in ("weight", "bias")]
    if torch.is_grad_enabled():
        return build(params)
    slots = INFERENCE_CACHE.setdefault(owner, {})
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
    if reuse_first:  # the reused value takes over: one cached copy of the weights per owner
        slots.clear()
    slots[slot] = (key, params, state, value)
    return value


def stacked_weights(owner, modules) -> tuple[torch.Tensor, ...]:
    """(n, d, r), (n, 1, r), (n, r, d), (n, 1, d) for the batched path (cached in inference; the
    modules' parameters, compared by identity, are the whole key)."""
    def build(params):
        w1, b1, w2, b2 = (torch.stack(params[i::4]) for i in range(4))
        return w1.transpose(1, 2), b1.unsqueeze(1), w2.transpose(1, 2), b2.unsqueeze(1)
    return _cached(owner, "stacked", None, modules, build)


def run_batched(owner, h, rows, equal: bool, modules, skip=None):
    """Every segment's module as two padded batched matmuls; ``skip`` (equal segments only) is
    added inside the second product instead of its bias (which follows in place)."""
    width = max(rows)
    twin = bf16_twin(h) if cpu_bf16_autocast() else None
    source = h if twin is None else twin  # the fused norm's bf16 copy of h: the cast autocast would make
    if equal:  # e.g. one row per language: a view, no copy
        x = source
    else:
        x = torch.stack([F.pad(part, (0, 0) * (h.dim() - 1) + (0, width - part.shape[0]))
                         for part in source.split(rows)])  # (n, width, ..., d)
    n, d = len(rows), h.shape[-1]
    w1, b1, w2, b2 = stacked_weights(owner, modules)
    inner = modules[0].act(torch.baddbmm(b1, x.reshape(n, -1, d), w1))
    if skip is not None:
        return torch.baddbmm(skip.reshape(n, -1, d), inner, w2).add_(b2).reshape(h.shape)
    y = torch.baddbmm(b2, inner, w2).reshape(n, width, *h.shape[1:])
    return y.reshape(h.shape) if equal else torch.cat([y[i, :count] for i, count in enumerate(rows)])


def grouped_weights(owner, modules, tokens: int, dtype: torch.dtype) -> tuple:
    """Both products' weights as grouped 1x1 convolution weights (one group per entry of
    ``modules``) in ``dtype`` and oneDNN's layout for inputs of ``tokens`` positions, and their biases
    (cached). The layout is chosen for that input size and is far slower at another, so the size is
    part of the key."""
    groups = len(modules)

    def build(params):
        w1, b1, w2, b2 = (torch.cat(params[i::4]).detach().to(dtype) for i in range(4))
        pack = torch.ops.mkldnn._reorder_convolution_weight
        return (pack(w1[:, :, None, None], [0, 0], [1, 1], [1, 1], groups, [1, groups * w1.shape[1], tokens, 1]), b1,
                pack(w2[:, :, None, None], [0, 0], [1, 1], [1, 1], groups, [1, groups * w2.shape[1], tokens, 1]), b2)
    return _cached(owner, "grouped", (tokens, dtype), modules, build, reuse_first=True)


def run_grouped(owner, h, rows, modules, skip, groups: int):
    """``module_of_each_row(h) + skip`` in CPU inference as two grouped 1x1 convolutions in oneDNN:
    one call per product for the whole batch, on weights packed once, with the activation and the
    residual fused. The rows split into ``groups`` equal groups, each of one language; positions
    become the convolution's spatial axis and (group, channel) its channels. None while the weights
    are not packed (a layout's first sighting)."""
    width, rows_per_group = h.shape[-1], h.shape[0] // groups
    tokens = h.numel() // (groups * width)
    dtype = fused_dtype(False, h)  # h's own, or bf16 under autocast
    weights = grouped_weights(owner, [m for m, n in zip(modules, rows) for _ in range(n // rows_per_group)],
                              tokens, dtype)
    if weights is None:
        return None
    w1, b1, w2, b2 = weights

    def channels_last(t):  # (groups, tokens, d) -> an NCHW view (1, groups * d, tokens, 1) of NHWC memory
        return t.reshape(groups, tokens, width).transpose(0, 1).contiguous().view(1, tokens, 1, -1).permute(0, 3, 1, 2)
    x = channels_last(h.to(dtype))
    conv = torch.ops.mkldnn._convolution_pointwise
    attr, algorithm = ONEDNN_ACTIVATIONS[modules[0].act_name]
    inner = conv(x, w1, b1, [0, 0], [1, 1], [1, 1], groups, attr, [None], algorithm)
    if skip.dtype == dtype:
        residual = x if skip is h else channels_last(skip)
        y = conv.binary(inner, residual, w2, b2, [0, 0], [1, 1], [1, 1], groups, "add", None, None, [], None)
    else:  # autocast: the products in bf16, the residual's sum in its fp32 (as autocast's ops)
        y = conv(inner, w2, b2, [0, 0], [1, 1], [1, 1], groups, "none", [None], "")
    # back to (rows, ..., d) order; contiguous, as every other path returns (LayerNorm would copy anyway)
    y = y.permute(0, 2, 3, 1).reshape(tokens, groups, width).transpose(0, 1)
    return (y.contiguous() if skip.dtype == dtype else skip.view(y.shape) + y).view(h.shape)
