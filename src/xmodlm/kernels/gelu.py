"""GELU (erf) and its backward in CPU bf16 autocast training through tables of every bf16 value (``native.gelu_table``,
``native.gelu_table_backward``).

Under autocast a linear's output H is bf16, so GELU(H) and GELU'(H) each take one of 65,536 values: the own kernel
looks them up (one gather per 16 values, float64 values rounded once) where torch computes an erf and an exponential
per value in float32. Both passes are then bound by memory alone: on two threads of a 2-core Xeon with AMX at the
feed-forward's 2,048 x 1,024 values, torch's GELU 0.62 and its backward 1.02 ms, the tables' 0.40 and 0.45 ms
(docs/results/amx-perf/round8/gelu-table-alone.txt). The numbers: G = GELU(H) is float64's value rounded to bf16
(through float32, as torch converts), the backward round_bf16(dG * GELU'(H)) with the slope float64's rounded to
float32; on those inputs the tables gave float64's value rounded to bf16 for 100.00% of the values, torch's float32
GELU for 98.0% and its backward for 99.4% (one bf16 step off elsewhere). Results below 2^-126 in magnitude
(GELU's far negative tail) are zero, as in the other own kernels. ``use_table_gelu(False)`` switches it off."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import native
from .amp import autocast_bf16

_TABLE_GELU = {"enabled": True}


def use_table_gelu(enabled: bool) -> None:
    """Run GELU and its backward in CPU bf16 autocast training through the own kernel's tables (True, the default
    where it is built) or as torch's ``gelu``/``gelu_backward`` (False)."""
    _TABLE_GELU["enabled"] = bool(enabled)


def table_gelu_on() -> bool:
    return _TABLE_GELU["enabled"]


def table_gelu_applies(h: torch.Tensor) -> bool:
    """The switch on, a contiguous bf16 activation under CPU bf16 autocast with autograd, the kernels built."""
    return (_TABLE_GELU["enabled"] and h.dtype == torch.bfloat16 and h.is_contiguous() and autocast_bf16(h)
            and native.vector_available())


class _TableGelu(torch.autograd.Function):
    """GELU(h) by the table; its backward by the slopes' table from the saved h. Differentiable once."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return native.gelu_table(h)

    @staticmethod
    @once_differentiable
    def backward(ctx, dg):
        (h,) = ctx.saved_tensors
        return native.gelu_table_backward(dg.to(torch.bfloat16).contiguous(), h)


def table_gelu(h: torch.Tensor) -> torch.Tensor:
    """Erf GELU of bf16 ``h`` through the tables (``table_gelu_applies`` must hold)."""
    return _TableGelu.apply(h)
