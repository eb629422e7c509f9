"""Linears in CPU training under bf16 autocast, with the bias added inside the product.

Under autocast, ``F.linear`` runs ``addmm``, which first fills its whole output with the broadcast bias and then
adds the product to it: a pass over the output (at the vocabulary projection, 303 x 32k) before every product.
``autocast_linear`` casts the operands to bf16 as autocast does (the same cast nodes, so autograd casts the
gradients back in the same order), and runs the product in oneDNN with the bias added on the float32
accumulator inside the kernel; its backward runs the two products and the bias's sum that autograd runs for
``addmm``. The numbers: ``addmm`` adds the bias it copied into the output to the float32 accumulator too, so
both round once; the tests find the loss and every gradient of an MLM step bit for bit equal. (For a
non-contiguous input of more than two dimensions ``F.linear`` takes ``matmul`` and adds the bias after
rounding the product, two roundings where this path rounds once: as F.linear on the contiguous input.)

On processors with AMX the weight's and bias's gradients come from the own kernel (``native.weight_grad``,
``use_native_weight_grad``): oneDNN ran this product (dY^T X, a sum over the batch's tokens with both operands read
transposed) at about a third of the ceiling in the training step, then autograd cast its bf16 result back to
float32 and the bias's gradient took a separate sum. The kernel sums both in float32 and leaves them in float32
(autocast rounds them to bf16 first): more precise, so they differ from autocast's by up to a bf16 rounding; the
forward and the input's gradient are unchanged. Without AMX, where the vector kernels run (AVX-512 with bf16
products: AMD's Zen 4 and 5), ``native.weight_grad`` runs the vector kernel (xm_weight_grad_vector) with the same
results (float32, more precise than autocast's bf16, the same bits for any thread count; its sums run in another
order than the tile kernel's).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import native

_AUTOCAST_LINEAR = {"enabled": True}
_DTYPES = (torch.float32, torch.bfloat16)


def use_autocast_linear(enabled: bool) -> None:
    """Run linears in CPU bf16 autocast training with the bias inside oneDNN's product (True, the default) or
    as autocast's ``F.linear`` (False)."""
    _AUTOCAST_LINEAR["enabled"] = bool(enabled)


def _bf16_onednn() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_BF16_ONEDNN = {"supported": _bf16_onednn()}


def onednn_bf16() -> bool:
    """oneDNN has bf16 kernels on this processor (torch's check: AVX-512 BW/VL/DQ, or AVX-NE-CONVERT). Without them
    (AVX2 processors such as AMD's Zen 1-3 or Intel's before Skylake-SP) every bf16 call into oneDNN fails ("could
    not create a primitive descriptor", or "bf16 path needs the cpu support ..." when packing a weight), so every
    bf16 path through oneDNN asks this first and the plain torch ops run instead."""
    return _BF16_ONEDNN["supported"]


# what to tell someone who asks for bf16 on such a processor (the trainer's --precision bf16, embed's and retrieval's)
SLOW_BF16 = ("this CPU has no bf16 kernels (oneDNN needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT), so torch emulates "
             "bf16 products: on a 2-core AVX2 AMD EPYC a masked-LM training step took 25-29x as long as in fp32, "
             "matrix products 27-98x; fp32 is the precision to use here")


