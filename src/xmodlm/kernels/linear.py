"""Linears on CPU through oneDNN: fused in inference (on cached packed weights), its own
autograd function in fp32 training; the activation tables; the inference weight cache."""

from __future__ import annotations

import weakref
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import native
from .amp import (autocast_linear, autocast_linear_applies, cpu_bf16_autocast, native_vocab_applies,
                  native_vocab_projection, onednn_bf16)
from .gelu import table_gelu, table_gelu_applies
from .residual_norm import bf16_twin, dropout_residual_norm
from .tied import decoder_weight
from .tune import bucket, choose, run_fastest, tuning

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}
# the same activations as oneDNN's post-ops (attribute, algorithm), applied on the fp32 accumulator
ONEDNN_ACTIVATIONS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"),
                      "relu": ("relu", ""), "silu": ("swish", ""), "swish": ("swish", ""), "tanh": ("tanh", "")}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _onednn_in_build() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


_ONEDNN = {"enabled": True, "available": _onednn_in_build()}
# Inference-only derived tensors (packed or stacked weights) per module, outside the module so that
# state_dict, deepcopy and pickling never see them; an entry goes with its module.
INFERENCE_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def use_onednn(enabled: bool) -> None:
    """Use (True, the default) or bypass the oneDNN linears on CPU (plain torch ops)."""
    _ONEDNN["enabled"] = bool(enabled)


def drop_inference_cache(root: nn.Module) -> None:
    """Forget the packed and stacked weights of ``root`` and every module below it."""
    for module in root.modules():
        INFERENCE_CACHE.pop(module, None)


def _onednn_ready(x: torch.Tensor) -> bool:
    # is_compiling first: under torch.compile the plain ops are traced (inductor fuses them itself); bf16 only where
    # oneDNN has bf16 kernels on this processor (on AVX2 ones its bf16 calls fail)
    return (not torch.compiler.is_compiling() and _ONEDNN["enabled"] and _ONEDNN["available"]
            and x.device.type == "cpu" and (x.dtype != torch.bfloat16 or onednn_bf16()))


def fused_dtype(training: bool, x: torch.Tensor) -> torch.dtype | None:
    """The dtype in which inference (``training`` false, no autograd) runs through the fused oneDNN
    kernels: x's own (fp32 or bf16), or bf16 under CPU bf16 autocast, whose casts the kernels then make
    themselves (each weight cast once and cached, not at every call); None where they do not apply."""
    if training or torch.is_grad_enabled() or x.dtype not in (torch.float32, torch.bfloat16) or not _onednn_ready(x):
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if cpu_bf16_autocast() and onednn_bf16() else None
    return x.dtype


def fusable(training: bool, x: torch.Tensor) -> bool:
    """Inference through the fused oneDNN kernels in x's own dtype (not under autocast)."""
    return fused_dtype(training, x) is not None and not torch.is_autocast_enabled("cpu")


