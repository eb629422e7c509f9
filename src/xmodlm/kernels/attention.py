"""Softmax attention: torch's scaled_dot_product_attention, except on CPU for bf16 inference with the own AMX
kernel (``native.attention``), for bf16 inference of short sequences without AMX (``bf16_attention``) and
for training with attention dropout (``dropout_attention``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .cpu import amx_bf16
from .linear import fused_dtype


def attention(q, k, v, mask, dropout: nn.Dropout, training: bool):
    """``softmax(q k^T / sqrt(D), masked) @ v`` with ``dropout`` (its ``p``) on the probabilities in
    training. q, k, v (B, H, T, D); mask None or (B, 1, 1, T), True where a key may be attended to."""
    if native_applies(q, k, v, mask, training):
        return native.attention(q, k, v, None if mask is None else mask.reshape(mask.shape[0], mask.shape[-1]))
    if q.dtype == torch.bfloat16 and fused_dtype(training, q) == torch.bfloat16 and q.shape[2] <= 128 and not amx_bf16():
        # with AMX, SDPA's flash kernel is faster at the same precision (float32 scores from bf16
        # products, bf16 probabilities) and reads the heads in place: no layout copies
        return bf16_attention(q, k, v, mask)
    if training and dropout.p > 0 and q.device.type == "cpu":
        return dropout_attention(q, k, v, mask, dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout.p if training else 0.0)


def native_applies(q, k, v, mask, training: bool) -> bool:
    """bf16 inference where the own AMX kernel is built, on heads that share strides (those of one fused
    projection) and a key mask (B, 1, 1, T) or none."""
    return (q.dtype == k.dtype == v.dtype == torch.bfloat16 and fused_dtype(training, q) == torch.bfloat16
            and q.stride() == k.stride() == v.stride() and q.stride(-1) == 1 and q.shape[-1] % 32 == 0
            and (mask is None or (mask.dtype == torch.bool and mask.shape == (q.shape[0], 1, 1, q.shape[2])))
            and native.available())


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
