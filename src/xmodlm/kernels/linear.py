"""Linears on CPU through oneDNN: fused in inference (on cached packed weights), its own
autograd function in fp32 training; the activation tables; the inference weight cache."""

from __future__ import annotations

import weakref
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .amp import autocast_linear, autocast_linear_applies
from .tied import decoder_weight

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
INFERENCE_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple | dict]" = weakref.WeakKeyDictionary()


def use_onednn(enabled: bool) -> None:
    """Use (True, the default) or bypass the oneDNN linears on CPU (plain torch ops)."""
    _ONEDNN["enabled"] = bool(enabled)


def drop_inference_cache(root: nn.Module) -> None:
    """Forget the packed and stacked weights of ``root`` and every module below it."""
    for module in root.modules():
        INFERENCE_CACHE.pop(module, None)


def _onednn_ready(x: torch.Tensor) -> bool:
    # is_compiling first: under torch.compile the plain ops are traced (inductor fuses them itself)
    return (not torch.compiler.is_compiling() and _ONEDNN["enabled"] and _ONEDNN["available"]
            and x.device.type == "cpu")


def fusable(training: bool, x: torch.Tensor) -> bool:
    """Inference (``training`` false, no autograd) through the fused oneDNN kernels (not under
    autocast, whose casts they would skip)."""
    return (not training and not torch.is_grad_enabled() and x.dtype in (torch.float32, torch.bfloat16)
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
        # no batch-size hint: the layout then serves any batch (a hint tuned to one size slowed others)
        cached = INFERENCE_CACHE[linears[0]] = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach()), bias)
    return cached[1], cached[2]


def linear(linears: Sequence[nn.Linear], x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None,
           dropout: nn.Module | None = None, pack: bool = True, tied: bool = False) -> torch.Tensor:
    """``dropout(act(x @ W.T + b)) + residual``, W and b concatenating ``linears`` along the output.
    In CPU inference one fused oneDNN call; with ``pack`` on a cached pre-packed weight (worth it
    for the big shared matrices; the per-language modules are small and many, so they stay unpacked).
    ``tied``: W is also the word embeddings (read through ``tied.embedding_lookup``), whose gradient then joins
    this one's as rows (``tied.decoder_weight``)."""
    weight = linears[0].weight
    if fusable(linears[0].training, x) and weight.dtype == x.dtype and (act is None or act in ONEDNN_ACTIVATIONS):
        weight, bias = packed_weights(linears) if pack else concat(linears)
        if residual is not None and act is None and residual.dtype == x.dtype:
            # the residual added on the fp32 accumulator: one rounding (as fast as a separate add)
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        attr, algorithm = ONEDNN_ACTIVATIONS[act] if act else ("none", "")
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [None], algorithm)
        if residual is None:
            return y
        return y.add_(residual)
    weight, bias = concat(linears)
    if tied:
        weight = decoder_weight(weight)
    if onednn_trainable(x, weight):
        y = OneDNNLinear.apply(x, weight, bias)
    elif autocast_linear_applies(x, weight, bias, _onednn_ready(x)):  # bf16 autocast training: bias in the product
        y = autocast_linear(x, weight, bias)
    else:
        y = F.linear(x, weight, bias)
    if act is not None:
        y = activation(act)(y)
    if dropout is not None:
        y = dropout(y)
    if residual is None:
        return y
    return y + residual
