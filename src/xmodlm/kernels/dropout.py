"""Dropout with a faster CPU training mask."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Dropout(nn.Dropout):
    """nn.Dropout with a faster CPU training mask: each element's keep decision is a 16-bit random
    draw, kept with probability (65536 - k) / 65536 for k = round(p * 65536), and scaled by that
    probability's exact inverse, so the expectation is exact. p is thus rounded to a multiple of
    1/65536 (0.1 -> 0.100006). The draws come four per 64-bit output of numpy's SFC64 generator,
    seeded for each call from torch's global generator (so ``torch.manual_seed`` and saved RNG
    states govern it as they govern torch's own dropout): fewer and cheaper draws than torch's
    bernoulli_ or a Mersenne Twister. Elsewhere (GPU, eval, in place) nn.Dropout."""

    def forward(self, x):
        drop = round(self.p * 65536)
        if not self.training or self.inplace or x.device.type != "cpu" or not 0 < drop < 65536:
            return super().forward(x)
        n = x.numel()
        seed = int(torch.empty((), dtype=torch.int64).random_())
        draws = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n]
        # compared in numpy (faster than torch's int16 comparison), multiplied as uint8 (torch
        # multiplies bf16 by a uint8 mask faster than by a bool one)
        keep = torch.from_numpy(draws >= drop - 32768).view(torch.uint8).view(x.shape)
        return (x * keep).mul_(65536 / (65536 - drop))
