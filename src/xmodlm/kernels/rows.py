"""The rows of a batch put in another order (a permutation) with a backward that selects rows too.

X-Mod groups a mixed batch's rows by language before the layers and restores their order after (model.py's
routing: ``order`` and its inverse). ``x.index_select(0, order)``'s backward is torch's general one: a zero-filled
tensor of x's shape (new_zeros) into which ``index_add_`` adds the gradient's rows, as it must for an index that may
repeat. For a permutation each row gets exactly one gradient row, so the backward is the gradient's rows selected
by the inverse permutation: one pass instead of two. In the bench's bf16 step (16 x 128 x 256 float32, both
reorders) torch's backward took 0.43 ms of index_add and 0.18 of zeros each (docs/results/amx-perf/round11/diet.md).

The numbers: the same values; index_add_ adds each row to +0, which turns a -0 into +0, where the selection keeps
the -0 (torch.equal holds either way)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class _Permute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, order, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, order)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def permute_rows(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``x.index_select(0, order)`` for ``order`` a permutation of x's rows and ``inverse`` its inverse
    (``order[inverse] == arange``), differentiated as a permutation (see the module's docstring); where no gradient
    is taken, index_select itself."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Permute.apply(x, order, inverse)
    return x.index_select(0, order)