def cpu_bf16_autocast() -> bool:
    """CPU autocast is on, to bf16."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def autocast_bf16(x: torch.Tensor) -> bool:
    """CPU autograd under bf16 autocast (not traced by torch.compile)."""
    return (x.device.type == "cpu" and torch.is_grad_enabled() and cpu_bf16_autocast()
            and not torch.compiler.is_compiling())


def autocast_linear_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool) -> bool:
    """Where ``autocast_linear`` replaces autocast's ``F.linear``: the switch on, oneDNN on and in the build
    (``onednn``, the caller's check) with bf16 kernels, float32 or bf16 tensors."""
    return (_AUTOCAST_LINEAR["enabled"] and onednn and onednn_bf16() and autocast_bf16(x) and x.dtype in _DTYPES
            and weight.dtype in _DTYPES and (bias is None or bias.dtype in _DTYPES) and x.dim() >= 2)


_WEIGHT_GRAD = {"enabled": True}


def use_native_weight_grad(enabled: bool) -> None:
    """Compute the weight's and bias's gradients of ``autocast_linear`` in the own kernel where it is built (True,
    the default: float32 sums, not rounded to bf16) or as ``addmm``'s backward (False: bf16, cast back by
    autograd)."""
    _WEIGHT_GRAD["enabled"] = bool(enabled)


def native_weight_grad_on() -> bool:
    return _WEIGHT_GRAD["enabled"]


class _BiasInProduct(torch.autograd.Function):
    """``F.linear`` of bf16 operands, the bias added inside oneDNN's product; the backward is ``addmm``'s, or the
    weight's and bias's gradients from the own kernel (see the module's docstring). The weight and bias come in as
    they are (float32 parameters) and are rounded to bf16 here, as autocast's cast, so that float32 gradients
    reach them without a cast; bf16 ones are cast back by autograd. Differentiable once: for double backward under
    autocast call ``use_autocast_linear(False)``."""

    @staticmethod
    def forward(ctx, x16, weight, bias):
        low = torch.bfloat16
        w16 = weight.to(low)
        ctx.save_for_backward(x16, w16)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x16, w16, None if bias is None else bias.to(low), "none", [None], "")

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x16, w16 = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1])
        x2 = x16.reshape(-1, x16.shape[-1])
        grad_x = grad2.mm(w16).view(x16.shape) if ctx.needs_input_grad[0] else None
        grad_w, grad_b = parameter_grads(grad2, x2, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        return grad_x, grad_w, grad_b


def parameter_grads(grad2: torch.Tensor, x2: torch.Tensor, weight: bool, bias: bool) -> tuple:
    """(dW, db) of a linear under bf16 autocast from its 2-d bf16 output gradient and input (None where not
    asked): float32 from the own kernel where it is switched on and applies (bf16 operands with contiguous rows,
    widths in whole tiles), else ``addmm``'s backward's bf16 (autograd casts them to a float32 parameter's dtype).
    The own kernel: the tile kernel where ``native.available()``, else the vector kernel where
    ``native.vector_available()``. On a 2-core Zen 5 at one thread the vector kernel (float32 dW and db) was faster
    than the bf16 product + its cast to float32 + the bias's sum at every shape of the bench's MLM step: 1.05-1.09x
    at the layers' (T 2048; N x K 768 x 256, 256 x 256, 1024 x 256, 256 x 1024), 1.44x at the tied decoder's (T 303,
    32000 x 256); the whole step 1.03-1.05x (docs/results/amx-perf/round12/vwgrad.md). So no shape is gated out."""
    if not (weight or bias):
        return None, None
    if (_WEIGHT_GRAD["enabled"] and grad2.dtype == x2.dtype == torch.bfloat16 and grad2.stride(-1) == 1
            and x2.stride(-1) == 1 and native.fits(grad2.shape[1], x2.shape[1])
            and (native.available() or native.vector_available())):
        grad_w, grad_b = native.weight_grad(grad2, x2, bias_grad=bias)
        return grad_w if weight else None, grad_b
    return grad2.t().mm(x2) if weight else None, grad2.sum(0) if bias else None  # (out, in)


def autocast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` as bf16 autocast computes it (see the module's docstring)."""
    return _BiasInProduct.apply(x.to(torch.bfloat16), weight, bias)


# The vocabulary projection (the tied decoder) in CPU bf16 autocast training through the own kernel
# (native.c's xm_vocab_*): the float32 weight read directly and rounded to bf16 inside the kernel, so autocast's
# cast of the 32k x D matrix (forward) and autograd's cast of its bf16 gradient back to float32 (backward) are not
# made (the logits and dW also written with non-temporal stores). The logits and dX are as autocast's (bf16
# operands, float32 sums, one rounding); dW and db are summed in float32 and left in float32, where autocast rounds
# both to bf16 before autograd casts them back: more precise, so they differ from autocast's by up to a bf16
# rounding. Where the input's gradient will be taken, the forward also writes the rounded weight in the layout of
# the backward's dX product (native.vocab_pairs: V x D bf16, 16 MB at 32k x 256, kept from the forward to the
# backward), and the backward reads it instead of rounding and packing the float32 weight again.

_VOCAB = {"enabled": True}


def use_native_vocab_projection(enabled: bool) -> None:
    """Run the tied decoder's product in CPU bf16 autocast training through the own kernel on the float32 weight
    (True, the default: the MLM step 1.04-1.07x faster, docs/results/amx-perf/round6/lever-vocab-projection.txt) or
    as ``autocast_linear`` (False)."""
    _VOCAB["enabled"] = bool(enabled)


def native_vocab_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The switch on, the own kernels built, CPU bf16 autocast training, a float32 2-d contiguous weight of a
    multiple of 32 rows and columns, a float32 bias or none."""
    return (_VOCAB["enabled"] and autocast_bf16(x) and x.dtype in _DTYPES and x.dim() >= 2
            and weight.dtype == torch.float32 and weight.dim() == 2 and weight.is_contiguous()
            and native.vocab_fits(*weight.shape) and x.shape[-1] == weight.shape[1]
            and (bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()))
            and native.available())


# The masked-LM loss fused into it (kernels/loss.py's ``scored_cross_entropy`` on 2-d logits straight from here):
# the forward also gives each row's max and sum of exp of the bf16 logits it writes, from which the loss takes its
# value, and the loss's backward hands back a stand-in (zeros, expanded) for its gradient, which the projection's
# backward forms from the logits and those statistics as it reads them (native.vocab_backward's ``loss``). The
# loss's pass over the logits and its dlogits (N x V bf16, written then read again) are not made.

_VOCAB_LOSS = {"enabled": True}


def use_fused_vocab_loss(enabled: bool) -> None:
    """Fuse the masked-LM cross-entropy into the native vocabulary projection (True, the default) or run it apart
    (False: kernels/loss.py's own pass, the dlogits written by it)."""
    _VOCAB_LOSS["enabled"] = bool(enabled)


class VocabLoss:
    """The statistics the projection's forward gave its logits (row_max, row_total), and, once the loss's backward
    has handed back its stand-in, what the projection's backward needs to form the loss's gradient."""

    __slots__ = ("row_max", "row_total", "logits", "targets", "scale", "stand_in")

    def __init__(self, row_max: torch.Tensor, row_total: torch.Tensor):
        self.row_max, self.row_total = row_max, row_total
        self.logits = self.targets = self.stand_in = None
        self.scale = 0.0

    def stand_in_for(self, logits: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
        """The loss's gradient as the loss's backward returns it: zeros (one value, expanded), recognised by the
        projection's backward, which forms the real one."""
        self.logits, self.targets, self.scale = logits, targets, scale
        self.stand_in = torch.zeros((), dtype=logits.dtype).expand(logits.shape)
        return self.stand_in

    def take(self) -> tuple:
        """(stand_in, logits, targets, scale), cleared: each backward pass claims it afresh."""
        taken = self.stand_in, self.logits, self.targets, self.scale
        self.logits = self.targets = self.stand_in = None
        return taken


def vocab_loss_of(logits: torch.Tensor) -> VocabLoss | None:
    """The statistics of logits that came straight from the projection with them, else None."""
    return getattr(logits, "_xm_vocab_loss", None)


class _NativeVocabProjection(torch.autograd.Function):
    """``F.linear(x16, weight, bias)`` with the float32 weight and bias rounded to bf16 inside the kernel; the
    weight's and bias's gradients float32 (see above)."""

    @staticmethod
    def forward(ctx, x16, weight, bias, keep_pairs):
        rows = x16.reshape(-1, x16.shape[-1]).contiguous()
        ctx.save_for_backward(rows, weight)
        ctx.shape, ctx.has_bias = x16.shape, bias is not None
        ctx.loss = None
        ctx.pairs = native.vocab_pairs(weight) if keep_pairs else None
        if _VOCAB_LOSS["enabled"] and x16.dim() == 2:
            logits, row_max, row_total = native.vocab_forward(rows, weight, bias, statistics=True, pairs=ctx.pairs)
            ctx.loss = logits._xm_vocab_loss = VocabLoss(row_max, row_total)
            return logits
        return native.vocab_forward(rows, weight, bias, pairs=ctx.pairs).view(*x16.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        loss = None
        if ctx.loss is not None and ctx.loss.stand_in is not None:
            stand_in, logits, targets, scale = ctx.loss.take()
            if grad.data_ptr() == stand_in.data_ptr() and grad.stride() == stand_in.stride():
                loss = (targets, ctx.loss.row_max, ctx.loss.row_total, scale)  # the loss's gradient alone
                grad = logits
            else:  # other gradients of the logits added to the stand-in's zeros: the loss's made apart, as before
                grad = grad + native.cross_entropy(logits, targets, scale)[1]
        grad2 = grad.to(torch.bfloat16).reshape(-1, grad.shape[-1]).contiguous()
        dx, dw, db = native.vocab_backward(grad2, rows, weight, ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                                           ctx.has_bias and ctx.needs_input_grad[2], loss=loss, pairs=ctx.pairs)
        ctx.pairs = None
        return None if dx is None else dx.view(ctx.shape), dw, db, None


def native_vocab_projection(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``autocast_linear(x, weight, bias)`` through the own kernel (``native_vocab_applies`` must hold)."""
    keep_pairs = torch.is_grad_enabled() and x.requires_grad  # the backward will take dX: W16 kept for it
    return _NativeVocabProjection.apply(x.to(torch.bfloat16), weight, bias, keep_pairs)
