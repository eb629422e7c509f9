"""``LayerNorm(dropout(h) + residual)`` in CPU bf16 autocast training as one autograd function over the own kernel
(``native.residual_norm``): the chain after each residual linear (attention output, feed-forward output, the
language modules), where autocast leaves the product in bf16 and keeps the residual stream and the norm in
float32. torch runs it as dropout's addcmul, the sum, LayerNorm, and backward LayerNorm's backward, a cast of
the gradient to bf16 and dropout's addcmul: six passes over the rows and their dispatch; here one each way.

The numbers: dropout's output rounded to bf16 as torch's, the sum in float32, LayerNorm's statistics in
float32 (summed in another order than torch's: float32 rounding), the gradient of h rounded to bf16 twice as
torch's cast and addcmul round it; the norm's weight and bias gradients summed over blocks of 64 rows, the
blocks in order (the same bits for any thread count). ``use_fused_residual_norm(False)`` switches it off.

The output's next product reads it in bf16 (autocast casts it: a pass that reads the float32 rows and writes
them again, and in the backward one that casts the bf16 gradient back and one that adds it to the residual
path's). So the kernel also writes the output rounded to bf16 in the same pass (``bf16_twin``; the same bits as
the cast), the products take that copy, and its gradient comes back to this function, which adds it to the
float32 one inside the backward kernel (the same float32 sum autograd makes). ``use_bf16_twin(False)``: autocast's
casts."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import native
from .dropout import Dropout

_FUSED_NORM = {"enabled": True, "twin": True}


def use_fused_residual_norm(enabled: bool) -> None:
    """Run LayerNorm(dropout(h) + residual) in bf16 autocast training in the own kernel (True, the default,
    where it is built) or as torch's ops (False)."""
    _FUSED_NORM["enabled"] = bool(enabled)


def use_bf16_twin(enabled: bool) -> None:
    """Let the products that read the fused norm's output under autocast take the bf16 copy the kernel writes in the
    same pass (True, the default) or cast the output themselves, as autocast does (False)."""
    _FUSED_NORM["twin"] = bool(enabled)


def bf16_twin_on() -> bool:
    return _FUSED_NORM["twin"]


def fused_residual_norm_on() -> bool:
    return _FUSED_NORM["enabled"]


class _ResidualNorm(torch.autograd.Function):
    """y = LayerNorm(dropout(h) + residual) and, with ``twin``, y rounded to bf16 (y16: what the next product
    reads; else None)."""

    @staticmethod
    def forward(ctx, h, residual, weight, bias, keep, scale, eps, twin):
        y, t, mean, rstd, y16 = native.residual_norm(h, keep, scale, residual, weight, bias, eps, twin)
        ctx.save_for_backward(t, mean, rstd, weight, keep)
        ctx.scale = scale
        ctx.set_materialize_grads(False)  # an output nothing read comes back as None, not as zeros
        return y, y16

    @staticmethod
    @once_differentiable  # the kernel has no derivative of its own: a second backward is a clear error
    def backward(ctx, dy, dy16):
        t, mean, rstd, weight, keep = ctx.saved_tensors
        if dy is None and dy16 is None:
            return (None,) * 8
        dt, dh, dweight, dbias = native.residual_norm_backward(dy, t, mean, rstd, weight, keep, ctx.scale, dy16)
        needs = ctx.needs_input_grad
        return (dh if needs[0] else None, dt if needs[1] else None, dweight if needs[2] else None,
                dbias if needs[3] else None, None, None, None, None)


def bf16_twin(x: torch.Tensor) -> torch.Tensor | None:
    """The bf16 copy of ``x`` that ``dropout_residual_norm`` wrote with it (x rounded to bf16, as autocast's cast
    rounds it, and on the graph: its gradient joins x's in the norm's backward), or None: x made elsewhere, or
    changed in place since."""
    twin = getattr(x, "_xmodlm_bf16", None)
    return twin[0] if twin is not None and twin[1] == x._version else None


def _applies(h: torch.Tensor, dropout, residual: torch.Tensor, norm) -> bool:
    d = h.shape[-1]
    params = [p for p in (getattr(norm, "weight", None), getattr(norm, "bias", None)) if p is not None]
    return (_FUSED_NORM["enabled"] and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and h.device.type == "cpu" and h.dtype == torch.bfloat16 and residual.dtype == torch.float32
            and residual.shape == h.shape and h.is_contiguous() and residual.is_contiguous()
            and isinstance(norm, nn.LayerNorm)  # torch's, or kernels.LayerNorm (kernel_args): the forward known
            and (type(norm) is nn.LayerNorm or hasattr(norm, "kernel_args"))
            and tuple(norm.normalized_shape) == (d,) and d % 16 == 0
            and all(p.dtype == torch.float32 and p.is_contiguous() for p in params)
            and (norm.weight is None) == (norm.bias is None)
            and (dropout is None or (isinstance(dropout, Dropout) and not dropout.inplace
                                     and round(dropout.p * 65536) < 65536))
            and native.vector_available())


def dropout_residual_norm(h: torch.Tensor, dropout: nn.Module | None, residual: torch.Tensor,
                          norm: nn.Module) -> torch.Tensor | None:
    """``norm(dropout(h) + residual)`` through the own kernel where it applies (bf16 h, float32 residual and norm
    parameters, a kernels.LayerNorm over a multiple of 16 values, the package's Dropout or none, autograd on,
    the kernels built); None elsewhere (the caller then runs torch's ops). The dropout mask is drawn as
    ``Dropout`` draws it, so the same seed gives the same mask either way."""
    if not _applies(h, dropout, residual, norm):
        return None
    mask = None if dropout is None else dropout.keep_mask(h)  # None in eval mode or at p == 0: identity
    keep, scale = mask if mask is not None else (None, 1.0)
    y, y16 = _ResidualNorm.apply(h, residual, norm.weight, norm.bias, keep, scale, norm.eps, _FUSED_NORM["twin"])
    if y16 is not None:
        y._xmodlm_bf16 = (y16, y._version)  # read by bf16_twin where autocast would cast y for a product
    return y