def onednn_trainable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 autograd through oneDNN (not under autocast, which already sends bf16 products there)."""
    return (torch.is_grad_enabled() and x.dtype == weight.dtype == torch.float32 and _onednn_ready(x)
            and not torch.is_autocast_enabled("cpu"))


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias in oneDNN (weight (out, in), any strides)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")


class OneDNNLinear(torch.autograd.Function):
    """F.linear for float32 CPU training, with the forward and the input's gradient in oneDNN, the weight's
    gradient in oneDNN or BLAS, whichever is faster here (``weight_gradient``). Differentiable once: for double
    backward (gradient penalties) call ``use_onednn(False)``."""

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
        grad_w = weight_gradient(grad2, x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[1] else None
        grad_b = grad2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _onednn_weight_gradient(grad2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    # oneDNN is fastest with the wider side as its "weight"; it copies both operands transposed (the tokens, the
    # sum's dimension, must be innermost), and for more outputs than inputs its result is transposed, laid out here
    # in the parameter's layout (autograd would copy it so anyway; here the timing in ``weight_gradient`` sees it)
    if grad2.shape[1] >= x2.shape[1]:
        return _mm(x2.t(), grad2.t()).t().contiguous()
    return _mm(grad2.t(), x2.t())


# the fp32 weight gradient's formulations (the first is the default): oneDNN's product, or BLAS's gemm on the
# operands as they lie (the transposes as its flags; the result in the parameter's layout)
WEIGHT_GRADIENTS = {"oneDNN": _onednn_weight_gradient, "BLAS": lambda grad2, x2: torch.mm(grad2.t(), x2)}


def weight_gradient(grad2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """A linear's fp32 weight gradient, ``grad2.T @ x2`` (out, in), from the output's gradient (tokens, out) and
    the input (tokens, in): oneDNN's product or BLAS's gemm, whichever ran faster on the first call of the weight's
    shape with at least ``tune``'s ``min_rows`` tokens (``tune.choose``; fewer, or tuning off: oneDNN). The
    choice is kept per weight shape, not per token count, so that the whole of a model's set is made in its first
    training step and a checkpoint holds it (a resumed run continues bit for bit)."""
    name = "oneDNN"
    if tuning(grad2.shape[0]):
        name = choose(("weight gradient", x2.shape[1], grad2.shape[1]),
                      {name: (lambda form=form: form(grad2, x2)) for name, form in WEIGHT_GRADIENTS.items()})
    return WEIGHT_GRADIENTS[name](grad2, x2)


def concat(linears: Sequence[nn.Linear], dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias of ``linears`` concatenated along the output (in ``dtype``: cast)."""
    if len(linears) == 1:
        weight, bias = linears[0].weight, linears[0].bias
    else:
        bias = None if linears[0].bias is None else torch.cat([m.bias for m in linears])
        weight = torch.cat([m.weight for m in linears])
    if dtype is None or weight.dtype == dtype:
        return weight, bias
    return weight.to(dtype), None if bias is None else bias.to(dtype)


