"""Dropout with a faster CPU training mask."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import native

_ONE_PASS = {"enabled": True}


def use_one_pass_dropout(enabled: bool) -> None:
    """Apply Dropout's mask and scale in one pass forward and backward (True, the default: the same numbers) or
    as torch's two multiplications by a uint8 mask (False)."""
    _ONE_PASS["enabled"] = bool(enabled)


# draws per SFC64 stream: a mask of more draws takes one stream per chunk (the chunks' streams are independent, so
# the own kernel computes them on all threads); a mask of at most this many is one stream, numpy's SFC64(seed)
MASK_CHUNK = 1 << 18


def keep_draws(seed: int, n: int, threshold: int) -> torch.Tensor:
    """n keep decisions (uint8 0/1): 16-bit draws, four per 64-bit output of numpy's SFC64, kept where the draw,
    read as a signed value, is >= ``threshold``; one SFC64 stream per ``MASK_CHUNK`` draws, chunk c's started from
    words 3c..3c+2 of ``SeedSequence(seed)`` as numpy's SFC64 starts from its seed's first three (chunk 0 is
    ``SFC64(seed)`` itself). In the own kernel where it is built (``native.keep_mask``), else in numpy: the same
    bits either way."""
    chunks = -(-n // MASK_CHUNK)
    states = np.random.SeedSequence(seed).generate_state(3 * chunks, np.uint64)
    if native.available():
        return native.keep_mask(states, n, MASK_CHUNK, threshold)
    parts, generator = [], np.random.SFC64(seed)  # chunk 0's stream; the next ones restart it from their words
    for c in range(chunks):
        if c:
            state = generator.state
            state["state"]["state"] = np.array([*states[3 * c:3 * c + 3], 1], dtype=np.uint64)
            state["has_uint32"] = state["uinteger"] = 0
            generator.state = state
            generator.random_raw(12)  # as numpy's seeding discards its first 12 outputs
        count = min(MASK_CHUNK, n - c * MASK_CHUNK)
        # compared in numpy (faster than torch's int16 comparison), multiplied as uint8 (torch multiplies bf16 by
        # a uint8 mask faster than by a bool one)
        parts.append(generator.random_raw((count + 3) // 4).view(np.int16)[:count] >= threshold)
    return torch.from_numpy(parts[0] if chunks == 1 else np.concatenate(parts)).view(torch.uint8)


class _MaskAndScale(torch.autograd.Function):
    """x * keep * scale as one pass each way, the keep mask converted to x's dtype once and saved so. torch's
    ``x * keep`` with a uint8 mask converts the mask to x's dtype in a temporary on every call, forward and
    backward, and the scale is a second pass. One rounding, as torch's: (x * keep) is exact, times the scale
    rounds once."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        mask = keep.to(x.dtype)
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, mask, value=scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, mask, value=ctx.scale), None, None


class Dropout(nn.Dropout):
    """nn.Dropout with a faster CPU training mask: each element's keep decision is a 16-bit random
    draw, kept with probability (65536 - k) / 65536 for k = round(p * 65536), and scaled by that
    probability's exact inverse, so the expectation is exact. p is thus rounded to a multiple of
    1/65536 (0.1 -> 0.100006). The draws come four per 64-bit output of numpy's SFC64 generator
    (``keep_draws``: one stream per MASK_CHUNK draws, in the own C kernel where it is built, on all threads),
    seeded for each call from torch's global generator (so ``torch.manual_seed`` and saved RNG
    states govern it as they govern torch's own dropout): fewer and cheaper draws than torch's
    bernoulli_ or a Mersenne Twister; the mask and scale applied in one pass (``_MaskAndScale``). Elsewhere
    (GPU, eval, in place) nn.Dropout."""

    def keep_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        """(uint8 keep mask of x's shape, the scale of the kept values) for a call on x, drawn as ``forward``
        draws it; None where ``forward`` is nn.Dropout's (eval, in place, not a CPU tensor, p 0 or 1)."""
        drop = round(self.p * 65536)
        if not self.training or self.inplace or x.device.type != "cpu" or not 0 < drop < 65536:
            return None
        seed = int(torch.empty((), dtype=torch.int64).random_())
        return keep_draws(seed, x.numel(), drop - 32768).view(x.shape), 65536 / (65536 - drop)

    def forward(self, x):
        mask = self.keep_mask(x)
        if mask is None:
            return super().forward(x)
        keep, scale = mask
        if _ONE_PASS["enabled"] and not torch.compiler.is_compiling():
            return _MaskAndScale.apply(x, keep, scale)
        return (x * keep).mul_(scale)
