"""The feed-forward's GELU inside its products in CPU bf16 autocast training on AMX processors (native.c's
``xm_ffn_forward``, ``xm_ffn_input_grad``).

Under autocast the feed-forward runs its input's product (H, bf16), torch's ``gelu`` on H (G), the output's product
on G; backward the output's product dG = dY W_out, torch's ``gelu_backward(dG, H)``, the input's products. On one
core at the MLM step's shape (2,048 x 1,024) torch's gelu took 0.9 ms and gelu_backward 2.6-3.0, each a pass
that reads and writes 4 MB arrays, and a GELU kernel of its own did not make the step faster (round 7). Here GELU
goes into the products' epilogues, on the float32 accumulators:

* the input's product in the own kernel writes both H = x W_in^T + b_in and G = gelu(x W_in^T + b_in), each rounded
  once to bf16 (W_in and b_in rounded to bf16 as autocast casts them, W_in as it is packed);
* the output's input gradient in the own kernel: dH = (dY W_out) gelu'(H), dY W_out in float32 (not rounded to bf16
  before the multiplication, as torch's dG is: more precise), gelu'(H) float64's rounded to float32 (a table of
  every bf16 value, ``native.gelu_slopes``), then one rounding.

Two passes over 4 MB arrays each way fewer; on one core of a shared 2-core Xeon (docs/results/amx-perf/round8) the
feed-forward alone 1.00-1.14x, the MLM step 0.99-1.04x (six runs of 9 steps, within the machine's noise): in the
step both kernels wait on memory (H and dH are stored non-temporally, H's lines prefetched in the backward; there
the kernels take 2.0-2.5 and 2.5-3.1 ms, alone 1.6 and 1.5), and the forward's epilogue is bound by the erf's
vector work besides.

Everything else is as ``amp.autocast_linear``'s: the output's forward in oneDNN on G, the input's dX = dH W_in in
torch's bf16 product, the weights' and biases' gradients dW_out = dY^T G, db_out, dW_in = dH^T x, db_in by
``amp.parameter_grads`` (the own kernel's float32 sums, or torch's bf16 products and sums, cast by autograd).

The autograd structure: the input's product (``_GeluProduct``) has two outputs, H and G; ``linear(act="gelu")``
returns G carrying H (``_xmodlm_gelu``, checked against G's version, as ``residual_norm.bf16_twin``). The output's
product (``_AfterGelu``), given such a G, takes H as its differentiable input and G's data detached: its backward
returns dH directly, and G gets no gradient. Anything else reading G sends its gradient to ``_GeluProduct``'s
backward, which adds gelu'(H) dG to dH through torch's ``gelu_backward`` (always right, not fast).
``use_fused_training_gelu(False)`` switches it off.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import native
from .amp import autocast_linear_applies, parameter_grads

_FFN = {"enabled": True}
_LOW = torch.bfloat16


def use_fused_training_gelu(enabled: bool) -> None:
    """Run the feed-forward's GELU in CPU bf16 autocast training inside the own kernel's products (True, the default
    where they are built) or as torch's gelu and gelu_backward between oneDNN's products (False)."""
    _FFN["enabled"] = bool(enabled)


def fused_training_gelu_on() -> bool:
    return _FFN["enabled"]


def _applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool) -> bool:
    """The switch on, ``autocast_linear`` applying (CPU bf16 autocast training, oneDNN on), float32 parameters
    (a contiguous 2-d weight of multiples of 32), the own kernels built."""
    return (_FFN["enabled"] and autocast_linear_applies(x, weight, bias, onednn) and weight.dtype == torch.float32
            and weight.dim() == 2 and weight.is_contiguous() and native.fits(*weight.shape)
            and x.shape[-1] == weight.shape[1] and (bias is None or (bias.dtype == torch.float32
                                                                     and bias.is_contiguous()))
            and native.available())


def _gelu_input(x: torch.Tensor) -> torch.Tensor | None:
    """H where x is the G a ``_GeluProduct`` returned (and not changed in place since), else None."""
    pair = getattr(x, "_xmodlm_gelu", None)
    return pair[0] if pair is not None and pair[1] == x._version else None


def _rounded(bias: torch.Tensor | None) -> torch.Tensor | None:
    """The bias as autocast's cast rounds it, in float32 (what the kernel adds)."""
    return None if bias is None else bias.detach().to(_LOW).float()


