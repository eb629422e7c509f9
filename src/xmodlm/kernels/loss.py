"""Cross-entropy over a per-example prefix of the vocabulary, exactly: a language whose softmax covers only the
rows that existed when it was trained gets, bit for bit, the loss of a model that has only those rows (the logits
are sliced, not padded with -inf, so the reductions run over the same number of values)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_beyond(logits: torch.Tensor, limits: torch.Tensor | None) -> torch.Tensor:
    """-inf beyond each leading index's vocabulary limit (``limits``: one per example or per scored position)."""
    if limits is None:
        return logits
    beyond = torch.arange(logits.shape[-1], device=logits.device) >= limits.view((-1,) + (1,) * (logits.dim() - 1))
    return logits.masked_fill(beyond, float("-inf"))


def limited_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, limits: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy of each position over its first ``limits[i]`` logits (over all where the target lies beyond:
    a language's text holding a later language's pieces). One limit for all: bit for bit the loss of a model that has
    only those rows."""
    if not targets.numel():
        return logits.sum() * 0.0
    if limits is None:
        return F.cross_entropy(logits.float(), targets)
    values, beyond = sorted(set(limits.tolist())), targets >= limits
    if len(values) == 1 and not bool(beyond.any()):
        return F.cross_entropy(logits[:, : values[0]].float(), targets)
    parts = [(logits[(limits == n) & ~beyond, :n], targets[(limits == n) & ~beyond]) for n in values]
    parts.append((logits[beyond], targets[beyond]))
    total = sum(F.cross_entropy(x.float(), t, reduction="sum") for x, t in parts if t.numel())
    return total / targets.numel()


def cross_entropy_or_zero(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not ``ignore_index``; 0 (with a gradient path) where there is
    none, not 0/0 = NaN: a batch with no labelled position must not poison the step."""
    if not bool((targets != ignore_index).any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)
