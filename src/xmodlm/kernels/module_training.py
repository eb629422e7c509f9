"""The per-language modules in CPU bf16 autocast training as one autograd function over the own kernel
(``native.modules_train``): each layer's modules of all segments in one C call forward and one backward.

Autocast's batched path (``modules.run_batched``) stacks the float32 weights at every step, casts the stacks to bf16,
runs baddbmm, GELU, baddbmm, and in the backward bmm, GELU's backward, the casts of the bf16 gradients back to
float32 and the bias sums: some twenty ops per layer and their dispatch, for products of 128-256 rows. Here the
kernel reads each module's float32 weights and rounds them to bf16 while packing them (the bits of autocast's cast),
and each thread takes whole segments (the same bits for any thread count).

The numbers: H = x W1^T + b1 and y = G W2^T + b2 summed in float32 with the float32 biases (autocast rounds the
biases to bf16 first), G = gelu(H) computed on the float32 H and rounded once (autocast rounds H, then GELU's result).
Saved for the backward, besides x: G and S = gelu'(H), both computed from the float32 H in the forward's epilogue
(one erf tail for both) and rounded to bf16, as much memory as autocast's bf16 H and G; and the weights rounded to
bf16 in the layout of the backward's products, packed in the forward from the float32 rows it reads anyway (as much
memory as the bf16 stacks autocast's bmm saves; the backward then reads no float32 weight). Saving S
instead of H: the backward's epilogue only multiplies (computing gelu'(H16) there took as long as the product it
follows: 0.2 ms of the 1.4 ms backward at 8 x 256 rows, d 256, r 128), and S is the slope at the float32 H where
autocast's is the slope at H rounded to bf16; S's own rounding is one bf16 rounding of dH more. The backward: dH =
round_bf16((dy W2) S) (autocast rounds dG first, then dH), dx = round_bf16(dH W1), bf16 as autocast's input
gradient; dW1, dW2, db1 (from the float32 dH) and db2 summed in float32 and left in float32 (autocast rounds them to
bf16 before autograd casts them back): they differ from autocast's by up to a bf16 rounding. ``use_native_training_modules(False)`` switches it off."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import native
from .amp import cpu_bf16_autocast

_MODULES = {"enabled": True}


def use_native_training_modules(enabled: bool) -> None:
    """Run the language modules in CPU bf16 autocast training in the own kernel (True, the default, where it is
    built) or through autocast's batched matmuls (False)."""
    _MODULES["enabled"] = bool(enabled)


def native_training_modules_on() -> bool:
    return _MODULES["enabled"]


def _params(module) -> tuple:
    """(W1, b1, W2, b2) through the modules' dicts (nn.Module's attribute lookup is slow, and this runs per layer)."""
    first, second = module._modules["dense1"]._parameters, module._modules["dense2"]._parameters
    return first["weight"], first["bias"], second["weight"], second["bias"]


def native_modules_apply(h: torch.Tensor, modules, training: bool) -> bool:
    """The switch on, autograd on in CPU bf16 autocast training, the kernels built; GELU modules (nn.Linear pairs
    d -> r -> d, r and d multiples of 32) with contiguous float32 weights and biases, one distinct module per
    segment (a module shared by segments falls back: its gradient would sum over them); h contiguous."""
    if not (_MODULES["enabled"] and training and torch.is_grad_enabled() and cpu_bf16_autocast()
            and h.device.type == "cpu" and h.is_contiguous() and h.dim() >= 2
            and h.dtype in (torch.float32, torch.bfloat16) and not torch.compiler.is_compiling()):
        return False
    d, r = h.shape[-1], modules[0].dense1.out_features
    if not native.fits(r, d) or len({id(m) for m in modules}) != len(modules):
        return False
    f32 = torch.float32
    for m in modules:
        w1, b1, w2, b2 = _params(m)
        if not (getattr(m, "act_name", None) == "gelu" and b1 is not None and b2 is not None
                and w1.dtype == b1.dtype == w2.dtype == b2.dtype == f32 and w1.shape == (r, d) and w2.shape == (d, r)
                and w1.is_contiguous() and w2.is_contiguous() and b1.is_contiguous() and b2.is_contiguous()):
            return False
    return native.available()


class _NativeTrainingModules(torch.autograd.Function):
    """y = W2_s gelu(W1_s x_s + b1_s) + b2_s for each segment s of x16's rows (``counts``: kernel rows per segment),
    the parameters float32 (four per module, in order); see the module's docstring for the numbers."""

    @staticmethod
    def forward(ctx, x16, counts, *params):
        rows = x16.reshape(-1, x16.shape[-1])
        w1s, b1s, w2s, b2s = params[0::4], params[1::4], params[2::4], params[3::4]
        y, slope, g, pairs = native.modules_train(rows, counts, w1s, b1s, w2s, b2s)
        ctx.save_for_backward(rows, slope, g, pairs)
        ctx.counts, ctx.shape = counts, x16.shape
        return y.view(x16.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        rows, slope, g, pairs = ctx.saved_tensors
        dy = dy.to(torch.bfloat16).reshape(rows.shape).contiguous()
        dx, dw1, db1, dw2, db2 = native.modules_train_backward(dy, rows, slope, g, pairs, ctx.counts)
        grads = [t for module in zip(dw1.unbind(), db1.unbind(), dw2.unbind(), db2.unbind()) for t in module]
        needs = ctx.needs_input_grad[2:]
        return (dx.view(ctx.shape) if ctx.needs_input_grad[0] else None, None,
                *(t if need else None for t, need in zip(grads, needs)))


def native_training_modules(h: torch.Tensor, rows, modules, twin: torch.Tensor | None = None) -> torch.Tensor:
    """Each segment's module applied to its rows of h (``rows``: rows of h per segment, each of h.numel() / (rows
    x d) kernel rows), in bf16 (``native_modules_apply`` must hold); ``twin``: h's bf16 copy from the fused norm
    (autocast's cast of h, on the graph), else h is cast here."""
    x16 = twin if twin is not None else h.to(torch.bfloat16)
    positions = h.numel() // (h.shape[0] * h.shape[-1])
    counts = tuple(n * positions for n in rows)
    params = [p for m in modules for p in _params(m)]
    return _NativeTrainingModules.apply(x16.contiguous(), counts, *params)
