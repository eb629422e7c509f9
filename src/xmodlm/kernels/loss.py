"""Cross-entropy over a per-example range of the vocabulary, exactly: a language whose softmax covers only the rows
that existed when it was trained gets, bit for bit, the loss of a model that has only those rows (the logits are
sliced, not padded with -inf, so the reductions run over the same number of values); a language with rows of its
own (an own vocabulary) gets the loss of a model that has only its rows.

``ranges``: a (N, 2) long tensor of [start, stop) per example or per scored position, or None (every row)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_beyond(logits: torch.Tensor, ranges: torch.Tensor | None, targets: torch.Tensor | None = None
                ) -> torch.Tensor:
    """-inf outside each leading index's vocabulary range; with ``targets`` (one per row), rows whose target lies
    outside their range keep every logit, as ``limited_cross_entropy`` scores them."""
    if ranges is None:
        return logits
    if targets is not None:
        off = (targets < ranges[:, 0]) | (targets >= ranges[:, 1])
        ranges = torch.where(off[:, None], torch.tensor([0, logits.shape[-1]], device=ranges.device), ranges)
    shape = (-1,) + (1,) * (logits.dim() - 1)
    col = torch.arange(logits.shape[-1], device=logits.device)
    outside = (col < ranges[:, 0].view(shape)) | (col >= ranges[:, 1].view(shape))
    return logits.masked_fill(outside, float("-inf"))


def limited_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ranges: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy of each position over the logits of its range (over all where the target lies outside
    it: a language's text holding another language's pieces). One range [0, n) for all: bit for bit the loss of a
    model that has only those rows."""
    if not targets.numel():
        return logits.sum() * 0.0
    if ranges is None:
        return F.cross_entropy(logits.float(), targets)
    outside = (targets < ranges[:, 0]) | (targets >= ranges[:, 1])
    pairs = sorted({(int(a), int(b)) for a, b in ranges.tolist()})
    if len(pairs) == 1 and not bool(outside.any()):
        start, stop = pairs[0]
        return F.cross_entropy(logits[:, start:stop].float(), targets - start if start else targets)
    total = logits.new_zeros((), dtype=torch.float32)
    for start, stop in pairs:
        rows = (ranges[:, 0] == start) & (ranges[:, 1] == stop) & ~outside
        if bool(rows.any()):
            total = total + F.cross_entropy(logits[rows, start:stop].float(), targets[rows] - start, reduction="sum")
    if bool(outside.any()):
        total = total + F.cross_entropy(logits[outside].float(), targets[outside], reduction="sum")
    return total / targets.numel()


def cross_entropy_or_zero(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not ``ignore_index``; 0 (with a gradient path) where there is
    none, not 0/0 = NaN: a batch with no labelled position must not poison the step."""
    if not bool((targets != ignore_index).any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)
