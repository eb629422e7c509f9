"""Softmax attention: torch's scaled_dot_product_attention, except on CPU for bf16 inference with the own kernel
(``native.attention``: the AMX kernel, or without AMX its AVX-512 twin), for bf16 inference of short sequences
without AMX where the own kernel does not apply (``bf16_attention``), for bf16 training with the own kernel where
switched on (``native_training_attention``: AMX's tiles, or AVX-512's bf16 pair products without AMX) and for
training with attention dropout (``dropout_attention``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import native
from .cpu import amx_bf16
from .dropout import Dropout
from .linear import fused_dtype


def attention(q, k, v, mask, dropout: nn.Dropout, training: bool, projection: torch.Tensor | None = None):
    """``softmax(q k^T / sqrt(D), masked) @ v`` with ``dropout`` (its ``p``) on the probabilities in
    training. q, k, v (B, H, T, D); mask None or (B, 1, 1, T), True where a key may be attended to.
    ``projection``: the fused QKV projection's output (B, T, 3 * H * D) whose heads q, k, v are, or None; the own
    training kernel then hands its gradient to it directly."""
    if native_applies(q, k, v, mask, training):
        return native.attention(q, k, v, None if mask is None else mask.reshape(mask.shape[0], mask.shape[-1]))
    if training and native_training_applies(q, k, v, mask, dropout):
        return native_training_attention(q, k, v, mask, dropout, projection)
    if q.dtype == torch.bfloat16 and fused_dtype(training, q) == torch.bfloat16 and q.shape[2] <= 128 and not amx_bf16():
        # with AMX, SDPA's flash kernel is faster at the same precision (float32 scores from bf16
        # products, bf16 probabilities) and reads the heads in place: no layout copies
        return bf16_attention(q, k, v, mask)
    if training and dropout.p > 0 and q.device.type == "cpu":
        return dropout_attention(q, k, v, mask, dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout.p if training else 0.0)


def native_applies(q, k, v, mask, training: bool) -> bool:
    """bf16 inference where the own AMX kernel is built, or without AMX its vector twin (AVX-512 with bf16), on
    heads that share strides (those of one fused projection) and a key mask (B, 1, 1, T) or none.

    The vector kernel at every length: alone at one thread on a 2-core Zen 5 (docs/results/amx-perf/round12/
    vattn-alone-*-0f2b3fe.txt) it took 12 heads of 64 at batch 8 x 128 in 1.43 ms against bf16_attention's 4.71 and
    SDPA's 7.25 (masked 1.40 / 5.68 / 7.25), 81 x 32 in 1.26 / 5.33 / 7.54, 8 x 32 in 0.16 / 0.55 / 0.67; heads
    of 32 and 128, T 5, 37, 256 and 512 2.7-5.3x faster than the faster of the two. Only at T = 1 (8 x 1: 0.034
    ms) is SDPA faster (0.030), but there bf16_attention (0.105) is what would run, so no length is gated out.
    Where AMX is detected (or its paths asked for) but the tile kernel is not available, SDPA's flash kernel runs,
    as before."""
    return (q.dtype == k.dtype == v.dtype == torch.bfloat16 and fused_dtype(training, q) == torch.bfloat16
            and q.stride() == k.stride() == v.stride() and q.stride(-1) == 1 and q.shape[-1] % 32 == 0
            and (mask is None or (mask.dtype == torch.bool and mask.shape == (q.shape[0], 1, 1, q.shape[2])))
            and (native.available() or (native.vector_available() and not amx_bf16())))


def bf16_attention(q, k, v, mask):
    """Softmax attention for bfloat16 inputs in CPU inference, at about the flash kernel's precision:
    float32 scores and softmax, probabilities rounded to bfloat16 for the product with v.

    The scores come from two bfloat16 batched matmuls (oneDNN) instead of one float32 matmul (MKL's,
    slow on AMD): ``hi`` = q k^T rounded to bfloat16, then ``lo`` = q k^T - hi, which oneDNN
    accumulates in float32 before rounding it; hi + lo carries about 16 significant bits, float32-grade
    next to bfloat16's 8. The scores are held in full, so this serves short sequences (T <= 128). Where
    MKL's float32 matmul is slow it is faster than float32 scores; where it ties with torch's CPU bf16
    flash kernel, its precision is what it buys."""
    B, H, T, D = q.shape
    scale = D ** -0.5
    exact_scale = math.frexp(scale)[0] == 0.5  # a power of two: q * scale is exact in bfloat16
    # gather the strided head view into (B * H, T, D), then scale it in place when exact: a copy and a
    # contiguous multiply are faster than one multiply from the strided view
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
    mask (torch's bernoulli is a visible share of a bf16 training step in SDPA). Under autocast the
    products run in bf16 whatever their inputs (autocast casts them), so the inputs are not
    converted to float32 first: the same result without two conversions per tensor."""
    scale = q.shape[-1] ** -0.5
    up = (lambda t: t) if torch.is_autocast_enabled(q.device.type) else (lambda t: t.float())
    scores = torch.matmul(up(q) * scale, up(k).transpose(-1, -2))
    if mask is not None:  # the scores' own minimum: under autocast they are bf16
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.matmul(dropout(torch.softmax(scores, dim=-1)), up(v)).to(q.dtype)


_NATIVE_TRAINING = {"enabled": True}


def use_native_training_attention(enabled: bool) -> None:
    """Run attention in CPU bf16 training through the own kernel where it applies (True, the default: with AMX the
    masked-LM step of the train suite 1.07-1.10x faster, docs/results/amx-perf/round6; without, on a 2-core Zen 5,
    the bench's step ~1.04x at one thread, round12/vtrain.md) or through ``dropout_attention`` / SDPA (False)."""
    _NATIVE_TRAINING["enabled"] = bool(enabled)


