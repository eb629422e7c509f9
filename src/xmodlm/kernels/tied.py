"""The tied word-embedding matrix's gradient without a vocabulary-sized matrix of zeros.

A masked LM ties its decoder to the word embeddings, so one backward gives the matrix two gradients: the
decoder's, dense (every vocabulary row), and the lookup's, which touches only the rows of the batch's tokens.
torch writes the lookup's as a dense matrix (zero-filled, then the rows added) and autograd sums the two into a
third: three passes over a vocabulary-sized matrix for a few thousand rows. Here the decoder's backward, which
runs first (the lookup comes first in the forward), keeps a reference to its dense gradient, fresh from the
decoder's product, and the lookup's backward adds its rows into it in place and hands autograd no gradient of
its own: the parameter's gradient is the same dense sum (its float32 additions in another order). Where no
decoder gradient came in the same backward pass (an untied or frozen decoder, a model without one), or the matrix
is not float32, the lookup's gradient is torch's dense one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

_ROWS = {"enabled": True}
# id(weight) -> (the backward pass (graph task) in which the decoder produced it, the decoder's dense gradient)
_DENSE_GIVEN: dict[int, tuple[int, torch.Tensor]] = {}


def use_tied_row_gradient(enabled: bool) -> None:
    """Let the tied lookup's gradient join the decoder's as rows (True, the default) or stay dense (False)."""
    _ROWS["enabled"] = bool(enabled)


def _applies(weight: torch.Tensor) -> bool:
    # CPU only: there the zero-filled vocabulary-sized gradient is a pass over memory worth saving; on a GPU it
    # is not, and index_add_ there adds in an order that changes from run to run
    return (_ROWS["enabled"] and torch.is_grad_enabled() and weight.requires_grad and weight.device.type == "cpu"
            and not torch.compiler.is_compiling())


class _DecoderWeight(torch.autograd.Function):
    """The decoder's use of the tied matrix: the identity, whose backward keeps the dense gradient it passes
    on, for the lookup's rows. Only for a product's own weight gradient (fresh, aliased nowhere else)."""

    @staticmethod
    def forward(ctx, weight):
        ctx.key = id(weight)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        if grad is not None and grad.layout == torch.strided:
            _DENSE_GIVEN[ctx.key] = (torch._C._current_graph_task_id(), grad)
        return grad


class _Lookup(torch.autograd.Function):
    """F.embedding (no max_norm, no scale_grad_by_freq) whose weight gradient is added into the decoder's
    where that came in this backward pass; the parameter's gradient is summed only after both have run."""

    @staticmethod
    def forward(ctx, ids, weight, padding_idx):
        ctx.save_for_backward(ids)
        ctx.key, ctx.rows, ctx.padding_idx = id(weight), weight.shape[0], -1 if padding_idx is None else padding_idx
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        task, dense = _DENSE_GIVEN.pop(ctx.key, (None, None))
        # float32 only: in a bf16 model, index_add_ would round after every repeated token, where torch's
        # lookup gradient sums them in float32 first
        if task == torch._C._current_graph_task_id() and dense.dtype == grad.dtype == torch.float32:
            add_rows(dense, ids, grad, ctx.padding_idx)
            return None, None, None
        return None, torch.ops.aten.embedding_dense_backward(grad, ids, ctx.rows, ctx.padding_idx, False), None


def add_rows(dense: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor, padding_idx: int) -> None:
    """dense[ids] += grad, row by row (repeated ids add up), the padding row left out (torch's lookup gives it no
    gradient); masked rather than selected, so that no device waits for a count. On the CPU, where asking costs no
    wait, the rows are masked only if a padding id is there: the masked copy of the gradient (2048 x 256 float32
    in the bench's step, none of its ids padding) took 0.39 ms of the step's backward and changes nothing then
    (docs/results/amx-perf/round11/diet.md)."""
    flat, rows = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
    padding = flat == padding_idx
    if flat.device.type != "cpu" or bool(padding.any()):
        rows = rows.masked_fill(padding[:, None], 0.0)
    dense.index_add_(0, flat, rows)


def decoder_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as the tied decoder uses it in training (the same values; see the module's docstring)."""
    return _DecoderWeight.apply(weight) if _applies(weight) else weight


def embedding_lookup(embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """``embedding(ids)``, with the gradient described in the module's docstring where it applies."""
    if (_applies(embedding.weight) and not embedding.sparse and embedding.max_norm is None
            and not embedding.scale_grad_by_freq):
        return _Lookup.apply(ids, embedding.weight, embedding.padding_idx)
    return embedding(ids)
