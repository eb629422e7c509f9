"""LayerNorm with the same parameters and names as ``nn.LayerNorm``, whose bf16 CPU inference runs the own
kernel (``native.layer_norm``: torch's computation, float32 statistics and one rounding) where it is built."""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .linear import fusable


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if (x.dtype == torch.bfloat16 and fusable(self.training, x) and len(self.normalized_shape) == 1
                and x.shape[-1] % 16 == 0 and x.is_contiguous() and native.available()
                and all(t is None or t.dtype == torch.bfloat16 for t in (weight, bias))):
            return native.layer_norm(x, weight, bias, self.eps)
        return super().forward(x)
