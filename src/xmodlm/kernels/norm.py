"""LayerNorm with the same parameters and names as ``nn.LayerNorm``, whose bf16 CPU inference runs the own
kernel (``native.layer_norm``: torch's computation, float32 statistics and one rounding) where it is built;
``kernel_args`` lets a product ahead of it apply it in the same call (``linear(..., norm=)``)."""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .linear import fusable


class LayerNorm(nn.LayerNorm):
    def kernel_args(self, like: torch.Tensor) -> tuple | None:
        """(weight, bias, eps) for the own kernel where this norm, on an input of ``like``'s dtype and device
        with contiguous rows, runs it (bf16 inference where the kernel is built), else None."""
        weight, bias = self.weight, self.bias
        if (like.dtype == torch.bfloat16 and fusable(self.training, like) and len(self.normalized_shape) == 1
                and self.normalized_shape[0] % 16 == 0 and native.vector_available()
                and all(t is None or t.dtype == torch.bfloat16 for t in (weight, bias))):
            return weight, bias, self.eps
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = self.kernel_args(x) if x.is_contiguous() and x.shape[-1:] == self.normalized_shape else None
        return native.layer_norm(x, *args) if args else super().forward(x)