def packed_weights(linears: Sequence[nn.Linear], dtype: torch.dtype | None = None,
                   layout: str = "onednn") -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight of ``linears`` (concatenated along the output, in ``dtype``, by default their own)
    reordered into oneDNN's blocked layout (``layout="onednn"``) or the AMX kernel's tiles (``"amx"``,
    bf16, its bias float32), and their bias; cached on the first linear until any tensor is replaced or
    changed; one entry per dtype and layout asked for."""
    tensors = [t for m in linears for t in (m.weight, m.bias) if t is not None]
    key = tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors)
    by_slot = INFERENCE_CACHE.setdefault(linears[0], {})  # fp32 calls and autocast calls each keep theirs
    cached = by_slot.get((dtype, layout))
    if cached is None or cached[0] != key:
        weight, bias = concat(linears, dtype)
        if layout == "amx":
            packed, bias = native.pack(weight), None if bias is None else bias.detach().float()
        else:  # no batch-size hint: the layout then serves any batch (a hint tuned to one size slowed others)
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        cached = by_slot[(dtype, layout)] = (key, packed, bias)
    return cached[1], cached[2]


def _fused(x, weight, bias, act, residual):
    """``act(x @ W.T + b) + residual`` in one oneDNN call (W packed or plain)."""
    if residual is not None and act is None and residual.dtype == x.dtype:
        # the residual added on the fp32 accumulator: one rounding (as fast as a separate add)
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
    attr, algorithm = ONEDNN_ACTIVATIONS[act] if act else ("none", "")
    y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [None], algorithm)
    return y if residual is None else y.add_(residual)


def _transposed(x, weight, bias, residual):
    """``x @ W.T + b + residual`` computed as its transpose, ``W @ x.T + (residual + b).T``, then laid
    back: the same kernel with the roles of tokens and outputs swapped, which oneDNN splits between
    threads differently (the bias joins the residual in bf16 before the accumulator)."""
    rows = x.reshape(-1, x.shape[-1])
    other = residual.reshape(-1, residual.shape[-1])
    other = (other if bias is None else other + bias).t().contiguous()
    y = torch.ops.mkldnn._linear_pointwise.binary(weight, other, rows, None, "add")
    return y.t().contiguous().view(residual.shape)


# rows per call of the "row blocks" formulation
ROW_BLOCK = 256


def _in_row_blocks(x, weight, bias, act, residual):
    """The fused call on ``ROW_BLOCK`` rows at a time, the blocks concatenated. oneDNN's split of one
    product between threads depends on its row count: on a 2-core Xeon with AMX the 1,024-row products
    with 768 outputs ran at 1,100-1,300 GFLOP/s, the same products on 256 rows at 1,700-2,000."""
    rows = x.reshape(-1, x.shape[-1])
    other = None if residual is None else residual.reshape(-1, residual.shape[-1])
    y = torch.cat([_fused(rows[i:i + ROW_BLOCK], weight, bias, act, None if other is None else other[i:i + ROW_BLOCK])
                   for i in range(0, rows.shape[0], ROW_BLOCK)])
    return y.view(*x.shape[:-1], y.shape[-1])


def norm_in_call(norm, like: torch.Tensor) -> tuple | None:
    """What the own kernel's call needs to apply ``norm`` itself (``kernels.LayerNorm.kernel_args``), or None where
    it cannot: no norm, another kind of norm, or one the kernel does not take; the caller then runs ``norm`` on
    the result."""
    method = getattr(norm, "kernel_args", None)
    return None if method is None else method(like)


def _amx(linears, x, act, residual, split_rows: bool, norm=None):
    """The product in the own AMX kernel (``native``), on its packed copy of the weights, the threads
    sharing its output columns or (``split_rows``) its rows; then ``norm`` (a kernels.LayerNorm or None),
    inside the same call where the kernel takes it."""
    weight, bias = packed_weights(linears, torch.bfloat16, "amx")
    n = sum(m.out_features for m in linears)
    rows = x.reshape(-1, x.shape[-1])
    other = None if residual is None else residual.reshape(-1, n)
    args = norm_in_call(norm, x)
    y = native.segments_linear(rows, (rows.shape[0],), (weight,), (bias,), n, act, other, split_rows, args)
    y = y.view(*x.shape[:-1], n)
    return norm(y) if norm is not None and args is None else y


# the packed copy of the weights each formulation reads (the transposed product reads the parameters)
_LAYOUT = {"fused": "onednn", "row blocks": "onednn", "separate activation": "onednn", "AMX kernel": "amx",
           "AMX kernel, rows split": "amx", "transposed": None}


def _tuned(linears, x, dtype, act, residual, amp: bool, rows: int, norm=None):
    """bf16 inference over many rows: the fused call, or where measured faster on this machine, an
    equivalent formulation (``tune``): the fused call in blocks of rows; the transposed product for a
    residual linear (not under autocast, where it would cast the plain weight at every call); the
    activation as its own pass for an activated one; the own AMX kernel where it is built, which also
    applies ``norm`` (a LayerNorm after the product, or None) in the same call. Once chosen, the packed
    copies of the weights the choice does not read are dropped (no second copy is kept).

    The first candidate is the default, which another must beat by the tuner's margin: the own kernel with the
    rows split where it is built. Timed alone, a product repeats on warm caches; inside the xmod-base forward
    (2-core Xeon with AMX, 2026-12-01, docs/results/amx-perf/round5/per-shape-in-forward.txt) the own kernel ran
    the feed-forward input 2.60-2.66 ms against oneDNN's 2.96-3.07, the two residual linears with their norms
    1.8x and 2.1x faster, the attention projections as fast (1.69-1.77 against 1.70-1.77 ms), while alone the
    first two differed by less than the margin."""
    n = sum(m.out_features for m in linears)

    def onednn():  # oneDNN's packed copy, made when a formulation reads it
        return packed_weights(linears, dtype)

    def then(y):  # the norm as its own pass, for the formulations that do not apply it
        return y if norm is None else norm(y)
    candidates = {}
    amx = act in (None, "gelu") and native.fits(n, x.shape[-1]) and native.available()
    if amx:  # the default where it is built: in the forward it ran each shape at least as fast as oneDNN (see below)
        candidates["AMX kernel, rows split"] = lambda: _amx(linears, x, act, residual, True, norm)
    candidates["fused"] = lambda: then(_fused(x, *onednn(), act, residual))
    if rows > ROW_BLOCK:
        candidates["row blocks"] = lambda: then(_in_row_blocks(x, *onednn(), act, residual))
    if residual is not None and act is None and not amp and residual.shape[:-1] == x.shape[:-1]:
        candidates["transposed"] = lambda: then(_transposed(x, *concat(linears), residual))
    if act is not None and residual is None:
        candidates["separate activation"] = lambda: then(ACTIVATIONS[act](_fused(x, *onednn(), None, None)))
    if amx:
        candidates["AMX kernel"] = lambda: _amx(linears, x, act, residual, False, norm)
    if len(candidates) == 1:
        return candidates["fused"]()
    name, y = run_fastest(("linear", bucket(rows), x.shape[-1], n, act, residual is not None, norm is not None),
                          candidates)
    slots = INFERENCE_CACHE.get(linears[0], {})
    for layout in ("onednn", "amx"):
        if layout != _LAYOUT[name]:
            slots.pop((dtype, layout), None)
    return y


def linear(linears: Sequence[nn.Linear], x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None,
           dropout: nn.Module | None = None, pack: bool = True, tied: bool = False, norm: nn.Module | None = None
           ) -> torch.Tensor:
    """``norm(dropout(act(x @ W.T + b)) + residual)``, W and b concatenating ``linears`` along the output,
    ``norm`` a kernels.LayerNorm or None (none). In CPU inference one fused oneDNN call; with ``pack`` on
    a cached pre-packed weight (worth it for the big shared matrices; the per-language modules are small
    and many, so they stay unpacked); in bf16 inference on AMX the own kernel may apply the norm too.
    ``tied``: W is also the word embeddings (read through ``tied.embedding_lookup``), whose gradient then joins
    this one's as rows (``tied.decoder_weight``)."""
    weight = linears[0].weight
    dtype = fused_dtype(linears[0].training, x)
    amp = dtype is not None and torch.is_autocast_enabled("cpu")
    if dtype is not None and (weight.dtype == x.dtype or amp) and (act is None or act in ONEDNN_ACTIVATIONS):
        x = x.to(dtype)  # under autocast: the cast autocast makes; the weights' are cached
        rows = x.numel() // x.shape[-1]
        mixed = residual is not None and residual.dtype != dtype  # autocast: the product in bf16, the sum in fp32
        inner = None if mixed else residual
        tuned = pack and dtype == torch.bfloat16 and tuning(rows)
        if tuned:  # the norm goes in where the sum is the product's own (not autocast's fp32 one)
            y = _tuned(linears, x, dtype, act, inner, amp, rows, None if mixed else norm)
        else:
            y = _fused(x, *(packed_weights(linears, dtype) if pack else concat(linears, dtype)), act, inner)
        y = residual + y if mixed else y
        return y if norm is None or (tuned and not mixed) else norm(y)
    weight, bias = concat(linears)
    if tied:
        weight = decoder_weight(weight)
    twin = bf16_twin(x) if cpu_bf16_autocast() else None
    x = x if twin is None else twin  # the fused norm's bf16 copy of x: the cast autocast would make
    if onednn_trainable(x, weight):
        y = OneDNNLinear.apply(x, weight, bias)
    elif tied and native_vocab_applies(x, weight, bias):  # bf16 autocast training: no casts of the matrix
        y = native_vocab_projection(x, weight, bias)
    elif autocast_linear_applies(x, weight, bias, _onednn_ready(x)):  # bf16 autocast training: bias in the product
        y = autocast_linear(x, weight, bias)
    else:
        y = F.linear(x, weight, bias)
    if act is not None:
        y = table_gelu(y) if act == "gelu" and table_gelu_applies(y) else activation(act)(y)
    if residual is not None and norm is not None:
        fused = dropout_residual_norm(y, dropout, residual, norm)  # bf16 autocast training: one kernel each way
        if fused is not None:
            return fused
    if dropout is not None:
        y = dropout(y)
    if residual is not None:
        y = y + residual
    return y if norm is None else norm(y)