def native_training_on() -> bool:
    return _NATIVE_TRAINING["enabled"]


def native_training_applies(q, k, v, mask, dropout: nn.Module) -> bool:
    """bf16 training on CPU (autograd on, bf16 heads: those of bf16 autocast's projection or of a bf16 model) where
    the own kernels are built (the tile kernels with AMX; without, the vector kernels where ``vector_training_faster``
    says so) and the switch is on, the heads share strides (those of one fused projection) with
    D % 32 == 0, the mask is a bool key mask (B, 1, 1, T) or none, and the dropout is the package's (whose mask the
    kernel applies) or none."""
    return (_NATIVE_TRAINING["enabled"] and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and q.device.type == "cpu" and q.dim() == 4 and q.dtype == k.dtype == v.dtype == torch.bfloat16
            and q.shape == k.shape == v.shape and q.stride() == k.stride() == v.stride() and q.stride(-1) == 1
            and q.shape[-1] % 32 == 0 and q.shape[2] > 0
            and (mask is None or (mask.dtype == torch.bool and mask.shape == (q.shape[0], 1, 1, q.shape[2])))
            and (dropout.p == 0 or (isinstance(dropout, Dropout) and not dropout.inplace  # keep_mask's mask, not
                                    and 0 < round(dropout.p * 65536) < 65536))  # nn.Dropout's fallback
            and (native.available() or (native.vector_available() and vector_training_faster(q))))


def vector_training_faster(q) -> bool:
    """Whether the own VECTOR kernels (processors without AMX: xm_attention_train_vector and its backward) were
    measured faster than ``dropout_attention`` for heads of q's shape, forward and backward together. On a 2-core
    Zen 5, one thread, heads of one fused projection, Dropout(0.1), a key mask (round12/vtrain-alone-1thread*.txt):
    1.75-2.4x faster at every shape measured, batch 16 x 4 heads with T 16, 32, 128, 200 and D 32, 64, 128, 256,
    batch 4 with T 512, and the tests' 2 x 1 x 12 x 32; none slower. Longer sequences or wider heads were not
    measured: dropout_attention there."""
    return q.shape[2] <= 512 and q.shape[3] <= 256


def heads_of_projection(projection: torch.Tensor | None, q, k, v) -> bool:
    """Whether q, k, v (B, H, T, D) are the heads of ``projection``, a contiguous (B, T, 3 * H * D) tensor laid out
    (B, T, 3, H, D) (the model's fused QKV projection): its gradient is then the kernel's gradient buffer itself,
    where q, k, v's own gradients would cost autograd a stack and a copy (unbind's and reshape's backward)."""
    if projection is None:
        return False
    batch, heads, t, d = q.shape
    step = heads * d * q.element_size()
    return (projection.dtype == q.dtype and projection.shape == (batch, t, 3 * heads * d)
            and projection.is_contiguous() and q.stride() == (3 * t * heads * d, d, 3 * heads * d, 1)
            and (q.data_ptr(), k.data_ptr(), v.data_ptr()) == tuple(projection.data_ptr() + i * step for i in range(3)))


class _TrainingAttention(torch.autograd.Function):
    """The own kernel's attention with its backward. ``fused``: the projection output q, k, v view (its gradient
    returned in its own layout, q, k, v then passed detached), or None (q, k, v's gradients, three views of one
    buffer)."""

    @staticmethod
    def forward(ctx, fused, q, k, v, keys, keep, drop_scale):
        out, stats = native.training_attention(q, k, v, keys, keep, drop_scale)
        ctx.save_for_backward(q, k, v, keys, keep, stats)
        ctx.drop_scale = drop_scale
        ctx.fused_shape = None if fused is None else fused.shape
        return out

    @staticmethod
    @once_differentiable  # the kernel has no derivative of its own: a second backward is a clear error
    def backward(ctx, dout):
        q, k, v, keys, keep, stats = ctx.saved_tensors
        grads = native.training_attention_backward(dout, q, k, v, keys, keep, ctx.drop_scale, stats)
        if ctx.fused_shape is not None:
            return grads.view(ctx.fused_shape), None, None, None, None, None, None
        dq, dk, dv = (grads[:, :, i].transpose(1, 2) for i in range(3))
        return None, dq, dk, dv, None, None, None


def native_training_attention(q, k, v, mask, dropout: nn.Module, projection: torch.Tensor | None = None):
    """``dropout(softmax(q k^T / sqrt(D), masked)) @ v`` in bf16 training through the own kernel: float32 scores
    from bf16 products (autocast's are rounded to bf16), a float32 softmax, the dropout's mask drawn as ``Dropout``
    draws it for the (B, H, T, T) probabilities (the same seed, the same mask as ``dropout_attention``), the
    dropped probabilities rounded to bf16 for the product with v; the backward recomputes the probabilities from
    each row's saved softmax constants. The result is a (B, H, T, D) view of (B, T, H, D) memory. ``projection``:
    as ``attention`` takes it (its gradient given directly where q, k, v are its heads)."""
    batch, heads, t, _ = q.shape
    drawn = dropout.keep_mask(q.new_empty(()).expand(batch, heads, t, t)) if isinstance(dropout, Dropout) else None
    keep, drop_scale = drawn if drawn is not None else (None, 1.0)
    keys = None if mask is None else mask.reshape(batch, t).contiguous()
    if heads_of_projection(projection, q, k, v):
        return _TrainingAttention.apply(projection, q.detach(), k.detach(), v.detach(), keys, keep, drop_scale)
    return _TrainingAttention.apply(None, q, k, v, keys, keep, drop_scale)
