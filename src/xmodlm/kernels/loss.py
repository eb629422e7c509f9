"""Cross-entropy over a per-example range of the vocabulary, exactly: a language whose softmax covers only the rows
that existed when it was trained gets, bit for bit, the loss of a model that has only those rows (the logits are
sliced, not padded with -inf, so the reductions run over the same number of values); a language with rows of its
own (an own vocabulary) gets the loss of a model that has only its rows.

``ranges``: a (N, 2) long tensor of [start, stop) per example or per scored position, or None (every row). With
autograd, the mean cross-entropy of scored logits is one fused function (``scored_cross_entropy``); on logits straight
from the native vocabulary projection it is fused into that projection (``amp.use_fused_vocab_loss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import amp, native

_FUSED = {"enabled": True}
# rows of logits per slice in the fused cross-entropy: a slice's float32 copy (rows x vocabulary) should stay in
# a core's cache while its softmax, loss and gradient are computed
SLICE_ROWS = 16


def use_fused_cross_entropy(enabled: bool) -> None:
    """Use (True, the default) or bypass (plain ``F.cross_entropy``) the fused cross-entropy in training."""
    _FUSED["enabled"] = bool(enabled)


def _loss_and_gradient(logits: torch.Tensor, targets: torch.Tensor, rows: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean cross-entropy of ``logits`` (N, V) and its gradient (in the logits' dtype), slice by slice of
    ``rows`` rows: each slice in float32 once, its softmax turned into the gradient in place (softmax - one-hot,
    over N). By default SLICE_ROWS on a CPU (for its cache) and one slice elsewhere (on a GPU each slice costs
    kernel launches, not cache misses). bf16 logits on a CPU where the own kernels are built: the same
    computation row by row in ``native.cross_entropy`` (its exponential a polynomial of relative error below
    2e-7, the sums in another order; 6.4-7.2 ms against 2.1 for 303 x 32k in isolation, 2-core Xeon with AMX)."""
    n = logits.shape[0]
    if logits.dtype == torch.bfloat16 and logits.device.type == "cpu" and logits.stride(-1) == 1 and native.vector_available():
        losses, grad = native.cross_entropy(logits, targets, 1.0 / n)  # the same computation in one C call
        return losses.mean(), grad
    rows = rows or (SLICE_ROWS if logits.device.type == "cpu" else max(n, 1))
    losses = torch.empty(n, dtype=torch.float32, device=logits.device)
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
    in_place = grad.dtype == torch.float32  # each slice's float32 copy made where its gradient goes (no second copy)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        if in_place:
            z = grad[lo:hi]
            z.copy_(logits[lo:hi])
        else:
            z = logits[lo:hi].to(torch.float32, copy=True)  # (r, V), float32 as F.cross_entropy(logits.float())
        target = targets[lo:hi, None]
        picked = z.gather(1, target)
        top = z.amax(1, keepdim=True)
        e = z.sub_(top).exp_()
        total = e.sum(1, keepdim=True)
        losses[lo:hi] = (total.log() + top - picked).squeeze(1)
        e.mul_(total.reciprocal_().mul_(1.0 / n))  # softmax / N
        e.scatter_add_(1, target, torch.full_like(picked, -1.0 / n))
        if not in_place:
            grad[lo:hi] = e
    return losses.mean(), grad


class _FusedVocabCrossEntropy(torch.autograd.Function):
    """The mean cross-entropy of logits straight from the native vocabulary projection, from the row statistics its
    forward gave them (``amp.VocabLoss``): loss = log(sum) + max - logit[target], float32; the backward hands back
    the stand-in that the projection's backward replaces by the gradient (formed as ``native.cross_entropy`` forms
    it). The stand-in only in a plain ``backward()`` (no ``inputs``; not ``autograd.grad``, which could capture it)
    with no hook or retained gradient on the logits; elsewhere, or where the loss's gradient is scaled (not 1), or a
    stand-in is out already, the gradient is made here."""

    @staticmethod
    def forward(ctx, logits, targets, state, probe):
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets)
        ctx.state = state
        return (state.row_total.log() + state.row_max - picked).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        logits, targets = ctx.saved_tensors
        scale = 1.0 / logits.shape[0]
        if (float(grad_loss) == 1.0 and ctx.state.stand_in is None and _plain_backward()
                and _fused_vocab_loss(logits) is ctx.state):
            return ctx.state.stand_in_for(logits, targets, scale), None, None, None
        grad = native.cross_entropy(logits, targets, scale)[1]
        return (grad if float(grad_loss) == 1.0 else grad * grad_loss), None, None, None


# a leaf that the fused loss takes as an input (its gradient None): its node runs in a backward pass only where that
# pass runs the whole graph (``backward()`` without ``inputs``), where the engine captures no gradient on the way
_PROBE = torch.zeros((), requires_grad=True)
_PROBE_NODE = _PROBE.view_as(_PROBE).grad_fn.next_functions[0][0]


# torch's engine query (private; torch.utils.checkpoint uses it too): where a torch lacks it, the loss is never fused
_WILL_EXECUTE = getattr(torch._C, "_will_engine_execute_node", None)


def _plain_backward() -> bool:
    return _WILL_EXECUTE is not None and _WILL_EXECUTE(_PROBE_NODE)


def _fused_vocab_loss(logits: torch.Tensor):
    """The projection's statistics where the loss can be fused into it: logits straight from it (2-d), nobody's hook
    or retained gradient on them (they would see the stand-in)."""
    state = amp.vocab_loss_of(logits)
    if state is None or logits.retains_grad or getattr(logits, "_backward_hooks", None):
        return None
    return state


class _ScoredCrossEntropy(torch.autograd.Function):
    """F.cross_entropy(logits.float(), targets) with the gradient computed in the forward, from the same float32
    softmax: one pass over the logits instead of a cast, log-softmax, zero-filled NLL gradient, log-softmax
    backward and a cast back, and the float32 copy never held whole."""

    @staticmethod
    def forward(ctx, logits, targets):
        with torch.autocast(logits.device.type, enabled=False):
            loss, grad = _loss_and_gradient(logits, targets)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable  # the gradient is computed, not traced: a second backward is a clear error
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        if grad_loss.device.type == "cpu" and float(grad_loss) == 1.0:  # the usual loss.backward(): no pass over it
            return grad, None
        return grad * grad_loss, None


def scored_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every row of ``logits`` (N, V), float32-grade whatever their dtype: fused where
    autograd needs its gradient (and it is on), else F.cross_entropy on float32 logits."""
    if (_FUSED["enabled"] and torch.is_grad_enabled() and logits.requires_grad and logits.dim() == 2
            and not torch.compiler.is_compiling() and targets.numel()):
        if not bool(((targets >= 0) & (targets < logits.shape[1])).all()):
            raise IndexError(f"cross-entropy target out of range 0..{logits.shape[1] - 1}")
        state = _fused_vocab_loss(logits)
        if state is not None:
            return _FusedVocabCrossEntropy.apply(logits, targets, state, _PROBE)
        return _ScoredCrossEntropy.apply(logits, targets)
    return F.cross_entropy(logits.float(), targets)


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
        return scored_cross_entropy(logits, targets)
    outside = (targets < ranges[:, 0]) | (targets >= ranges[:, 1])
    pairs = sorted({(int(a), int(b)) for a, b in ranges.tolist()})
    if len(pairs) == 1 and not bool(outside.any()):
        start, stop = pairs[0]
        return scored_cross_entropy(logits[:, start:stop], targets - start if start else targets)
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