class _GeluProduct(torch.autograd.Function):
    """(H, G) = (x16 W^T + b, gelu(x16 W^T + b)), W and b rounded to bf16 (see the module's docstring).
    Differentiable once: for double backward call ``use_fused_training_gelu(False)``."""

    @staticmethod
    def forward(ctx, x16, weight, bias):
        packed, w16 = native.pack_float(weight.detach(), copy=True)
        h, g = native.ffn_forward(x16, packed, _rounded(bias), weight.shape[0])
        ctx.save_for_backward(x16, w16, h)
        ctx.has_bias = bias is not None
        ctx.set_materialize_grads(False)  # an output nothing read comes back as None, not as zeros
        return h, g

    @staticmethod
    @once_differentiable
    def backward(ctx, dh, dg):
        x16, w16, h = ctx.saved_tensors
        if dg is not None:  # G read by something other than _AfterGelu: its gradient through GELU's derivative
            through = torch.ops.aten.gelu_backward(dg.to(_LOW), h)
            dh = through if dh is None else dh.to(_LOW) + through
        if dh is None:
            return None, None, None
        dh = dh.to(_LOW)
        needs = ctx.needs_input_grad
        dx = dh.mm(w16) if needs[0] else None
        dw, db = parameter_grads(dh, x16, needs[1], ctx.has_bias and needs[2])
        return dx, dw, db


class _AfterGelu(torch.autograd.Function):
    """x16 W^T + b for x16 = gelu(h) (``g``: its values, from ``_GeluProduct``), W and b rounded to bf16: the forward
    oneDNN's product on g; the backward's input gradient dH through GELU's derivative in the own kernel."""

    @staticmethod
    def forward(ctx, h, g, weight, bias):
        w16 = weight.detach().to(_LOW)
        y = torch.ops.mkldnn._linear_pointwise(g, w16, None if bias is None else bias.detach().to(_LOW), "none",
                                               [None], "")
        ctx.save_for_backward(h, g, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        h, g, weight = ctx.saved_tensors
        dy = dy.to(_LOW).contiguous()
        needs = ctx.needs_input_grad
        dh = native.ffn_input_grad(dy, native.pack_float_transposed(weight.detach()), h) if needs[0] else None
        dw, db = parameter_grads(dy, g, needs[2], ctx.has_bias and needs[3])
        return dh, None, dw, db


def fused_gelu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str | None,
                      onednn: bool) -> torch.Tensor | None:
    """``linear``'s product for the feed-forward in CPU bf16 autocast training where this applies (``onednn``: the
    caller's check that oneDNN is on): with act "gelu", G = gelu(x W^T + b) carrying H; without an activation on
    such a G, its product with the gradient through the GELU fused; None elsewhere (the caller's paths). The
    activation is then applied: the caller applies none."""
    if act == "gelu" and _applies(x, weight, bias, onednn):
        rows = x.to(_LOW).reshape(-1, x.shape[-1])
        rows = rows if rows.stride(-1) == 1 else rows.contiguous()
        h, g = _GeluProduct.apply(rows, weight, bias)
        h, g = h.view(*x.shape[:-1], h.shape[-1]), g.view(*x.shape[:-1], g.shape[-1])
        g._xmodlm_gelu = (h, g._version)  # read by the output's product (_gelu_input)
        return g
    h = _gelu_input(x) if act is None else None
    if h is None or not _applies(x, weight, bias, onednn):
        return None
    shape = h.shape
    y = _AfterGelu.apply(h.reshape(-1, shape[-1]), x.detach().reshape(-1, shape[-1]), weight, bias)
    return y.view(*shape[:-1], weight.shape[0])
