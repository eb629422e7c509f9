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


# draws per SFC64 stream: a mask of more draws takes one stream per chunk, the chunks' streams independent; a mask of
# at most this many is one stream, numpy's SFC64(seed). Each stream is a serial recurrence, so the own kernel
# advances 8 of them at once in a vector's lanes (native.c's xm_keep_mask) and leaves chunks short of a group of 8 to
# a scalar chain. keep_draws took the same time at chunks of 2,048 to 32,768 draws for the bench's masks (0.031-0.033
# ms for 524,288, 0.062-0.069 for 1,048,576, one thread; docs/results/amx-perf/round9/chunk-sweep-1thread.txt), but
# numpy's path (where the kernel is not built: every processor without AMX) sets up one generator per chunk, so it
# slows as chunks shrink: 0.72 ms for 1M at 32,768 against 1.2 at 4,096 and 0.59 with round 8's 262,144 (4 streams;
# the sweep's figures; keep-mask-alone-1thread.txt: 0.70-0.73 against round 8's 0.64-0.66 in the same runs).
# Hence 32,768: the paths without AMX lose little, and masks under 8 chunks (262,144 draws) run on the scalar chain
# (65,536: 0.029 ms against 0.006 in lanes at 4,096; small in absolute terms). 12 outputs discarded per 8,192 kept.
MASK_CHUNK = 1 << 15

class _Words(np.random.bit_generator.ISeedSequence):
    """Three given words as a seed sequence: numpy's SFC64 built on it starts from them (counter 1, 12 outputs
    discarded) as SFC64(seed) starts from its SeedSequence's first three."""

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words, dtype=np.uint32):
        return self.words


def keep_draws(seed: int, n: int, threshold: int) -> torch.Tensor:
    """n keep decisions (uint8 0/1): 16-bit draws, four per 64-bit output of numpy's SFC64, kept where the draw,
    read as a signed value, is >= ``threshold``; one SFC64 stream per ``MASK_CHUNK`` (32,768) draws, chunk c's
    started from words 3c..3c+2 of ``SeedSequence(seed)`` as numpy's SFC64 starts from its seed's first three
    (chunk 0 is ``SFC64(seed)`` itself). Many short streams, so the own kernel (``native.keep_mask``, where it is
    built, for seeds below 2**64) hashes the words and runs 8 streams at once in vector lanes; else numpy
    (one generator per chunk): the same bits either way."""
    if native.vector_available() and 0 <= seed < 1 << 64:  # Dropout's seeds are below 2**63
        return native.keep_mask(seed, n, MASK_CHUNK, threshold)
    chunks = -(-n // MASK_CHUNK)
    # numpy's own words: ~16 us for the 96 of a 1M mask's 32 streams, beside ~0.6 ms for the draws
    states = np.random.SeedSequence(seed).generate_state(3 * chunks, np.uint64)
    # chunk c's outputs at c * MASK_CHUNK / 4: the last one's draws end at n (its last output's extra ones dropped)
    raw, step = np.empty((n + 3) // 4, dtype=np.uint64), MASK_CHUNK // 4
    for c in range(chunks):
        count = min(step, raw.size - c * step)
        raw[c * step:c * step + count] = np.random.SFC64(_Words(states[3 * c:3 * c + 3])).random_raw(count)
    # compared in numpy (faster than torch's int16 comparison), multiplied as uint8 (torch multiplies bf16 by a
    # uint8 mask faster than by a bool one)
    return torch.from_numpy(raw.view(np.int16)[:n] >= threshold).view(torch.uint8)


def _mask_and_scale(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """x * keep * scale as torch's addcmul computes it: on contiguous float32 values in the own kernel
    (``native.mask_scale``, where it is built), which reads the uint8 mask as it is; else addcmul on the mask
    converted to x's dtype. The same bits either way. The kernel is the embeddings' dropout in the bench's bf16
    step (2048 x 256 float32: the one Dropout there not fused into another kernel): there addcmul took 0.36-0.41
    ms each way and the mask's float32 copy 0.32; alone the kernel takes 0.17 ms where main's forward took 0.32 and
    its backward 0.23 (docs/results/amx-perf/round11/diet.md)."""
    if (x.dtype == torch.float32 and x.is_contiguous() and keep.is_contiguous() and x.device.type == "cpu"
            and native.vector_available()):
        return native.mask_scale(x, keep, scale)
    return torch.addcmul(x.new_zeros(()), x, keep.to(x.dtype), value=scale)


class _MaskAndScale(torch.autograd.Function):
    """x * keep * scale as one pass each way (``_mask_and_scale``), the uint8 keep mask saved for the backward.
    torch's ``x * keep`` with a uint8 mask converts the mask to x's dtype in a temporary on every call, forward
    and backward, and the scale is a second pass. One rounding, as torch's: scale * x rounds once, times the 0/1
    keep is exact."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _mask_and_scale(x, keep, scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return _mask_and_scale(grad, keep, ctx.scale), None, None


class Dropout(nn.Dropout):
    """nn.Dropout with a faster CPU training mask: each element's keep decision is a 16-bit random
    draw, kept with probability (65536 - k) / 65536 for k = round(p * 65536), and scaled by that
    probability's exact inverse, so the expectation is exact. p is thus rounded to a multiple of
    1/65536 (0.1 -> 0.100006). The draws come four per 64-bit output of numpy's SFC64 generator
    (``keep_draws``: one stream per MASK_CHUNK = 32,768 draws, so that the own C kernel, where it is built, runs 8
    streams at once in vector lanes, on all threads),
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
